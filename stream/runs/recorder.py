"""A run's four output files, written the same way by every command.

Into ``out``:

- ``overlay.mp4``: each recorded frame with its masks drawn (:func:`render`). For a file run
  with the ``"never"`` drop policy that is every input frame at the input's rate (a frame that
  did not decode is black with its error as the banner); for a live run, every processed frame
  at the source's nominal rate (30 fps when it has none), so it plays faster where frames were
  dropped.
- ``masks.jsonl``: one line per recorded frame: index, pts, time, capture-to-mask latency, and
  per object its COCO RLE mask, score, box and area, or the frame's ``error``.
- ``audit.jsonl``: per frame and segment, which server got which windows (see
  :mod:`pedsam.stream.runs.audit`).
- ``summary.json``: the run's figures (:class:`~pedsam.stream.runs.stats.RunStats`) and its
  settings; written only when the run finishes, so its presence marks a complete run.

Every method may run on a thread: a write still running when the run is stopped finishes
before :meth:`Recorder.close` flushes the files, and writes after that are ignored.
"""

from __future__ import annotations

import fractions
import json
import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pedsam.stream.errors import ConfigError
from pedsam.stream.media.masks_io import MaskRecordWriter, encode_rle
from pedsam.stream.media.overlay import OverlayWriter, draw_overlay
from pedsam.stream.runs.audit import AuditWriter
from pedsam.stream.runs.results import FrameResult

__all__ = ["OUTPUTS", "Recorder", "frame_record", "render"]

OUTPUTS = ("overlay.mp4", "masks.jsonl", "audit.jsonl", "summary.json")
DEFAULT_RATE = fractions.Fraction(30)


def render(result: FrameResult, *, banner: str | None, size: tuple[int, int] | None = None) -> np.ndarray:
    """A frame's picture with its masks drawn, ``(H, W, 3)`` uint8 RGB.

    Objects are labelled ``#id score``; ``banner`` (the weights' note) is drawn on top. A
    frame with an error shows the error as its banner; one with no picture (it did not decode)
    is black, ``size`` = (W, H).
    """
    image = result.frame.image
    if not image.size:
        width, height = size or (64, 64)
        image = np.zeros((height, width, 3), np.uint8)
    if result.error is not None:
        return draw_overlay(image, [], banner=f"ERROR: {result.error}")
    masks = [obj.mask for obj in result.objects]
    labels = [f"#{obj.id} {obj.score:.2f}" for obj in result.objects]
    return draw_overlay(image, masks, labels=labels, banner=banner)


def frame_record(result: FrameResult, *, weights: str | None) -> dict[str, Any]:
    """One ``masks.jsonl`` line (JSON-ready). ``weights``: a note on the weights, e.g. ``"random"``."""
    frame = result.frame
    record: dict[str, Any] = {"frame": frame.index, "pts": frame.pts, "time": round(frame.time, 6)}
    if result.error is not None:
        record["error"] = result.error
        return record
    record["latency_s"] = round(result.latency, 4)
    record["keyframe"] = result.keyframe
    record["keyframe_age"] = result.keyframe_age
    record["objects"] = [
        {
            "id": obj.id,
            "score": round(obj.score, 5),
            "confidence": round(obj.confidence, 4),
            "box": list(obj.box) if obj.box else None,
            "area": int(obj.mask.sum()),
            "rle": encode_rle(obj.mask),
        }
        for obj in result.objects
    ]
    if result.audit is not None:
        record["audit_frame"] = result.audit.frame
    if weights is not None:
        record["weights"] = weights
    return record


class Recorder:
    """Writes a run's outputs into a folder (see the module docstring).

    Args:
        out: the folder; created if needed. A ``summary.json`` already there is removed, so a
            folder holds a summary only when its run finished.
        rate: frames per second of ``overlay.mp4`` (default 30).
        size: (W, H) of the overlay; default the first recorded frame's (later frames of
            another size are scaled to it).
        num_windows: the frame's window count, for the audit log.
        banner: drawn on every frame (the weights' note), or None.
        weights: noted in every ``masks.jsonl`` record, or None.
    """

    def __init__(
        self,
        out: str | Path,
        *,
        rate: fractions.Fraction | None = None,
        size: tuple[int, int] | None = None,
        num_windows: int,
        banner: str | None = None,
        weights: str | None = None,
    ) -> None:
        self.out = Path(out)
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "summary.json").unlink(missing_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot write into output folder {str(self.out)!r}: {exc.strerror}") from None
        self._rate = rate or DEFAULT_RATE
        self._size = size
        self._banner = banner
        self._weights = weights
        self._lock = threading.Lock()
        self._closed = False
        self._overlay: OverlayWriter | None = None
        self._records = MaskRecordWriter(self.out / "masks.jsonl")
        self.audit = AuditWriter(self.out / "audit.jsonl", num_windows=num_windows)

    @property
    def paths(self) -> list[Path]:
        return [self.out / name for name in OUTPUTS]

    def write(self, result: FrameResult) -> np.ndarray:
        """Record one frame; returns its rendered picture (for a display or a WebRTC track)."""
        image = render(result, banner=self._banner, size=self._size)
        with self._lock:
            if not self._closed:
                self._write(result, image)
        return image

    def _write(self, result: FrameResult, image: np.ndarray) -> None:
        if self._overlay is None:
            height, width = image.shape[:2]
            self._size = self._size or (width, height)
            self._overlay = OverlayWriter(self.out / "overlay.mp4", self._size[0], self._size[1], self._rate)
        if image.shape[:2] != (self._overlay.height, self._overlay.width):  # the sender changed size
            image = cv2.resize(image, (self._overlay.width, self._overlay.height), interpolation=cv2.INTER_AREA)
        self._overlay.write(image)
        if result.audit is not None:
            self.audit.write(result.audit)
        self._records.write(frame_record(result, weights=self._weights))

    def close(self, summary: dict[str, Any] | None) -> None:
        """Flush and close the files; write ``summary.json`` when given a summary (a run that
        finished), else leave none."""
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
