"""One mode of ``pedsam bench``, measured in a process of its own.

``python -m pedsam.stream.bench.modes SPEC_JSON SETTINGS_JSON OUT_DIR`` builds the model from its seed,
encodes the bench image ``settings.warmup`` times unmeasured and ``settings.frames`` times
measured, and writes ``OUT_DIR/<mode>.json`` (a :class:`ModeRecord`) and ``OUT_DIR/<mode>.npy``
(the last embedding, (1, out_chans, S/16, S/16) float32). A process per mode makes its peak
resident memory its own; in split modes the workers are this process's children, so neither
their CPU time nor their memory counts as the edge's.

Modes (``ModeSpec.kind``):

- ``stock``: ``segment_anything``'s ``image_encoder``, untouched;
- ``local``: pedsam's split encoder with every window computed in this process (pedsam's
  kernels, no network);
- ``split``: an :class:`~pedsam.stream.core.session.EdgeSession` over ``workers`` loopback worker processes,
  with a wire codec, an execution plan, and how many segments go to the workers.

Every mode computes on ``settings.device`` (the split's local workers too); on a GPU each frame's
time ends when the device has finished its work.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from pedsam.workers.models import PRESETS, ModelSource

GRPC_PREFIX_BYTES = 5  # gRPC's length prefix on every message, on top of the message itself


@dataclass(frozen=True, kw_only=True, slots=True)
class ModeSpec:
    """One mode to measure."""

    name: str
    kind: str  # "stock" | "local" | "split"
    workers: int = 0
    codec: str = "-"
    plan: str = "-"
    remote_segments: int | None = None  # split: only the first N segments to workers (None: all)


@dataclass(frozen=True, kw_only=True, slots=True)
class BenchSettings:
    """What every mode of one run shares."""

    model: str
    seed: int
    frames: int
    warmup: int
    scheme: str
    edge_threads: int
    worker_threads: int
    device: str = "cpu"  # a device torch names ("cpu", "cuda:0", "mps"), as the parent selected it
    # (H, W) of the bench image; None: the model's square input (no padding). A frame that is not
    # square leaves windows of pure padding, which stay on the edge (see SplitEncoder).
    frame_size: tuple[int, int] | None = None


@dataclass(kw_only=True)
class ModeRecord:
    """What one mode measured: seconds and bytes; the lists hold one value per measured frame.

    ``cpu_s`` is this process's CPU time (every thread, no children). ``wire_bytes_per_frame``
    counts whole gRPC messages both ways (with their 5-byte prefixes, without HTTP/2 framing);
    ``raw_bytes_per_frame`` the float32 bytes of the tensors that must cross. ``load_average``
    is the machine's 1-minute load average when the measured frames began and when they ended
    (over several rounds: the lowest and the highest reading).
    """

    name: str
    kind: str
    workers: int
    codec: str
    plan: str
    device: str
    torch_threads: int
    wall_s: list[float]
    cpu_s: list[float]
    peak_rss_bytes: int
    load_average: tuple[float, float]
    wire_bytes_per_frame: float | None = None
    raw_bytes_per_frame: int | None = None
    remote_segments: int | None = None


def bench_image(size: int, seed: int = 0, *, width: int | None = None) -> np.ndarray:
    """A (size, width or size, 3) uint8 RGB scene: smooth gradients, discs and boxes, and sensor noise."""
    rng = np.random.default_rng(seed)
    width = size if width is None else width
    y, x = np.mgrid[0:size, 0:width].astype(np.float32)
    y, x = y / max(1, size - 1), x / max(1, width - 1)
    image = np.stack([200 * x + 30, 180 * y + 40, 120 * (1 - x * y) + 60], axis=-1)
    for _ in range(12):
        cy, cx, r = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.03, 0.15)
        image[(y - cy) ** 2 + (x - cx) ** 2 < r**2] = rng.uniform(0, 255, 3)
    for _ in range(8):
        top, left = rng.uniform(0, 0.8, 2)
        h, w = rng.uniform(0.05, 0.2, 2)
        image[(y >= top) & (y < top + h) & (x >= left) & (x < left + w)] = rng.uniform(0, 255, 3)
    image += rng.normal(0, 6, image.shape)
    out: np.ndarray = np.clip(image, 0, 255).astype(np.uint8)
    return out


def raw_bytes_per_frame(
    preset_name: str, plan: str, remote_segments: int | None = None, frame_size: tuple[int, int] | None = None
) -> int:
    """float32 bytes of the tensors that must cross between edge and workers for one frame.

    Default plan: each segment's valid tokens go out and come back, an (N, C) matrix each way.
    Offload plan (:mod:`pedsam.partitioner.offload`): a stage also sends the attention output of the
    block it finishes, (N, C), and returns the qkv of the block it starts, (N, 3C). With
    ``remote_segments``, only the first that many segments (stages) cross. ``N`` counts the
    windows that hold picture of a frame of ``frame_size`` ``(H, W)`` pixels (default a square
    one, every window): windows of pure padding stay on the edge.
    """
    from pedsam.partitioner.geometry import WindowGrid
    from pedsam.partitioner.offload import offload_stages
    from pedsam.partitioner.plan import model_plan

    preset = PRESETS[preset_name]
    grid = WindowGrid.for_encoder(preset.img_size, preset.patch_size, preset.window_size)
    if frame_size is None:
        tokens = preset.grid_size**2
    else:
        height, width = frame_size
        scale = preset.img_size / max(height, width)  # SAM's ResizeLongestSide, in tokens
        content = (-(-int(height * scale + 0.5) // preset.patch_size), -(-int(width * scale + 0.5) // preset.patch_size))
        tokens = sum(grid.window(w).num_tokens for w in grid.picture_windows(content))
    matrix = tokens * preset.embed_dim * 4  # one (N, C) float32 over the windows that leave the edge
    model = model_plan(preset.depth, preset.global_attn_indexes)
    count = len(model.remote_segments(remote_segments))
    if plan == "default":
        return 2 * count * matrix
    total = 0
    for stage in offload_stages(model)[:count]:
        total += matrix * (1 + (stage.finish is not None))  # tokens (+ mixed) out
        total += matrix * (1 + 3 * (stage.start is not None))  # tokens (+ qkv) back
    return total


Encode = Callable[[int], Awaitable[torch.Tensor]]


async def _measure(
    spec: ModeSpec, settings: BenchSettings, encode: Encode, wire: Callable[[], int] | None = None
) -> tuple[ModeRecord, torch.Tensor]:
    """Encode warm-up and measured frames; ``wire`` gives the bytes moved so far, if any. A frame
    ends when its embedding is computed, on the device too."""
    from pedsam.workers.device import select

    placement = select(settings.device)
    walls: list[float] = []
    cpus: list[float] = []
    embedding = torch.empty(0)
    moved = 0
    load_start = 0.0
    for i in range(settings.warmup + settings.frames):
        if i == settings.warmup:
            moved = wire() if wire is not None else 0
            load_start = os.getloadavg()[0]
        wall, cpu = time.perf_counter(), time.process_time()
        embedding = await encode(i)
        placement.synchronize()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if i >= settings.warmup:
            walls.append(wall)
            cpus.append(cpu)
    record = ModeRecord(
        name=spec.name, kind=spec.kind, workers=spec.workers, codec=spec.codec, plan=spec.plan,
        remote_segments=spec.remote_segments,
        device=settings.device, torch_threads=torch.get_num_threads(), wall_s=walls, cpu_s=cpus,
        peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        load_average=(round(load_start, 2), round(os.getloadavg()[0], 2)),
    )
    if wire is not None:
        record.wire_bytes_per_frame = (wire() - moved) / settings.frames
        record.raw_bytes_per_frame = raw_bytes_per_frame(settings.model, spec.plan, spec.remote_segments,
                                                         frame_size=settings.frame_size)
    return record, embedding


async def measure_mode(spec: ModeSpec, settings: BenchSettings) -> tuple[ModeRecord, torch.Tensor]:
    """Measure ``spec`` in this process; returns its record and its last embedding."""
    from pedsam.partitioner.assignment import EDGE, Assignment
    from pedsam.stream.core.encoder import SplitEncoder
    from pedsam.stream.core.executors import LocalExecutor
    from pedsam.stream.core.memory import release_large_blocks
    from pedsam.stream.core.predictor import prepare_image
    from pedsam.workers.device import select
    from pedsam.workers.segment import SegmentRunner

    torch.set_num_threads(settings.edge_threads)
    placement = select(settings.device)
    source = ModelSource(preset=settings.model, seed=settings.seed)
    preset = PRESETS[settings.model]
    height, width = settings.frame_size or (preset.img_size, preset.img_size)
    image = bench_image(height, seed=settings.seed, width=width)
    if spec.kind == "split":
        return await _measure_split(spec, settings, source, image)
    sam = source.build().to(placement.device)
    prepared = prepare_image(sam, image)
    if spec.kind == "stock":

        async def stock(i: int) -> torch.Tensor:
            with torch.inference_mode():
                out: torch.Tensor = sam.image_encoder(prepared.tensor)
            return out

        return await _measure(spec, settings, stock)
    if spec.kind != "local":
        raise ValueError(f"unknown bench mode kind {spec.kind!r}")
    release_large_blocks()  # as an edge session does (stock stays untouched)

    with ThreadPoolExecutor(1, thread_name_prefix="edge") as pool:
        executor = LocalExecutor(SegmentRunner(sam, preset, placement), pool)
        encoder = SplitEncoder(sam, preset, {EDGE: executor}, pool, placement=placement)
        everything = tuple(range(encoder.grid.num_windows))

        async def local(i: int) -> torch.Tensor:
            embedding, _ = await encoder.encode(i, prepared.tensor, Assignment(frame_index=i, shares={EDGE: everything}))
            return embedding

        return await _measure(spec, settings, local)


async def _measure_split(
    spec: ModeSpec, settings: BenchSettings, source: ModelSource, image: np.ndarray
) -> tuple[ModeRecord, torch.Tensor]:
    from pedsam.stream.core.predictor import prepare_image
    from pedsam.stream.core.session import EdgeConfig, EdgeSession
    from pedsam.stream.fleet.remote import RemoteWorker

    config = EdgeConfig(
        model=source,
        local_workers=spec.workers,
        scheme=settings.scheme,
        codec=spec.codec,
        plan=spec.plan,
        remote_segments=spec.remote_segments,
        worker_threads=settings.worker_threads,
        edge_threads=settings.edge_threads,
        device=settings.device,
    )
    async with EdgeSession(config) as session:
        prepared = prepare_image(session.sam, image)
        remotes = [e for e in session.encoder.executors.values() if isinstance(e, RemoteWorker)]

        def wire() -> int:
            return sum(
                r.stats.message_sent + r.stats.message_received + 2 * GRPC_PREFIX_BYTES * r.stats.requests
                for r in remotes
            )

        async def split(i: int) -> torch.Tensor:
            return (await session.embed_prepared(prepared, frame_index=i)).tensor

        return await _measure(spec, settings, split, wire)


def main(argv: Sequence[str]) -> int:
    """``SPEC_JSON SETTINGS_JSON OUT_DIR [STEM]``: write ``OUT_DIR/STEM.json`` and ``.npy``
    (``STEM`` defaults to the mode's name)."""
    spec = ModeSpec(**json.loads(argv[0]))
    fields = json.loads(argv[1])
    if fields.get("frame_size") is not None:
        fields["frame_size"] = tuple(fields["frame_size"])
    settings = BenchSettings(**fields)
    out_dir = Path(argv[2])
    stem = argv[3] if len(argv) > 3 else spec.name
    record, embedding = asyncio.run(measure_mode(spec, settings))
    np.save(out_dir / f"{stem}.npy", embedding.cpu().numpy())
    (out_dir / f"{stem}.json").write_text(json.dumps(asdict(record)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
