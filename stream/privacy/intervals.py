"""Confidence intervals for the report's figures: a seeded percentile block bootstrap over frames.

Every figure with an interval is a ratio of sums over the frames a measurement was taken on:
a recall is detections matched over reference detections, a mean coverage is coverage summed
over frames taken, an edge share is picture windows the edge kept over picture windows. Frames,
not detections, are resampled: the people of one frame are found or missed together (one
mosaic, one detector pass), so treating them as independent would make intervals too narrow.
Neighbouring frames of a video are alike too, so frames are drawn in runs (a circular block
bootstrap, blocks of ``round(n ** (1/3))`` consecutive frames).
The interval belongs to one fixed party (a worker, or a coalition): the report picks the worst
party first and then bootstraps its frames, so the choice itself is not part of the interval.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["RESAMPLES", "ratio_interval"]

RESAMPLES = 2000
LEVEL = 0.95


def ratio_interval(
    numerators: Sequence[float],
    denominators: Sequence[float] | None = None,
    *,
    seed: int = 0,
    resamples: int = RESAMPLES,
) -> tuple[float, float] | None:
    """95% percentile-bootstrap interval of ``sum(numerators) / sum(denominators)`` over frames
    (one entry of each per frame; ``denominators`` default all 1, a mean). None when the figure
    is undefined (no frames, or nothing to divide by). Resamples whose denominator is 0 are
    drawn again as undefined and left out. Deterministic for a given ``seed``."""
    num = np.asarray(numerators, np.float64)
    den = np.ones_like(num) if denominators is None else np.asarray(denominators, np.float64)
    if num.size == 0 or den.sum() <= 0:
        return None
    rng = np.random.default_rng(seed)
    n = num.size
    block = max(1, round(n ** (1 / 3)))
    starts = rng.integers(0, n, size=(resamples, -(-n // block)))  # (R, blocks)
    picks = ((starts[:, :, None] + np.arange(block)) % n).reshape(resamples, -1)[:, :n]  # (R, frames)
    top, bottom = num[picks].sum(axis=1), den[picks].sum(axis=1)
    defined = bottom > 0
    ratios = top[defined] / bottom[defined]
    tail = (1.0 - LEVEL) / 2 * 100
    low, high = np.percentile(ratios, [tail, 100 - tail])
    return round(float(low), 4), round(float(high), 4)
