"""The exposure ledger: what each server, and each coalition of servers, has seen of the video.

Units and frames of reference:

- A *picture token* is a token of the grid that covers pixels of the real image (not SAM's
  zero padding of the resized frame to a square). ``content = (rows, cols)`` gives their extent
  from the top-left token; tokens outside it carry no pixels, so receiving them exposes nothing.
- *Image coordinates* are token positions ``(y, x)`` in the frame's grid.
- *Scene coordinates* are image coordinates plus the frame's camera offset ``(dy, dx)`` in
  tokens, rounded to whole tokens (see :mod:`pedsam.partitioner.rotation`); a static point of the world
  keeps its scene coordinates while the camera moves.
- A *stream* is one video (one browser call of ``pedsam serve``, one file of ``pedsam run``):
  its own frames, its own scene. One ledger keeps every stream that shares the servers, so what
  a server has seen is the union over streams; scene cells of two streams never coincide.
- The *horizon* is the last ``T`` recorded frames of the stream, the current one included.
- A *party* is one server, or with ``coalition = t`` any set of up to ``t`` servers counted as
  one observer (they pool what they saw). Parties of two or more are *coalitions*; a coalition
  is named by its members joined with ``+``.

Per frame and party, :meth:`ExposureLedger.record` reports (:class:`ServerExposure`,
:class:`CoalitionExposure`):

- ``frame_share``: the party's picture tokens this frame over the frame's picture tokens;
- ``scene_share``: scene cells it saw in the stream's horizon over all scene cells any frame of
  the horizon showed (motion-compensated: a panning camera grows both);
- ``run_scene_share``: scene cells it saw since the stream started over all the stream has
  shown (whole run). Neither part ever shrinks, and the part it saw grows only with what it is
  sent, so a cap checked when windows are sent holds on every later frame;
- ``scene_frames``: scene cells it saw over the horizons of every stream over the current frame's
  picture tokens, i.e. how many frames' worth of the world it has taken in across calls;
- servers only: ``windows`` this frame, ``distinct_windows`` (window ids of the stream, image
  coordinates, over the horizon) and ``run``: the longest run of consecutive frames of the
  stream in which it has held one piece of scene (a scene cell) up to this one, 0 if it got
  nothing this frame.

:meth:`ExposureLedger.summary` gives the maximum of each over the run, the whole-run shares now,
the longest run, and counts: ``edge_share`` is the picture windows the edge computed in a
server's place (budgets, failover, sensitive regions) over all picture windows sent or kept, and
``kept_windows`` those of them the edge kept home because it saw something sensitive there. Frames of a stream must be recorded in the order they are sent.
"""

from __future__ import annotations

import itertools
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pedsam.partitioner.assignment import EDGE
from pedsam.partitioner.errors import PartitionError
from pedsam.partitioner.geometry import WindowGrid

__all__ = ["CoalitionExposure", "ExposureLedger", "FrameCells", "FrameExposure", "ServerExposure", "party_name"]

_BIAS = 1 << 30  # scene cells are keyed (y + _BIAS) << 32 | (x + _BIAS): offsets may be negative

Party = tuple[str, ...]


def party_name(party: Sequence[str]) -> str:
    """A party's name: its servers joined with ``+`` (one server: its own name)."""
    return "+".join(party)


@dataclass(frozen=True, slots=True)
class FrameCells:
    """One frame's windows in scene coordinates.

    Attributes:
        offset: the camera offset ``(dy, dx)``, whole tokens.
        content: ``(rows, cols)`` picture tokens from the top-left of the grid.
        cells: per window id, int64 keys of the scene cells of its picture tokens.
        total: picture tokens in the frame.
    """

    offset: tuple[int, int]
    content: tuple[int, int]
    cells: tuple[np.ndarray, ...]
    total: int

    @property
    def picture(self) -> tuple[int, ...]:
        """Per window id, its picture tokens (0: pure padding)."""
        return tuple(int(c.size) for c in self.cells)

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
    run_scene_share: float
    scene_frames: float
    run: int

    def to_json(self) -> dict[str, Any]:
        return {
            "windows": self.windows,
            "frame_share": round(self.frame_share, 6),
            "distinct_windows": self.distinct_windows,
            "scene_share": round(self.scene_share, 6),
            "run_scene_share": round(self.run_scene_share, 6),
            "scene_frames": round(self.scene_frames, 6),
            "run": self.run,
        }


