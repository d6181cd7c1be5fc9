"""``pedsam bench``: stock SAM, pedsam's kernels and the split, measured in one run.

Every mode encodes the same image (a seeded synthetic 1024x1024 scene for SAM-sized presets)
with the same seeded weights, ``--warmup`` frames and then ``--frames`` measured frames, and
runs in a child process of its own so that its peak resident memory is its own:

- ``stock``: ``segment_anything``'s ``image_encoder``, untouched, in the child;
- ``local``: pedsam's split encoder with every window computed in the child (pedsam's kernels,
  no network);
- ``split-K``: the child is the edge; K workers run on loopback as its own child processes.

Reported per mode, as medians over the measured frames: wall seconds per frame; the child's
own CPU seconds per frame (every thread of the edge process, none of its workers'); its peak
resident memory; the bytes of the gRPC messages it sent and received per frame against the raw
float32 bytes of the tokens that must cross (``wire / raw``); and the max-abs error of its
embedding against stock's, relative to stock's max abs value. Ratios are to ``stock`` from the
same run. The table goes to stdout, everything (with machine, load and settings) to ``--json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from partitioner.offload import PLANS
from workers.codec import CODECS
from workers.models import DEFAULT_SEED, PRESETS, ModelSource

from .errors import ConfigError

GRPC_PREFIX_BYTES = 5  # gRPC's length prefix on every message


@dataclass(frozen=True, kw_only=True, slots=True)
class ModeSpec:
    """One mode to measure; serialised to the child process as JSON."""

    name: str
    kind: str  # "stock" | "local" | "split"
    workers: int = 0
    codec: str = "fp32"
    plan: str = "default"


@dataclass(frozen=True, kw_only=True, slots=True)
class BenchSettings:
    model: str
    seed: int
    frames: int
    warmup: int
    scheme: str
    edge_threads: int
    worker_threads: int


@dataclass(kw_only=True)
class ModeResult:
    """What one child measured. Seconds, bytes; lists are per measured frame."""

    name: str
    kind: str
    workers: int
    codec: str
    plan: str
    torch_threads: int
    wall_s: list[float]
    cpu_s: list[float]
    peak_rss_bytes: int
    wire_bytes_per_frame: float | None = None
    raw_bytes_per_frame: float | None = None
    relative_error: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def wall(self) -> float:
        return statistics.median(self.wall_s)

    @property
    def cpu(self) -> float:
        return statistics.median(self.cpu_s)


def bench_image(size: int, seed: int = 0) -> np.ndarray:
    """A (size, size, 3) uint8 RGB scene: smooth gradients, discs and boxes, and sensor noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / max(1, size - 1)
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


# ---------------------------------------------------------------------------------------------
# child: one mode, in a process of its own


def _measure(frames: int, warmup: int, encode: Any) -> tuple[list[float], list[float], torch.Tensor]:
    walls: list[float] = []
    cpus: list[float] = []
    embedding = torch.empty(0)
    for i in range(warmup + frames):
        wall, cpu = time.perf_counter(), time.process_time()
        embedding = encode()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if i >= warmup:
            walls.append(wall)
            cpus.append(cpu)
    return walls, cpus, embedding


async def _measure_async(frames: int, warmup: int, encode: Any, on_warm: Any = None) -> tuple[list[float], list[float], torch.Tensor]:
    walls: list[float] = []
    cpus: list[float] = []
    embedding = torch.empty(0)
    for i in range(warmup + frames):
        if i == warmup and on_warm is not None:
            on_warm()
        wall, cpu = time.perf_counter(), time.process_time()
        embedding = await encode(i)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if i >= warmup:
            walls.append(wall)
            cpus.append(cpu)
    return walls, cpus, embedding


def raw_bytes_per_frame(preset_name: str, plan: str) -> int:
    """float32 bytes of the tensors that must cross between edge and workers for one frame.

    Default plan: each segment's valid tokens go out and come back, an (N, C) matrix each way.
    Offload plan (:mod:`partitioner.offload`): a stage also sends the attention output of the
    block it finishes, (N, C), and returns the qkv of the block it starts, (N, 3C).
    """
    from partitioner.offload import offload_stages
    from partitioner.plan import model_plan

    preset = PRESETS[preset_name]
    matrix = preset.grid_size**2 * preset.embed_dim * 4  # one (N, C) float32 over all windows
    model = model_plan(preset.depth, preset.global_attn_indexes)
    if plan == "default":
        return 2 * model.num_segments * matrix
    total = 0
    for stage in offload_stages(model):
        total += matrix * (1 + (stage.finish is not None))  # tokens (+ mixed) out
        total += matrix * (1 + 3 * (stage.start is not None))  # tokens (+ qkv) back
    return total


