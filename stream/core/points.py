"""Tracked points on grey images: what :mod:`pedsam.stream.core.propagation` is built from.

Shi-Tomasi corners inside an object's mask, pyramidal Lucas-Kanade with a forward-backward
check, bilinear samples of an image at points, and a similarity score of two sample sets. Grey
images are ``(h, w)`` uint8; points are ``(N, 2)`` float32 ``(x, y)`` pixel coordinates (``x``
the column, ``(0, 0)`` the centre of the top-left pixel) of the image they refer to.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["find_corners", "points_inside", "sample", "similarity", "track_points"]

_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 20, 0.03)


def track_points(
    before: np.ndarray, after: np.ndarray, points: np.ndarray, *, window: int, levels: int, fb_px: float
) -> tuple[np.ndarray, np.ndarray]:
    """Pyramidal Lucas-Kanade of ``points`` from ``before`` to ``after`` (two uint8 images of one
    size and channel count: grey, or grey and more channels stacked) and back again.

    Returns:
        ``(N, 2)`` float32 positions in ``after``, and ``(N,)`` bool: True where the point was
        found both ways, came back within ``fb_px`` pixels of where it started, and lies
        inside ``after``.
    """
    if len(points) == 0:
        return np.zeros((0, 2), np.float32), np.zeros(0, bool)
    start = np.ascontiguousarray(points, np.float32).reshape(-1, 1, 2)
    size = (window, window)
    ahead, status, _ = cv2.calcOpticalFlowPyrLK(before, after, start, start.copy(), winSize=size, maxLevel=levels,
                                                 criteria=_CRITERIA)
    back, status_back, _ = cv2.calcOpticalFlowPyrLK(after, before, ahead, ahead.copy(), winSize=size,
                                                     maxLevel=levels, criteria=_CRITERIA)
    ahead, back, origin = ahead.reshape(-1, 2), back.reshape(-1, 2), start.reshape(-1, 2)
    height, width = after.shape[:2]
    good = ((status.ravel() == 1) & (status_back.ravel() == 1)
            & (np.linalg.norm(back - origin, axis=1) <= fb_px)
            & (ahead[:, 0] >= 0) & (ahead[:, 1] >= 0) & (ahead[:, 0] <= width - 1) & (ahead[:, 1] <= height - 1))
    return np.asarray(ahead, np.float32), good


def find_corners(
    grey: np.ndarray, shape: np.ndarray, origin: tuple[int, int], scale: float, *, wanted: int,
    existing: np.ndarray, min_distance: int, edge: int,
) -> np.ndarray:
    """Up to ``wanted`` Shi-Tomasi corners of ``grey`` inside an object.

    Args:
        grey: the working image, ``scale`` of the frame's size.
        shape: ``(h, w)`` bool, the object's pixels in a box of the full-size frame whose
            top-left pixel is ``origin`` ``(x, y)``.
        existing: ``(M, 2)`` points (working pixels) the new ones keep ``min_distance`` from.
        edge: the shape is shrunk by this many working pixels first, so that tracking windows
            sit mostly on the object.

    Returns:
        ``(K, 2)`` float32 corners in working pixels, K <= ``wanted``.
    """
    none = np.zeros((0, 2), np.float32)
    if wanted <= 0 or shape.size == 0 or not shape.any():
        return none
    height, width = grey.shape
    x0, y0 = int(origin[0] * scale), int(origin[1] * scale)
    x1 = min(width, int(np.ceil((origin[0] + shape.shape[1]) * scale)) + 1)
    y1 = min(height, int(np.ceil((origin[1] + shape.shape[0]) * scale)) + 1)
    if x1 - x0 < 3 or y1 - y0 < 3:
        return none
    # The shape on the working grid: working pixel (x, y) is frame pixel (x / scale, y / scale).
    xs = (np.arange(x0, x1, dtype=np.float32) / scale - origin[0])[None, :].repeat(y1 - y0, axis=0)
    ys = (np.arange(y0, y1, dtype=np.float32) / scale - origin[1])[:, None].repeat(x1 - x0, axis=1)
    allowed = cv2.remap(shape.astype(np.uint8) * 255, xs, ys, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT)
    allowed = cv2.erode(allowed, np.ones((2 * edge + 1, 2 * edge + 1), np.uint8))
    for x, y in existing:
        cv2.circle(allowed, (int(round(x)) - x0, int(round(y)) - y0), min_distance, 0, -1)
    if not allowed.any():
        return none
    found = cv2.goodFeaturesToTrack(grey[y0:y1, x0:x1], wanted, 0.01, min_distance, mask=allowed, blockSize=5)
    if found is None:
        return none
    return np.asarray(found.reshape(-1, 2) + np.array([x0, y0], np.float32), np.float32)


def points_inside(points: np.ndarray, region: np.ndarray, origin: tuple[int, int]) -> np.ndarray:
    """``(N,)`` bool: which points (nearest pixel) fall on a True pixel of ``(h, w)`` bool
    ``region`` whose top-left pixel is ``origin`` ``(x, y)``."""
    if region.size == 0 or len(points) == 0:
        return np.zeros(len(points), bool)
    cols = np.round(points[:, 0]).astype(int) - origin[0]
    rows = np.round(points[:, 1]).astype(int) - origin[1]
    ok = (cols >= 0) & (rows >= 0) & (cols < region.shape[1]) & (rows < region.shape[0])
    inside = np.zeros(len(points), bool)
    inside[ok] = region[rows[ok], cols[ok]]
    return inside


def sample(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Bilinear samples of a grey uint8 image at ``(N, 2)`` points (edges repeat outside):
    ``(N,)`` float32, rounded to whole grey levels."""
    if len(points) == 0:
        return np.zeros(0, np.float32)
    map_x = np.ascontiguousarray(points[None, :, 0], np.float32)
    map_y = np.ascontiguousarray(points[None, :, 1], np.float32)
    values = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return np.asarray(values[0], np.float32)


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """How alike two ``(N,)`` sets of grey samples are, in [0, 1].

    SSIM's formula (luminance times contrast-structure, with its constants for 8-bit images)
    over the samples as one window, clipped at 0: near 1 for matching samples even where an
    object has little texture, near 0 for unrelated ones; 0 for fewer than two samples.
    """
    if len(a) < 2:
        return 0.0
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mean_a, mean_b = float(a.mean()), float(b.mean())
    covariance = float(((a - mean_a) * (b - mean_b)).mean())
    luminance = (2 * mean_a * mean_b + c1) / (mean_a ** 2 + mean_b ** 2 + c1)
    structure = (2 * covariance + c2) / (float(a.var()) + float(b.var()) + c2)
    return max(0.0, min(1.0, luminance * structure))
