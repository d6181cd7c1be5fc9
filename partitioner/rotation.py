"""Rotation policies: which server gets which share of windows on each frame of a video.

A policy turns (frame index, the edge's secret, the camera's motion so far) into an
:class:`~pedsam.partitioner.assignment.Assignment` of one frame. The shares themselves come from a
partition scheme (:mod:`pedsam.partitioner.schemes`), so every policy composes with every scheme. With
``M`` servers and ``k`` shares (*slots*) per frame:

- ``fixed``: server ``s`` gets share ``s`` on every frame (``k = M``). A server sees the same
  image region of every frame.
- ``round-robin``: server ``s`` gets share ``(s + f) mod k`` on frame ``f`` (``k = M``). Over ``k``
  consecutive frames every server sees every region; nobody keeps a region for two frames.
- ``keyed-random``: on each frame a keyed pseudo-random choice of ``k`` of the ``M`` servers and
  of which share each gets (HMAC-SHA256 of the frame index under the edge's secret); with the
  ``random`` scheme the shares are also re-drawn per frame. Servers cannot predict which region
  they get next.
- ``pooled``: ``M >= k`` servers split into ``k`` pools, pool ``i`` being servers ``i, i+k, ...``;
  slot ``i`` always goes to pool ``i``, rotating round-robin inside it. A server only ever sees
  one region, and only every (pool size)-th frame.
- ``scene-anchored``: each server owns windows of the *scene*, not of the image. Scene
  coordinates are image token coordinates plus the camera offset; the frame-0 assignment
  fixes which server owns which scene window, tiled with the window grid as period. On each
  frame the offset is rounded to whole windows and every image window goes to the owner of
  the scene window it then shows, so each frame is a permutation of the frame-0 shares (same
  sizes). With a still or jittering camera (under half a window) it is ``fixed``; with a moving
  one a server keeps seeing the same part of the world, give or take half a window (the grid
  of windows is fixed in the image, so windows straddle scene windows between steps).

Offsets are ``(dy, dx)`` in tokens: the scene position of the frame's top-left token, frame 0
at ``(0, 0)``; a camera panning right makes ``dx`` grow. ``content`` is ``(rows, cols)``, the
tokens covering the real image from the top-left (the rest is SAM's padding; default the whole
grid). Only ``scene-anchored`` reads the offset; no policy needs ``content`` today.
Assignments list only the servers that get windows this frame (``pooled`` and a
``keyed-random`` with ``k < M`` leave some idle), so :func:`~pedsam.partitioner.assignment.check_assignment`'s
default cap is ``ceil(windows / k)``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from pedsam.partitioner.assignment import EDGE, Assignment
from pedsam.partitioner.errors import PartitionError
from pedsam.partitioner.geometry import WindowGrid
from pedsam.partitioner.schemes import Share, partition

__all__ = [
    "ROTATIONS",
    "FixedRotation",
    "KeyedRandomRotation",
    "PooledRotation",
    "RotationPolicy",
    "RoundRobinRotation",
    "SceneAnchoredRotation",
    "TokenOffset",
    "make_rotation",
]

ROTATIONS: tuple[str, ...] = ("fixed", "round-robin", "keyed-random", "pooled", "scene-anchored")

TokenOffset = tuple[float, float]
"""``(dy, dx)`` tokens: where the frame's top-left token sits in scene coordinates."""


class RotationPolicy(Protocol):
    """Per-frame assignment of shares to servers."""

    @property
    def name(self) -> str: ...

    @property
    def servers(self) -> tuple[str, ...]: ...

    @property
    def slots(self) -> int:
        """Shares per frame, ``k``; each active server gets at most ``ceil(windows / k)``."""
        ...

    def propose(
        self, frame_index: int, offset: TokenOffset = (0.0, 0.0), content: tuple[int, int] | None = None
    ) -> Assignment:
        """The assignment of frame ``frame_index``; camera ``offset`` and ``content`` in tokens."""
        ...


def _prf(secret: bytes, label: str, frame_index: int, item: int) -> bytes:
    key = hmac.digest(secret, f"{label}:{frame_index}".encode("ascii"), hashlib.sha256)
    return hmac.digest(key, item.to_bytes(4, "big"), hashlib.sha256)