async def _split_mode(spec: ModeSpec, settings: BenchSettings, image: np.ndarray) -> ModeResult:
    from .predictor import prepare_image
    from .remote import RemoteWorker
    from .session import EdgeConfig, EdgeSession

    source = ModelSource(preset=settings.model, seed=settings.seed)
    config = EdgeConfig(
        model=source,
        local_workers=spec.workers,
        scheme=settings.scheme,
        codec=spec.codec,
        worker_threads=settings.worker_threads,
        edge_threads=settings.edge_threads,
        plan=spec.plan,
    )
    async with EdgeSession(config) as session:
        prepared = prepare_image(session.sam, image)
        remotes = [e for e in session.encoder.executors.values() if isinstance(e, RemoteWorker)]

        def wire_total() -> int:
            return sum(
                r.stats.message_sent + r.stats.message_received + GRPC_PREFIX_BYTES * 2 * r.stats.requests
                for r in remotes
            )

        start_bytes = 0

        def on_warm() -> None:
            nonlocal start_bytes
            start_bytes = wire_total()

        async def encode(i: int) -> torch.Tensor:
            embedding = await session.embed_prepared(prepared, frame_index=i)
            return embedding.tensor

        walls, cpus, embedding = await _measure_async(settings.frames, settings.warmup, encode, on_warm)
        wire = (wire_total() - start_bytes) / settings.frames
    result = ModeResult(
        name=spec.name, kind=spec.kind, workers=spec.workers, codec=spec.codec, plan=spec.plan,
        torch_threads=torch.get_num_threads(), wall_s=walls, cpu_s=cpus, peak_rss_bytes=0,
        wire_bytes_per_frame=wire, raw_bytes_per_frame=raw_bytes_per_frame(settings.model, spec.plan),
    )
    result.extra["embedding"] = embedding
    return result


async def _local_mode(spec: ModeSpec, settings: BenchSettings, sam: Any, prepared: Any) -> ModeResult:
    from partitioner.assignment import EDGE, Assignment
    from partitioner.geometry import WindowGrid
    from workers.models import get_preset
    from workers.segment import SegmentRunner

    from .encoder import SplitEncoder
    from .executors import LocalExecutor

    preset = get_preset(settings.model)
    windows = tuple(range(WindowGrid.for_encoder(preset.img_size, preset.patch_size, preset.window_size).num_windows))

    class EdgeOnly:
        def assign(self, frame_index: int) -> Assignment:
            return Assignment(frame_index=frame_index, shares={EDGE: windows})

    with ThreadPoolExecutor(1, thread_name_prefix="edge") as pool:
        executor = LocalExecutor(SegmentRunner(sam, preset), pool)
        encoder = SplitEncoder(sam, preset, {EDGE: executor}, EdgeOnly(), pool)

        async def encode(i: int) -> torch.Tensor:
            embedding, _ = await encoder.encode(i, prepared.tensor)
            return embedding

        walls, cpus, embedding = await _measure_async(settings.frames, settings.warmup, encode)
    result = ModeResult(
        name=spec.name, kind=spec.kind, workers=0, codec="-", plan="-",
        torch_threads=torch.get_num_threads(), wall_s=walls, cpu_s=cpus, peak_rss_bytes=0,
    )
    result.extra["embedding"] = embedding
    return result


