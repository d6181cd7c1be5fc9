"""Clips with one drawn face in a known place (the face: :func:`pedsam.stream.media.faces.draw_face`)."""

from __future__ import annotations

import fractions
import os
from collections.abc import Collection

import av
import numpy as np

from pedsam.stream.media.faces import draw_face
from tests.support import scene


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
