"""Per-frame assignments of windows to executors, and the privacy checks they must pass.

An *executor* is a worker server (named by its address, e.g. ``"10.0.0.7:50051"``) or the edge
itself (:data:`EDGE`). An :class:`Assignment` says which window ids each executor computes for
one frame; the same assignment holds for every segment of that frame. Windows are the
row-major ids of :mod:`pedsam.partitioner.geometry`.

Invariant 2 of the design (no server sees a whole frame), as :func:`check_assignment` enforces
it, counted in *picture* (tokens that cover pixels of the frame; see
:meth:`~pedsam.partitioner.geometry.WindowGrid.picture_tokens`): every window goes to exactly
one executor; a window that is pure padding goes to the edge; no server (non-edge executor) gets
more than the per-frame cap, a share of the frame's picture, by default
:func:`default_cap`: ``1 / servers`` plus the largest window's share; and with two or more
servers, no single server gets every picture window. The edge is trusted and has no cap.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from pedsam.partitioner.errors import AssignmentError

__all__ = ["EDGE", "Assignment", "check_assignment", "check_disjoint", "default_cap", "fixed_assignment"]

EDGE = "edge"
"""The executor name for windows computed on the edge itself."""


@dataclass(frozen=True, slots=True)
class Assignment:
    """Which windows each executor computes for frame ``frame_index``.

    Attributes:
        frame_index: the frame's sequence number in its session (0-based).
        shares: executor name (server address or :data:`EDGE`) -> window ids it computes
            this frame. Stored as a read-only mapping of tuples; iteration order is the
            order given (server order). An executor may have an empty share.
    """

    frame_index: int
    shares: Mapping[str, tuple[int, ...]]

    def __post_init__(self) -> None:
        frozen = {}
        for name, ids in self.shares.items():
            if not isinstance(name, str) or not name:
                raise AssignmentError(f"executor names must be non-empty strings, got {name!r}")
            frozen[name] = tuple(ids)
        object.__setattr__(self, "shares", MappingProxyType(frozen))

    def __hash__(self) -> int:
        return hash((self.frame_index, tuple(self.shares.items())))

    def executor_of(self, wid: int) -> str:
        """Name of the executor that computes window ``wid``; :class:`AssignmentError` if none."""
        for name, ids in self.shares.items():
            if wid in ids:
                return name
        raise AssignmentError(f"window {wid} is not assigned to any executor in frame {self.frame_index}")

    def to_json(self) -> dict[str, Any]:
        """``{"frame": frame_index, "shares": {name: [window ids]}}``, for the audit log."""
        return {"frame": self.frame_index, "shares": {name: list(ids) for name, ids in self.shares.items()}}


def default_cap(picture: int | Sequence[int], num_servers: int) -> float:
    """The default per-frame cap, a share of the picture: ``1 / num_servers`` plus the largest
    window's share (the partition schemes' guarantee, :mod:`pedsam.partitioner.balance`).

    Args:
        picture: per window id, its picture tokens; an int ``n`` means ``n`` windows of one
            token each.
        num_servers: servers sharing the frame, at least 1.
    """
    if num_servers < 1:
        raise AssignmentError(f"need at least one server to compute a per-server cap, got {num_servers}")
    weights = _weights(picture)
    total = sum(weights)
    return 1.0 / num_servers + (max(weights) / total if total else 0.0)


def fixed_assignment(frame_index: int, shares: Sequence[Sequence[int]], servers: Sequence[str]) -> Assignment:
    """Server ``servers[s]`` gets ``shares[s]``, in server order.

    Raises:
        AssignmentError: the counts differ, a server is listed twice, or a server is named
            :data:`EDGE` (the edge's windows are uncapped, so a server must not pass as it).
    """
    if len(shares) != len(servers):
        raise AssignmentError(
            f"{len(shares)} shares for {len(servers)} servers; partition into exactly one share per server"
        )
    if len(set(servers)) != len(servers):
        raise AssignmentError(f"a server is listed twice in {list(servers)}; list each server once")
    if EDGE in servers:
        raise AssignmentError(f"{EDGE!r} names the edge itself, not a server; give servers by address")
    return Assignment(frame_index=frame_index, shares={name: tuple(ids) for name, ids in zip(servers, shares)})


def check_disjoint(assignment: Assignment, num_windows: int) -> dict[int, str]:
    """Check that every window id is in range and given at most once; returns window -> executor.

    Raises:
        AssignmentError: an id out of range or given twice.
    """
    owner: dict[int, str] = {}
    for name, ids in assignment.shares.items():
        for wid in ids:
            if isinstance(wid, bool) or not isinstance(wid, int) or not 0 <= wid < num_windows:
                raise AssignmentError(
                    f"frame {assignment.frame_index}: {name} got window {wid!r}, "
                    f"but ids are 0..{num_windows - 1}"
                )
            if wid in owner:
                where = "twice" if owner[wid] == name else f"and {owner[wid]}"
                raise AssignmentError(
                    f"frame {assignment.frame_index}: window {wid} given to {name} {where}; "
                    "give each window to exactly one executor"
                )
            owner[wid] = name
    return owner


def check_assignment(assignment: Assignment, picture: int | Sequence[int], cap: float | None = None) -> None:
    """Check that ``assignment`` covers every window once, padding on the edge, within the cap.

    Args:
        assignment: the frame's assignment.
        picture: per window id, its picture tokens (ids are ``0..len(picture)-1``); an int
            ``n`` means ``n`` windows of one token each, none of them padding.
        cap: most of the frame's picture any non-edge executor may get this frame, a share in
            ``(0, 1]``; default :func:`default_cap` over the non-edge executors in the assignment.

    Raises:
        AssignmentError: an id is out of range or given twice, a window is missing, a server
            got a window of pure padding, a server is over the cap, or one server gets every
            picture window while there are two or more servers.
    """
    weights = _weights(picture)
    num_windows = len(weights)
    if cap is not None and not 0.0 < cap <= 1.0 + 1e-9:
        raise AssignmentError(f"the per-frame cap is a share of the picture in (0, 1], got {cap!r}")
    owner = check_disjoint(assignment, num_windows)
    missing = [wid for wid in range(num_windows) if wid not in owner]
    if missing:
        raise AssignmentError(
            f"frame {assignment.frame_index}: windows {missing} are assigned to no executor; "
            f"give them to a server or to {EDGE!r}"
        )
    servers = [name for name in assignment.shares if name != EDGE]
    if not servers:
        return
    total = sum(weights)
    limit = default_cap(weights, len(servers)) if cap is None else cap
    pictured = sum(1 for w in weights if w)
    for name in servers:
        ids = assignment.shares[name]
        padding = [wid for wid in ids if not weights[wid]]
        if padding:
            raise AssignmentError(
                f"frame {assignment.frame_index}: server {name} got windows {padding}, which are pure "
                f"padding; padding windows stay on the edge"
            )
        got = sum(weights[wid] for wid in ids) / total if total else 0.0
        if got > limit + 1e-9:
            raise AssignmentError(
                f"frame {assignment.frame_index}: server {name} got {got:.3f} of the picture "
                f"({len(ids)} of {num_windows} windows), over the per-frame cap of {limit:.3f}; "
                "spread the windows or compute some on the edge"
            )
        if len(servers) >= 2 and pictured > 0 and len(ids) == pictured:
            raise AssignmentError(
                f"frame {assignment.frame_index}: server {name} got every picture window of the frame; "
                "it would see the whole frame, so split the windows across servers"
            )


def _weights(picture: int | Sequence[int]) -> list[int]:
    if isinstance(picture, int):
        if picture < 0:
            raise AssignmentError(f"num_windows must be >= 0, got {picture}")
        return [1] * picture
    return [int(w) for w in picture]
