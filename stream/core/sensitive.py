"""Sensitive regions stay home: the edge finds faces and people and keeps their windows to itself.

The per-frame split bounds how *much* of a frame a worker sees, not *what*: a face fits in one
window. With ``--keep-local faces,people`` the edge runs cheap detectors on every frame it sends
(and, in a keyframed run, on every frame it shows), holds what they found for a grace period,
and the scheduler gives every window that touches a held region to the edge
(:mod:`pedsam.partitioner.scheduler`, ``keep``). Those windows are computed by the same segment
code as a worker's, so the embedding is unchanged; no worker receives them and the exposure
ledger never counts them as seen.

Detectors (shipped inside OpenCV 4.x, nothing downloaded): faces by the Haar frontal-face
cascade on a grey copy of the frame downscaled to at most :attr:`Detector.face_width` pixels
across; people by the HOG + linear SVM people detector on a grey copy scaled, up or down, to
:attr:`Detector.people_width` pixels across. Settings err towards finding too much (a false find
costs edge CPU; a miss leaks). HOG's window is fixed at 64x128 with a person about 96 px tall
inside, so it finds no one much shorter in its copy: a fixed working width finds people down to
the same share of any camera's frame (a twelfth of its width, under half a ViT-B window) at a
cost set by that width, not by the camera; a coarse pyramid (steps of 1.3) pays for it. Its
window holds the person with a margin (16 of its 64x128 pixels on each side, by the detector's
design), which the edge trims before widening the find by :attr:`KeepLocal.margin` like any
other: the margin is then the same share of the person for people as for faces.

Temporal hold (:class:`SensitiveRegions`): a detector misses now and then (a turned head, motion
blur, a frame of noise). A region found on one frame is kept for :attr:`KeepLocal.hold` more
frames without being found again, and grows meanwhile by :attr:`KeepLocal.grow` of its size on
each side per frame, so an object moving at up to that speed stays inside it. Boxes are XYXY
pixels of the original frame.

Frames shown but not sent (a keyframed run's in-between frames) only keep the hold up to date:
none of their pixels leaves the edge. They are searched every :attr:`KeepLocal.shown_every`-th
frame and otherwise count as a frame unseen; every frame sent is searched. At camera rate this
halves the search's cost on the edge, whose frame loop it shares.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pedsam.partitioner.geometry import WindowGrid
from pedsam.stream.core.motion import content_tokens, input_scale
from pedsam.stream.errors import ConfigError

__all__ = ["DEFAULT_HOLD", "KINDS", "Detector", "KeepLocal", "Region", "SensitiveRegions", "windows_touching"]

KINDS: tuple[str, ...] = ("faces", "people")
"""What ``--keep-local`` can keep home."""

DEFAULT_HOLD = 8
"""Frames a region is kept after the detector last found it (a third of a second at 25 fps)."""

Box = tuple[float, float, float, float]  # XYXY pixels of the original frame


@dataclass(frozen=True, kw_only=True, slots=True)
class KeepLocal:
    """What the edge keeps home, and for how long after it last saw it.

    Attributes:
        kinds: a subset of :data:`KINDS`; empty: keep nothing (the feature is off).
        hold: frames a region stays kept after its last detection, >= 0.
        margin: each detection is widened by this share of its width and height on each side.
        grow: a held region widens by this share of its size on each side per frame it is not found.
        shown_every: frames shown but not sent are searched every this many frames (frames sent: all).
    """

    kinds: tuple[str, ...] = ()
    hold: int = DEFAULT_HOLD
    margin: float = 0.2
    grow: float = 0.1
    shown_every: int = 2

    def __post_init__(self) -> None:
        unknown = [k for k in self.kinds if k not in KINDS]
        if unknown or len(set(self.kinds)) != len(self.kinds):
            raise ConfigError(f"--keep-local {','.join(self.kinds)}: give one or more of {', '.join(KINDS)}, "
                              "each once")
        if isinstance(self.hold, bool) or not isinstance(self.hold, int) or self.hold < 0:
            raise ConfigError(f"--keep-local-hold {self.hold}: give a whole number of frames, 0 or more")
        if isinstance(self.shown_every, bool) or not isinstance(self.shown_every, int) or self.shown_every < 1:
            raise ConfigError(f"keep-local shown_every {self.shown_every}: give a whole number of frames, 1 or more")
        if not 0 <= self.margin <= 2 or not 0 <= self.grow <= 2:
            raise ConfigError("keep-local margin and grow are shares of a region's size between 0 and 2")

    @classmethod
    def parse(cls, text: str, *, hold: int | None = None) -> KeepLocal:
        """``faces,people`` (or ``none``) -> settings; ``hold`` None: :data:`DEFAULT_HOLD`.

        Raises:
            ConfigError: an unknown or repeated kind, or a negative hold.
        """
        words = [w.strip().lower() for w in str(text).split(",") if w.strip()]
        kinds = () if words == ["none"] else tuple(words)
        if not kinds and words != ["none"]:
            raise ConfigError(f"--keep-local {text!r}: give one or more of {', '.join(KINDS)}, or none")
        return cls(kinds=kinds, hold=DEFAULT_HOLD if hold is None else hold)

    @property
    def enabled(self) -> bool:
        return bool(self.kinds)

    def to_json(self) -> dict[str, Any]:
        return {"kinds": list(self.kinds), "hold": self.hold, "margin": self.margin, "grow": self.grow,
                "shown_every": self.shown_every}


@dataclass
class Detector:
    """The edge's sensitive-region detectors, loaded once (cheap settings, see the module doc)."""

    kinds: tuple[str, ...]
    face_width: int = 320  # Haar cascade input, at most this many pixels across: faces of >= 20 of them are found
    people_width: int = 1152  # HOG input, scaled to this many pixels across: people of >= 96 of them tall are found
    person_in_window: tuple[float, float] = (0.25, 0.125)  # HOG window's margin around the person, share per side
    _faces: cv2.CascadeClassifier | None = field(default=None, init=False, repr=False)
    _hog: cv2.HOGDescriptor | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if "faces" in self.kinds:
            path = Path(getattr(cv2, "data").haarcascades) / "haarcascade_frontalface_default.xml"
            self._faces = cv2.CascadeClassifier(str(path))
            if self._faces.empty():
                raise ConfigError(f"--keep-local faces: OpenCV has no Haar face cascade at {path}; "
                                  "install opencv-python-headless < 5")
        if "people" in self.kinds:
            self._hog = cv2.HOGDescriptor()
            self._hog.setSVMDetector(np.asarray(cv2.HOGDescriptor.getDefaultPeopleDetector(), np.float32))

    def __call__(self, image: np.ndarray) -> list[Box]:
        """HxWx3 uint8 RGB frame -> XYXY boxes (frame pixels) of every face and person found."""
        boxes: list[Box] = []
        if self._faces is not None:
            grey, scale = _grey(image, self.face_width)
            found = self._faces.detectMultiScale(grey, scaleFactor=1.15, minNeighbors=3, minSize=(20, 20))
            boxes += [_unscaled(box, scale) for box in found]
        if self._hog is not None:
            grey, scale = _grey(image, self.people_width, upscale=True)
            found, _ = self._hog.detectMultiScale(grey, winStride=(8, 8), scale=1.3, hitThreshold=0.0)
            side, top = self.person_in_window
            boxes += [_widened(_unscaled(box, scale), -side, -top) for box in found]  # the person, not the window
        return boxes


