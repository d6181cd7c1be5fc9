"""Partition schemes: which windows of a frame form each server's share.

Shares are cut from the frame's *picture* windows only (see
:meth:`~pedsam.partitioner.geometry.WindowGrid.picture_tokens`): a window of pure padding holds
no pixel and stays on the edge. Every scheme returns exactly ``k`` non-empty shares that together
hold every picture window exactly once, and is *balanced by picture tokens*: no share holds more
than ``1 / k`` of the frame's picture plus the largest window's share, whatever the aspect ratio
(:mod:`pedsam.partitioner.balance` proves it for the cut schemes; ``interleaved`` is checked).
With ViT-B's 25 windows a 4:3 frame has 20 picture windows, a 16:9 one 15, and with 3 servers
the worst share is then 0.34-0.36 of the picture. A share is a sorted tuple of row-major window
ids (see :mod:`pedsam.partitioner.geometry`).

- ``rows``: horizontal bands; row-major window order cut into ``k`` consecutive runs.
- ``columns``: vertical bands; column-major order cut into ``k`` consecutive runs.
- ``contiguous``: compact, 4-connected, near-square blocks (see :mod:`pedsam.partitioner.contiguous`).
- ``interleaved``: no two 4-neighbouring windows share a server (``k >= 2``), so no server
  sees two adjacent windows; ``k = 2`` is a checkerboard.
- ``random``: a keyed pseudo-random permutation of the windows cut into ``k`` runs; needs a
  ``secret`` and changes with ``salt``.

The picture windows form a rectangle at the top-left of the window grid (the picture starts at
the top-left token), so every scheme works on that rectangle. ``interleaved`` colours it with
``(a * row + b * col) mod k`` for ``a, b`` in ``1..k-1`` (at most the first
:data:`MAX_STEPS` of each, and the row-major cycle): horizontal neighbours differ by ``b`` and
vertical ones by ``a``, neither ``0 mod k``, so every such colouring is proper; among those that
use all ``k`` colours it keeps the one whose heaviest colour holds least picture (``a = cols mod
k``, ``b = 1``, the row-major cycle, always uses them all when it is not 0, and if ``k`` divides
``cols`` the first row alone does), then moves single windows out of the heaviest colour while
that lightens it and no two neighbours meet.
"""

from __future__ import annotations

import hashlib
import hmac

import numpy as np

from pedsam.partitioner.balance import share_bound, weighted_runs
from pedsam.partitioner.contiguous import contiguous_order
from pedsam.partitioner.errors import PartitionError
from pedsam.partitioner.geometry import WindowGrid

__all__ = ["SCHEMES", "Share", "partition"]

SCHEMES: tuple[str, ...] = ("contiguous", "rows", "columns", "interleaved", "random")

Share = tuple[int, ...]
"""Sorted row-major window ids given to one executor."""


def partition(
    grid: WindowGrid,
    k: int,
    scheme: str = "interleaved",
    *,
    content: tuple[int, int] | None = None,
    secret: bytes | None = None,
    salt: int = 0,
    allow_single: bool = False,
) -> tuple[Share, ...]:
    """Split ``grid``'s picture windows into ``k`` disjoint shares balanced by picture tokens.

    Args:
        grid: the window grid of the encoder.
        k: number of shares (servers), ``1..`` the number of picture windows; ``1`` only with
            ``allow_single``, because one server would then see the whole frame.
        scheme: one of :data:`SCHEMES`.
        content: ``(rows, cols)`` tokens covering the frame from the top-left (see
            :meth:`WindowGrid.picture_tokens`); default the whole grid. Windows outside it are
            pure padding and belong to no share: the edge computes them.
        secret: key for ``random`` (non-empty bytes); ignored by the other schemes.
        salt: varies the ``random`` permutation under one secret (e.g. a frame or epoch
            number); ignored by the other schemes.
        allow_single: accept ``k == 1``.

    Returns:
        ``k`` non-empty shares, each a sorted tuple of window ids, in a deterministic order;
        together they hold every picture window once, and none holds more than
        ``1 / k`` of the picture plus its largest window (:func:`~pedsam.partitioner.balance.share_bound`).

    Raises:
        PartitionError: unknown scheme, ``k`` out of range, ``k == 1`` without
            ``allow_single``, or ``random`` without a secret.
    """
    if scheme not in SCHEMES:
        raise PartitionError(f"unknown partition scheme {scheme!r}; use one of: {', '.join(SCHEMES)}")
    if not isinstance(k, int) or isinstance(k, bool):
        raise PartitionError(f"k (the number of shares) must be an int, got {type(k).__name__} {k!r}")
    if k < 1:
        raise PartitionError(f"k={k}: need at least one share; give k >= 1 (one share per server)")
    rows, cols = grid.picture_shape(content)
    m = rows * cols
    if k > m:
        where = "" if m == grid.num_windows else f" ({m} of its {grid.num_windows} hold picture)"
        raise PartitionError(
            f"k={k} shares but the {grid.rows}x{grid.cols} window grid{where} has only {m} windows to share; "
            f"use at most {m} servers"
        )
    if k == 1 and not allow_single:
        raise PartitionError(
            "k=1: a single server would see the whole frame; use 2 or more servers, "
            "or opt in with allow_single=True (--allow-single-server)"
        )
    # The picture windows form a rows x cols rectangle at the top-left: work on it, local
    # ids row-major, and map back to the grid's ids at the end.
    local = (np.arange(rows)[:, None] * grid.cols + np.arange(cols)[None, :]).ravel()
    weight = grid.picture_tokens(content)[local]
    if scheme == "interleaved":
        labels = _interleaved(rows, cols, k, weight)
        return tuple(tuple(int(w) for w in local[labels == index]) for index in range(k))
    if scheme == "rows":
        order = np.arange(m)
    elif scheme == "columns":
        order = np.arange(m).reshape(rows, cols).T.ravel()
    elif scheme == "contiguous":
        order, sizes = contiguous_order(rows, cols, k, weight)
        return _cut(local[order], sizes)
    else:
        order = np.array(_keyed_order(local.tolist(), _require_secret(secret), salt), dtype=np.int64)
        order = np.searchsorted(local, order)  # local ids are ascending, like the grid's
    return _cut(local[order], weighted_runs(weight[order], k))


