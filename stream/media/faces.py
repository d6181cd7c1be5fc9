"""Drawn faces, and clips of several moving ones: footage with faces that pedsam makes itself.

The privacy harnesses need faces in known places (``--keep-local faces`` must keep each one
home, an attacker's face detector must find it when it is sent), and no third-party face may be
committed. A drawn face is a skin-coloured oval under dark hair, brows, eyes with whites and
irises, a lit nose bridge, nostrils and a mouth, softened by a small blur: OpenCV's Haar
frontal-face cascade finds it at about 40 to 100 px wide on a smooth background, and dlib's CNN
face detector at 40 px and up (with the picture doubled) or 80 px and up.

:func:`faces_clip` draws several faces of different sizes drifting over a still, textured background, each
on its own straight path that bounces off the frame's edges, and returns every frame's face
boxes with the frames. ``samples/make_faces_clip.py`` writes one to a video file.
"""

from __future__ import annotations

import fractions
import os
from dataclasses import dataclass

import cv2
import numpy as np

from pedsam.stream.media.synthetic import encode_clip

__all__ = ["FaceClip", "draw_face", "face_box", "faces_clip", "write_faces_clip"]

Box = tuple[int, int, int, int]  # XYWH pixels


def draw_face(image: np.ndarray, centre: tuple[int, int], width: int, *, blur: bool = True) -> np.ndarray:
    """Draw a face ``width`` px wide (about 1.4 times as tall with its hair) centred at ``centre``
    ``(x, y)`` into the HxWx3 uint8 RGB ``image``, in place, and return it. ``blur``: soften the
    whole picture a little afterwards (a camera's softness; turn it off to draw several faces and
    blur once)."""
    cx, cy = centre
    s = width / 100.0

    def at(x: float, y: float) -> tuple[int, int]:
        return int(cx + x * s), int(cy + y * s)

    def size(a: float, b: float) -> tuple[int, int]:
        return max(1, int(a * s)), max(1, int(b * s))

    cv2.ellipse(image, at(0, -10), size(56, 75), 0, 0, 360, (60, 40, 30), -1)  # hair
    cv2.ellipse(image, at(0, 5), size(50, 65), 0, 0, 360, (220, 180, 150), -1)  # skin
    for side in (-1, 1):
        cv2.ellipse(image, at(side * 20, -18), size(15, 4), 0, 0, 360, (50, 35, 25), -1)  # brow
        cv2.ellipse(image, at(side * 20, -5), size(11, 6), 0, 0, 360, (255, 255, 255), -1)  # eye white
        cv2.circle(image, at(side * 20, -5), max(1, int(5 * s)), (30, 20, 20), -1)  # iris
        cv2.ellipse(image, at(side * 20, 6), size(14, 6), 0, 0, 360, (195, 155, 130), -1)  # shade under the eye
    cv2.ellipse(image, at(0, 18), size(7, 14), 0, 0, 360, (235, 200, 170), -1)  # nose bridge
    cv2.ellipse(image, at(0, 30), size(9, 4), 0, 0, 360, (150, 100, 80), -1)  # nostrils
    cv2.ellipse(image, at(0, 45), size(18, 5), 0, 0, 360, (150, 60, 60), -1)  # mouth
    if blur:
        image[...] = cv2.GaussianBlur(image, (0, 0), 1.0)
    return image


def face_box(centre: tuple[int, int], width: int) -> Box:
    """The XYWH box of the skin oval :func:`draw_face` draws (brow to chin, cheek to cheek): what
    a face detector is expected to find."""
    cx, cy = centre
    s = width / 100.0
    return int(cx - 50 * s), int(cy - 60 * s), int(100 * s), int(130 * s)


@dataclass(frozen=True, slots=True)
class FaceClip:
    """``frames``: HxWx3 uint8 RGB pictures; ``boxes``: per frame, each face's :func:`face_box`
    (face ``k`` is entry ``k`` on every frame)."""

    frames: list[np.ndarray]
    boxes: list[list[Box]]


def faces_clip(frames: int, *, width: int = 640, height: int = 480, faces: int = 4, seed: int = 0,
               sizes: tuple[int, int] = (50, 110)) -> FaceClip:
    """``faces`` faces ``sizes`` px wide (drawn uniformly from that range) drifting at 2-6 px a
    frame over a still background of soft blotches and fine grain (as a wall has: enough corners
    that the edge's motion estimate sees a still camera, not the faces' drift), deterministic for
    given arguments. They start
    apart (when the frame has room) and may pass in front of each other later; a later face is
    drawn over an earlier one.

    Raises:
        ValueError: no frames or faces, or a frame too small for the largest face.
    """
    if frames < 1 or faces < 1:
        raise ValueError(f"need at least one frame and one face, got {frames} frames and {faces} faces")
    if min(width, height) < 2 * sizes[1]:
        raise ValueError(f"{width}x{height} is too small for faces up to {sizes[1]} px wide")
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([150 + 50 * x / width, 160 + 30 * y / height, 170 - 40 * x / width], axis=-1)
    blotches = cv2.GaussianBlur(rng.normal(0, 1, (height, width)).astype(np.float32), (0, 0), 6.0)
    grain = cv2.GaussianBlur(rng.normal(0, 1, (height, width)).astype(np.float32), (0, 0), 1.5)
    texture = 60 * blotches + 12 * grain / grain.std()  # fine grain: corners a still camera is tracked by
    background = np.clip(base + texture[..., None], 0, 255).astype(np.uint8)
    widths = rng.integers(sizes[0], sizes[1] + 1, faces)
    margin = np.stack([widths * 0.6, widths * 0.8], axis=1)  # half the drawn face, hair included
    low, high = margin, np.array([width, height]) - margin
    position = low + rng.random((faces, 2)) * (high - low)
    for _ in range(200):  # start apart where the frame has room: faces may pass each other later
        gaps = np.linalg.norm(position[:, None] - position[None], axis=-1) - (margin[:, None, 0] + margin[None, :, 0])
        np.fill_diagonal(gaps, np.inf)
        crowded = np.flatnonzero((gaps < 0).any(axis=1))
        if not len(crowded):
            break
        k = int(crowded[0])
        position[k] = low[k] + rng.random(2) * (high[k] - low[k])
    angle = rng.random(faces) * 2 * np.pi
    velocity = np.stack([np.cos(angle), np.sin(angle)], axis=1) * rng.uniform(2.0, 6.0, (faces, 1))
    pictures: list[np.ndarray] = []
    boxes: list[list[Box]] = []
    for _ in range(frames):
        image = background.copy()
        centres = [(int(px), int(py)) for px, py in position]
        for centre, face_width in zip(centres, widths):
            draw_face(image, centre, int(face_width), blur=False)
        pictures.append(cv2.GaussianBlur(image, (0, 0), 1.0))
        boxes.append([face_box(centre, int(w)) for centre, w in zip(centres, widths)])
        position = position + velocity
        bounced = (position < low) | (position > high)
        velocity = np.where(bounced, -velocity, velocity)
        position = np.clip(position, low, high)
    return FaceClip(pictures, boxes)


def write_faces_clip(path: str | os.PathLike[str], clip: FaceClip, fps: int = 10) -> None:
    """Write ``clip``'s frames to ``path`` as H.264 (crf 18), ``fps`` frames a second."""
    height, width = clip.frames[0].shape[:2]
    encode_clip(path, iter(clip.frames), width, height, fractions.Fraction(fps))
