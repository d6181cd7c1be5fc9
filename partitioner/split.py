"""How a frame's picture is cut into shares: a partition scheme over a grid, per frame size.

A :class:`Split` is what every rotation policy draws its shares from (:mod:`pedsam.partitioner.rotation`):
the scheme (:mod:`pedsam.partitioner.schemes`) applied to the picture windows of a frame of a
given size, cached, since a stream's frames rarely change size.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from pedsam.partitioner.geometry import WindowGrid
from pedsam.partitioner.schemes import Share, partition

__all__ = ["Split"]


@functools.lru_cache(maxsize=256)
def _shares(
    grid: WindowGrid, k: int, scheme: str, content: tuple[int, int], secret: bytes | None, salt: int, single: bool
) -> tuple[Share, ...]:
    # Shares depend on the frame's picture only through its size: a run recomputes nothing.
    return partition(grid, k, scheme, content=content, secret=secret, salt=salt, allow_single=single)


@dataclass(frozen=True, slots=True)
class Split:
    """How a frame's picture is cut into ``k`` shares: a scheme over a grid, per frame size."""

    grid: WindowGrid
    k: int
    scheme: str
    secret: bytes | None = None
    allow_single: bool = False

    def __post_init__(self) -> None:
        self.shares()  # a bad scheme, k or secret fails here, not on the first frame

    def shares(self, content: tuple[int, int] | None = None, salt: int = 0) -> tuple[Share, ...]:
        """The ``k`` shares of a frame whose picture is ``content`` (default the whole grid)."""
        size = (self.grid.grid_h, self.grid.grid_w) if content is None else (int(content[0]), int(content[1]))
        return _shares(self.grid, self.k, self.scheme, size, self.secret, salt, self.allow_single)

    def with_scheme(self, scheme: str) -> Split:
        return Split(self.grid, self.k, scheme, self.secret, self.allow_single)
