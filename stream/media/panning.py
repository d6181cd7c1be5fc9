"""A synthetic camera pan over a wide textured scene, with the true camera offset per frame.

Tests and the privacy report use it where a real moving camera is wanted with a known answer:
frame ``i`` is the ``width x height`` crop of a seeded scene at top-left ``(y_i, x_i)``, where
the camera moves by ``velocity = (vy, vx)`` pixels per frame. The scene is smooth noise at
several scales plus bright discs ("people") scattered over it, so phase correlation has
structure to lock on and detectors have something to find.
"""

from __future__ import annotations

import fractions
import os
from dataclasses import dataclass

import av
import cv2
import numpy as np

__all__ = ["PanClip", "make_pan_clip", "pan_scene"]


@dataclass(frozen=True, slots=True)
class PanClip:
    """A written pan: the file, its frame size, and the true offset ``(y, x)`` of each frame (pixels)."""

    path: str
    width: int
    height: int
    offsets: tuple[tuple[float, float], ...]


def pan_scene(height: int, width: int, seed: int = 0) -> np.ndarray:
    """An HxWx3 uint8 RGB scene: multi-scale smooth noise and scattered discs."""
    rng = np.random.default_rng(seed)
    scene = np.zeros((height, width, 3), np.float32)
    for sigma, weight in ((24.0, 0.5), (6.0, 0.3), (1.5, 0.2)):
        noise = rng.random((height, width, 3)).astype(np.float32)
        blurred = cv2.GaussianBlur(noise, (0, 0), sigma)
        blurred = (blurred - blurred.min()) / max(1e-6, float(blurred.max() - blurred.min()))
        scene += weight * blurred
    image = (scene * 255).clip(0, 255).astype(np.uint8)
    for _ in range(max(1, width * height // 20000)):
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.circle(image, centre, int(rng.integers(6, 20)), colour, -1)
    return image


def make_pan_clip(
    path: str | os.PathLike[str],
    *,
    frames: int = 24,
    width: int = 320,
    height: int = 240,
    velocity: tuple[float, float] = (0.5, 4.0),
    fps: int = 12,
    seed: int = 0,
) -> PanClip:
    """Write a pan of ``frames`` frames to ``path`` (H.264, crf 12) and return its true offsets.

    Raises:
        ValueError: an argument out of range (frames < 1, odd or tiny sizes).
    """
    if frames < 1:
        raise ValueError(f"frames must be at least 1, got {frames}")
    if width < 32 or height < 32 or width % 2 or height % 2:
        raise ValueError(f"size must be even and at least 32x32, got {width}x{height}")
    vy, vx = velocity
    span_y = int(abs(vy) * (frames - 1)) + 2
    span_x = int(abs(vx) * (frames - 1)) + 2
    scene = pan_scene(height + span_y, width + span_x, seed)
    start_y = span_y - 1 if vy < 0 else 0
    start_x = span_x - 1 if vx < 0 else 0
    offsets = []
    with av.open(os.fspath(path), "w") as container:
        stream = container.add_stream("libx264", rate=fractions.Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "12"}
        for i in range(frames):
            y, x = start_y + vy * i, start_x + vx * i
            # Sub-pixel camera positions: shift the scene by the fractional part, then crop.
            matrix = np.array([[1, 0, -(x - int(x))], [0, 1, -(y - int(y))]], dtype=np.float32)
            crop = scene[int(y) : int(y) + height + 1, int(x) : int(x) + width + 1]
            frame = np.asarray(cv2.warpAffine(crop, matrix, (width, height), flags=cv2.INTER_LINEAR), np.uint8)
            offsets.append((float(vy * i), float(vx * i)))
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return PanClip(path=os.fspath(path), width=width, height=height, offsets=tuple(offsets))
