"""Bootstrap intervals: seeded, holding the figure, narrowing as frames accumulate."""

from __future__ import annotations

import numpy as np

from pedsam.stream.privacy.intervals import ratio_interval


def test_interval_holds_the_figure_and_narrows_with_more_frames() -> None:
    rng = np.random.default_rng(4)
    widths = []
    for frames in (10, 40, 160):
        reference = rng.integers(1, 5, size=frames)  # people per detection frame
        found = rng.binomial(reference, 0.6)
        span = ratio_interval(found, reference, seed=0)
        assert span is not None
        assert span[0] <= found.sum() / reference.sum() <= span[1]
        widths.append(span[1] - span[0])
    assert widths[0] > widths[1] > widths[2] and widths[2] < 0.15
    # Seeded: the same interval every time; a constant series has no spread; nothing to divide: none.
    assert ratio_interval([1, 0, 1, 1], [2, 1, 1, 2], seed=3) == ratio_interval([1, 0, 1, 1], [2, 1, 1, 2], seed=3)
    assert ratio_interval([0.34] * 12) == (0.34, 0.34)
    assert ratio_interval([], []) is None and ratio_interval([0, 0], [0, 0]) is None