def run_child(spec: ModeSpec, settings: BenchSettings, out_dir: Path) -> dict[str, Any]:
    """Measure one mode in this process; write its embedding to ``out_dir``; return the record."""
    from .predictor import prepare_image

    torch.set_num_threads(settings.edge_threads)
    source = ModelSource(preset=settings.model, seed=settings.seed)
    preset = PRESETS[settings.model]
    image = bench_image(preset.img_size, seed=settings.seed)
    if spec.kind == "stock":
        sam = source.build()
        prepared = prepare_image(sam, image)
        encoder = sam.image_encoder

        def encode() -> torch.Tensor:
            with torch.inference_mode():
                out: torch.Tensor = encoder(prepared.tensor)
            return out

        walls, cpus, embedding = _measure(settings.frames, settings.warmup, encode)
        result = ModeResult(
            name=spec.name, kind=spec.kind, workers=0, codec="-", plan="-",
            torch_threads=torch.get_num_threads(), wall_s=walls, cpu_s=cpus, peak_rss_bytes=0,
        )
        result.extra["embedding"] = embedding
    elif spec.kind == "local":
        sam = source.build()
        prepared = prepare_image(sam, image)
        result = asyncio.run(_local_mode(spec, settings, sam, prepared))
    elif spec.kind == "split":
        result = asyncio.run(_split_mode(spec, settings, image))
    else:
        raise ConfigError(f"unknown bench mode kind {spec.kind!r}")
    embedding = result.extra.pop("embedding")
    np.save(out_dir / f"{spec.name}.npy", embedding.numpy())
    result.peak_rss_bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return asdict(result)


def _child_main(argv: Sequence[str]) -> int:
    """``python -m stream.bench SPEC_JSON SETTINGS_JSON OUT_DIR``: one mode, record to OUT_DIR."""
    spec = ModeSpec(**json.loads(argv[0]))
    settings = BenchSettings(**json.loads(argv[1]))
    out_dir = Path(argv[2])
    record = run_child(spec, settings, out_dir)
    (out_dir / f"{spec.name}.json").write_text(json.dumps(record))
    return 0


# ---------------------------------------------------------------------------------------------
# parent: one child per mode, then ratios, table and JSON

TARGETS = {
    "split_wall_vs_stock": 0.70,
    "split_wall_vs_local": 1.08,
    "edge_cpu_vs_stock": 0.35,
    "edge_rss_vs_stock": 0.5,
    "wire_vs_raw_fp32": 1.01,
}
ERROR_BOUNDS = {"fp32": 1e-4, "fp16": 1e-3, "int8": 1e-2}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="vit_b", choices=sorted(PRESETS), help="model preset (default vit_b)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the random weights and image")
    parser.add_argument("--frames", type=int, default=3, help="measured frames per mode (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured frames first (default 1)")
    parser.add_argument("--workers", default="2,3", metavar="K,...", help="split modes: worker counts (default 2,3)")
    parser.add_argument("--codecs", default="fp32,fp16,int8", metavar="C,...",
                        help="wire codecs, each measured with the first worker count (default fp32,fp16,int8)")
    parser.add_argument("--plans", default="default,offload", metavar="P,...",
                        help="execution plans, each measured with the first worker count (default default,offload)")
    parser.add_argument("--scheme", default="interleaved", help="partition scheme (default interleaved: "
                        "the most even split of valid tokens)")
    parser.add_argument("--edge-threads", type=int, default=os.cpu_count() or 1,
                        help="torch threads of stock, local and the edge (default: all cores)")
    parser.add_argument("--worker-threads", type=int, default=1, help="torch threads per worker (default 1)")
    parser.add_argument("--json", metavar="OUT.json", help="write every figure here")


