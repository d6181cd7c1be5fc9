"""The dense baseline of mask propagation: Farneback optical flow warps the previous mask.

Frame to frame: the flow from this frame back to the previous one says where each pixel came
from, and the previous mask is sampled there. Each step resamples the last result, so errors
compound; ``pedsam bench-propagation`` measures it against the tracked-points method of
:mod:`pedsam.stream.core.propagation`, which is why that one is the default.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["flow_back", "warp_by_flow"]


def flow_back(previous: np.ndarray, grey: np.ndarray) -> np.ndarray:
    """Farneback flow from ``grey`` back to ``previous`` (grey uint8 of one size): ``(h, w, 2)``
    float32, the ``(dx, dy)`` from each pixel of ``grey`` to where it was in ``previous``."""
    flow = np.zeros((*grey.shape, 2), np.float32)
    return np.asarray(cv2.calcOpticalFlowFarneback(grey, previous, flow, 0.5, 3, 15, 3, 5, 1.2, 0), np.float32)


def warp_by_flow(mask: np.ndarray, flow: np.ndarray, scale: float) -> np.ndarray:
    """The previous frame's ``(H, W)`` bool ``mask`` moved to this frame by ``flow`` (computed at
    ``scale`` of the frame's size): ``(H, W)`` bool, bilinear, threshold one half."""
    height, width = mask.shape
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    out = np.zeros((height, width), bool)
    if rows.size == 0:
        return out
    # Only a box around the mask, grown by the largest motion near it, can change.
    fy0, fy1 = int(rows[0] * scale), int(rows[-1] * scale) + 1
    fx0, fx1 = int(cols[0] * scale), int(cols[-1] * scale) + 1
    reach = float(np.abs(flow[fy0:fy1, fx0:fx1]).max()) / scale + 4.0
    x0, y0 = max(0, int(cols[0] - reach)), max(0, int(rows[0] - reach))
    x1, y1 = min(width, int(cols[-1] + reach) + 2), min(height, int(rows[-1] + reach) + 2)
    xs = np.arange(x0, x1, dtype=np.float32)[None, :].repeat(y1 - y0, axis=0)
    ys = np.arange(y0, y1, dtype=np.float32)[:, None].repeat(x1 - x0, axis=1)
    back = cv2.remap(flow, np.asarray(xs * scale, np.float32), np.asarray(ys * scale, np.float32), cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE) / scale
    warped = cv2.remap(mask.astype(np.uint8) * 255, np.asarray(xs + back[..., 0], np.float32),
                       np.asarray(ys + back[..., 1], np.float32), cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    out[y0:y1, x0:x1] = warped > 127
    return out
