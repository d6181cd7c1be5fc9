"""Compact, 4-connected balanced shares: runs of a strip-snake walk over the window grid.

The construction: cut the ``rows`` x ``cols`` window grid into vertical strips and walk it,
down the first strip, up the second, down the third, ..., each strip row by row in a snake, and
cut the walk into ``k`` consecutive runs balanced by picture tokens
(:mod:`pedsam.partitioner.balance`). Inside a strip, consecutive cells of the walk are
4-neighbours, so a run is 4-connected as long as every strip junction it crosses joins two
neighbouring cells. A run of ``s`` windows inside a strip of width ``w`` is about
``w`` x ``s / w`` windows, so strips about ``sqrt(s)`` wide give near-square shares. We try
several strip layouts in both orientations (vertical strips, or horizontal strips via the
transpose), cut by weight from either end with each rounding of the cuts (and by window
count), drop those whose runs would cross a broken junction or break the bound, and keep the cut
whose heaviest share is lightest, then the one with the fewest window edges between different
shares. A single strip (a plain row snake) has no junction, so a valid candidate always exists.

Junctions: a strip walked as a plain row snake ends on the corner next to the following strip's
start when its height is odd. For even height, the last two rows are walked column by column
instead, which ends on that corner when the strip's width is odd. For even height and even width
the junction is broken, which is fine exactly when a run ends there.

Coordinates here are window-grid ``(row, col)``; window ids are row-major ``row * cols + col``.
"""

from __future__ import annotations

import math

import numpy as np

from pedsam.partitioner.balance import ROUNDINGS, weighted_runs

__all__ = ["contiguous_order", "cut_edges", "strip_walk"]


def _strip(height: int, width: int, down: bool) -> tuple[np.ndarray, np.ndarray]:
    """Strip-local (rows, cols) of a walk over every cell of a ``height`` x ``width`` strip.

    Starts at the top-left cell (bottom-left if not ``down``). Ends at the bottom-right
    (top-right) cell whenever ``height`` or ``width`` is odd.
    """
    column_tail = height % 2 == 0 and width % 2 == 1
    snake_rows = height - 2 if column_tail else height
    r = np.repeat(np.arange(snake_rows), width)
    c = np.tile(np.arange(width), snake_rows)
    c = np.where(r % 2 == 1, width - 1 - c, c)
    if column_tail:
        # Rows height-2 and height-1, column by column (down, up, down, ...).
        cc = np.repeat(np.arange(width), 2)
        rr = np.tile(np.array([height - 2, height - 1]), width)
        rr = np.where(cc % 2 == 1, 2 * height - 3 - rr, rr)
        r, c = np.concatenate([r, rr]), np.concatenate([c, cc])
    if not down:
        r = height - 1 - r
    return r, c


def strip_walk(rows: int, cols: int, widths: list[int]) -> tuple[np.ndarray, list[int]]:
    """Walk vertical strips of ``widths`` (summing to ``cols``) of a ``rows`` x ``cols`` grid.

    Returns:
        The row-major ids of every cell in walk order, and the walk positions ``p`` at which
        cell ``p - 1`` and cell ``p`` are not 4-neighbours (broken strip junctions).
    """
    parts = []
    broken = []
    left = position = 0
    for index, width in enumerate(widths):
        r, c = _strip(rows, width, down=index % 2 == 0)
        if index > 0 and rows % 2 == 0 and widths[index - 1] % 2 == 0:
            broken.append(position)
        parts.append(r * cols + (c + left))
        left += width
        position += rows * width
    return np.concatenate(parts), broken


def cut_edges(labels: np.ndarray) -> int:
    """Number of 4-neighbour pairs with different labels in a 2-D label array."""
    vertical = np.count_nonzero(labels[1:, :] != labels[:-1, :])
    horizontal = np.count_nonzero(labels[:, 1:] != labels[:, :-1])
    return int(vertical + horizontal)


def _width_options(cols: int, target: float) -> list[list[int]]:
    """Strip-width lists for ``cols`` columns, strips near ``target`` wide; one strip first."""
    options: list[list[int]] = [[cols]]
    low = max(1, math.floor(target / 2))
    high = min(cols, math.ceil(target * 2) + 1)
    for width in range(low, high + 1):
        count, rest = divmod(cols, width)
        candidates = [[width] * count + ([rest] if rest else [])]
        if count >= 2 and rest:
            candidates.append([width] * (count - 1) + [width + rest])
        strips = round(cols / width)
        base, extra = divmod(cols, strips)
        candidates.append([base + 1] * extra + [base] * (strips - extra))
        options.extend(c for c in candidates if c not in options)
    return options


def contiguous_order(rows: int, cols: int, k: int, weights: np.ndarray | None = None) -> tuple[np.ndarray, list[int]]:
    """The walk and run lengths whose cut into ``k`` runs is the most balanced and compact we find.

    Args:
        rows, cols: the window grid.
        k: number of runs.
        weights: (rows * cols,) picture tokens per row-major window id; default 1 each.

    Returns:
        Row-major window ids in walk order, and ``k`` run lengths (summing to ``rows * cols``)
        to cut it into; every run is 4-connected and holds at most ``sum / k + max`` of the
        weight (:func:`pedsam.partitioner.balance.weighted_runs`). Among the candidates within
        that bound the one whose heaviest run is lightest wins, then the one with the fewest
        window edges between different runs; ties go to the first candidate tried.
    """
    n = rows * cols
    weight = np.ones(n, dtype=np.int64) if weights is None else np.asarray(weights, dtype=np.int64)
    target = math.sqrt(n / k)
    bound = int(weight.sum()) / k + int(weight.max())
    base, extra = divmod(n, k)
    counted = [base + 1 if i < extra else base for i in range(k)]  # by count: kept when within the bound
    best: tuple[int, int, np.ndarray, list[int]] | None = None
    for transpose in (False, True):
        h, w = (cols, rows) if transpose else (rows, cols)
        for widths in _width_options(w, target):
            walk, broken = strip_walk(h, w, widths)
            if transpose:
                r, c = np.divmod(walk, w)
                walk = c * cols + r
            cuts = [weighted_runs(weight[walk], k, rounding) for rounding in ROUNDINGS]
            cuts += [weighted_runs(weight[walk[::-1]], k, rounding)[::-1] for rounding in ROUNDINGS]
            for sizes in (*cuts, counted, counted[::-1]):
                ends = set(np.cumsum(sizes).tolist())
                if not all(p in ends for p in broken):
                    continue
                labels = np.empty(n, dtype=np.int64)
                labels[walk] = np.repeat(np.arange(k), sizes)
                heaviest = int(np.bincount(labels, weights=weight, minlength=k).max())
                if heaviest > bound:
                    continue
                cost = cut_edges(labels.reshape(rows, cols))
                if best is None or (heaviest, cost) < best[:2]:
                    best = (heaviest, cost, walk, sizes)
    assert best is not None, "the single-strip walk cut by weight is always valid"
    return best[2], best[3]
