"""Partition schemes: which windows of a frame form each server's share.

Every scheme returns exactly ``k`` shares that together hold every window of the grid exactly
once, and is *balanced*: with ``n`` windows, each share holds ``floor(n / k)`` or
``ceil(n / k)`` windows (the default per-frame privacy cap is ``ceil(n / k)``). A share is a
sorted tuple of row-major window ids (see :mod:`pedsam.partitioner.geometry`).

- ``rows``: horizontal bands; row-major window order cut into ``k`` consecutive runs.
- ``columns``: vertical bands; column-major order cut into ``k`` consecutive runs.
- ``contiguous``: compact, 4-connected, near-square blocks (see :mod:`pedsam.partitioner.contiguous`).
- ``interleaved``: no two 4-neighbouring windows share a server (``k >= 2``), so no server
  sees two adjacent windows; ``k = 2`` is a checkerboard.
- ``random``: a keyed pseudo-random permutation of the windows cut into ``k`` runs; needs a
  ``secret`` and changes with ``salt``.

Why ``interleaved`` always exists: colour window ``(r, c)`` with ``(r * cols + c) mod k``.
Row-major positions of horizontal neighbours differ by 1 and of vertical neighbours by
``cols``, so the colouring is proper whenever ``cols mod k != 0``; and ``n`` consecutive integers
taken mod ``k`` fall into classes of ``floor(n / k)`` or ``ceil(n / k)``. If ``k`` divides
``cols``, colour with ``(r + c) mod k`` instead: neighbours differ by 1 (mod ``k``, and
``k >= 2``), and each row holds every colour exactly ``cols / k`` times. So every grid and every
``2 <= k <= n`` has a balanced proper colouring; the tests check this exhaustively on small grids.
"""

from __future__ import annotations

import hashlib
import hmac

import numpy as np

from pedsam.partitioner.contiguous import balanced_sizes, contiguous_order
from pedsam.partitioner.errors import PartitionError
from pedsam.partitioner.geometry import WindowGrid

__all__ = ["SCHEMES", "Share", "partition"]

SCHEMES: tuple[str, ...] = ("contiguous", "rows", "columns", "interleaved", "random")

Share = tuple[int, ...]
"""Sorted row-major window ids given to one executor."""


def partition(
    grid: WindowGrid,
    k: int,
    scheme: str = "contiguous",
    *,
    secret: bytes | None = None,
    salt: int = 0,
    allow_single: bool = False,
) -> tuple[Share, ...]:
    """Split ``grid``'s windows into ``k`` balanced, disjoint, covering shares.

    Args:
        grid: the window grid of the encoder.
        k: number of shares (servers), ``1..grid.num_windows``; ``1`` only with
            ``allow_single``, because one server would then see the whole frame.
        scheme: one of :data:`SCHEMES`.
        secret: key for ``random`` (non-empty bytes); ignored by the other schemes.
        salt: varies the ``random`` permutation under one secret (e.g. a frame or epoch
            number); ignored by the other schemes.
        allow_single: accept ``k == 1``.

    Returns:
        ``k`` non-empty shares, each a sorted tuple of window ids, in a deterministic order.

    Raises:
        PartitionError: unknown scheme, ``k`` out of range, ``k == 1`` without
            ``allow_single``, or ``random`` without a secret.
    """
    if scheme not in SCHEMES:
        raise PartitionError(f"unknown partition scheme {scheme!r}; use one of: {', '.join(SCHEMES)}")
    n = grid.num_windows
    if not isinstance(k, int) or isinstance(k, bool):
        raise PartitionError(f"k (the number of shares) must be an int, got {type(k).__name__} {k!r}")
    if k < 1:
        raise PartitionError(f"k={k}: need at least one share; give k >= 1 (one share per server)")
    if k > n:
        raise PartitionError(
            f"k={k} shares but the {grid.rows}x{grid.cols} window grid has only {n} windows; "
            f"use at most {n} servers"
        )
    if k == 1 and not allow_single:
        raise PartitionError(
            "k=1: a single server would see the whole frame; use 2 or more servers, "
            "or opt in with allow_single=True (--allow-single-server)"
        )
    sizes = balanced_sizes(n, k)
    if scheme == "rows":
        order: list[int] = list(range(n))
    elif scheme == "columns":
        order = [r * grid.cols + c for c in range(grid.cols) for r in range(grid.rows)]
    elif scheme == "contiguous":
        walk, sizes = contiguous_order(grid.rows, grid.cols, k)
        order = walk.tolist()
    elif scheme == "interleaved":
        return _interleaved(grid, k)
    else:
        order = _keyed_order(n, _require_secret(secret), salt)
    return _cut(order, sizes)


def _cut(order: list[int], sizes: list[int]) -> tuple[Share, ...]:
    """Cut ``order`` into consecutive runs of ``sizes``, each returned sorted."""
    shares = []
    start = 0
    for size in sizes:
        shares.append(tuple(sorted(order[start : start + size])))
        start += size
    return tuple(shares)


def _interleaved(grid: WindowGrid, k: int) -> tuple[Share, ...]:
    """A balanced proper ``k``-colouring of the window grid (see the module docstring)."""
    rows, cols = np.divmod(np.arange(grid.num_windows), grid.cols)
    if k == 1:
        colour = np.zeros(grid.num_windows, dtype=np.int64)
    elif grid.cols % k != 0:
        colour = (rows * grid.cols + cols) % k
    else:
        colour = (rows + cols) % k
    return tuple(tuple(int(w) for w in np.flatnonzero(colour == index)) for index in range(k))


def _require_secret(secret: bytes | None) -> bytes:
    if secret is None or (isinstance(secret, (bytes, bytearray)) and len(secret) == 0):
        raise PartitionError("the random scheme needs a secret: pass secret=<non-empty bytes> known only to the edge")
    if not isinstance(secret, (bytes, bytearray)):
        raise PartitionError(f"secret must be bytes, got {type(secret).__name__}; encode it first")
    return bytes(secret)


def _keyed_order(n: int, secret: bytes, salt: int) -> list[int]:
    """Window ids ``0..n-1`` in a pseudo-random order keyed by ``secret`` and ``salt``.

    The per-salt key is ``HMAC-SHA256(secret, str(salt))``; each id is ranked by
    ``HMAC-SHA256(key, id as 4 big-endian bytes)``, so the order is a keyed pseudo-random
    permutation that nobody without ``secret`` can predict.
    """
    key = hmac.digest(secret, f"{salt}".encode("ascii"), hashlib.sha256)
    return sorted(range(n), key=lambda wid: (hmac.digest(key, wid.to_bytes(4, "big"), hashlib.sha256), wid))
