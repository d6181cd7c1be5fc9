"""Window geometry of a SAM image encoder's token grid.

Coordinates: the token grid is ``grid_h`` x ``grid_w`` tokens (one token per ``patch_size``
pixel square of the padded input image), indexed ``(y, x)`` from the top-left token. SAM's
windowed blocks pad that grid with zeros at the bottom and right to ``padded_h`` x ``padded_w``
(multiples of ``window_size``) and cut it into ``rows`` x ``cols`` windows of
``window_size`` x ``window_size`` tokens. A window's id is row-major: ``row * cols + col``.
Border windows hold fewer *valid* (unpadded) tokens; :class:`Window` records only those.

*Picture* tokens are the tokens that cover pixels of the real frame: SAM resizes a frame's
longest side to the encoder input and pads the rest of the square with zeros, so a 4:3 frame
fills ``content = (48, 64)`` of ViT-B's 64x64 tokens and a 16:9 one ``(36, 64)``. Content always
starts at the top-left token. A window with no picture token (5 of ViT-B's 25 for 4:3, 10 for
16:9) is *pure padding*: its first-segment input is the same on every frame and shows nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from pedsam.partitioner.errors import PartitionError

__all__ = ["TokenOffset", "Window", "WindowGrid"]

TokenOffset = tuple[float, float]
"""``(dy, dx)`` tokens: where a frame's top-left token sits in scene coordinates (frame 0 at
``(0, 0)``; a camera panning right makes ``dx`` grow)."""


def _require_positive(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise PartitionError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < 1:
        raise PartitionError(f"{name} must be at least 1, got {value}")
    return value


@dataclass(frozen=True, slots=True)
class Window:
    """One attention window, in token coordinates of the (unpadded) token grid.

    Attributes:
        id: row-major window id, ``row * cols + col``.
        row, col: position in the window grid (windows, not tokens).
        top, left: token coordinates (y, x) of the window's top-left token:
            ``(row * window_size, col * window_size)``.
        height, width: number of valid (unpadded) tokens along y and x, each in
            ``1..window_size``; smaller than ``window_size`` only on the bottom/right border.
    """

    id: int
    row: int
    col: int
    top: int
    left: int
    height: int
    width: int

    @property
    def num_tokens(self) -> int:
        """Number of valid tokens in the window (``height * width``)."""
        return self.height * self.width


@dataclass(frozen=True, slots=True)
class WindowGrid:
    """A ``grid_h`` x ``grid_w`` token grid cut into ``window_size`` x ``window_size`` windows.

    Raises :class:`PartitionError` at construction if any size is below 1.
    """

    grid_h: int
    grid_w: int
    window_size: int
    _windows: tuple[Window, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _require_positive("grid_h", self.grid_h)
        _require_positive("grid_w", self.grid_w)
        _require_positive("window_size", self.window_size)
        object.__setattr__(self, "_windows", tuple(self._make(wid) for wid in range(self.num_windows)))

    @classmethod
    def for_encoder(cls, img_size: int, patch_size: int, window_size: int) -> WindowGrid:
        """The grid of a SAM ViT encoder: ``img_size // patch_size`` tokens a side.

        Args:
            img_size: side of the square encoder input, pixels (SAM: 1024).
            patch_size: side of one patch/token, pixels (SAM: 16).
            window_size: side of one attention window, tokens (SAM: 14).
        """
        _require_positive("img_size", img_size)
        _require_positive("patch_size", patch_size)
        _require_positive("window_size", window_size)
        if img_size < patch_size:
            raise PartitionError(
                f"img_size ({img_size} px) is smaller than patch_size ({patch_size} px): "
                "the encoder would have no tokens; use img_size >= patch_size"
            )
        side = img_size // patch_size
        return cls(side, side, window_size)

    @property
    def rows(self) -> int:
        """Number of window rows: ``ceil(grid_h / window_size)``."""
        return -(-self.grid_h // self.window_size)

    @property
    def cols(self) -> int:
        """Number of window columns: ``ceil(grid_w / window_size)``."""
        return -(-self.grid_w // self.window_size)

    @property
    def padded_h(self) -> int:
        """Token-grid height after SAM's window padding: ``rows * window_size`` tokens."""
        return self.rows * self.window_size

    @property
    def padded_w(self) -> int:
        """Token-grid width after SAM's window padding: ``cols * window_size`` tokens."""
        return self.cols * self.window_size

    @property
    def num_windows(self) -> int:
        """Number of windows, ``rows * cols``."""
        return self.rows * self.cols

    @property
    def windows(self) -> tuple[Window, ...]:
        """Every window, in id (row-major) order."""
        return self._windows

    def window(self, wid: int) -> Window:
        """The window with id ``wid``; :class:`PartitionError` if there is none."""
        self._check_id(wid)
        return self._windows[wid]

    def neighbours(self, wid: int) -> tuple[int, ...]:
        """Ids of the windows sharing an edge with window ``wid`` (up to 4), ascending."""
        self._check_id(wid)
        row, col = divmod(wid, self.cols)
        found = []
        if row > 0:
            found.append(wid - self.cols)
        if col > 0:
            found.append(wid - 1)
        if col < self.cols - 1:
            found.append(wid + 1)
        if row < self.rows - 1:
            found.append(wid + self.cols)
        return tuple(found)

    def picture_tokens(self, content: tuple[int, int] | None = None) -> np.ndarray:
        """Picture tokens of every window.

        Args:
            content: ``(rows, cols)`` tokens covering the frame, from the top-left token
                (clipped to the grid); default the whole grid.

        Returns:
            (num_windows,) int64: per window id, how many of its valid tokens lie inside
            ``content``; 0 for a window that is pure padding.
        """
        rows, cols = self._content(content)
        tops = np.array([w.top for w in self._windows], dtype=np.int64)
        lefts = np.array([w.left for w in self._windows], dtype=np.int64)
        heights = np.clip(rows - tops, 0, self.window_size)
        widths = np.clip(cols - lefts, 0, self.window_size)
        return heights * widths

    def picture_windows(self, content: tuple[int, int] | None = None) -> tuple[int, ...]:
        """Ids of the windows holding at least one picture token, ascending."""
        return tuple(int(w) for w in np.flatnonzero(self.picture_tokens(content)))

    def picture_shape(self, content: tuple[int, int] | None = None) -> tuple[int, int]:
        """``(rows, cols)`` of windows holding picture: those windows form that rectangle at the
        top-left of the window grid (content starts at the top-left token)."""
        rows, cols = self._content(content)
        size = self.window_size
        return (-(-rows // size), -(-cols // size))

    def _content(self, content: tuple[int, int] | None) -> tuple[int, int]:
        if content is None:
            return (self.grid_h, self.grid_w)
        rows, cols = content
        return (max(0, min(int(rows), self.grid_h)), max(0, min(int(cols), self.grid_w)))

    def token_owner_map(self, shares: Sequence[Sequence[int]]) -> np.ndarray:
        """Which share holds each token.

        Args:
            shares: window ids per share; share ``i`` is ``shares[i]``. Shares must be
                disjoint; they need not cover every window.

        Returns:
            (grid_h, grid_w) int32 array over the unpadded token grid: the index ``i`` of the
            share whose window contains the token, or -1 if no share has that window.
        """
        owner = np.full((self.grid_h, self.grid_w), -1, dtype=np.int32)
        seen: dict[int, int] = {}
        for index, share in enumerate(shares):
            for wid in share:
                window = self.window(wid)
                if wid in seen:
                    raise PartitionError(
                        f"window {wid} is in share {seen[wid]} and share {index}; "
                        "give each window to at most one share"
                    )
                seen[wid] = index
                owner[window.top : window.top + window.height, window.left : window.left + window.width] = index
        return owner

    def _check_id(self, wid: int) -> None:
        if not isinstance(wid, (int, np.integer)) or isinstance(wid, bool) or not 0 <= wid < self.num_windows:
            raise PartitionError(
                f"no window {wid!r} in a {self.rows}x{self.cols} window grid; ids are 0..{self.num_windows - 1}"
            )

    def _make(self, wid: int) -> Window:
        row, col = divmod(wid, self.cols)
        top, left = row * self.window_size, col * self.window_size
        return Window(
            id=wid,
            row=row,
            col=col,
            top=top,
            left=left,
            height=min(self.window_size, self.grid_h - top),
            width=min(self.window_size, self.grid_w - left),
        )