def _keyed_permutation(secret: bytes, label: str, frame_index: int, n: int) -> list[int]:
    """``0..n-1`` in an order only the holder of ``secret`` can predict, fresh per frame."""
    return sorted(range(n), key=lambda i: (_prf(secret, label, frame_index, i), i))


@dataclass(frozen=True, slots=True)
class FixedRotation:
    """Server ``servers[s]`` gets ``shares[s]`` on every frame."""

    shares: tuple[Share, ...]
    servers: tuple[str, ...]
    name: str = "fixed"

    @property
    def slots(self) -> int:
        return len(self.shares)

    def propose(
        self, frame_index: int, offset: TokenOffset = (0.0, 0.0), content: tuple[int, int] | None = None
    ) -> Assignment:
        return Assignment(frame_index=frame_index, shares=dict(zip(self.servers, self.shares)))


@dataclass(frozen=True, slots=True)
class RoundRobinRotation:
    """Server ``servers[s]`` gets ``shares[(s + frame_index) mod k]``."""

    shares: tuple[Share, ...]
    servers: tuple[str, ...]
    name: str = "round-robin"

    @property
    def slots(self) -> int:
        return len(self.shares)

    def propose(
        self, frame_index: int, offset: TokenOffset = (0.0, 0.0), content: tuple[int, int] | None = None
    ) -> Assignment:
        k = len(self.shares)
        return Assignment(
            frame_index=frame_index,
            shares={server: self.shares[(s + frame_index) % k] for s, server in enumerate(self.servers)},
        )


@dataclass(frozen=True, slots=True)
class KeyedRandomRotation:
    """``slots`` of the servers, each with a share, drawn per frame from a keyed PRF.

    With ``scheme == "random"`` the shares themselves are re-partitioned per frame (salt = the
    frame index); with any other scheme they are the scheme's fixed shares.
    """

    grid: WindowGrid
    servers: tuple[str, ...]
    scheme: str
    secret: bytes
    slots: int
    allow_single: bool = False
    name: str = "keyed-random"
    _shares: tuple[Share, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_shares", partition(
            self.grid, self.slots, self.scheme, secret=self.secret, allow_single=self.allow_single
        ))

    def propose(
        self, frame_index: int, offset: TokenOffset = (0.0, 0.0), content: tuple[int, int] | None = None
    ) -> Assignment:
        shares = self._shares
        if self.scheme == "random":
            shares = partition(
                self.grid, self.slots, "random", secret=self.secret, salt=frame_index, allow_single=self.allow_single
            )
        order = _keyed_permutation(self.secret, "servers", frame_index, len(self.servers))
        return Assignment(
            frame_index=frame_index,
            shares={self.servers[order[slot]]: shares[slot] for slot in range(self.slots)},
        )


@dataclass(frozen=True, slots=True)
class PooledRotation:
    """Slot ``i`` goes to pool ``i`` (servers ``i, i+k, i+2k, ...``), round-robin inside the pool."""

    shares: tuple[Share, ...]
    servers: tuple[str, ...]
    name: str = "pooled"

    @property
    def slots(self) -> int:
        return len(self.shares)

    @property
    def pools(self) -> tuple[tuple[str, ...], ...]:
        k = len(self.shares)
        return tuple(self.servers[i::k] for i in range(k))

    def propose(
        self, frame_index: int, offset: TokenOffset = (0.0, 0.0), content: tuple[int, int] | None = None
    ) -> Assignment:
        return Assignment(
            frame_index=frame_index,
            shares={pool[frame_index % len(pool)]: share for pool, share in zip(self.pools, self.shares)},
        )


