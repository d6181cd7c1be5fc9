"""What a run shows while it goes: a progress bar, a status line, a window.

Each is a :class:`~pedsam.stream.runs.job.View`; the run calls :meth:`update` after every frame.
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import TextIO

import numpy as np

from pedsam.stream.errors import ConfigError
from pedsam.stream.runs.stats import RunStats

__all__ = ["Display", "ProgressBar", "StatusLine"]


class ProgressBar:
    """A tqdm bar over a file's frames (batch runs)."""

    wants_images = False

    def __init__(self, total: int | None, *, description: str = "pedsam") -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=total, unit="frame", desc=description, dynamic_ncols=True)

    def update(self, stats: RunStats, image: np.ndarray | None) -> bool:
        self._bar.update(stats.frames - self._bar.n)
        self._bar.set_postfix(fps=f"{stats.fps:.3g}")
        return True

    def close(self) -> None:
        self._bar.close()


class StatusLine:
    """The live figures on stderr: rewritten in place on a terminal, a line every few seconds otherwise."""

    wants_images = False

    def __init__(self, stream: TextIO = sys.stderr, *, every: float | None = None, objects: int = 0) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._every = every if every is not None else (0.5 if self._tty else 5.0)
        self._last = 0.0
        self._shown = False
        self._stats: RunStats | None = None
        self.objects = objects

    def update(self, stats: RunStats, image: np.ndarray | None) -> bool:
        self._stats = stats
        self._show(force=False)
        return True

    def _show(self, *, force: bool) -> None:
        now = time.monotonic()
        if self._stats is None or (not force and now - self._last < self._every):
            return
        self._last = now
        text = f"{self._stats.line()}, {self.objects} objects"
        self._stream.write(f"\r\x1b[Kpedsam live: {text}" if self._tty else f"pedsam live: {text}\n")
        self._stream.flush()
        self._shown = True

    def close(self) -> None:
        self._show(force=True)
        if self._shown and self._tty:
            self._stream.write("\n")
            self._stream.flush()


class Display:
    """An OpenCV window with the masked frames; ``q`` or Esc asks the run to stop."""

    NAME = "pedsam"
    wants_images = True

    def __init__(self) -> None:
        import cv2

        self._cv2 = cv2
        try:
            cv2.namedWindow(self.NAME, cv2.WINDOW_NORMAL)
        except cv2.error:
            raise ConfigError(
                "--display needs OpenCV with a GUI (this one is headless: install opencv-python "
                "in place of opencv-python-headless), or use --record DIR or pedsam serve"
            ) from None

    def update(self, stats: RunStats, image: np.ndarray | None) -> bool:
        if image is None:
            return True
        cv2 = self._cv2
        cv2.imshow(self.NAME, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        return (cv2.waitKey(1) & 0xFF) not in (ord("q"), 27)

    def close(self) -> None:
        with contextlib.suppress(self._cv2.error):
            self._cv2.destroyWindow(self.NAME)