def _int_list(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{what} must be comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise ConfigError(f"{what} must list at least one integer >= 1, got {text!r}")
    return values


def plan_modes(args: argparse.Namespace) -> list[ModeSpec]:
    """The modes of one run, in the order they are measured."""
    from partitioner.schemes import SCHEMES

    if args.frames < 1 or args.warmup < 0:
        raise ConfigError("--frames must be at least 1 and --warmup at least 0")
    if args.scheme not in SCHEMES:
        raise ConfigError(f"unknown scheme {args.scheme!r}; choose one of {', '.join(SCHEMES)}")
    counts = _int_list(args.workers, "--workers")
    if any(k < 2 for k in counts):
        raise ConfigError("--workers counts must be at least 2 (one worker would see whole frames)")
    codecs = [c.strip() for c in args.codecs.split(",") if c.strip()]
    unknown = [c for c in codecs if c not in CODECS]
    if unknown or not codecs:
        raise ConfigError(f"--codecs takes some of {', '.join(CODECS)}, got {args.codecs!r}")
    plans = [p.strip() for p in args.plans.split(",") if p.strip()]
    if not plans or any(p not in PLANS for p in plans):
        raise ConfigError(f"--plans takes some of {', '.join(PLANS)}, got {args.plans!r}")
    modes = [ModeSpec(name="stock", kind="stock"), ModeSpec(name="local", kind="local")]
    first = counts[0]
    if "default" in plans:
        for k in counts:
            modes.append(ModeSpec(name=f"split-{k}", kind="split", workers=k))
    for codec in codecs:
        if codec != "fp32":
            modes.append(ModeSpec(name=f"split-{first}-{codec}", kind="split", workers=first, codec=codec))
    for plan in plans:
        if plan != "default":
            modes.append(ModeSpec(name=f"split-{first}-{plan}", kind="split", workers=first, plan=plan))
    return modes


async def _run_mode(spec: ModeSpec, settings: BenchSettings, out_dir: Path) -> dict[str, Any]:
    from .errors import PedsamError

    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "stream.bench",
        json.dumps(asdict(spec)), json.dumps(asdict(settings)), str(out_dir),
        stdin=asyncio.subprocess.DEVNULL,
    )
    try:
        code = await process.wait()
    except BaseException:
        if process.returncode is None:
            process.kill()
            await process.wait()
        raise
    record_file = out_dir / f"{spec.name}.json"
    if code != 0 or not record_file.exists():
        raise PedsamError(f"bench mode {spec.name} failed (exit status {code})")
    record: dict[str, Any] = json.loads(record_file.read_text())
    return record


def _machine() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def summarise(records: list[dict[str, Any]], out_dir: Path) -> list[dict[str, Any]]:
    """Add medians, ratios to stock and embedding errors to each mode's record."""
    by_name = {r["name"]: r for r in records}
    stock, local = by_name["stock"], by_name.get("local")
    want = np.load(out_dir / "stock.npy")
    scale = float(np.abs(want).max())
    stock_wall = statistics.median(stock["wall_s"])
    stock_cpu = statistics.median(stock["cpu_s"])
    for r in records:
        got = np.load(out_dir / f"{r['name']}.npy")
        r["relative_error"] = float(np.abs(got - want).max() / scale) if scale else 0.0
        r["wall_median_s"] = statistics.median(r["wall_s"])
        r["cpu_median_s"] = statistics.median(r["cpu_s"])
        r["wall_vs_stock"] = r["wall_median_s"] / stock_wall
        r["cpu_vs_stock"] = r["cpu_median_s"] / stock_cpu
        r["rss_vs_stock"] = r["peak_rss_bytes"] / stock["peak_rss_bytes"]
        if local is not None and r["kind"] == "split":
            r["wall_vs_local"] = r["wall_median_s"] / statistics.median(local["wall_s"])
        if r.get("wire_bytes_per_frame") is not None and r.get("raw_bytes_per_frame"):
            r["wire_vs_raw"] = r["wire_bytes_per_frame"] / r["raw_bytes_per_frame"]
    for r in records:  # a plan other than the default, against the default with as many workers
        default = by_name.get(f"split-{r['workers']}")
        if r["kind"] == "split" and r["plan"] != "default" and default is not None:
            r["cpu_vs_default_plan"] = r["cpu_median_s"] / default["cpu_median_s"]
            r["wire_vs_default_plan"] = r["wire_bytes_per_frame"] / default["wire_bytes_per_frame"]
            r["wall_vs_default_plan"] = r["wall_median_s"] / default["wall_median_s"]
    return records