@dataclass(frozen=True, slots=True)
class SceneAnchoredRotation:
    """Windows follow the scene in whole-window steps (see the module docstring)."""

    grid: WindowGrid
    shares: tuple[Share, ...]
    servers: tuple[str, ...]
    name: str = "scene-anchored"
    _owner: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        owner = np.empty(self.grid.num_windows, dtype=np.int64)
        for s, share in enumerate(self.shares):
            owner[list(share)] = s
        object.__setattr__(self, "_owner", owner.reshape(self.grid.rows, self.grid.cols))

    @property
    def slots(self) -> int:
        return len(self.shares)

    def steps(self, offset: TokenOffset) -> tuple[int, int]:
        """The camera offset in whole windows (rows, cols), rounded to the nearest."""
        size = self.grid.window_size
        return (int(round(offset[0] / size)), int(round(offset[1] / size)))

    def propose(
        self, frame_index: int, offset: TokenOffset = (0.0, 0.0), content: tuple[int, int] | None = None
    ) -> Assignment:
        grid = self.grid
        dr, dc = self.steps(offset)
        # Image window (r, c) shows scene window (r + dr, c + dc); the window lattice wraps.
        rows = (np.arange(grid.rows) + dr) % grid.rows
        cols = (np.arange(grid.cols) + dc) % grid.cols
        owner = self._owner[np.ix_(rows, cols)].ravel()
        return Assignment(
            frame_index=frame_index,
            shares={server: tuple(int(w) for w in np.flatnonzero(owner == s)) for s, server in enumerate(self.servers)},
        )


def make_rotation(
    name: str,
    grid: WindowGrid,
    servers: Sequence[str],
    *,
    scheme: str = "contiguous",
    secret: bytes | None = None,
    slots: int | None = None,
    allow_single: bool = False,
) -> RotationPolicy:
    """The rotation policy ``name`` over ``servers``, with shares from ``scheme``.

    Args:
        name: one of :data:`ROTATIONS`.
        grid: the encoder's window grid.
        servers: server names (addresses), each once, none named :data:`EDGE`.
        scheme: partition scheme of the shares (:data:`pedsam.partitioner.schemes.SCHEMES`).
        secret: the edge's secret; needed by ``keyed-random`` and by the ``random`` scheme.
        slots: shares per frame ``k``. ``pooled``: default ``max(2, M // 2)``, at most ``M``;
            ``keyed-random``: default ``M``, at most ``M``; the others use ``k = M`` and accept
            only that.
        allow_single: accept ``k == 1`` (one server then sees whole frames).

    Raises:
        PartitionError: unknown name, bad server list or slot count, a missing secret.
    """
    if name not in ROTATIONS:
        raise PartitionError(f"unknown rotation policy {name!r}; use one of: {', '.join(ROTATIONS)}")
    names = tuple(servers)
    if not names:
        raise PartitionError("no servers to rotate over; give at least one worker")
    if len(set(names)) != len(names):
        raise PartitionError(f"a server is listed twice in {list(names)}; list each server once")
    if EDGE in names:
        raise PartitionError(f"{EDGE!r} names the edge itself, not a server; give servers by address")
    m = len(names)
    if slots is None:
        k = max(2, m // 2) if name == "pooled" else m
        k = min(k, m)
    else:
        k = slots
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise PartitionError(f"slots must be a positive int (shares per frame), got {k!r}")
        if name in ("pooled", "keyed-random") and k > m:
            raise PartitionError(f"{name} with {k} slots needs at least {k} servers, got {m}")
        if name not in ("pooled", "keyed-random") and k != m:
            raise PartitionError(
                f"{name} uses one share per server ({m}); --slots applies to pooled and keyed-random only"
            )
    needs_secret = name == "keyed-random" or scheme == "random"
    if needs_secret and not secret:
        raise PartitionError(f"{name} with the {scheme} scheme needs the edge's secret (non-empty bytes)")
    if name == "keyed-random":
        assert secret is not None
        return KeyedRandomRotation(
            grid=grid, servers=names, scheme=scheme, secret=secret, slots=k, allow_single=allow_single
        )
    shares = partition(grid, k, scheme, secret=secret, allow_single=allow_single)
    if name == "fixed":
        return FixedRotation(shares=shares, servers=names)
    if name == "round-robin":
        return RoundRobinRotation(shares=shares, servers=names)
    if name == "pooled":
        return PooledRotation(shares=shares, servers=names)
    return SceneAnchoredRotation(grid=grid, shares=shares, servers=names)
