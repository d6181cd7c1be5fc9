"""Rotation policies: which server gets which share of windows on each frame of a video.

A policy turns (frame index, the edge's secret, the camera's motion so far, the frame's picture)
into an :class:`~pedsam.partitioner.assignment.Assignment` of one frame. The shares themselves
come from a partition scheme (:mod:`pedsam.partitioner.schemes`) over the frame's picture
windows, so every policy composes with every scheme and every aspect ratio; windows of pure
padding are in no share (the scheduler keeps them on the edge). With ``M`` servers and ``k``
shares (*slots*) per frame:

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
  coordinates are image token coordinates plus the camera offset; the frame-0 shares fix which
  server owns which scene window, tiled with the picture's window rectangle as period. On each
  frame the offset is rounded to whole windows and every picture window goes to the owner of
  the scene window it then shows. With a still or jittering camera (under half a window) it is
  ``fixed``; with a moving one a server keeps seeing the same part of the world, give or take
  half a window. A moved frame is a rearrangement of the frame-0 shares, so a share can hold
  more picture than the scheme's bound (border windows hold less picture than inner ones): the
  scheduler's per-frame cap moves the excess to the edge.
- ``adaptive`` (:mod:`pedsam.partitioner.adaptive`): ``fixed`` over the scheme's shares while the
  camera is still; once it travels, ``fixed`` over *bands along the travel* (the ``rows`` scheme
  when it moves sideways, ``columns`` when it moves up or down), and back to the scheme's shares
  once it has settled.

Offsets are ``(dy, dx)`` in tokens: the scene position of the frame's top-left token, frame 0
at ``(0, 0)``; a camera panning right makes ``dx`` grow. ``content`` is ``(rows, cols)``, the
tokens covering the real image from the top-left (the rest is SAM's padding; default the whole
grid). Assignments list only the servers that get windows this frame (``pooled`` and a
``keyed-random`` with ``k < M`` leave some idle). Every share holds at most ``1 / k`` of the
picture plus one window (:func:`~pedsam.partitioner.balance.share_bound`), except as said for
``scene-anchored``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from pedsam.partitioner.adaptive import AdaptiveRotation
from pedsam.partitioner.assignment import EDGE, Assignment
from pedsam.partitioner.errors import PartitionError
from pedsam.partitioner.geometry import TokenOffset, WindowGrid
from pedsam.partitioner.split import Split

__all__ = [
    "ROTATIONS",
    "AdaptiveRotation",
    "FixedRotation",
    "KeyedRandomRotation",
    "PooledRotation",
    "RotationPolicy",
    "RoundRobinRotation",
    "SceneAnchoredRotation",
    "make_rotation",
]

ROTATIONS: tuple[str, ...] = ("fixed", "round-robin", "keyed-random", "pooled", "scene-anchored", "adaptive")


class RotationPolicy(Protocol):
    """Per-frame assignment of shares to servers."""

    @property
    def name(self) -> str: ...

    @property
    def servers(self) -> tuple[str, ...]: ...

    @property
    def slots(self) -> int:
        """Shares per frame, ``k``."""
        ...

    @property
    def mode(self) -> str:
        """What the policy does now: its name, or for ``adaptive`` ``still`` / ``travel-rows`` /
        ``travel-columns``."""
        ...

    def propose(
        self, frame_index: int, offset: TokenOffset = (0.0, 0.0), content: tuple[int, int] | None = None
    ) -> Assignment:
        """The assignment of frame ``frame_index``; camera ``offset`` and ``content`` in tokens.

        Frames are proposed in the order they are sent (``adaptive`` follows the camera)."""
        ...


def _prf(secret: bytes, label: str, frame_index: int, item: int) -> bytes:
    key = hmac.digest(secret, f"{label}:{frame_index}".encode("ascii"), hashlib.sha256)
    return hmac.digest(key, item.to_bytes(4, "big"), hashlib.sha256)


def _keyed_permutation(secret: bytes, label: str, frame_index: int, n: int) -> list[int]:
    """``0..n-1`` in an order only the holder of ``secret`` can predict, fresh per frame."""
    return sorted(range(n), key=lambda i: (_prf(secret, label, frame_index, i), i))


@dataclass(frozen=True, slots=True)
class FixedRotation:
    """Server ``servers[s]`` gets share ``s`` on every frame."""

    split: Split
    servers: tuple[str, ...]
    name: str = "fixed"

    @property
    def slots(self) -> int:
        return self.split.k

    @property
    def mode(self) -> str:
        return self.name

    def propose(
        self, frame_index: int, offset: TokenOffset = (0.0, 0.0), content: tuple[int, int] | None = None
    ) -> Assignment:
        return Assignment(frame_index=frame_index, shares=dict(zip(self.servers, self.split.shares(content))))


@dataclass(frozen=True, slots=True)
class RoundRobinRotation:
    """Server ``servers[s]`` gets share ``(s + frame_index) mod k``."""

    split: Split
    servers: tuple[str, ...]
    name: str = "round-robin"

    @property
    def slots(self) -> int:
        return self.split.k

    @property
    def mode(self) -> str:
        return self.name

    def propose(
        self, frame_index: int, offset: TokenOffset = (0.0, 0.0), content: tuple[int, int] | None = None
    ) -> Assignment:
        shares = self.split.shares(content)
        k = len(shares)
        return Assignment(
            frame_index=frame_index,
            shares={server: shares[(s + frame_index) % k] for s, server in enumerate(self.servers)},
        )


@dataclass(frozen=True, slots=True)
class KeyedRandomRotation:
    """``slots`` of the servers, each with a share, drawn per frame from a keyed PRF.

    With the ``random`` scheme the shares themselves are re-partitioned per frame (salt = the
    frame index); with any other scheme they are the scheme's shares of the frame's picture.
    """

    split: Split
    servers: tuple[str, ...]
    secret: bytes
    name: str = "keyed-random"

    @property
    def slots(self) -> int:
        return self.split.k

    @property
    def mode(self) -> str:
        return self.name

    def propose(
        self, frame_index: int, offset: TokenOffset = (0.0, 0.0), content: tuple[int, int] | None = None
    ) -> Assignment:
        salt = frame_index if self.split.scheme == "random" else 0
        shares = self.split.shares(content, salt)
        order = _keyed_permutation(self.secret, "servers", frame_index, len(self.servers))
        return Assignment(
            frame_index=frame_index,
            shares={self.servers[order[slot]]: shares[slot] for slot in range(self.slots)},
        )


@dataclass(frozen=True, slots=True)
class PooledRotation:
    """Slot ``i`` goes to pool ``i`` (servers ``i, i+k, i+2k, ...``), round-robin inside the pool."""

    split: Split
    servers: tuple[str, ...]
    name: str = "pooled"

    @property
    def slots(self) -> int:
        return self.split.k

    @property
    def mode(self) -> str:
        return self.name

    @property
    def pools(self) -> tuple[tuple[str, ...], ...]:
        k = self.split.k
        return tuple(self.servers[i::k] for i in range(k))

    def propose(
        self, frame_index: int, offset: TokenOffset = (0.0, 0.0), content: tuple[int, int] | None = None
    ) -> Assignment:
        return Assignment(
            frame_index=frame_index,
            shares={pool[frame_index % len(pool)]: share
                    for pool, share in zip(self.pools, self.split.shares(content))},
        )


@dataclass(frozen=True, slots=True)
class SceneAnchoredRotation:
    """Windows follow the scene in whole-window steps (see the module docstring)."""

    split: Split
    servers: tuple[str, ...]
    name: str = "scene-anchored"

    @property
    def slots(self) -> int:
        return self.split.k

    @property
    def mode(self) -> str:
        return self.name

    def steps(self, offset: TokenOffset) -> tuple[int, int]:
        """The camera offset in whole windows (rows, cols), rounded to the nearest."""
        size = self.split.grid.window_size
        return (int(round(offset[0] / size)), int(round(offset[1] / size)))

    def propose(
        self, frame_index: int, offset: TokenOffset = (0.0, 0.0), content: tuple[int, int] | None = None
    ) -> Assignment:
        grid = self.split.grid
        rows, cols = grid.picture_shape(content)
        owner = np.empty((rows, cols), dtype=np.int64)
        for s, share in enumerate(self.split.shares(content)):
            for wid in share:
                owner[divmod(wid, grid.cols)] = s
        dr, dc = self.steps(offset)
        # Picture window (r, c) shows scene window (r + dr, c + dc); the lattice wraps with the
        # picture's window rectangle as period.
        moved = owner[np.ix_((np.arange(rows) + dr) % rows, (np.arange(cols) + dc) % cols)]
        ids = (np.arange(rows)[:, None] * grid.cols + np.arange(cols)[None, :])
        return Assignment(
            frame_index=frame_index,
            shares={server: tuple(int(w) for w in np.sort(ids[moved == s])) for s, server in enumerate(self.servers)},
        )


def make_rotation(
    name: str,
    grid: WindowGrid,
    servers: Sequence[str],
    *,
    scheme: str = "interleaved",
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
    split = Split(grid, k, scheme, secret, allow_single)
    if name == "keyed-random":
        assert secret is not None
        return KeyedRandomRotation(split=split, servers=names, secret=secret)
    if name == "fixed":
        return FixedRotation(split=split, servers=names)
    if name == "round-robin":
        return RoundRobinRotation(split=split, servers=names)
    if name == "pooled":
        return PooledRotation(split=split, servers=names)
    if name == "adaptive":
        return AdaptiveRotation(split=split, servers=names)
    return SceneAnchoredRotation(split=split, servers=names)
