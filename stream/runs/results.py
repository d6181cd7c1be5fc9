"""What the frame engine hands out: per frame, its objects' masks or the error in their place."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pedsam.stream.core.shares import FrameAudit
from pedsam.stream.media.video import Frame

__all__ = ["FrameResult", "ObjectResult"]


@dataclass(frozen=True, slots=True)
class ObjectResult:
    """One object in one frame: (H, W) bool mask at frame size, SAM's score (of the keyframe the
    mask comes from), XYXY box or None, and the mask's confidence: 1 for a mask SAM predicted on
    this frame (or one given), the propagation's confidence in [0, 1] otherwise."""

    id: int
    mask: np.ndarray
    score: float
    box: tuple[float, float, float, float] | None
    confidence: float = 1.0


@dataclass(frozen=True, slots=True)
class FrameResult:
    """What a frame produced: objects (masks), or an error saying why it has none.

    ``latency`` is seconds from the frame's capture (a file's frame: its decoding) to its
    masks; ``segmented`` says whether the frame has masks (False while no object is followed,
    and for error results). ``keyframe``: the masks are SAM's on this very frame (or given);
    otherwise they were propagated on the edge from the keyframe ``keyframe_age`` frames before
    (source frame indices), and the frame never left the edge.
    """

    frame: Frame
    objects: tuple[ObjectResult, ...]
    error: str | None
    audit: FrameAudit | None
    latency: float
    segmented: bool = False
    keyframe: bool = False
    keyframe_age: int = 0
