"""A drawn face that OpenCV's Haar frontal-face cascade finds, and clips with one in a known place.

Generated here (no third-party media): a skin-coloured oval under dark hair, brows, eyes with
whites and irises, a lit nose bridge, nostrils and a mouth, softened by a small blur; the cascade
finds it at 40 to 100 px wide on a smooth background.
"""

from __future__ import annotations

import fractions
import os
from collections.abc import Collection

import av
import cv2
import numpy as np

from tests.support import scene


def draw_face(image: np.ndarray, centre: tuple[int, int], width: int) -> np.ndarray:
    """Draw a face ``width`` px wide (about 1.4 times as tall) centred at ``centre`` ``(x, y)`` into
    the HxWx3 uint8 RGB ``image``, in place; returns it."""
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
    blurred = cv2.GaussianBlur(image, (0, 0), 1.0)
    image[...] = blurred
    return image


def face_frames(
    frames: int, *, size: tuple[int, int] = (240, 320), centre: tuple[int, int] = (70, 70), width: int = 60,
    blank: Collection[int] = (),
) -> list[np.ndarray]:
    """``frames`` HxWx3 uint8 RGB frames of ``size`` ``(H, W)``: a smooth test scene with a face at
    ``centre`` ``(x, y)``, except on the frames in ``blank``, where the face is gone."""
    height, width_px = size
    background = scene(height, width_px, seed=7)
    return [background.copy() if i in blank else draw_face(background.copy(), centre, width) for i in range(frames)]


def write_clip(path: str | os.PathLike[str], images: list[np.ndarray], fps: int = 10) -> str:
    """Write HxWx3 uint8 RGB ``images`` to ``path`` (H.264, crf 12); returns the path."""
    height, width = images[0].shape[:2]
    with av.open(os.fspath(path), "w") as container:
        stream = container.add_stream("libx264", rate=fractions.Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "12"}
        for image in images:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return os.fspath(path)
