"""Cutting an ordered list of windows into ``k`` runs of balanced picture, with a stated bound.

Every partition scheme but ``interleaved`` is an *order* of the picture windows cut into ``k``
consecutive runs. :func:`weighted_runs` places the cuts by picture tokens, not by window count:
cut ``i`` goes where the running total of picture tokens is nearest to ``i * T / k`` (``T`` the
frame's picture tokens; or the first or last boundary past it), moved just enough that every run keeps at least one window.

The bound, for any weights: no run holds more than ``T / k + w`` picture tokens, ``w`` the
largest window's. Each natural cut lands within ``w / 2`` of its target, so a run between two
natural cuts holds at most ``T / k + w``. A cut moved later to keep its run non-empty makes that
run a single window (at most ``w``) and only shortens the next; a cut moved earlier (too few
windows left for the runs after it) shortens its run and leaves one window to each later run.
The tests check the bound on every scheme, aspect ratio and ``k``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["ROUNDINGS", "share_bound", "weighted_runs"]


ROUNDINGS = ("nearest", "up", "down")


def weighted_runs(weights: Sequence[int] | np.ndarray, k: int, rounding: str = "nearest") -> list[int]:
    """Lengths of ``k`` consecutive, non-empty runs of ``weights`` (in order), balanced by weight.

    Args:
        weights: picture tokens of each window, in the order to cut; at least ``k`` of them.
        k: number of runs, ``>= 1``.
        rounding: where a cut goes around its target: the nearest window boundary, the first at
            or past it (``"up"``: earlier runs come out heavier), or the last at or before it
            (``"down"``). Each lands within one window of its target, so the bound holds.

    Returns:
        ``k`` positive run lengths summing to ``len(weights)``; each run's weight is at most
        ``sum(weights) / k + max(weights)`` (see the module docstring).
    """
    w = np.asarray(weights, dtype=np.int64)
    m = int(w.size)
    if not 1 <= k <= m:
        raise ValueError(f"cannot cut {m} windows into {k} non-empty runs")
    prefix = np.concatenate([[0], np.cumsum(w)])  # prefix[j]: weight of the first j windows
    total = int(prefix[-1])
    cuts = [0]
    for i in range(1, k):
        target = i * total / k
        j = int(np.searchsorted(prefix, target))  # first prefix >= target
        if rounding == "down" and j > 0 and prefix[j] > target:
            j -= 1
        elif rounding == "nearest" and j > 0 and target - prefix[j - 1] <= prefix[j] - target:
            j -= 1  # the prefix just below is nearer (ties go to the shorter run)
        j = min(max(j, cuts[-1] + 1), m - (k - i))
        cuts.append(j)
    cuts.append(m)
    return [b - a for a, b in zip(cuts, cuts[1:])]


def share_bound(weights: Sequence[int] | np.ndarray, k: int) -> float:
    """The per-frame guarantee as a share of the picture: ``1 / k`` plus the largest window's share."""
    w = np.asarray(weights, dtype=np.int64)
    total = int(w.sum())
    return 1.0 / k + (int(w.max()) / total if total else 0.0)