@dataclass(frozen=True, slots=True)
class CoalitionExposure:
    """What a coalition of servers saw together, as of one frame."""

    frame_share: float
    scene_share: float
    run_scene_share: float
    scene_frames: float

    def to_json(self) -> dict[str, Any]:
        return {
            "frame_share": round(self.frame_share, 6),
            "scene_share": round(self.scene_share, 6),
            "run_scene_share": round(self.run_scene_share, 6),
            "scene_frames": round(self.scene_frames, 6),
        }


@dataclass(frozen=True, slots=True)
class FrameExposure:
    """Every party's exposure as of frame ``frame`` of ``stream``; ``edge_windows``: picture windows
    the edge computed instead of a server (pure padding, always the edge's, is not counted)."""

    frame: int
    stream: str
    servers: Mapping[str, ServerExposure]
    coalitions: Mapping[str, CoalitionExposure]
    edge_windows: int
    scene_cells: int
    run_scene_cells: int

    def to_json(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "frame": self.frame,
            "stream": self.stream,
            "edge_windows": self.edge_windows,
            "scene_cells": self.scene_cells,
            "run_scene_cells": self.run_scene_cells,
            "servers": {name: e.to_json() for name, e in self.servers.items()},
        }
        if self.coalitions:
            record["coalitions"] = {name: e.to_json() for name, e in self.coalitions.items()}
        return record


@dataclass
class _Track:
    """One party in one stream."""

    frames: deque[np.ndarray] = field(default_factory=deque)  # cells per frame in the horizon
    seen: Counter[int] = field(default_factory=Counter)  # scene cell -> frames in the horizon
    ever: set[int] = field(default_factory=set)  # every scene cell since the stream started
    windows: deque[tuple[int, ...]] = field(default_factory=deque)
    seen_windows: Counter[int] = field(default_factory=Counter)
    runs: dict[int, int] = field(default_factory=dict)  # scene cell -> consecutive frames held


@dataclass
class _Stream:
    frames: int = 0
    scene: deque[np.ndarray] = field(default_factory=deque)
    scene_seen: Counter[int] = field(default_factory=Counter)
    scene_ever: set[int] = field(default_factory=set)
    tracks: dict[Party, _Track] = field(default_factory=dict)


@dataclass
class _Maxima:
    frame_share: float = 0.0
    distinct: int = 0
    scene_share: float = 0.0
    run_scene_share: float = 0.0
    scene_frames: float = 0.0
    longest_run: int = 0
    frames_served: int = 0
    windows: int = 0


