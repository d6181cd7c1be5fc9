"""``pedsam stream``: follow prompted objects in a camera (or file) stream, live.

The run reads its source through :func:`pedsam.stream.runs.live.run_live`, shows a status line (frames,
dropped, fps, capture-to-mask latency p50/p95), optionally shows the masked frames in a
window (``--display``) and records what ``pedsam run`` writes (``--record DIR``): an overlay
video of the processed frames, ``masks.jsonl`` (one line per processed frame), ``audit.jsonl``
and ``summary.json``. It stops at the end of the source, after ``--max-frames`` or
``--duration``, or on Ctrl-C / SIGTERM, and in each case finishes its outputs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import json
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import cv2
import numpy as np

from pedsam.stream.core.prompts import ObjectPrompt
from pedsam.stream.core.session import EdgeConfig, EdgeSession
from pedsam.stream.errors import ConfigError
from pedsam.stream.media.masks_io import MaskRecordWriter
from pedsam.stream.media.overlay import OverlayWriter, draw_overlay
from pedsam.stream.media.sources import CameraSource, FileSource, FrameSource
from pedsam.stream.runs.audit import AuditWriter
from pedsam.stream.runs.batch import frame_record
from pedsam.stream.runs.live import LiveStats, ObjectBoard, run_live
from pedsam.stream.runs.pipeline import FrameResult
from pedsam.workers.models import RANDOM_WEIGHTS_NOTICE

DEFAULT_RECORD_RATE = fractions.Fraction(30)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--camera", metavar="DEVICE",
                       help="camera index (0), device path (/dev/video0) or stream URL OpenCV can open")
    which.add_argument("--file", metavar="VIDEO", help="a video file, read frame by frame without drops")
    parser.add_argument("--display", action="store_true", help="show the masked frames in a window")
    parser.add_argument("--record", metavar="DIR",
                        help="write overlay.mp4, masks.jsonl, audit.jsonl and summary.json into DIR")
    parser.add_argument("--in-flight", type=int, default=2, help="frames in flight (default 2)")
    parser.add_argument("--max-frames", type=int, metavar="N", help="stop after N processed frames")
    parser.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this many seconds")
    parser.add_argument("--no-progress", action="store_true", help="no status line")


def make_source(args: argparse.Namespace) -> FrameSource:
    if args.camera is not None:
        return CameraSource(args.camera)
    return FileSource(args.file)


class Recorder:
    """Writes a live run's outputs into a folder; every method runs off the event loop.

    Thread-safe: a write still running on its thread when the run is stopped finishes before
    :meth:`close` flushes the files, and writes after that are ignored.

    The overlay video has one frame per processed frame at the source's nominal rate (30 fps
    when it has none), so where frames were dropped it plays faster than real time;
    ``masks.jsonl`` carries each frame's capture time and latency.
    """

    def __init__(self, out: Path, *, rate: fractions.Fraction | None, num_windows: int, cap: int,
                 random_weights: bool) -> None:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create output folder {str(out)!r}: {exc.strerror}") from None
        self.out = out
        (out / "summary.json").unlink(missing_ok=True)  # a summary marks a finished run
        self._rate = rate or DEFAULT_RECORD_RATE
        self._random = random_weights
        self._lock = threading.Lock()
        self._closed = False
        self._overlay: OverlayWriter | None = None
        self._records = MaskRecordWriter(out / "masks.jsonl")
        self.audit = AuditWriter(out / "audit.jsonl", num_windows=num_windows, cap=cap)

    def write(self, result: FrameResult, image: np.ndarray) -> None:
        """Record one processed frame; ``image`` is its overlay, ``(H, W, 3)`` uint8 RGB."""
        with self._lock:
            if not self._closed:
                self._write(result, image)

    def _write(self, result: FrameResult, image: np.ndarray) -> None:
        if self._overlay is None:
            height, width = image.shape[:2]
            self._overlay = OverlayWriter(self.out / "overlay.mp4", width, height, self._rate)
        if image.shape[:2] != (self._overlay.height, self._overlay.width):  # the sender changed size
            image = cv2.resize(image, (self._overlay.width, self._overlay.height), interpolation=cv2.INTER_AREA)
        self._overlay.write(image)
        record = frame_record(result, random_weights=self._random)
        record["latency_s"] = round(result.latency, 4)
        if result.audit is not None:
            record["audit_frame"] = result.audit.frame
            self.audit.write(result.audit)
        self._records.write(record)

    def close(self, summary: dict[str, Any] | None) -> None:
        """Flush and close the files; write ``summary.json`` when given a summary."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                if self._overlay is not None:
                    self._overlay.close()
            finally:
                self._records.close()
                self.audit.close()
        if summary is not None:
            (self.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


class Display:
    """An OpenCV window with the masked frames; ``q`` or Esc asks the run to stop."""

    NAME = "pedsam"

    def __init__(self) -> None:
        try:
            cv2.namedWindow(self.NAME, cv2.WINDOW_NORMAL)
        except cv2.error:
            raise ConfigError(
                "--display needs OpenCV with a GUI (this one is headless: install opencv-python "
                "in place of opencv-python-headless), or use --record DIR or pedsam serve"
            ) from None

    def show(self, image: np.ndarray) -> bool:
        """Show an ``(H, W, 3)`` uint8 RGB frame; False when the user asked to stop."""
        cv2.imshow(self.NAME, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        return (cv2.waitKey(1) & 0xFF) not in (ord("q"), 27)

    def close(self) -> None:
        with contextlib.suppress(cv2.error):
            cv2.destroyWindow(self.NAME)


class StatusLine:
    """The live figures on stderr: rewritten in place on a terminal, a line every few seconds otherwise."""

    def __init__(self, stream: TextIO = sys.stderr, *, every: float | None = None) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._every = every if every is not None else (0.5 if self._tty else 5.0)
        self._last = 0.0
        self._shown = False

    def update(self, text: str, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self._every:
            return
        self._last = now
        if self._tty:
            self._stream.write(f"\r\x1b[Kpedsam live: {text}")
        else:
            self._stream.write(f"pedsam live: {text}\n")
        self._stream.flush()
        self._shown = True

    def finish(self) -> None:
        if self._shown and self._tty:
            self._stream.write("\n")
            self._stream.flush()


async def run(args: argparse.Namespace, config: EdgeConfig, objects: Sequence[ObjectPrompt]) -> int:
    """The ``pedsam stream`` command; returns the exit status."""
    if args.in_flight < 1:
        raise ConfigError("--in-flight must be at least 1")
    if args.max_frames is not None and args.max_frames < 1:
        raise ConfigError("--max-frames must be at least 1")
    if args.duration is not None and args.duration <= 0:
        raise ConfigError("--duration must be positive")
    display = Display() if args.display else None
    status = None if args.no_progress else StatusLine()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with make_source(args) as source:  # a bad camera or file fails before workers start
            async with EdgeSession(config) as session:
                if session.random_weights:
                    print(f"note: {RANDOM_WEIGHTS_NOTICE} (give --checkpoint for real masks)", file=sys.stderr)
                summary = await _stream(args, session, source, objects, display, status, stop)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if display is not None:
            display.close()
        if status is not None:
            status.finish()
    print(f"{summary['frames_processed']} frames processed, {summary['frames_dropped']} dropped "
          f"in {summary['seconds']:.1f} s, {summary['fps']:.2f} fps; latency p50 "
          f"{summary['latency_p50_s']} s, p95 {summary['latency_p95_s']} s")
    if args.record:
        out = Path(args.record)
        print(f"outputs: {out / 'overlay.mp4'}, {out / 'masks.jsonl'}, {out / 'audit.jsonl'}, {out / 'summary.json'}")
    return 0


async def _stream(
    args: argparse.Namespace,
    session: EdgeSession,
    source: FrameSource,
    objects: Sequence[ObjectPrompt],
    display: Display | None,
    status: StatusLine | None,
    stop: asyncio.Event,
) -> dict[str, Any]:
    board = ObjectBoard(objects)
    stats = LiveStats()
    grid = session.encoder.grid
    banner = RANDOM_WEIGHTS_NOTICE if session.random_weights else None
    recorder = None
    if args.record:
        recorder = Recorder(
            Path(args.record), rate=source.rate, num_windows=grid.num_windows,
            cap=session.scheduler.window_cap,
            random_weights=session.random_weights,
        )

    async def consume() -> None:
        # Closed on leaving, not whenever the loop finalises it: frames still in flight must
        # stop before the session and its workers go away.
        results = run_live(session, source, board, in_flight=args.in_flight, stats=stats)
        async with contextlib.aclosing(results):
            async for result in results:
                # A frame handed out is counted in the figures: record it even if the run is
                # being stopped, so the outputs agree with the summary.
                sink = asyncio.ensure_future(record(result))
                try:
                    keep_going = await asyncio.shield(sink)
                except asyncio.CancelledError:
                    await sink
                    raise
                if status is not None:
                    status.update(f"{stats.line()}, {len(board)} objects")
                if not keep_going or (args.max_frames is not None and stats.processed >= args.max_frames):
                    return

    async def record(result: FrameResult) -> bool:
        """Draw, record and show one frame; False when the display asked to stop."""
        if recorder is None and display is None:
            return True
        masks = [obj.mask for obj in result.objects]
        labels = [f"#{obj.id} {obj.score:.2f}" for obj in result.objects]
        image = await asyncio.to_thread(draw_overlay, result.frame.image, masks, labels=labels, banner=banner)
        if recorder is not None:
            await asyncio.to_thread(recorder.write, result, image)
        return display is None or display.show(image)

    finished = False
    try:
        worker = asyncio.create_task(consume(), name="pedsam stream")
        stopper = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({worker, stopper}, timeout=args.duration, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (worker, stopper):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stopper
            try:
                await worker  # raises the run's error, if it failed
            except asyncio.CancelledError:
                if not stop.is_set() and args.duration is None:
                    raise  # cancelled from outside, not stopped by us
        finished = True
    finally:
        if status is not None:
            status.update(f"{stats.line()}, {len(board)} objects", force=True)
        summary = {
            **stats.to_json(),
            "source": source.name,
            "source_kind": source.kind,
            "model": session.config.model.describe(),
            "random_weights": session.random_weights,
            "workers": session.executor_names,
            "scheme": session.config.scheme,
            "codec": session.config.codec,
            "in_flight": args.in_flight,
            "objects": [o.to_json() for o in objects],
            "windows_per_frame": grid.num_windows,
            "exposure": session.exposure_summary(),
            "fleet": session.fleet_summary(),
        }
        if recorder is not None:
            summary["max_windows_per_server"] = recorder.audit.max_share
            await asyncio.to_thread(recorder.close, summary if finished else None)
    return summary