def _cut(order: np.ndarray, sizes: list[int]) -> tuple[Share, ...]:
    """Cut ``order`` into consecutive runs of ``sizes``, each returned sorted."""
    shares = []
    start = 0
    for size in sizes:
        shares.append(tuple(sorted(int(w) for w in order[start : start + size])))
        start += size
    return tuple(shares)


MAX_STEPS = 48
"""Steps ``a`` and ``b`` tried by ``interleaved``: all of them for up to 49 servers. Every pair is
a whole colouring of the grid, and trying all of them for hundreds of servers took minutes."""


def _interleaved(rows: int, cols: int, k: int, weight: np.ndarray) -> np.ndarray:
    """A proper ``k``-colouring of a ``rows`` x ``cols`` grid, lightest heaviest class first.

    Returns (rows * cols,) colours, row-major (see the module docstring for the candidates).
    """
    r, c = np.divmod(np.arange(rows * cols), cols)
    if k == 1:
        return np.zeros(rows * cols, dtype=np.int64)
    best: tuple[int, np.ndarray] | None = None
    steps = range(1, min(k, MAX_STEPS + 1))
    # a = cols mod k (if not 0) gives the row-major cycle, which uses every colour when k <= rows
    # * cols; if k divides cols, row 0 alone uses them all (added when past the steps tried).
    pairs = [(a, b) for a in steps for b in steps]
    if cols % k > MAX_STEPS:
        pairs.append((cols % k, 1))
    for a, b in pairs:
        colour = (a * r + b * c) % k
        if (np.bincount(colour, minlength=k) == 0).any():
            continue
        heaviest = int(np.bincount(colour, weights=weight, minlength=k).max())
        if best is None or heaviest < best[0]:
            best = (heaviest, colour)
    assert best is not None
    bound = share_bound(weight, k) * float(weight.sum())
    return _relieve(best[1].reshape(rows, cols), k, weight.reshape(rows, cols), bound).ravel()


def _relieve(colour: np.ndarray, k: int, weight: np.ndarray, bound: float) -> np.ndarray:
    """While the heaviest colour holds more than ``bound``, move the single window out of it that
    lightens the heaviest colour most without making two neighbours meet.

    ``colour`` and ``weight`` are (rows, cols); returns the improved colouring (a new array).
    """
    colour = colour.copy()
    rows, cols = colour.shape
    loads = np.bincount(colour.ravel(), weights=weight.ravel(), minlength=k)
    while loads.max() > bound:
        heavy = int(np.argmax(loads))
        members = list(zip(*np.nonzero(colour == heavy)))
        best: tuple[float, int, int, int] | None = None
        for r, c in members if len(members) > 1 else ():
            near = {int(colour[y, x]) for y, x in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1))
                    if 0 <= y < rows and 0 <= x < cols}
            for target in range(k):
                if target == heavy or target in near:
                    continue
                w = float(weight[r, c])
                after = max(loads[heavy] - w, loads[target] + w, *np.delete(loads, [heavy, target]))
                if after < loads.max() and (best is None or after < best[0]):
                    best = (after, int(r), int(c), target)
        if best is None:
            return colour
        _, r, c, target = best
        loads[heavy] -= weight[r, c]
        loads[target] += weight[r, c]
        colour[r, c] = target
    return colour


def _require_secret(secret: bytes | None) -> bytes:
    if secret is None or (isinstance(secret, (bytes, bytearray)) and len(secret) == 0):
        raise PartitionError("the random scheme needs a secret: pass secret=<non-empty bytes> known only to the edge")
    if not isinstance(secret, (bytes, bytearray)):
        raise PartitionError(f"secret must be bytes, got {type(secret).__name__}; encode it first")
    return bytes(secret)


def _keyed_order(ids: list[int], secret: bytes, salt: int) -> list[int]:
    """Window ``ids`` in a pseudo-random order keyed by ``secret`` and ``salt``.

    The per-salt key is ``HMAC-SHA256(secret, str(salt))``; each id is ranked by
    ``HMAC-SHA256(key, id as 4 big-endian bytes)``, so the order is a keyed pseudo-random
    permutation that nobody without ``secret`` can predict.
    """
    key = hmac.digest(secret, f"{salt}".encode("ascii"), hashlib.sha256)
    return sorted(ids, key=lambda wid: (hmac.digest(key, wid.to_bytes(4, "big"), hashlib.sha256), wid))
