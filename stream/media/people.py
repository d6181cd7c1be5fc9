"""Drawn people: a standing figure in a known place, for the privacy harnesses' person attacks.

No third-party footage of people may be committed, and the tests of a person attacker need a
person exactly where they put one. A drawn person is a standing figure in flat colours: head
under dark hair, neck, a shirt torso with arms and hands, trousers, shoes, 2.5 head-heights
wide and ``height`` (eight head-heights) tall. On a flat grey background the SSDLite pedestrian
detector of :mod:`pedsam.stream.privacy.ssd` scores one of 130 to 160 px tall at 0.65 to 0.9 (one
of 100 px at 0.25 to 0.8), and OpenCV's HOG people detector finds it too; on a busy or brightly
coloured background the SSD scores it lower.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["draw_person", "person_box"]

Box = tuple[int, int, int, int]  # XYWH pixels

SKIN = (225, 185, 155)
HAIR = (50, 35, 25)
SHOES = (20, 20, 20)


def draw_person(image: np.ndarray, feet: tuple[int, int], height: int, *, shirt: tuple[int, int, int] = (40, 60, 170),
                trousers: tuple[int, int, int] = (40, 40, 55)) -> np.ndarray:
    """Draw a standing person ``height`` px tall whose feet are at ``feet`` ``(x, y)`` into the
    HxWx3 uint8 RGB ``image``, in place, and return it (no blur: soften the picture once after
    drawing everything)."""
    fx, fy = feet
    unit = height / 8.0  # a head is about an eighth of a standing person
    top = fy - height

    def at(x: float, y: float) -> tuple[int, int]:
        return int(fx + x * unit), int(top + y * unit)

    def thick(k: float) -> int:
        return max(2, int(k * unit))

    for side in (-1, 1):
        cv2.line(image, at(side * 0.45, 4.0), at(side * 0.55, 7.7), trousers, thick(0.65))  # leg
        cv2.ellipse(image, at(side * 0.65, 7.85), (thick(0.4), thick(0.18)), 0, 0, 360, SHOES, -1)
    torso = np.array([at(-1.0, 1.5), at(1.0, 1.5), at(0.85, 4.3), at(-0.85, 4.3)], np.int32)
    cv2.fillPoly(image, [torso], shirt)
    for side in (-1, 1):
        cv2.line(image, at(side * 1.0, 1.7), at(side * 1.25, 3.9), shirt, thick(0.35))  # arm
        cv2.circle(image, at(side * 1.25, 4.0), thick(0.2), SKIN, -1)  # hand
    cv2.line(image, at(0, 1.0), at(0, 1.5), SKIN, thick(0.3))  # neck
    cv2.ellipse(image, at(0, 0.65), (thick(0.42), thick(0.55)), 0, 0, 360, SKIN, -1)  # head
    cv2.ellipse(image, at(0, 0.35), (thick(0.45), thick(0.35)), 0, 180, 360, HAIR, -1)  # hair
    return image


def person_box(feet: tuple[int, int], height: int) -> Box:
    """The XYWH box of the person :func:`draw_person` draws (hand to hand, head to feet): what a
    person detector is expected to find."""
    fx, fy = feet
    unit = height / 8.0
    return int(fx - 1.25 * unit), int(fy - height), int(2.5 * unit), int(height)
