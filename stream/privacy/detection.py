"""Detection attack: OpenCV's pretrained people and face detectors on a server's reconstruction.

Both detectors ship inside OpenCV 4.x (no download): the HOG + linear SVM people detector
(``cv2.HOGDescriptor.getDefaultPeopleDetector``) and the Haar cascade for frontal faces
(``haarcascade_frontalface_default.xml`` under ``cv2.data.haarcascades``). The attack's score is
*recall relative to the full frame*: of the detections on the true frame, the share that a
detection on the server's reconstruction matches (IoU >= 0.5). Boxes are XYWH pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from pedsam.stream.errors import ConfigError

__all__ = ["Detectors", "iou", "matched"]

Box = tuple[int, int, int, int]


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two XYWH boxes."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = w * h
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def matched(reference: Sequence[Box], found: Sequence[Box], threshold: float = 0.5) -> int:
    """How many ``reference`` boxes a distinct ``found`` box matches with IoU >= ``threshold`` (greedy)."""
    pairs = sorted(((iou(r, f), i, j) for i, r in enumerate(reference) for j, f in enumerate(found)), reverse=True)
    used_r: set[int] = set()
    used_f: set[int] = set()
    for score, i, j in pairs:
        if score < threshold:
            break
        if i not in used_r and j not in used_f:
            used_r.add(i)
            used_f.add(j)
    return len(used_r)


@dataclass
class Detectors:
    """The two OpenCV detectors, loaded once."""

    hog: cv2.HOGDescriptor = field(init=False)
    faces: cv2.CascadeClassifier = field(init=False)

    def __post_init__(self) -> None:
        self.hog = cv2.HOGDescriptor()
        self.hog.setSVMDetector(np.asarray(cv2.HOGDescriptor.getDefaultPeopleDetector(), np.float32))
        path = Path(getattr(cv2, "data").haarcascades) / "haarcascade_frontalface_default.xml"
        self.faces = cv2.CascadeClassifier(str(path))
        if self.faces.empty():
            raise ConfigError(f"OpenCV has no Haar face cascade at {path}; install opencv-python-headless < 5")

    def people(self, image: np.ndarray) -> list[Box]:
        """HOG people boxes in an HxWx3 uint8 RGB image."""
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        boxes, _ = self.hog.detectMultiScale(grey, winStride=(8, 8), scale=1.05)
        return [tuple(int(v) for v in box) for box in boxes]  # type: ignore[misc]

    def face_boxes(self, image: np.ndarray) -> list[Box]:
        """Haar frontal-face boxes in an HxWx3 uint8 RGB image."""
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        boxes = self.faces.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=4)
        return [tuple(int(v) for v in box) for box in boxes]  # type: ignore[misc]
