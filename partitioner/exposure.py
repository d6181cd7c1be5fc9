"""The exposure ledger: what each server has seen of a video, from what it actually received.

Units and frames of reference:

- A *content token* is a token of the grid that covers pixels of the real image (not SAM's
  zero padding of the resized frame to a square). ``content = (rows, cols)`` gives their extent
  from the top-left token; tokens outside it carry no pixels, so receiving them exposes nothing.
- *Image coordinates* are token positions ``(y, x)`` in the frame's grid.
- *Scene coordinates* are image coordinates plus the frame's camera offset ``(dy, dx)`` in
  tokens, rounded to whole tokens (see :mod:`pedsam.partitioner.rotation`); a static point of the world
  keeps its scene coordinates while the camera moves.
- The *horizon* is the last ``T`` recorded frames, the current one included.

Per frame and server, :meth:`ExposureLedger.record` reports (:class:`ServerExposure`):

- ``frame_share``: the server's content tokens over the frame's content tokens;
- ``distinct_windows``: how many different window ids (image coordinates) it got in the horizon;
- ``scene_share``: scene cells it saw in the horizon over all scene cells any frame of the
  horizon showed (motion-compensated: a panning camera grows both);
- ``scene_frames``: scene cells it saw in the horizon over the current frame's content tokens,
  i.e. how many frames' worth of the world it has seen. For a still camera it equals
  ``scene_share``; it is never smaller. Budgets cap this one: unlike ``scene_share`` it cannot
  rise when old frames leave the horizon, so a cap checked when windows are sent holds on every
  later frame too (for frames of one size);
- ``run``: the longest current run of consecutive recorded frames in which it got the same
  window id (0 if it got nothing this frame).

:meth:`ExposureLedger.summary` gives the maximum of each over the run, the longest run, and
counts. Frames must be recorded in the order they are sent.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pedsam.partitioner.assignment import EDGE
from pedsam.partitioner.errors import PartitionError
from pedsam.partitioner.geometry import WindowGrid

__all__ = ["ExposureLedger", "FrameCells", "FrameExposure", "ServerExposure"]

_BIAS = 1 << 30  # scene cells are keyed (y + _BIAS) << 32 | (x + _BIAS): offsets may be negative


@dataclass(frozen=True, slots=True)
class FrameCells:
    """One frame's windows in scene coordinates.

    Attributes:
        offset: the camera offset ``(dy, dx)``, whole tokens.
        content: ``(rows, cols)`` content tokens from the top-left of the grid.
        cells: per window id, int64 keys of the scene cells of its content tokens.
        total: content tokens in the frame.
    """

    offset: tuple[int, int]
    content: tuple[int, int]
    cells: tuple[np.ndarray, ...]
    total: int

    def union(self, windows: Iterable[int]) -> np.ndarray:
        """Scene-cell keys of ``windows`` (disjoint within a frame), concatenated."""
        parts = [self.cells[w] for w in windows]
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)


@dataclass(frozen=True, slots=True)
class ServerExposure:
    """What one server saw, as of one frame (see the module docstring for each field)."""

    windows: int
    frame_share: float
    distinct_windows: int
    scene_share: float
    scene_frames: float
    run: int

    def to_json(self) -> dict[str, Any]:
        return {
            "windows": self.windows,
            "frame_share": round(self.frame_share, 6),
            "distinct_windows": self.distinct_windows,
            "scene_share": round(self.scene_share, 6),
            "scene_frames": round(self.scene_frames, 6),
            "run": self.run,
        }


@dataclass(frozen=True, slots=True)
class FrameExposure:
    """Every server's exposure as of frame ``frame``, plus the windows the edge kept."""

    frame: int
    servers: Mapping[str, ServerExposure]
    edge_windows: int
    scene_cells: int

    def to_json(self) -> dict[str, Any]:
        return {
            "frame": self.frame,
            "edge_windows": self.edge_windows,
            "scene_cells": self.scene_cells,
            "servers": {name: e.to_json() for name, e in self.servers.items()},
        }


@dataclass
class _Server:
    cells: deque[np.ndarray] = field(default_factory=deque)  # per frame in the horizon
    windows: deque[tuple[int, ...]] = field(default_factory=deque)
    seen: Counter[int] = field(default_factory=Counter)  # scene cell -> frames in horizon
    seen_windows: Counter[int] = field(default_factory=Counter)
    runs: dict[int, int] = field(default_factory=dict)  # window id -> current run
    max_frame_share: float = 0.0
    max_distinct: int = 0
    max_scene_share: float = 0.0
    max_scene_frames: float = 0.0
    longest_run: int = 0
    frames_served: int = 0
    windows_total: int = 0


