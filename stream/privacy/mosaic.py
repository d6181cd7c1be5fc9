"""Cross-frame mosaic: everything one server recovered, stitched in scene coordinates.

Pixels are the frame's own (``H x W``); a frame at camera offset ``(dy, dx)`` pixels (see
:mod:`pedsam.stream.core.motion`) puts its pixel ``(y, x)`` at scene pixel ``(y + dy, x + dx)``, rounded.

The mosaic keeps the *best* view of each scene pixel, as a careful attacker would: every pixel
it received comes with the error the attacker expects of it (from what crossed the wire: zero
for fp32 tokens, the quantisation step for int8; see :mod:`pedsam.stream.privacy.wire`), and a
newer view replaces an older one unless it is clearly worse (expected error above
``WORSE_RATIO`` times the old one plus ``WORSE_SLACK`` grey levels). Among views of about equal
quality the latest wins, so a moving person is seen where they are now.

:meth:`Mosaic.view` cuts the mosaic back out at a frame's offset: the server's best
reconstruction of that frame, the pixels it covers, their expected error and when they were
received; :func:`merge_views` pools the views of a coalition's members by the same rule, as if
one party had received everything they did; :meth:`Mosaic.filled` is the scene the server has
covered over the whole run (its panorama).

:func:`psnr` and :func:`ssim` compare a reconstruction with the true frame over covered pixels
only; SSIM is the standard one (Gaussian window, sigma 1.5) on the grey image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

__all__ = ["Mosaic", "View", "merge_views", "psnr", "ssim"]

WORSE_RATIO = 1.25
WORSE_SLACK = 0.5  # grey levels: below this, expected errors count as equal

View = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
"""A frame as one party knows it: (H, W, 3) uint8 RGB, (H, W) bool covered, (H, W) float32
expected error in grey levels (``inf`` where not covered), (H, W) int64 when each pixel was
received (the paste's ``stamp``; -1 where not covered)."""


def _replaces(error: np.ndarray, stamp: np.ndarray, old_error: np.ndarray, old_stamp: np.ndarray) -> np.ndarray:
    """Where a view (``error``, ``stamp``) wins over another: newer and not clearly worse, or
    older but the other is clearly worse."""
    newer = stamp >= old_stamp
    clearly_worse = error > WORSE_RATIO * old_error + WORSE_SLACK
    clearly_better = old_error > WORSE_RATIO * error + WORSE_SLACK
    return np.asarray(np.isfinite(error) & ((newer & ~clearly_worse) | (~newer & clearly_better)), bool)


class Mosaic:
    """A scene canvas for frames of ``frame_size`` whose offsets span ``low..high`` pixels."""

    def __init__(self, frame_size: tuple[int, int], low: tuple[float, float], high: tuple[float, float]) -> None:
        self.height, self.width = frame_size
        self.origin = (math.floor(low[0]), math.floor(low[1]))
        rows = math.ceil(high[0]) - self.origin[0] + self.height + 1
        cols = math.ceil(high[1]) - self.origin[1] + self.width + 1
        self.canvas = np.zeros((rows, cols, 3), np.uint8)
        self.error = np.full((rows, cols), np.inf, np.float32)
        self.stamp = np.full((rows, cols), -1, np.int64)

    @property
    def filled(self) -> np.ndarray:
        """(rows, cols) bool: the scene pixels this mosaic holds, in scene coordinates."""
        return np.isfinite(self.error)

    def slices(self, offset: tuple[float, float]) -> tuple[slice, slice]:
        """Where a frame at camera ``offset`` lies on the canvas."""
        top = int(round(offset[0])) - self.origin[0]
        left = int(round(offset[1])) - self.origin[1]
        return slice(top, top + self.height), slice(left, left + self.width)

    def paste(self, image: np.ndarray, mask: np.ndarray, offset: tuple[float, float], stamp: int,
              error: np.ndarray | None = None) -> None:
        """Lay ``image`` (H, W, 3) uint8 where ``mask`` (H, W) bool is set, at camera ``offset``,
        keeping an older pixel where this one is clearly worse. ``stamp``: when it was received
        (the frame's index; pastes come in order); ``error`` (H, W) float32: the expected error of
        each pixel in grey levels (default 0, exact)."""
        rows, cols = self.slices(offset)
        canvas, stored, stamps = self.canvas[rows, cols], self.error[rows, cols], self.stamp[rows, cols]
        new = np.zeros(mask.shape, np.float32) if error is None else error
        take = mask & ~(new > WORSE_RATIO * stored + WORSE_SLACK)
        canvas[take] = image[take]
        stored[take] = new[take]
        stamps[take] = stamp

    def view(self, offset: tuple[float, float]) -> View:
        """The frame at ``offset`` as the mosaic knows it (see :data:`View`)."""
        rows, cols = self.slices(offset)
        error = self.error[rows, cols].copy()
        return self.canvas[rows, cols].copy(), np.isfinite(error), error, self.stamp[rows, cols].copy()


def merge_views(views: Sequence[View]) -> View:
    """What a coalition knows of a frame: per pixel, the member views pooled by the mosaic's own
    rule (the newest view unless it is clearly worse than another)."""
    image, _, error, stamp = (a.copy() for a in views[0])
    for other_image, _, other_error, other_stamp in views[1:]:
        take = _replaces(other_error, other_stamp, error, stamp)
        image[take] = other_image[take]
        error[take] = other_error[take]
        stamp[take] = other_stamp[take]
    return image, np.isfinite(error), error, stamp


def psnr(truth: np.ndarray, guess: np.ndarray, mask: np.ndarray) -> float | None:
    """PSNR in dB over ``mask`` (None if nothing is covered; capped at 99 dB when equal)."""
    if not mask.any():
        return None
    diff = truth[mask].astype(np.float64) - guess[mask].astype(np.float64)
    mse = float(np.mean(diff * diff))
    return 99.0 if mse <= 1e-10 else 10.0 * math.log10(255.0**2 / mse)


def ssim(truth: np.ndarray, guess: np.ndarray, mask: np.ndarray) -> float | None:
    """Mean SSIM of the grey images over ``mask`` (None if nothing is covered)."""
    if not mask.any():
        return None
    a = cv2.cvtColor(truth, cv2.COLOR_RGB2GRAY).astype(np.float64)
    b = cv2.cvtColor(guess, cv2.COLOR_RGB2GRAY).astype(np.float64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(x: np.ndarray) -> np.ndarray:
        return np.asarray(cv2.GaussianBlur(x, (11, 11), 1.5), np.float64)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a * mu_a
    var_b = blur(b * b) - mu_b * mu_b
    cov = blur(a * b) - mu_a * mu_b
    index = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(index[mask].mean())