def _grey(image: np.ndarray, width: int, *, upscale: bool = False) -> tuple[np.ndarray, float]:
    """A grey copy ``width`` pixels across (at most, unless ``upscale``), and its scale against the frame."""
    scale = width / image.shape[1]
    if scale < 1.0 or (upscale and scale > 1.0):
        smooth = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=smooth)
    else:
        scale = 1.0
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), scale


def _unscaled(box: Sequence[int], scale: float) -> Box:
    x, y, w, h = (float(v) / scale for v in box)
    return (x, y, x + w, y + h)


@dataclass
class Region:
    """A sensitive region: its box when last found (XYXY frame pixels, margin included) and the
    frames since."""

    box: Box
    age: int = 0

    def grown(self, grow: float) -> Box:
        """The box widened for the frames it has gone unseen."""
        return _widened(self.box, grow * self.age)


@dataclass
class SensitiveRegions:
    """One stream's held sensitive regions, fed every frame in order (see the module doc).

    ``detector``: default the :class:`Detector` of ``settings.kinds``; tests may give their own
    callable (HxWx3 uint8 RGB -> XYXY boxes).
    """

    settings: KeepLocal
    detector: Any = None
    regions: list[Region] = field(default_factory=list)
    frames: int = 0  # frames fed
    searched: int = 0  # frames the detector ran on
    found: int = 0  # detections over all frames
    held: int = 0  # frames on which a region was kept without being found on that frame
    seconds: float = 0.0  # detection wall time over all frames (OpenCV may use several threads meanwhile)
    longest: float = 0.0
    _shape: tuple[int, ...] | None = field(default=None, repr=False)
    _unsearched: int = field(default=0, repr=False)  # frames fed since the last search

    def __post_init__(self) -> None:
        if self.detector is None:
            self.detector = Detector(self.settings.kinds)

    def update(self, image: np.ndarray, *, search: bool = True) -> list[Box]:
        """Detect on the next frame (HxWx3 uint8 RGB) and return every region kept on it, XYXY
        frame pixels: this frame's finds and the held ones not found again. A frame of another size
        (a browser's camera changed) starts afresh: held boxes were in the old frame's pixels.
        ``search`` False: the frame is counted but not searched, as if the detector missed."""
        if image.shape != self._shape:
            self.regions, self._shape, search = [], image.shape, True
        found: list[Box] = []
        if search:
            started = time.perf_counter()
            found = [_widened(box, self.settings.margin) for box in self.detector(image)]
            spent = time.perf_counter() - started
            self.seconds += spent
            self.longest = max(self.longest, spent)
            self.searched += 1
        self._unsearched = 0 if search else self._unsearched + 1
        self.frames += 1
        self.found += len(found)
        kept = []
        for region in self.regions:
            region.age += 1
            # found again (overlapping a find): the find replaces it; else held while young
            if region.age <= self.settings.hold and not any(_overlap(region.grown(self.settings.grow), f) for f in found):
                kept.append(region)
        if kept:
            self.held += 1
        self.regions = kept + [Region(box) for box in found]
        return [r.grown(self.settings.grow) for r in self.regions]

    def shown(self, image: np.ndarray) -> None:
        """A frame shown but not sent: searched if :attr:`KeepLocal.shown_every` frames have gone
        by since the last search, else counted unseen (see the module doc)."""
        self.update(image, search=self._unsearched + 1 >= self.settings.shown_every)

    def summary(self) -> dict[str, Any]:
        """JSON-ready: the settings, frames fed and searched, detections, frames with a region
        held unseen, and detection time per frame fed (mean, and the largest search; wall
        milliseconds; ``pedsam bench-keep-local`` measures its CPU)."""
        mean = 1000 * self.seconds / self.frames if self.frames else 0.0
        return {**self.settings.to_json(), "frames": self.frames, "searched_frames": self.searched,
                "detections": self.found, "held_frames": self.held,
                "detect_ms_mean": round(mean, 2), "detect_ms_max": round(1000 * self.longest, 2)}