class ExposureLedger:
    """Per-server exposure over a sliding horizon of ``horizon`` frames."""

    def __init__(self, grid: WindowGrid, servers: Sequence[str], horizon: int) -> None:
        if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
            raise PartitionError(f"the exposure horizon must be at least 1 frame, got {horizon!r}")
        if EDGE in servers:
            raise PartitionError(f"{EDGE!r} is the edge, not a server; the ledger tracks servers only")
        self.grid = grid
        self.horizon = horizon
        self.servers = tuple(servers)
        self._state = {name: _Server() for name in self.servers}
        self._scene: deque[np.ndarray] = deque()
        self._scene_seen: Counter[int] = Counter()
        self._local: dict[tuple[int, int], tuple[tuple[np.ndarray, np.ndarray], ...]] = {}
        self.frames = 0
        self.edge_windows = 0

    def frame_cells(self, offset: tuple[float, float] = (0.0, 0.0), content: tuple[int, int] | None = None) -> FrameCells:
        """The scene cells of every window for a frame at camera ``offset`` (tokens)."""
        grid = self.grid
        rows, cols = content if content is not None else (grid.grid_h, grid.grid_w)
        rows, cols = max(0, min(int(rows), grid.grid_h)), max(0, min(int(cols), grid.grid_w))
        oy, ox = (int(round(v)) for v in offset)
        local = self._local.get((rows, cols))
        if local is None:
            parts = []
            for w in grid.windows:
                ys = np.arange(w.top, min(w.top + w.height, rows))
                xs = np.arange(w.left, min(w.left + w.width, cols))
                yy, xx = np.meshgrid(ys, xs, indexing="ij")
                parts.append((yy.ravel().astype(np.int64), xx.ravel().astype(np.int64)))
            local = tuple(parts)
            self._local[(rows, cols)] = local
        cells = tuple(((yy + oy + _BIAS) << 32) | (xx + ox + _BIAS) for yy, xx in local)
        return FrameCells(offset=(oy, ox), content=(rows, cols), cells=cells, total=rows * cols)

    def seen(self, server: str) -> Counter[int]:
        """Scene cells ``server`` saw in the frames that stay in the horizon when one more is added."""
        return self._state[server].seen

    def scene_seen(self) -> Counter[int]:
        """Scene cells shown by the frames that stay in the horizon when one more is added."""
        return self._scene_seen

    def record(self, frame_index: int, shares: Mapping[str, Sequence[int]], cells: FrameCells) -> FrameExposure:
        """Add one frame as sent: ``shares`` maps executor -> window ids (:data:`EDGE` allowed).

        Servers of the ledger missing from ``shares`` received nothing this frame.
        """
        unknown = [name for name in shares if name != EDGE and name not in self._state]
        if unknown:
            raise PartitionError(f"the ledger does not know servers {unknown}; it tracks {list(self.servers)}")
        frame_all = cells.union(range(self.grid.num_windows))
        scene_total = _union_size(self._scene_seen, frame_all)
        edge = len(shares.get(EDGE, ()))
        self.edge_windows += edge
        self.frames += 1
        report: dict[str, ServerExposure] = {}
        for name, state in self._state.items():
            ids = tuple(shares.get(name, ()))
            got = cells.union(ids)
            seen = _union_size(state.seen, got)
            distinct = len(set(state.seen_windows) | set(ids))
            state.runs = {w: state.runs.get(w, 0) + 1 for w in ids}
            run = max(state.runs.values(), default=0)
            exposure = ServerExposure(
                windows=len(ids),
                frame_share=got.size / cells.total if cells.total else 0.0,
                distinct_windows=distinct,
                scene_share=seen / scene_total if scene_total else 0.0,
                scene_frames=seen / cells.total if cells.total else 0.0,
                run=run,
            )
            report[name] = exposure
            state.max_frame_share = max(state.max_frame_share, exposure.frame_share)
            state.max_distinct = max(state.max_distinct, distinct)
            state.max_scene_share = max(state.max_scene_share, exposure.scene_share)
            state.max_scene_frames = max(state.max_scene_frames, exposure.scene_frames)
            state.longest_run = max(state.longest_run, run)
            state.frames_served += bool(ids)
            state.windows_total += len(ids)
            _push(state.cells, state.seen, got, self.horizon)
            state.windows.append(ids)
            state.seen_windows.update(ids)
            if len(state.windows) > self.horizon - 1:
                state.seen_windows.subtract(state.windows.popleft())
                state.seen_windows += Counter()  # drop zero counts
        _push(self._scene, self._scene_seen, frame_all, self.horizon)
        return FrameExposure(frame=frame_index, servers=report, edge_windows=edge, scene_cells=scene_total)

    def summary(self) -> dict[str, Any]:
        """Per-run maxima and counts, per server (JSON-ready)."""
        n = self.grid.num_windows
        return {
            "frames": self.frames,
            "horizon": self.horizon,
            "edge_windows": self.edge_windows,
            "edge_share": round(self.edge_windows / (self.frames * n), 6) if self.frames else 0.0,
            "servers": {
                name: {
                    "max_frame_share": round(s.max_frame_share, 6),
                    "max_distinct_windows": s.max_distinct,
                    "max_scene_share": round(s.max_scene_share, 6),
                    "max_scene_frames": round(s.max_scene_frames, 6),
                    "longest_run": s.longest_run,
                    "frames_served": s.frames_served,
                    "windows": s.windows_total,
                }
                for name, s in self._state.items()
            },
        }


def _union_size(seen: Counter[int], cells: np.ndarray) -> int:
    """``|keys(seen) ∪ cells|``."""
    if cells.size == 0:
        return len(seen)
    fresh = np.unique(cells)
    return len(seen) + sum(1 for c in fresh.tolist() if c not in seen)


def _push(frames: deque[np.ndarray], seen: Counter[int], cells: np.ndarray, horizon: int) -> None:
    """Append a frame's cells and drop frames so that ``horizon - 1`` remain for the next one."""
    frames.append(cells)
    seen.update(cells.tolist())
    while len(frames) > horizon - 1:
        old = frames.popleft()
        for c in old.tolist():
            count = seen[c] - 1
            if count:
                seen[c] = count
            else:
                del seen[c]