class ExposureLedger:
    """Per-party exposure over a sliding horizon of ``horizon`` frames and over the whole run.

    Args:
        grid: the encoder's window grid.
        servers: every server that may be sent windows (active and standby).
        horizon: ``T`` frames.
        coalition: track every set of up to this many servers as one party (1: servers only).
    """

    def __init__(self, grid: WindowGrid, servers: Sequence[str], horizon: int, *, coalition: int = 1) -> None:
        if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
            raise PartitionError(f"the exposure horizon must be at least 1 frame, got {horizon!r}")
        if EDGE in servers:
            raise PartitionError(f"{EDGE!r} is the edge, not a server; the ledger tracks servers only")
        if isinstance(coalition, bool) or not isinstance(coalition, int) or coalition < 1:
            raise PartitionError(f"the coalition size must be a whole number >= 1, got {coalition!r}")
        self.grid = grid
        self.horizon = horizon
        self.servers = tuple(servers)
        self.coalition = coalition
        self.parties: tuple[Party, ...] = tuple(
            party for size in range(1, min(coalition, len(self.servers)) + 1)
            for party in itertools.combinations(self.servers, size)
        )
        self._streams: dict[str, _Stream] = {}
        self._maxima = {party: _Maxima() for party in self.parties}
        self._local: dict[tuple[int, int], tuple[tuple[np.ndarray, np.ndarray], ...]] = {}
        self.frames = 0
        self.edge_windows = 0
        self.kept_windows = 0
        self.picture_windows = 0

    @property
    def coalitions(self) -> tuple[Party, ...]:
        """The parties of two or more servers."""
        return tuple(p for p in self.parties if len(p) > 1)

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

    # ---- what the scheduler reads before a frame is recorded -----------------------------------

    def track(self, party: Sequence[str], stream: str = "0") -> _Track:
        """A party's record in ``stream`` (read only): ``seen`` holds the horizon's cells that stay
        when one more frame is added, ``ever`` every cell since the stream started, ``runs`` per
        cell held on the stream's last frame the run up to it."""
        return self._stream(stream).tracks.setdefault(tuple(party), _Track())

    def scene_ever(self, stream: str = "0") -> set[int]:
        """Every scene cell ``stream`` has shown so far."""
        return self._stream(stream).scene_ever

    def horizon_elsewhere(self, server: str, stream: str = "0") -> int:
        """Scene cells ``server`` holds in the horizons of every stream but ``stream``."""
        return sum(len(s.tracks[(server,)].seen) for name, s in self._streams.items()
                   if name != stream and (server,) in s.tracks)

    # ---- recording ------------------------------------------------------------------------------

    def record(
        self, frame_index: int, shares: Mapping[str, Sequence[int]], cells: FrameCells, *, stream: str = "0",
        kept: int = 0,
    ) -> FrameExposure:
        """Add one frame of ``stream`` as sent: ``shares`` maps executor -> window ids
        (:data:`EDGE` allowed). Servers of the ledger missing from ``shares`` received nothing.
        ``kept``: how many of the edge's picture windows it kept home as sensitive."""
        unknown = [name for name in shares if name != EDGE and name not in self.servers]
        if unknown:
            raise PartitionError(f"the ledger does not know servers {unknown}; it tracks {list(self.servers)}")
        state = self._stream(stream)
        frame_all = cells.union(range(self.grid.num_windows))
        scene_total = _union_size(state.scene_seen, frame_all)
        state.scene_ever.update(frame_all.tolist())
        run_total = len(state.scene_ever)
        edge = sum(1 for w in shares.get(EDGE, ()) if cells.cells[w].size)  # padding is no extra work
        self.edge_windows += edge
        self.kept_windows += kept
        self.picture_windows += sum(1 for c in cells.cells if c.size)
        self.frames += 1
        state.frames += 1
        got = {name: cells.union(shares.get(name, ())) for name in self.servers}
        servers: dict[str, ServerExposure] = {}
        coalitions: dict[str, CoalitionExposure] = {}
        for party in self.parties:
            track = state.tracks.setdefault(party, _Track())
            mine = got[party[0]] if len(party) == 1 else np.concatenate([got[s] for s in party])
            seen = _union_size(track.seen, mine)
            track.ever.update(mine.tolist())
            elsewhere = sum(len(s.tracks[party].seen) for name, s in self._streams.items()
                            if name != stream and party in s.tracks)
            frame_share = mine.size / cells.total if cells.total else 0.0
            scene_share = seen / scene_total if scene_total else 0.0
            run_share = len(track.ever) / run_total if run_total else 0.0
            frames_worth = (seen + elsewhere) / cells.total if cells.total else 0.0
            maxima = self._maxima[party]
            maxima.frame_share = max(maxima.frame_share, frame_share)
            maxima.scene_share = max(maxima.scene_share, scene_share)
            maxima.run_scene_share = max(maxima.run_scene_share, run_share)
            maxima.scene_frames = max(maxima.scene_frames, frames_worth)
            if len(party) == 1:
                ids = tuple(shares.get(party[0], ()))
                distinct = len(set(track.seen_windows) | set(ids))
                track.runs = {c: track.runs.get(c, 0) + 1 for c in mine.tolist()}
                run = max(track.runs.values(), default=0)
                servers[party[0]] = ServerExposure(
                    windows=len(ids), frame_share=frame_share, distinct_windows=distinct, scene_share=scene_share,
                    run_scene_share=run_share, scene_frames=frames_worth, run=run,
                )
                maxima.distinct = max(maxima.distinct, distinct)
                maxima.longest_run = max(maxima.longest_run, run)
                maxima.frames_served += bool(ids)
                maxima.windows += len(ids)
                track.windows.append(ids)
                track.seen_windows.update(ids)
                if len(track.windows) > self.horizon - 1:
                    track.seen_windows.subtract(track.windows.popleft())
                    track.seen_windows += Counter()  # drop zero counts
            else:
                coalitions[party_name(party)] = CoalitionExposure(
                    frame_share=frame_share, scene_share=scene_share, run_scene_share=run_share,
                    scene_frames=frames_worth,
                )
            _push(track.frames, track.seen, mine, self.horizon)
        _push(state.scene, state.scene_seen, frame_all, self.horizon)
        return FrameExposure(frame=frame_index, stream=stream, servers=servers, coalitions=coalitions,
                             edge_windows=edge, scene_cells=scene_total, run_scene_cells=run_total)

    def summary(self) -> dict[str, Any]:
        """Per-run maxima, whole-run shares and counts, per server and coalition (JSON-ready)."""
        def now(party: Party) -> float:
            shares = [len(s.tracks[party].ever) / len(s.scene_ever)
                      for s in self._streams.values() if party in s.tracks and s.scene_ever]
            return round(max(shares, default=0.0), 6)

        out: dict[str, Any] = {
            "frames": self.frames,
            "streams": len(self._streams),
            "horizon": self.horizon,
            "coalition": self.coalition,
            "picture_windows": self.picture_windows,
            "edge_windows": self.edge_windows,
            "edge_share": round(self.edge_windows / self.picture_windows, 6) if self.picture_windows else 0.0,
            "kept_windows": self.kept_windows,
            "servers": {},
        }
        for party, m in self._maxima.items():
            figures: dict[str, Any] = {
                "max_frame_share": round(m.frame_share, 6),
                "max_scene_share": round(m.scene_share, 6),
                "run_scene_share": now(party),
                "max_run_scene_share": round(m.run_scene_share, 6),
                "max_scene_frames": round(m.scene_frames, 6),
            }
            if len(party) == 1:
                out["servers"][party[0]] = {
                    **figures, "max_distinct_windows": m.distinct, "longest_run": m.longest_run,
                    "frames_served": m.frames_served, "windows": m.windows,
                }
            else:
                out.setdefault("coalitions", {})[party_name(party)] = figures
        return out

    def _stream(self, stream: str) -> _Stream:
        state = self._streams.get(stream)
        if state is None:
            state = self._streams[stream] = _Stream()
        return state


def _union_size(seen: Counter[int] | set[int], cells: np.ndarray) -> int:
    """``|keys(seen) ∪ cells|``."""
    if cells.size == 0:
        return len(seen)
    fresh = np.unique(cells)
    return len(seen) + sum(1 for c in fresh.tolist() if c not in seen)


def _push(frames: deque[np.ndarray], seen: Counter[int], cells: np.ndarray, horizon: int) -> None:
    """Append a frame's cells and drop frames so that ``horizon - 1`` remain for the next one."""
    cells = np.unique(cells)
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