def _widened(box: Box, margin: float, vertical: float | None = None) -> Box:
    """``box`` widened by ``margin`` of its width on the left and right and ``vertical`` (default
    ``margin``) of its height above and below; negative shares trim it."""
    x0, y0, x1, y1 = box
    dx, dy = margin * (x1 - x0), (margin if vertical is None else vertical) * (y1 - y0)
    return (x0 - dx, y0 - dy, x1 + dx, y1 + dy)


def _overlap(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def windows_touching(
    boxes: Sequence[Box], frame_size: tuple[int, int], grid: WindowGrid, img_size: int, patch_size: int
) -> tuple[int, ...]:
    """Ids of the windows of ``grid`` holding any token whose pixels touch a box.

    ``boxes`` are XYXY pixels of a frame of ``frame_size`` ``(H, W)``; SAM resizes its longest side
    to ``img_size`` and cuts ``patch_size`` pixel tokens. A token touches a box when their pixel
    areas overlap at all, so a box is covered whole by the windows returned.
    """
    rows, cols = content_tokens(frame_size, img_size, patch_size)
    step = patch_size / input_scale(frame_size, img_size)  # frame pixels per token
    size = grid.window_size
    found: set[int] = set()
    for x0, y0, x1, y1 in boxes:
        r0, c0 = max(0, math.floor(y0 / step)), max(0, math.floor(x0 / step))
        r1, c1 = min(rows, math.ceil(y1 / step)), min(cols, math.ceil(x1 / step))  # exclusive
        if r0 >= r1 or c0 >= c1:
            continue
        for wr in range(r0 // size, (r1 - 1) // size + 1):
            for wc in range(c0 // size, (c1 - 1) // size + 1):
                found.add(wr * grid.cols + wc)
    return tuple(sorted(found))