def check_targets(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each target of the performance issue against every mode it applies to."""
    checks: list[dict[str, Any]] = []

    def check(target: str, mode: str, value: float, bound: float) -> None:
        checks.append({"target": target, "mode": mode, "value": value, "bound": bound, "met": value <= bound})

    for r in records:
        if r["kind"] == "split" and r["codec"] == "fp32":
            check("split_wall_vs_stock", r["name"], r["wall_vs_stock"], TARGETS["split_wall_vs_stock"])
            if "wall_vs_local" in r:
                check("split_wall_vs_local", r["name"], r["wall_vs_local"], TARGETS["split_wall_vs_local"])
            check("edge_cpu_vs_stock", r["name"], r["cpu_vs_stock"], TARGETS["edge_cpu_vs_stock"])
            check("edge_rss_vs_stock", r["name"], r["rss_vs_stock"], TARGETS["edge_rss_vs_stock"])
            check("wire_vs_raw_fp32", r["name"], r["wire_vs_raw"], TARGETS["wire_vs_raw_fp32"])
        if r["kind"] != "stock":
            bound = ERROR_BOUNDS[r["codec"]] if r["codec"] in ERROR_BOUNDS else ERROR_BOUNDS["fp32"]
            check(f"error_{r['codec'] if r['codec'] in ERROR_BOUNDS else 'fp32'}", r["name"], r["relative_error"], bound)
    return checks


def format_table(records: list[dict[str, Any]]) -> str:
    """The per-mode table, as GitHub markdown (it reads as plain text too)."""
    head = ("mode", "wall s/frame", "x stock", "x local", "CPU s/frame", "x stock", "peak RSS MiB",
            "x stock", "wire MB/frame", "x raw", "rel. error")
    rows = [head, tuple("---" for _ in head)]
    for r in records:
        wire = r.get("wire_bytes_per_frame")
        rows.append((
            r["name"],
            f"{r['wall_median_s']:.3f}",
            f"{r['wall_vs_stock']:.2f}",
            f"{r['wall_vs_local']:.2f}" if "wall_vs_local" in r else "-",
            f"{r['cpu_median_s']:.3f}",
            f"{r['cpu_vs_stock']:.2f}",
            f"{r['peak_rss_bytes'] / 2**20:.0f}",
            f"{r['rss_vs_stock']:.2f}",
            f"{wire / 1e6:.2f}" if wire is not None else "-",
            f"{r['wire_vs_raw']:.4f}" if "wire_vs_raw" in r else "-",
            f"{r['relative_error']:.1e}",
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    return "\n".join("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in rows)


async def run(args: argparse.Namespace) -> int:
    modes = plan_modes(args)
    settings = BenchSettings(
        model=args.model, seed=args.seed, frames=args.frames, warmup=args.warmup, scheme=args.scheme,
        edge_threads=max(1, args.edge_threads), worker_threads=max(1, args.worker_threads),
    )
    started = time.time()
    load_before = os.getloadavg()
    records = []
    with tempfile.TemporaryDirectory(prefix="pedsam-bench-") as tmp:
        out_dir = Path(tmp)
        for spec in modes:
            print(f"bench: {spec.name} ({settings.model}, {settings.warmup}+{settings.frames} frames)...",
                  file=sys.stderr, flush=True)
            record = await _run_mode(spec, settings, out_dir)
            print(f"bench: {spec.name}: {statistics.median(record['wall_s']):.3f} s/frame", file=sys.stderr, flush=True)
            records.append(record)
        summarise(records, out_dir)
    checks = check_targets(records)
    machine = _machine()
    load_after = [round(v, 2) for v in os.getloadavg()]
    report: dict[str, Any] = {
        "model": settings.model,
        "weights": f"seeded random (seed {settings.seed})",
        "settings": asdict(settings),
        "machine": machine,
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": load_after,
        "seconds": round(time.time() - started, 1),
        "modes": records,
        "targets": checks,
    }
    print(format_table(records))
    print()
    for r in records:
        if "cpu_vs_default_plan" in r:
            print(f"{r['name']} against split-{r['workers']}: edge CPU x{r['cpu_vs_default_plan']:.2f}, "
                  f"wire bytes x{r['wire_vs_default_plan']:.2f}, wall x{r['wall_vs_default_plan']:.2f}")
    for c in checks:
        print(f"{'met' if c['met'] else 'NOT met'}: {c['target']} {c['mode']} = {c['value']:.3g} (bound {c['bound']:g})")
    print(f"\n{machine['cores']} cores ({machine['cpu']}), load average before {load_before[0]:.2f} "
          f"after {load_after[0]:.2f}; {settings.model}, seeded random weights")
    if args.json:
        try:
            Path(args.json).write_text(json.dumps(report, indent=2))
        except OSError as exc:
            raise ConfigError(f"cannot write {args.json!r}: {exc}") from None
        print(f"figures -> {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
