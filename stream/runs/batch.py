"""A batch run over a video file: overlay video, per-frame masks, audit log, summary.

Writes into ``out_dir``:

- ``overlay.mp4``: every input frame with its masks drawn, same frame count and rate;
- ``masks.jsonl``: one line per input frame (frame index, pts, time, per-object COCO RLE
  masks, scores and boxes, or an ``error``);
- ``audit.jsonl``: per frame and segment, which server got which window ids;
- ``summary.json``: counts, timings, model and worker set-up, and the run's exposure summary
  (per server: largest frame share, distinct windows, scene share and longest run; windows the
  edge computed itself).
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from pedsam.stream.core.prompts import ObjectPrompt
from pedsam.stream.core.session import EdgeSession
from pedsam.stream.errors import ConfigError
from pedsam.stream.media.masks_io import MaskRecordWriter, encode_rle
from pedsam.stream.media.overlay import OverlayWriter, draw_overlay
from pedsam.stream.media.video import probe_video, read_frames
from pedsam.stream.runs.audit import AuditWriter
from pedsam.stream.runs.pipeline import FrameResult, run_frames
from pedsam.workers.models import RANDOM_WEIGHTS_NOTICE


@dataclass
class RunSummary:
    frames: int = 0
    frames_ok: int = 0
    frames_failed: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    first_error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        lat = sorted(self.latencies)
        return {
            "frames": self.frames,
            "frames_ok": self.frames_ok,
            "frames_failed": self.frames_failed,
            "seconds": round(self.seconds, 3),
            "fps": round(self.fps, 3),
            "latency_p50_s": round(statistics.median(lat), 4) if lat else None,
            "latency_p95_s": round(lat[min(len(lat) - 1, int(0.95 * len(lat)))], 4) if lat else None,
            "first_error": self.first_error,
            **self.extra,
        }


def frame_record(result: FrameResult, *, random_weights: bool) -> dict[str, Any]:
    record: dict[str, Any] = {
        "frame": result.frame.index,
        "pts": result.frame.pts,
        "time": round(result.frame.time, 6),
    }
    if result.error is not None:
        record["error"] = result.error
        return record
    record["objects"] = [
        {
            "id": obj.id,
            "score": round(obj.score, 5),
            "box": list(obj.box) if obj.box else None,
            "area": int(obj.mask.sum()),
            "rle": encode_rle(obj.mask),
        }
        for obj in result.objects
    ]
    if random_weights:
        record["weights"] = "random"
    return record


async def run_video(
    session: EdgeSession,
    video: str | os.PathLike[str],
    objects: Sequence[ObjectPrompt],
    out_dir: str | os.PathLike[str],
    *,
    in_flight: int = 2,
    progress: bool = True,
) -> RunSummary:
    """Run ``objects`` through ``video`` and write the outputs listed above into ``out_dir``."""
    info = probe_video(video)
    for prompt in objects:
        prompt.check_inside(info.width, info.height)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create output folder {str(out)!r}: {exc.strerror}") from None
    banner = RANDOM_WEIGHTS_NOTICE if session.random_weights else None
    grid = session.encoder.grid
    summary = RunSummary()
    started = time.perf_counter()
    summary_path = out / "summary.json"
    summary_path.unlink(missing_ok=True)  # a summary marks a finished run; never leave a stale one
    with (
        OverlayWriter(out / "overlay.mp4", info.width, info.height, info.rate) as overlay,
        MaskRecordWriter(out / "masks.jsonl") as records,
        AuditWriter(
            out / "audit.jsonl",
            num_windows=grid.num_windows,
            cap=session.scheduler.window_cap,
        ) as audit,
        tqdm(total=info.frame_count, unit="frame", disable=not progress, desc="pedsam") as bar,
    ):
        # Closed here, not whenever the loop finalises it: frames still encoding must stop
        # before the session (and its workers) go away, on errors and Ctrl-C too.
        blank = np.zeros((info.height, info.width, 3), np.uint8)
        frames = run_frames(session, read_frames(video, skip_corrupt=True), objects, in_flight=in_flight)
        async with contextlib.aclosing(frames) as results:
            async for result in results:
                summary.frames += 1
                records.write(frame_record(result, random_weights=session.random_weights))
                if result.error is None:
                    summary.frames_ok += 1
                    summary.latencies.append(result.latency)
                    masks = [obj.mask for obj in result.objects]
                    labels = [f"#{obj.id} {obj.score:.2f}" for obj in result.objects]
                    overlay.write(draw_overlay(result.frame.image, masks, labels=labels, banner=banner))
                else:
                    summary.frames_failed += 1
                    summary.first_error = summary.first_error or result.error
                    # A frame that did not decode is a black frame, so the overlay keeps every index.
                    image = result.frame.image if result.frame.image.size else blank
                    overlay.write(draw_overlay(image, [], banner=f"ERROR: {result.error}"))
                if result.audit is not None:
                    audit.write(result.audit)
                bar.update(1)
                bar.set_postfix(fps=f"{summary.frames / max(1e-9, time.perf_counter() - started):.2f}")
    summary.seconds = time.perf_counter() - started
    summary.extra = {
        "video": str(video),
        "width": info.width,
        "height": info.height,
        "rate": str(info.rate),
        "model": session.config.model.describe(),
        "random_weights": session.random_weights,
        "workers": session.executor_names,
        "scheme": session.config.scheme,
        "codec": session.config.codec,
        "in_flight": in_flight,
        "objects": [o.to_json() for o in objects],
        "max_windows_per_server": audit.max_share,
        "windows_per_frame": grid.num_windows,
        "exposure": session.exposure_summary(),
        "fleet": session.fleet_summary(),
    }
    summary_path.write_text(json.dumps(summary.to_json(), indent=2) + "\n")
    return summary
