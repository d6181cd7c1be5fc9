"""The ``adaptive`` rotation: fixed while the camera is still, bands along its travel while it moves.

A still camera shows a server the same part of the world on every frame, so its share of the
scene stays its share of a frame, whatever the scheme: ``fixed`` over the scheme (by default
``interleaved``, which shows least of a frame) costs nothing. A moving camera sweeps the world
through every share; what a share sweeps up grows with its extent across the motion, and a band
that spans the picture along the motion sees new scene only at its two short ends, where an
``interleaved`` share (every k-th window of every row) takes in two windows' worth of each row
it crosses. So while the camera travels the shares are bands along the travel: the ``rows``
scheme when it moves sideways, ``columns`` when it moves up or down.

The decision follows the camera offsets the policy is given (the edge's motion estimate), with
hysteresis, so a handheld camera's jitter or a frame of bad estimate does not flip it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from pedsam.partitioner.assignment import Assignment
from pedsam.partitioner.geometry import TokenOffset
from pedsam.partitioner.split import Split

__all__ = ["AdaptiveRotation"]


@dataclass
class AdaptiveRotation:
    """``fixed`` over the scheme while the camera is still, over bands along its travel while it
    moves; the decision follows the offsets it is given, with hysteresis.

    The policy keeps an *anchor*, the offset where the camera last settled. It switches to
    *travel* once the offset is ``travel_windows`` windows (either axis) from the anchor, and
    back to *still* once the camera moved less than ``settle_windows`` windows over the last
    ``settle_frames`` frames; the anchor is then the offset there. Travel uses ``rows`` bands
    when the move from the anchor is mostly sideways, else ``columns``, and turns the bands
    when the other axis has moved twice as far over the last ``settle_frames`` frames. A jump
    larger than the picture between two frames (no overlap: the motion estimate's cut) starts
    a new scene: still, anchored there. Proposals must come in sending order.
    """

    split: Split
    servers: tuple[str, ...]
    travel_windows: float = 1.0
    settle_windows: float = 0.25
    settle_frames: int = 25
    name: str = "adaptive"
    _mode: str = field(default="still", init=False)
    _anchor: tuple[float, float] | None = field(default=None, init=False)
    _recent: deque[tuple[float, float]] = field(default_factory=deque, init=False)

    def __post_init__(self) -> None:
        self._rows = self.split.with_scheme("rows")
        self._columns = self.split.with_scheme("columns")

    @property
    def slots(self) -> int:
        return self.split.k

    @property
    def mode(self) -> str:
        return self._mode

    def propose(
        self, frame_index: int, offset: TokenOffset = (0.0, 0.0), content: tuple[int, int] | None = None
    ) -> Assignment:
        self._follow((float(offset[0]), float(offset[1])), content)
        split = {"still": self.split, "travel-rows": self._rows, "travel-columns": self._columns}[self._mode]
        return Assignment(frame_index=frame_index, shares=dict(zip(self.servers, split.shares(content))))

    def _follow(self, offset: tuple[float, float], content: tuple[int, int] | None) -> None:
        grid = self.split.grid
        size = grid.window_size
        rows, cols = (grid.grid_h, grid.grid_w) if content is None else content
        last = self._recent[-1] if self._recent else None
        if last is None or abs(offset[0] - last[0]) >= rows or abs(offset[1] - last[1]) >= cols:
            self._mode, self._anchor = "still", offset  # a new scene
            self._recent.clear()
        self._recent.append(offset)
        while len(self._recent) > self.settle_frames + 1:
            self._recent.popleft()
        assert self._anchor is not None
        dy, dx = offset[0] - self._anchor[0], offset[1] - self._anchor[1]
        if self._mode == "still":
            if max(abs(dy), abs(dx)) >= self.travel_windows * size:
                self._mode = "travel-rows" if abs(dx) >= abs(dy) else "travel-columns"
            return
        first = self._recent[0]
        my, mx = abs(offset[0] - first[0]), abs(offset[1] - first[1])
        if len(self._recent) > self.settle_frames and max(my, mx) < self.settle_windows * size:
            self._mode, self._anchor = "still", offset
        elif self._mode == "travel-rows" and my > 2 * mx:
            self._mode = "travel-columns"
        elif self._mode == "travel-columns" and mx > 2 * my:
            self._mode = "travel-rows"
