"""Global camera motion on the edge: where each frame sits in the scene, as plain numbers.

:class:`MotionEstimator` measures the translation between consecutive frames and accumulates it
into a camera *offset*: the scene position ``(dy, dx)`` of the frame's top-left pixel, in pixels
of the original frame, frame 0 at ``(0, 0)``. A camera panning right makes ``dx`` grow (the image
content moves left). Only translation is modelled; rotation and zoom leave residue that the
exposure ledger sees as extra scene.

The step between two frames is measured on grey frames downscaled to ``width`` pixels: corners
(``cv2.goodFeaturesToTrack``) of the previous frame are tracked into the new one (pyramidal
Lucas-Kanade), a RANSAC similarity fit (``cv2.estimateAffinePartial2D``) keeps the points that
move with the background, and the step is the median of their motion. People walking through a
still shot are outliers, so they do not move the camera: on Debian's ``vtest.avi`` (a fixed
camera, pedestrians) the offset stays within a pixel over all 795 frames, where whole-frame
phase correlation wandered about 170 px. Frames with too little texture to track fall back to
phase correlation (``cv2.phaseCorrelate``), accepted when its peak is clear and the step is
under a quarter of the frame.

When neither finds the step (a cut, a flash, a frame of noise) the estimator treats the new
frame as a new shot and moves the offset far away (``cut_jump`` frame widths), so that what
servers see of it counts as new scene rather than being laid over the old one.

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
        width: frames are downscaled to this many pixels across before measuring.
        corners: most corners tracked per frame.
        min_inliers: tracked points that must agree on the step (and at least 30 % of those
            tracked), else phase correlation is tried.
        min_response: phase-correlation peak below which two frames are taken as a cut.
        cut_jump: on a cut, the offset's ``dx`` jumps by this many frame widths.
    """

    width: int = 320
    corners: int = 200
    min_inliers: int = 8
    min_response: float = 0.1
    cut_jump: float = 4.0
    offset: tuple[float, float] = (0.0, 0.0)
    cuts: int = 0
    _previous: np.ndarray | None = field(default=None, repr=False)

    def update(self, image: np.ndarray) -> tuple[float, float]:
        """HxWx3 uint8 RGB frame -> its offset ``(dy, dx)`` in frame pixels (see the module doc)."""
        height, width = image.shape[:2]
        scale = min(1.0, self.width / width)
        size = (max(8, round(width * scale)), max(8, round(height * scale)))
        grey = cv2.cvtColor(cv2.resize(image, size, interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
        previous, self._previous = self._previous, grey
        if previous is None:
            return self.offset
        step = None if previous.shape != grey.shape else self._track(previous, grey)
        if step is None and previous.shape == grey.shape:
            step = self._correlate(previous, grey)
        if step is None:
            self.cuts += 1
            dy, dx = self.offset
            self.offset = (dy, dx + self.cut_jump * width)
            return self.offset
        # The content moved by (sy, sx) downscaled pixels: the camera moved the other way.
        dy, dx = self.offset
        self.offset = (dy - step[0] / scale, dx - step[1] / scale)
        return self.offset

    def _track(self, previous: np.ndarray, grey: np.ndarray) -> tuple[float, float] | None:
        """The background's step ``(sy, sx)`` in downscaled pixels from tracked corners, or None."""
        points = cv2.goodFeaturesToTrack(previous, self.corners, 0.01, 8)
        if points is None or len(points) < self.min_inliers:
            return None
        moved, status, _ = cv2.calcOpticalFlowPyrLK(
            previous, grey, points, None, winSize=(21, 21), maxLevel=3  # type: ignore[call-overload]
        )
        tracked = status.ravel() == 1
        if tracked.sum() < self.min_inliers:
            return None
        start, end = points.reshape(-1, 2)[tracked], moved.reshape(-1, 2)[tracked]
        _, inliers = cv2.estimateAffinePartial2D(start, end, method=cv2.RANSAC, ransacReprojThreshold=1.0)
        if inliers is None:
            return None
        keep = inliers.ravel() == 1
        if keep.sum() < max(self.min_inliers, 0.3 * len(keep)):
            return None
        sx, sy = np.median(end[keep] - start[keep], axis=0)
        return (float(sy), float(sx))

    def _correlate(self, previous: np.ndarray, grey: np.ndarray) -> tuple[float, float] | None:
        """The step by whole-frame phase correlation, or None when its peak is weak or too far."""
        a, b = previous.astype(np.float32), grey.astype(np.float32)
        window = cv2.createHanningWindow((a.shape[1], a.shape[0]), cv2.CV_32F)
        (sx, sy), response = cv2.phaseCorrelate(a, b, window)
        if not np.isfinite(response) or response < self.min_response:
            return None
        if abs(sx) > a.shape[1] / 4 or abs(sy) > a.shape[0] / 4:
            return None
        return (float(sy), float(sx))
