"""Frames with one drawn person in a known place (the person: :func:`pedsam.stream.media.people.draw_person`)."""

from __future__ import annotations

import cv2
import numpy as np

from pedsam.stream.media.people import draw_person

FEET, HEIGHT = (210, 413), 126  # inside ViT-B window (row 2, column 1) of a 640x480 frame: x 140-280, y 280-420


def person_frame(*, person: bool = True) -> np.ndarray:
    """A 640x480 flat grey frame with a drawn person standing at ``FEET``, softened as a camera would.

    (Both person attackers find this person; the edge's HOG, at its coarse camera-rate settings, does not.)"""
    image = np.full((480, 640, 3), (150, 150, 140), np.uint8)
    if person:
        draw_person(image, FEET, HEIGHT)
    return cv2.GaussianBlur(image, (0, 0), 1.0)
