"""Cross-frame mosaic: everything one server recovered, stitched in scene coordinates.

Pixels are the frame's own (``H x W``); a frame at camera offset ``(dy, dx)`` pixels (see
:mod:`pedsam.stream.core.motion`) puts its pixel ``(y, x)`` at scene pixel ``(y + dy, x + dx)``, rounded.
The mosaic keeps the latest pixel the server received at each scene pixel, as an online
attacker would. :meth:`Mosaic.view` cuts the mosaic back out at a frame's offset: the
server's best reconstruction of that frame and the pixels it covers.

:func:`psnr` and :func:`ssim` compare a reconstruction with the true frame over covered pixels
only; SSIM is the standard one (Gaussian window, sigma 1.5) on the grey image.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

__all__ = ["Mosaic", "psnr", "ssim"]


class Mosaic:
    """A scene canvas for frames of ``frame_size`` whose offsets span ``low..high`` pixels."""

    def __init__(self, frame_size: tuple[int, int], low: tuple[float, float], high: tuple[float, float]) -> None:
        self.height, self.width = frame_size
        self.origin = (math.floor(low[0]), math.floor(low[1]))
        rows = math.ceil(high[0]) - self.origin[0] + self.height + 1
        cols = math.ceil(high[1]) - self.origin[1] + self.width + 1
        self.canvas = np.zeros((rows, cols, 3), np.uint8)
        self.filled = np.zeros((rows, cols), bool)

    def _slices(self, offset: tuple[float, float]) -> tuple[slice, slice]:
        top = int(round(offset[0])) - self.origin[0]
        left = int(round(offset[1])) - self.origin[1]
        return slice(top, top + self.height), slice(left, left + self.width)

    def paste(self, image: np.ndarray, mask: np.ndarray, offset: tuple[float, float]) -> None:
        """Lay ``image`` (H, W, 3) uint8 where ``mask`` (H, W) bool is set, at camera ``offset``."""
        rows, cols = self._slices(offset)
        canvas, filled = self.canvas[rows, cols], self.filled[rows, cols]
        canvas[mask] = image[mask]
        filled |= mask

    def view(self, offset: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
        """The frame at ``offset`` as the mosaic knows it: (H, W, 3) uint8 and (H, W) bool covered."""
        rows, cols = self._slices(offset)
        return self.canvas[rows, cols].copy(), self.filled[rows, cols].copy()


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
