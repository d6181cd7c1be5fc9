"""``pedsam bench-entropy``: what lossless compression after the wire codec gains on SAM's tokens.

The tensors measured are the ones pedsam sends, taken from real footage (``vtest.avi`` and
``tree.avi``, which ``python samples/fetch_media.py vtest.avi tree.avi`` fetches), never noise:
each frame is encoded by the split encoder with every window computed on the edge in two shares,
as two workers would get them, and every message a worker would exchange is recorded:

- ``first``: the first segment's request tokens (the patch embedding, no global block yet);
- ``later``: the later segments' request tokens (after global blocks);
- ``results``: every segment's result tokens, as the edge asks for them: whole in fp32, residuals
  (what the blocks added) in fp16 and int8.

Each is encoded in each codec (fp32, fp16, int8; int8's per-token scales are not compressed and
not counted) and its ``data`` bytes compressed, one message at a time, by each method:

- ``zstd1``: zstd level 1 on the codec's bytes as they are;
- ``zstd1+planes``, ``zstd3+planes``: zstd on the bytes regrouped by byte plane
  (:func:`pedsam.workers.entropy.to_planes`); ``zstd1+planes`` is what pedsam sends
  (``COMPRESSION_ZSTD_PLANES`` at :data:`pedsam.workers.entropy.LEVEL`);
- ``lz4+planes``: lz4's frame format on byte planes, measured only when the ``lz4`` package is
  installed (pedsam does not depend on it).

Reported: the compression ratio (bytes before / after) per model, footage, codec and tensors;
and per model, codec and method, the speed of one core compressing and decompressing (MB of
uncompressed bytes per second, byte planes included; the best of ``--repeat`` timings), the CPU
it costs per MB, and the link rate below which it pays: compressing on one side and
decompressing on the other take less time than the bytes saved take to cross (decimal MB and
Mbit/s throughout). Models: ViT-B shape and the tiny preset, seeded random weights.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zstandard

from pedsam.partitioner.assignment import EDGE, Assignment
from pedsam.partitioner.offload import OffloadStage
from pedsam.protos import pedsam_pb2 as pb
from pedsam.stream.core.encoder import SplitEncoder
from pedsam.stream.core.executors import LocalExecutor, SegmentExecutor
from pedsam.stream.core.predictor import prepare_image
from pedsam.stream.errors import ConfigError, MediaError
from pedsam.stream.media.video import read_frames
from pedsam.workers import codec as wire
from pedsam.workers import entropy
from pedsam.workers.models import ModelSource
from pedsam.workers.presets import DEFAULT_SEED, PRESETS
from pedsam.workers.segment import Extent, SegmentRunner

__all__ = ["EntropyBench", "Method", "methods", "run"]

KINDS = ("first", "later", "results")
CHOSEN = f"zstd{entropy.LEVEL}+planes"
"""The method pedsam's ``COMPRESSION_ZSTD_PLANES`` is."""


@dataclass(frozen=True, kw_only=True, slots=True)
class EntropyBench:
    """The settings of one ``pedsam bench-entropy`` run (see the command's --help)."""

    videos: str = "samples/media/vtest.avi,samples/media/tree.avi"
    models: str = "vit_b,tiny"
    frames: int = 2
    step: int = 50
    seed: int = DEFAULT_SEED
    repeat: int = 3
    json: str | None = None

    @classmethod
    def of(cls, values: Mapping[str, Any]) -> EntropyBench:
        return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})


@dataclass(frozen=True, slots=True)
class Method:
    """A lossless method: ``pack(data, item_bytes)`` and ``unpack(packed, item_bytes, size)``."""

    name: str
    pack: Callable[[bytes, int], bytes]
    unpack: Callable[[bytes, int, int], bytes]


def _zstd(level: int, planes: bool) -> Method:
    def pack(data: bytes, item: int) -> bytes:
        return zstandard.ZstdCompressor(level=level).compress(entropy.to_planes(data, item) if planes else data)

    def unpack(packed: bytes, item: int, size: int) -> bytes:
        raw = zstandard.ZstdDecompressor().decompress(packed, max_output_size=size)
        return entropy.from_planes(raw, item) if planes else raw

    return Method(f"zstd{level}{'+planes' if planes else ''}", pack, unpack)


