"""partitioner.schemes: disjoint shares of a frame's picture windows, balanced by picture tokens."""

from __future__ import annotations

import hashlib
import hmac
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pedsam.partitioner import SCHEMES, PartitionError, WindowGrid, partition, share_bound
from pedsam.partitioner.balance import ROUNDINGS, weighted_runs
from pedsam.partitioner.contiguous import cut_edges

VIT_B = WindowGrid.for_encoder(1024, 16, 14)
SECRET = b"edge-only secret"
ASPECTS = {"4:3": (3, 4), "16:9": (9, 16), "9:16": (16, 9), "1:1": (1, 1)}  # height : width


def picture_of(grid: WindowGrid, aspect: tuple[int, int]) -> tuple[int, int]:
    """``content`` of a frame of ``aspect`` (H, W) resized SAM's way onto ``grid``: longest side full."""
    h, w = aspect
    if w >= h:
        return (max(1, -(-grid.grid_h * h // w)), grid.grid_w)
    return (grid.grid_h, max(1, -(-grid.grid_w * w // h)))


@st.composite
def grid_and_k(draw: st.DrawFn, min_k: int = 1) -> tuple[WindowGrid, int]:
    grid = WindowGrid(draw(st.integers(1, 80)), draw(st.integers(1, 80)), draw(st.integers(1, 16)))
    if grid.num_windows < min_k:
        grid = WindowGrid(grid.grid_h + min_k * grid.window_size, grid.grid_w, grid.window_size)
    k = draw(st.integers(min_k, grid.num_windows))
    return grid, k


def labels(grid: WindowGrid, shares: tuple[tuple[int, ...], ...]) -> np.ndarray:
    """(rows, cols) array of the share index of each window."""
    out = np.full(grid.num_windows, -1)
    for index, share in enumerate(shares):
        out[list(share)] = index
    return out.reshape(grid.rows, grid.cols)


def is_connected(grid: WindowGrid, share: tuple[int, ...]) -> bool:
    members = set(share)
    seen = {share[0]}
    stack = [share[0]]
    while stack:
        for other in grid.neighbours(stack.pop()):
            if other in members and other not in seen:
                seen.add(other)
                stack.append(other)
    return seen == members


def assert_balanced_cover(
    grid: WindowGrid, k: int, shares: tuple[tuple[int, ...], ...], content: tuple[int, int] | None = None
) -> None:
    """Every picture window once, nothing else, and no share over 1/k of the picture plus one window."""
    picture = grid.picture_tokens(content)
    assert len(shares) == k
    assert all(share and list(share) == sorted(share) for share in shares)
    assert sorted(wid for share in shares for wid in share) == [int(w) for w in np.flatnonzero(picture)]
    worst = max(int(picture[list(share)].sum()) for share in shares) / int(picture.sum())
    assert worst <= share_bound(picture[picture > 0], k) + 1e-12, (worst, [len(s) for s in shares])


@pytest.mark.parametrize("scheme", SCHEMES)
@settings(max_examples=40, deadline=None)
@given(case=grid_and_k())
def test_every_scheme_covers_once_and_is_balanced(scheme: str, case: tuple[WindowGrid, int]) -> None:
    grid, k = case
    shares = partition(grid, k, scheme, secret=SECRET, allow_single=True)
    assert_balanced_cover(grid, k, shares)
    assert partition(grid, k, scheme, secret=SECRET, allow_single=True) == shares


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("k", range(2, 26))
def test_vit_b_grid_every_k(scheme: str, k: int) -> None:
    shares = partition(VIT_B, k, scheme, secret=SECRET)
    assert_balanced_cover(VIT_B, k, shares)


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("aspect", ASPECTS)
@settings(max_examples=25, deadline=None)
@given(window=st.integers(1, 16), side=st.integers(1, 96), k=st.integers(2, 6))
def test_the_worst_share_is_a_kth_of_the_picture_plus_one_window(
    scheme: str, aspect: str, window: int, side: int, k: int
) -> None:
    grid = WindowGrid(side, side, window)
    content = picture_of(grid, ASPECTS[aspect])
    if len(grid.picture_windows(content)) < k:
        with pytest.raises(PartitionError, match="windows to share"):
            partition(grid, k, scheme, content=content, secret=SECRET)
        return
    assert_balanced_cover(grid, k, partition(grid, k, scheme, content=content, secret=SECRET), content)


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("aspect", ASPECTS)
@pytest.mark.parametrize("k", range(2, 7))
def test_vit_b_every_aspect_and_k(scheme: str, aspect: str, k: int) -> None:
    content = picture_of(VIT_B, ASPECTS[aspect])
    assert_balanced_cover(VIT_B, k, partition(VIT_B, k, scheme, content=content, secret=SECRET), content)


def test_padding_windows_are_in_no_share() -> None:
    # ViT-B: a 4:3 frame leaves the bottom row of windows pure padding, a 16:9 one two rows.
    for content, padding in (((48, 64), set(range(20, 25))), ((36, 64), set(range(15, 25))),
                             ((64, 36), {w for w in range(25) if w % 5 >= 3})):
        for scheme in SCHEMES:
            shares = partition(VIT_B, 3, scheme, content=content, secret=SECRET)
            assert set(range(25)) - {w for share in shares for w in share} == padding


@pytest.mark.parametrize(("content", "k", "worst"), [((48, 64), 3, 0.344), ((36, 64), 3, 0.340), ((36, 64), 2, 0.510)])
def test_contiguous_on_vit_b_was_half_a_frame_and_is_now_a_kth(content: tuple[int, int], k: int, worst: float) -> None:
    # Balanced by window count, contiguous gave one worker 0.49 of a 4:3 frame with 3 workers,
    # 0.56 of a 16:9 one, and 0.92 of a 16:9 one with 2.
    picture = VIT_B.picture_tokens(content)
    shares = partition(VIT_B, k, "contiguous", content=content)
    assert max(picture[list(s)].sum() for s in shares) / picture.sum() == pytest.approx(worst, abs=5e-4)


@settings(max_examples=200, deadline=None)
@given(weights=st.lists(st.integers(0, 200), min_size=1, max_size=60), rounding=st.sampled_from(ROUNDINGS),
       data=st.data())
def test_weighted_runs_keep_the_bound_for_any_weights(weights: list[int], rounding: str, data: st.DataObject) -> None:
    k = data.draw(st.integers(1, len(weights)))
    sizes = weighted_runs(weights, k, rounding)
    assert len(sizes) == k and all(size >= 1 for size in sizes) and sum(sizes) == len(weights)
    ends = np.cumsum([0, *sizes])
    heaviest = max(sum(weights[a:b]) for a, b in zip(ends, ends[1:]))
    assert heaviest <= sum(weights) / k + max(weights)


@settings(max_examples=80, deadline=None)
@given(case=grid_and_k())
def test_contiguous_shares_are_connected_and_no_worse_than_bands(case: tuple[WindowGrid, int]) -> None:
    grid, k = case
    shares = partition(grid, k, "contiguous", allow_single=True)
    for share in shares:
        assert is_connected(grid, share), share
    if grid.grid_h % grid.window_size or grid.grid_w % grid.window_size:
        return  # unequal windows: balance by picture comes first, compactness second
    cut = cut_edges(labels(grid, shares))
    bands = min(cut_edges(labels(grid, partition(grid, k, s, allow_single=True))) for s in ("rows", "columns"))
    assert cut <= bands


@pytest.mark.parametrize(
    ("rows", "cols", "k", "max_cut"),
    [(5, 5, 2, 6), (5, 5, 3, 9), (8, 8, 4, 16), (8, 8, 2, 8), (80, 80, 16, 480), (10, 10, 7, 37)],
)
def test_contiguous_is_compact(rows: int, cols: int, k: int, max_cut: int) -> None:
    # max_cut: what near-square blocks achieve (8x8 into 4 is the four 4x4 quadrants).
    grid = WindowGrid(rows, cols, 1)
    assert cut_edges(labels(grid, partition(grid, k, "contiguous"))) <= max_cut


def test_contiguous_vit_b_three_servers_gets_a_square() -> None:
    # 25 whole windows into 9 + 8 + 8: the 9 can be an exact 3x3 block of windows.
    def bbox(share: tuple[int, ...]) -> tuple[int, int]:
        rows, cols = zip(*(divmod(wid, 5) for wid in share))
        return max(rows) - min(rows) + 1, max(cols) - min(cols) + 1

    grid = WindowGrid(15, 15, 3)
    assert any(len(share) == 9 and bbox(share) == (3, 3) for share in partition(grid, 3, "contiguous"))


@settings(max_examples=80, deadline=None)
@given(case=grid_and_k(min_k=2))
def test_interleaved_never_puts_neighbours_together(case: tuple[WindowGrid, int]) -> None:
    grid, k = case
    shares = partition(grid, k, "interleaved")
    grid_labels = labels(grid, shares)
    assert cut_edges(grid_labels) == grid.rows * (grid.cols - 1) + grid.cols * (grid.rows - 1)


def test_interleaved_exhaustive_on_small_grids() -> None:
    for rows in range(1, 9):
        for cols in range(1, 9):
            grid = WindowGrid(rows, cols, 1)
            for k in range(2, grid.num_windows + 1):
                shares = partition(grid, k, "interleaved")
                assert_balanced_cover(grid, k, shares)
                every_edge = rows * (cols - 1) + cols * (rows - 1)
                assert cut_edges(labels(grid, shares)) == every_edge, (rows, cols, k)


def test_interleaved_two_is_a_checkerboard() -> None:
    grid = WindowGrid(4, 6, 1)
    grid_labels = labels(grid, partition(grid, 2, "interleaved"))
    r, c = np.indices(grid_labels.shape)
    assert (grid_labels == (r + c) % 2).all()


@settings(max_examples=60, deadline=None)
@given(case=grid_and_k())
def test_rows_and_columns_are_consecutive_bands(case: tuple[WindowGrid, int]) -> None:
    grid, k = case
    rows = partition(grid, k, "rows", allow_single=True)
    assert [wid for share in rows for wid in share] == list(range(grid.num_windows))
    columns = partition(grid, k, "columns", allow_single=True)
    column_major = [r * grid.cols + c for c in range(grid.cols) for r in range(grid.rows)]
    assert [wid for share in columns for wid in sorted(share, key=column_major.index)] == column_major


def test_random_follows_the_documented_hmac_derivation() -> None:
    key = hmac.new(SECRET, b"7", hashlib.sha256).digest()
    order = sorted(range(25), key=lambda w: hmac.new(key, w.to_bytes(4, "big"), hashlib.sha256).digest())
    ends = np.cumsum([0, *weighted_runs(VIT_B.picture_tokens()[order], 3)])
    expected = tuple(tuple(sorted(order[a:b])) for a, b in zip(ends, ends[1:]))
    assert partition(VIT_B, 3, "random", secret=SECRET, salt=7) == expected


def test_random_depends_on_secret_and_salt_only() -> None:
    first = partition(VIT_B, 3, "random", secret=SECRET, salt=0)
    random.seed(1)
    assert partition(VIT_B, 3, "random", secret=SECRET, salt=0) == first
    random.seed(2)
    assert partition(VIT_B, 3, "random", secret=SECRET, salt=0) == first
    by_salt = {partition(VIT_B, 3, "random", secret=SECRET, salt=salt) for salt in range(32)}
    assert len(by_salt) == 32
    assert partition(VIT_B, 3, "random", secret=b"another secret", salt=0) != first


@st.composite
def larger_grid_and_k(draw: st.DrawFn) -> tuple[WindowGrid, int]:
    """A grid of at least 64 windows and 2 <= k <= windows - 2: enough distinct partitions that
    two salts giving the same one is all but impossible. Drawn directly, so every example counts."""
    size = draw(st.integers(1, 16))
    rows = draw(st.integers(1, 64))
    cols = draw(st.integers(-(-64 // rows), 64))
    grid = WindowGrid(
        draw(st.integers((rows - 1) * size + 1, rows * size)),  # exactly `rows` rows of windows
        draw(st.integers((cols - 1) * size + 1, cols * size)),
        size,
    )
    assert (grid.rows, grid.cols) == (rows, cols) and grid.num_windows >= 64
    return grid, draw(st.integers(2, grid.num_windows - 2))


@settings(max_examples=40, deadline=None)
@given(case=larger_grid_and_k(), salt=st.integers(-(2**40), 2**40))
def test_random_changes_with_salt_on_larger_grids(case: tuple[WindowGrid, int], salt: int) -> None:
    grid, k = case
    assert partition(grid, k, "random", secret=SECRET, salt=salt) != partition(
        grid, k, "random", secret=SECRET, salt=salt + 1
    )


@pytest.mark.parametrize("secret", [None, b""])
def test_random_needs_a_secret(secret: bytes | None) -> None:
    with pytest.raises(PartitionError, match="random scheme needs a secret"):
        partition(VIT_B, 3, "random", secret=secret)


@pytest.mark.parametrize("scheme", [s for s in SCHEMES if s != "random"])
def test_secret_is_ignored_by_keyless_schemes(scheme: str) -> None:
    assert partition(VIT_B, 4, scheme, secret=SECRET, salt=9) == partition(VIT_B, 4, scheme)


def test_unknown_scheme_lists_the_valid_ones() -> None:
    with pytest.raises(PartitionError) as info:
        partition(VIT_B, 3, "checkerboard")
    message = str(info.value)
    assert "'checkerboard'" in message and "\n" not in message
    assert all(name in message for name in SCHEMES)


def test_more_servers_than_windows() -> None:
    with pytest.raises(PartitionError, match=r"k=26 shares but the 5x5 window grid has only 25 windows to share; "
                                             r"use at most 25 servers"):
        partition(VIT_B, 26)
    with pytest.raises(PartitionError, match=r"5x5 window grid \(15 of its 25 hold picture\) has only 15 windows"):
        partition(VIT_B, 16, content=(36, 64))


@pytest.mark.parametrize("k", [0, -2])
def test_k_below_one(k: int) -> None:
    with pytest.raises(PartitionError, match="give k >= 1"):
        partition(VIT_B, k)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_single_server_needs_opt_in(scheme: str) -> None:
    with pytest.raises(PartitionError) as info:
        partition(VIT_B, 1, scheme, secret=SECRET)
    assert "whole frame" in str(info.value) and "allow_single=True" in str(info.value)
    assert partition(VIT_B, 1, scheme, secret=SECRET, allow_single=True) == (tuple(range(25)),)



def test_interleaved_tries_every_step_up_to_49_servers_and_stays_proper_beyond(monkeypatch: pytest.MonkeyPatch) -> None:
    """Up to 49 servers the capped search is the whole search (the same shares as with no cap);
    for hundreds of servers on a large grid it still gives a proper, balanced colouring (the
    whole search took minutes there)."""
    from pedsam.partitioner import schemes

    rng = np.random.default_rng(0)
    cases = [(5, 5, 2), (5, 5, 7), (7, 9, 13), (8, 8, schemes.MAX_STEPS + 1), (3, 60, 31)]
    weights = [rng.integers(1, 197, rows * cols).astype(float) for rows, cols, _ in cases]
    capped = [schemes._interleaved(rows, cols, k, w) for (rows, cols, k), w in zip(cases, weights)]
    monkeypatch.setattr(schemes, "MAX_STEPS", 10**6)
    for (rows, cols, k), w, got in zip(cases, weights, capped):
        np.testing.assert_array_equal(got, schemes._interleaved(rows, cols, k, w), err_msg=f"{rows}x{cols} k={k}")
    monkeypatch.undo()
    grid = WindowGrid(78, 56, 1)
    shares = partition(grid, 1847, "interleaved")
    assert_balanced_cover(grid, 1847, shares)
    colour = labels(grid, shares)
    assert (colour[1:] != colour[:-1]).all() and (colour[:, 1:] != colour[:, :-1]).all()
