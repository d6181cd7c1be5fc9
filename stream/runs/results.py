"""What the frame engine hands out: per frame, its objects' masks or the error in their place."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pedsam.stream.core.shares import FrameAudit
from pedsam.stream.media.video import Frame

__all__ = ["FrameResult", "ObjectResult"]


@dataclass(frozen=True, slots=True)
class ObjectResult:
    """One object in one frame: (H, W) bool mask at frame size, SAM's score, XYXY box or None."""

    id: int
    mask: np.ndarray
    score: float
    box: tuple[float, float, float, float] | None


@dataclass(frozen=True, slots=True)
class FrameResult:
    """What a frame produced: objects (masks), or an error saying why it has none.

    ``latency`` is seconds from the frame's capture (a file's frame: its decoding) to its
    masks; ``segmented`` says whether the frame went through SAM (False while no object is
    followed, and for error results).
    """

    frame: Frame
    objects: tuple[ObjectResult, ...]
    error: str | None
    audit: FrameAudit | None
    latency: float
    segmented: bool = False
