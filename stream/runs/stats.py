"""The figures of a run: frames, drops, fps and capture-to-mask latency, one definition each.

Percentiles are **nearest rank** everywhere (``summary.json`` of every command, the live status
line, the web page, the benches): the q-th percentile of n values is the ``ceil(q / 100 * n)``-th
smallest, so it is always a latency some frame really had.
"""

from __future__ import annotations

import math
import statistics
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from pedsam.stream.runs.results import FrameResult

__all__ = ["RunStats", "percentile"]


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0 < q <= 100, nearest rank) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[rank]


class RunStats:
    """Running figures of a run, updated as each frame's result comes out.

    ``frames`` counts results (every frame taken from the source), ``frames_ok`` and
    ``frames_failed`` split them, ``frames_segmented`` are those with masks (the rest passed
    through while no object was followed), ``keyframes`` those that show a keyframe's masks
    as it came back (SAM's on the frame itself, or carried there from a keyframe taken earlier
    that was in flight; given masks count too: the others' were propagated), ``frames_dropped``
    are frames a live
    source overwrote before they were taken. Latency is capture-to-mask, in seconds, over
    segmented frames. ``fps`` is over the whole run, ``recent_fps`` over the last ``window``
    seconds (for a live display).
    """

    def __init__(self, *, window: float = 3.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.started = clock()
        self._cpu_started = time.process_time()  # this process's CPU, every thread
        self._cpu: float | None = None
        self.frames = 0
        self.frames_ok = 0
        self.frames_failed = 0
        self.frames_segmented = 0
        self.keyframes = 0
        self.dropped = 0
        self.first_error: str | None = None
        self.latencies: list[float] = []
        self._recent: deque[float] = deque()
        self._window = window
        self._stopped: float | None = None

    def add(self, result: FrameResult) -> None:
        """Count one frame's result."""
        now = self._clock()
        self.frames += 1
        if result.error is None:
            self.frames_ok += 1
        else:
            self.frames_failed += 1
            self.first_error = self.first_error or result.error
        if result.segmented:
            self.frames_segmented += 1
            self.latencies.append(result.latency)
            self.keyframes += result.keyframe or result.audit is not None
        self._recent.append(now)
        while self._recent and self._recent[0] < now - self._window:
            self._recent.popleft()

    def stop(self) -> None:
        """Freeze the run's duration and CPU (a summary written later keeps the run's own)."""
        self._stopped = self._clock()
        self._cpu = time.process_time() - self._cpu_started

    @property
    def cpu_seconds(self) -> float:
        """CPU seconds of this process (the edge: every thread, no worker) during the run."""
        return self._cpu if self._cpu is not None else time.process_time() - self._cpu_started

    @property
    def seconds(self) -> float:
        end = self._stopped if self._stopped is not None else self._clock()
        return end - self.started

    @property
    def fps(self) -> float:
        seconds = self.seconds
        return self.frames / seconds if seconds > 0 else 0.0

    @property
    def recent_fps(self) -> float:
        if len(self._recent) < 2:
            return 0.0
        span = self._recent[-1] - self._recent[0]
        return (len(self._recent) - 1) / span if span > 0 else 0.0

    def to_json(self, *, last: int | None = None) -> dict[str, Any]:
        """The run's figures; with ``last``, latency over the last ``last`` segmented frames
        (what a live display shows, and cheap however long the run)."""
        latencies = self.latencies[-last:] if last else self.latencies
        p50, p95 = percentile(latencies, 50), percentile(latencies, 95)
        return {
            "frames": self.frames,
            "frames_ok": self.frames_ok,
            "frames_failed": self.frames_failed,
            "frames_segmented": self.frames_segmented,
            "keyframes": self.keyframes,
            "frames_dropped": self.dropped,
            "seconds": round(self.seconds, 3),
            "edge_cpu_s": round(self.cpu_seconds, 3),
            "fps": round(self.fps, 3),
            "latency_p50_s": round(p50, 4) if p50 is not None else None,
            "latency_p95_s": round(p95, 4) if p95 is not None else None,
            "latency_mean_s": round(statistics.fmean(latencies), 4) if latencies else None,
            "first_error": self.first_error,
        }

    def line(self) -> str:
        """One status line, e.g. ``123 frames, 4 dropped, 7.9 fps, latency p50 0.21 s p95 0.30 s``.

        fps has 3 significant figures, so a slow model's 0.12 fps reads as 0.12, not 0.0.
        """
        recent = self.latencies[-100:]
        p50, p95 = percentile(recent, 50), percentile(recent, 95)
        fps = self.recent_fps or self.fps  # a model slower than the window still shows its rate
        text = f"{self.frames} frames, {self.dropped} dropped, {fps:.3g} fps"
        if p50 is not None and p95 is not None:
            text += f", latency p50 {p50:.2f} s p95 {p95:.2f} s"
        return text
