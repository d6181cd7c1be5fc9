"""``pedsam bench-keep-local``: what ``--keep-local`` costs the edge, per clip.

For each video, every ``--stride``-th frame (up to ``--max-frames``) goes through the edge's
sensitive-region tracker (:class:`~pedsam.stream.core.sensitive.SensitiveRegions`) exactly as a
run feeds it, and the windows it keeps are counted on the encoder grid of ``--model`` (ViT-B:
25 windows of 224 px at the 1024 px input). No model runs: what is kept depends only on the
frames, the detectors and the grid.

The frames are decoded first, so the CPU time measured around each frame's detection is the
detectors' alone, on every thread of the process (OpenCV's detectors run in parallel). Reported
per clip: frames, detection CPU and wall milliseconds per frame (median, p95 by nearest rank,
mean), the share of picture windows kept on the edge (the edge share that
``--keep-local`` adds), the frames on which anything was kept, and those on which a region was
held without being found on that frame.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from pedsam.partitioner.geometry import WindowGrid
from pedsam.stream.core.motion import content_tokens
from pedsam.stream.core.sensitive import KeepLocal, SensitiveRegions, windows_touching
from pedsam.stream.errors import ConfigError
from pedsam.stream.media.video import read_frames
from pedsam.workers.presets import get_preset

__all__ = ["KeepLocalBench", "measure", "run"]


@dataclass(frozen=True, kw_only=True, slots=True)
class KeepLocalBench:
    """The settings of one ``pedsam bench-keep-local`` run (see the command's --help)."""

    videos: tuple[str, ...] = ()
    model: str = "vit_b"
    keep_local: str = "faces,people"
    keep_local_hold: int | None = None
    max_frames: int = 200
    stride: int = 1
    json: str | None = None

    @classmethod
    def of(cls, values: Mapping[str, Any]) -> KeepLocalBench:
        found = {f.name: values[f.name] for f in fields(cls) if f.name in values and values[f.name] is not None}
        found["videos"] = tuple(values.get("videos") or ())
        return cls(**found)


def measure(video: str, keep: KeepLocal, model: str, *, max_frames: int, stride: int) -> dict[str, Any]:
    """One clip's figures (see the module docstring), JSON-ready."""
    preset = get_preset(model)
    grid = WindowGrid.for_encoder(preset.img_size, preset.patch_size, preset.window_size)
    regions = SensitiveRegions(keep)
    images: list[np.ndarray] = []
    for frame in read_frames(video):
        if len(images) >= max_frames:
            break
        if frame.index % stride == 0:
            images.append(frame.image)
    cpu: list[float] = []
    wall: list[float] = []
    kept = picture = kept_frames = 0
    for image in images:
        size = (int(image.shape[0]), int(image.shape[1]))
        started, clock = time.process_time(), time.perf_counter()
        boxes = regions.update(image)
        cpu.append(time.process_time() - started)
        wall.append(time.perf_counter() - clock)
        pictured = set(grid.picture_windows(content_tokens(size, preset.img_size, preset.patch_size)))
        home = set(windows_touching(boxes, size, grid, preset.img_size, preset.patch_size)) & pictured
        kept += len(home)
        picture += len(pictured)
        kept_frames += bool(home)
    if not cpu:
        raise ConfigError(f"{video}: no frames to measure")
    ms = sorted(1000 * c for c in cpu)
    wall_ms = sorted(1000 * w for w in wall)
    summary = regions.summary()
    return {
        "video": video, "model": model, "kinds": list(keep.kinds), "hold": keep.hold, "frames": len(cpu),
        "detect_cpu_ms_p50": round(statistics.median(ms), 2),
        "detect_cpu_ms_p95": round(ms[math.ceil(0.95 * len(ms)) - 1], 2),
        "detect_cpu_ms_mean": round(statistics.fmean(ms), 2),
        "detect_wall_ms_p50": round(statistics.median(wall_ms), 2),
        "edge_share": round(kept / picture, 4), "frames_with_kept": kept_frames,
        "held_frames": summary["held_frames"], "detections": summary["detections"],
    }


async def run(bench: KeepLocalBench) -> int:
    """Measure every clip and print one line each; exit status 0."""
    if not bench.videos:
        raise ConfigError("give one or more videos to measure")
    if bench.max_frames < 1 or bench.stride < 1:
        raise ConfigError("--max-frames and --stride must be at least 1")
    keep = KeepLocal.parse(bench.keep_local, hold=bench.keep_local_hold)
    if not keep.enabled:
        raise ConfigError("--keep-local none keeps nothing: give faces, people or both")
    rows = []
    for video in bench.videos:
        row = measure(video, keep, bench.model, max_frames=bench.max_frames, stride=bench.stride)
        rows.append(row)
        print(f"{Path(video).name}: {row['frames']} frames, --keep-local {','.join(keep.kinds)} (hold {keep.hold}): "
              f"detection {row['detect_cpu_ms_p50']} ms CPU per frame (p95 {row['detect_cpu_ms_p95']}, mean "
              f"{row['detect_cpu_ms_mean']}; wall {row['detect_wall_ms_p50']}); {row['edge_share']:.1%} of {bench.model} picture windows kept on the "
              f"edge; something kept on {row['frames_with_kept']} frames, held unseen on {row['held_frames']}")
    if bench.json:
        Path(bench.json).parent.mkdir(parents=True, exist_ok=True)
        Path(bench.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0