def methods() -> list[Method]:
    """The methods measured, pedsam's own (:data:`CHOSEN`) among them; lz4 when it is installed."""
    found = [_zstd(1, False), _zstd(entropy.LEVEL, True), _zstd(3, True)]
    try:
        lz4: Any = importlib.import_module("lz4.frame")
    except ImportError:
        return found

    def pack(data: bytes, item: int) -> bytes:
        return bytes(lz4.compress(entropy.to_planes(data, item)))

    def unpack(packed: bytes, item: int, size: int) -> bytes:
        return entropy.from_planes(bytes(lz4.decompress(packed)), item)

    return [*found, Method("lz4+planes", pack, unpack)]


class _Recorder:
    """An executor that computes on the edge and keeps what a worker would have been sent and
    would have answered: (segment, request tokens, result tokens), each (N, C) float32."""

    def __init__(self, inner: LocalExecutor, name: str, log: list[tuple[int, torch.Tensor, torch.Tensor]]) -> None:
        self._inner = inner
        self._name = name
        self._log = log

    @property
    def name(self) -> str:
        return self._name

    async def run(self, frame_id: int, segment: int, tokens: torch.Tensor, extents: Sequence[Extent]) -> torch.Tensor:
        out = await self._inner.run(frame_id, segment, tokens, extents)
        self._log.append((segment, tokens, out))
        return out

    async def run_stage(
        self, frame_id: int, stage: OffloadStage, tokens: torch.Tensor, mixed: torch.Tensor | None,
        extents: Sequence[Extent],
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError("the entropy bench measures the default plan")

    async def close(self) -> None:
        return None


Exchange = list[tuple[int, torch.Tensor, torch.Tensor]]


def recording_encoder(sam: Any, model: str, pool: ThreadPoolExecutor) -> tuple[SplitEncoder, Exchange]:
    """A split encoder whose two "workers" ``a`` and ``b`` compute on the edge and log what they
    exchange: (segment, request tokens, result tokens), in the order computed."""
    preset = PRESETS[model]
    local = LocalExecutor(SegmentRunner(sam, preset), pool)
    log: Exchange = []
    executors: dict[str, SegmentExecutor] = {EDGE: local, "a": _Recorder(local, "a", log),
                                             "b": _Recorder(local, "b", log)}
    return SplitEncoder(sam, preset, executors, pool), log


async def exchanged(encoder: SplitEncoder, log: Exchange, image: torch.Tensor) -> Exchange:
    """What ``a`` and ``b`` of :func:`recording_encoder` exchange for ``image`` ((1, 3, S, S)
    float32, preprocessed), each getting half of the frame's windows."""
    log.clear()
    windows = encoder.grid.num_windows
    half = (windows + 1) // 2
    await encoder.encode(0, image, Assignment(frame_index=0, shares={"a": tuple(range(half)), "b": tuple(range(half, windows))}))
    return list(log)


def payloads(log: Sequence[tuple[int, torch.Tensor, torch.Tensor]], codec: pb.Codec) -> dict[str, list[bytes]]:
    """Per kind of tensor, the ``data`` bytes of each message in ``codec`` (see the module docstring)."""
    out: dict[str, list[bytes]] = {kind: [] for kind in KINDS}
    for segment, sent, result in log:
        out["first" if segment == 0 else "later"].append(wire.encode(sent, codec).data)
        answer = result - sent if codec in wire.LOSSY else result
        out["results"].append(wire.encode(answer, codec).data)
    return out


@dataclass
class Tally:
    """Bytes and best seconds of one method on a set of messages."""

    raw: int = 0
    packed: int = 0
    pack_s: float = 0.0
    unpack_s: float = 0.0

    def add(self, other: Tally) -> None:
        self.raw += other.raw
        self.packed += other.packed
        self.pack_s += other.pack_s
        self.unpack_s += other.unpack_s


def measure(method: Method, messages: Sequence[bytes], item: int, repeat: int) -> Tally:
    """``method`` on every message: bytes, and the best of ``repeat`` timings each way; every
    message must come back exactly."""
    tally = Tally(raw=sum(len(m) for m in messages))
    best_pack = best_unpack = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        packed = [method.pack(m, item) for m in messages]
        best_pack = min(best_pack, time.perf_counter() - started)
        started = time.perf_counter()
        back = [method.unpack(p, item, len(m)) for p, m in zip(packed, messages)]
        best_unpack = min(best_unpack, time.perf_counter() - started)
        if back != list(messages):
            raise AssertionError(f"{method.name} did not give the bytes back")
    tally.packed = sum(len(p) for p in packed)
    tally.pack_s, tally.unpack_s = best_pack, best_unpack
    return tally


def _frames(path: str, count: int, step: int) -> Iterator[tuple[int, np.ndarray]]:
    wanted = {i * step for i in range(count)}
    for frame in read_frames(path):
        if frame.index in wanted:
            yield frame.index, frame.image
            wanted.discard(frame.index)
        if not wanted:
            return
    if wanted:
        raise MediaError(f"{path} has no frame {min(wanted)}; use fewer --frames or a smaller --step")


def _names(text: str, option: str, allowed: Sequence[str] | None = None) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names or (allowed is not None and any(n not in allowed for n in names)):
        choices = f"some of {', '.join(allowed)}" if allowed is not None else "names"
        raise ConfigError(f"{option} takes {choices}, comma-separated; got {text!r}")
    return names


@dataclass
class Results:
    """Tallies by (model, footage, codec, kind, method)."""

    tallies: dict[tuple[str, str, str, str, str], Tally] = field(default_factory=dict)
    frames: dict[tuple[str, str], list[int]] = field(default_factory=dict)

    def total(self, **match: str) -> Tally:
        keys = ("model", "footage", "codec", "kind", "method")
        out = Tally()
        for key, tally in self.tallies.items():
            if all(key[keys.index(k)] == v for k, v in match.items()):
                out.add(tally)
        return out


async def collect(args: EntropyBench, videos: list[str], models: list[str], chosen: list[Method]) -> Results:
    """Encode the frames of every video with every model and measure every method."""
    results = Results()
    for model in models:
        sam = ModelSource(preset=model, seed=args.seed).build()
        with ThreadPoolExecutor(1, thread_name_prefix="edge") as pool:
            encoder, exchange = recording_encoder(sam, model, pool)
            for video in videos:
                footage = Path(video).name
                for index, image in _frames(video, args.frames, args.step):
                    print(f"bench-entropy: {model} {footage} frame {index}", file=sys.stderr, flush=True)
                    log = await exchanged(encoder, exchange, prepare_image(sam, image).tensor)
                    results.frames.setdefault((model, footage), []).append(index)
                    for codec_name, codec in wire.CODECS.items():
                        item = wire.item_bytes(codec)
                        for kind, messages in payloads(log, codec).items():
                            for method in chosen:
                                key = (model, footage, codec_name, kind, method.name)
                                results.tallies.setdefault(key, Tally()).add(
                                    await asyncio.to_thread(measure, method, messages, item, args.repeat))
    return results


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    everything = [tuple(head), tuple("---" for _ in head), *map(tuple, rows)]
    widths = [max(len(r[i]) for r in everything) for i in range(len(head))]
    return "\n".join("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in everything)


def break_even_mbit(tally: Tally) -> float:
    """Link rate (Mbit/s) below which ``tally``'s method pays: the seconds the saved bytes take to
    cross exceed the seconds spent compressing and decompressing them."""
    saved = 1 - tally.packed / tally.raw
    cpu_per_byte = (tally.pack_s + tally.unpack_s) / tally.raw
    return saved / cpu_per_byte * 8 / 1e6 if cpu_per_byte > 0 else float("inf")


def report(results: Results, models: list[str], footages: list[str], chosen: list[Method]) -> dict[str, Any]:
    """The two tables (ratios; speed and break-even), as markdown, with their rows as JSON."""
    names = [m.name for m in chosen]
    ratio_rows: list[list[str]] = []
    ratios: list[dict[str, Any]] = []
    for model in models:
        for footage in footages:
            for codec in wire.CODECS:
                for kind in KINDS:
                    tallies = {n: results.total(model=model, footage=footage, codec=codec, kind=kind, method=n)
                               for n in names}
                    raw = tallies[names[0]].raw
                    row = {n: t.raw / t.packed for n, t in tallies.items()}
                    ratios.append({"model": model, "footage": footage, "codec": codec, "tensors": kind,
                                   "mb": raw / 1e6, "ratio": row})
                    ratio_rows.append([model, footage, codec, kind, f"{raw / 1e6:.2f}",
                                       *(f"{row[n]:.3f}" for n in names)])
    speed_rows: list[list[str]] = []
    speeds: list[dict[str, Any]] = []
    for model in models:
        for codec in wire.CODECS:
            for name in names:
                t = results.total(model=model, codec=codec, method=name)
                entry = {"model": model, "codec": codec, "method": name, "ratio": t.raw / t.packed,
                         "compress_mb_s": t.raw / t.pack_s / 1e6, "decompress_mb_s": t.raw / t.unpack_s / 1e6,
                         "cpu_ms_per_mb": (t.pack_s + t.unpack_s) / t.raw * 1e9,
                         "break_even_mbit_s": break_even_mbit(t)}
                speeds.append(entry)
                speed_rows.append([model, codec, name, f"{entry['ratio']:.3f}", f"{entry['compress_mb_s']:.0f}",
                                   f"{entry['decompress_mb_s']:.0f}", f"{entry['cpu_ms_per_mb']:.2f}",
                                   f"{entry['break_even_mbit_s']:.0f}"])
    per_frame: list[dict[str, Any]] = []
    for model in models:
        frames = sum(len(v) for (m, _), v in results.frames.items() if m == model)
        for codec in wire.CODECS:
            t = results.total(model=model, codec=codec, method=CHOSEN)
            per_frame.append({"model": model, "codec": codec, "raw_mb": t.raw / frames / 1e6,
                              "packed_mb": t.packed / frames / 1e6})
    return {
        "ratios": ratios,
        "speeds": speeds,
        "per_frame": per_frame,
        "ratio_table": _table(["model", "footage", "codec", "tensors", "MB, all frames", *names], ratio_rows),
        "speed_table": _table(["model", "codec", "method", "ratio", "compress MB/s", "decompress MB/s",
                               "CPU ms/MB", "pays below Mbit/s"], speed_rows),
    }


async def run(args: EntropyBench) -> int:
    videos = _names(args.videos, "--videos")
    models = _names(args.models, "--models", sorted(PRESETS))
    if args.frames < 1 or args.step < 1 or args.repeat < 1:
        raise ConfigError("--frames, --step and --repeat must be at least 1")
    missing = [v for v in videos if not Path(v).is_file()]
    if missing:
        raise ConfigError(f"no such video: {', '.join(missing)}; fetch Debian's clips with "
                          "python samples/fetch_media.py vtest.avi tree.avi")
    chosen = methods()
    results = await collect(args, videos, models, chosen)
    footages = [Path(v).name for v in videos]
    out = report(results, models, footages, chosen)
    print("compression ratio (bytes before / after) of the data bytes of each message:\n")
    print(out["ratio_table"])
    print("\none core, all tensors of a model and codec; MB/s of uncompressed bytes, best of "
          f"{args.repeat}; pays below: the link rate under which the bytes saved take longer to cross "
          "than compressing and decompressing them:\n")
    print(out["speed_table"])
    print(f"\npedsam's COMPRESSION_ZSTD_PLANES is {CHOSEN}; per frame (both ways, all segments, 2 workers):")
    for row in out["per_frame"]:
        print(f"  {row['model']} {row['codec']}: {row['raw_mb']:.2f} MB -> {row['packed_mb']:.2f} MB")
    frames = ", ".join(f"{m} {f}: frames {v}" for (m, f), v in results.frames.items())
    print(f"\n({frames}; seeded random weights, seed {args.seed})")
    if args.json:
        document = {"settings": {f.name: getattr(args, f.name) for f in fields(args)},
                    "methods": [m.name for m in chosen], "chosen": CHOSEN,
                    "frames": {f"{m}/{f}": v for (m, f), v in results.frames.items()},
                    **{k: v for k, v in out.items() if not k.endswith("_table")}}
        try:
            Path(args.json).write_text(json.dumps(document, indent=2))
        except OSError as exc:
            raise ConfigError(f"cannot write {args.json!r}: {exc}") from None
        print(f"figures -> {args.json}")
    return 0
