"""Global camera motion on the edge: where each frame sits in the scene, as plain numbers.

:class:`MotionEstimator` measures the translation between consecutive frames by phase
correlation (OpenCV) on grey frames downscaled to ``width`` pixels, and accumulates it into a
camera *offset*: the scene position ``(dy, dx)`` of the frame's top-left pixel, in pixels of
the original frame, frame 0 at ``(0, 0)``. A camera panning right makes ``dx`` grow (the image
content moves left). Only translation is modelled; rotation and zoom leave residue that the
exposure ledger sees as extra scene, and objects moving through a still shot bias each step a
little (on Debian's ``vtest.avi``, a fixed camera, the estimate drifts about 0.26 px per frame).

When consecutive frames do not correlate (a cut, a flash, a frame of noise) the estimator
treats the new frame as a new shot and moves the offset far away (``cut_jump`` frame widths),
so that what servers see of it counts as new scene rather than being laid over the old one.

:func:`token_offset` and :func:`content_tokens` convert to the encoder's token grid, which is
what the scheduler in :mod:`pedsam.partitioner.scheduler` takes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

__all__ = ["MotionEstimator", "content_tokens", "input_scale", "token_offset"]


def input_scale(frame_size: tuple[int, int], img_size: int) -> float:
    """Encoder-input pixels per frame pixel: SAM resizes the longest side to ``img_size``."""
    height, width = frame_size
    return img_size / max(height, width)


def token_offset(offset_px: tuple[float, float], frame_size: tuple[int, int], img_size: int, patch_size: int) -> tuple[float, float]:
    """A camera offset ``(dy, dx)`` in frame pixels -> tokens of the encoder's grid."""
    scale = input_scale(frame_size, img_size) / patch_size
    return (offset_px[0] * scale, offset_px[1] * scale)


def content_tokens(frame_size: tuple[int, int], img_size: int, patch_size: int) -> tuple[int, int]:
    """``(rows, cols)`` of tokens that cover the resized frame (the rest is SAM's padding).

    ``frame_size`` is the frame's ``(H, W)`` in pixels; the resize is SAM's ``ResizeLongestSide``
    (longest side to ``img_size``, the other rounded half up).
    """
    height, width = frame_size
    scale = input_scale(frame_size, img_size)
    new_h, new_w = int(height * scale + 0.5), int(width * scale + 0.5)
    return (-(-new_h // patch_size), -(-new_w // patch_size))


@dataclass
class MotionEstimator:
    """Accumulated camera offset of a sequence of frames, fed in order.

    Attributes:
        width: frames are downscaled to this many pixels across before correlating.
        min_response: phase-correlation peak below which two frames are taken as a cut.
        cut_jump: on a cut, the offset's ``dx`` jumps by this many frame widths.
    """

    width: int = 160
    min_response: float = 0.05
    cut_jump: float = 4.0
    offset: tuple[float, float] = (0.0, 0.0)
    cuts: int = 0
    _previous: np.ndarray | None = field(default=None, repr=False)
    _window: np.ndarray | None = field(default=None, repr=False)

    def update(self, image: np.ndarray) -> tuple[float, float]:
        """HxWx3 uint8 RGB frame -> its offset ``(dy, dx)`` in frame pixels (see the module doc)."""
        height, width = image.shape[:2]
        scale = min(1.0, self.width / width)
        size = (max(8, round(width * scale)), max(8, round(height * scale)))
        grey = cv2.cvtColor(cv2.resize(image, size, interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
        grey = grey.astype(np.float32)
        previous, self._previous = self._previous, grey
        if previous is None or previous.shape != grey.shape:
            if previous is not None:
                self._cut(width)
            return self.offset
        if self._window is None or self._window.shape != grey.shape:
            self._window = cv2.createHanningWindow(size, cv2.CV_32F)
        (shift_x, shift_y), response = cv2.phaseCorrelate(previous, grey, self._window)
        if not np.isfinite(response) or response < self.min_response:
            self._cut(width)
            return self.offset
        # The content moved by (shift_x, shift_y) downscaled pixels: the camera moved the other way.
        dy, dx = self.offset
        self.offset = (dy - shift_y / scale, dx - shift_x / scale)
        return self.offset

    def _cut(self, width: int) -> None:
        self.cuts += 1
        dy, dx = self.offset
        self.offset = (dy, dx + self.cut_jump * width)
