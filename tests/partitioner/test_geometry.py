"""partitioner.geometry: the token grid cut into SAM's attention windows."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pedsam.partitioner import PartitionError, Window, WindowGrid

grids = st.builds(
    WindowGrid,
    grid_h=st.integers(1, 80),
    grid_w=st.integers(1, 80),
    window_size=st.integers(1, 16),
)


def test_vit_b_numbers() -> None:
    grid = WindowGrid.for_encoder(1024, 16, 14)
    assert (grid.grid_h, grid.grid_w, grid.window_size) == (64, 64, 14)
    assert (grid.rows, grid.cols, grid.num_windows) == (5, 5, 25)
    assert (grid.padded_h, grid.padded_w) == (70, 70)
    assert grid.window(0) == Window(id=0, row=0, col=0, top=0, left=0, height=14, width=14)
    assert grid.window(6) == Window(id=6, row=1, col=1, top=14, left=14, height=14, width=14)
    assert grid.window(4) == Window(id=4, row=0, col=4, top=0, left=56, height=14, width=8)
    assert grid.window(20) == Window(id=20, row=4, col=0, top=56, left=0, height=8, width=14)
    assert grid.window(24).num_tokens == 64
    assert [w.num_tokens for w in grid.windows].count(196) == 16


def test_picture_tokens_of_a_4_3_and_a_16_9_frame() -> None:
    grid = WindowGrid.for_encoder(1024, 16, 14)
    four_three = grid.picture_tokens((48, 64))  # 768x576 -> 1024x768 input: 48 rows of tokens
    assert int(four_three.sum()) == 48 * 64
    assert grid.picture_windows((48, 64)) == tuple(range(20))  # the bottom row of windows: padding
    assert four_three[15:20].tolist() == [6 * 14, 6 * 14, 6 * 14, 6 * 14, 6 * 8]
    assert grid.picture_shape((48, 64)) == (4, 5)
    sixteen_nine = grid.picture_tokens((36, 64))
    assert len(grid.picture_windows((36, 64))) == 15 and int(sixteen_nine.sum()) == 36 * 64
    portrait = grid.picture_tokens((64, 36))
    assert [int(w) for w in np.flatnonzero(portrait == 0)] == [w for w in range(25) if w % 5 >= 3]
    assert grid.picture_tokens().tolist() == [w.num_tokens for w in grid.windows]
    assert grid.picture_tokens((0, 64)).sum() == 0 and grid.picture_shape((100, 100)) == (5, 5)


@settings(max_examples=100, deadline=None)
@given(grid=grids, data=st.data())
def test_picture_tokens_count_the_content_rectangle(grid: WindowGrid, data: st.DataObject) -> None:
    rows, cols = data.draw(st.integers(0, grid.grid_h)), data.draw(st.integers(0, grid.grid_w))
    picture = grid.picture_tokens((rows, cols))
    assert int(picture.sum()) == rows * cols
    shape = grid.picture_shape((rows, cols))
    inside = [w.id for w in grid.windows if w.row < shape[0] and w.col < shape[1]]
    assert grid.picture_windows((rows, cols)) == (tuple(inside) if rows and cols else ())


def test_small_encoder_and_exact_fit() -> None:
    grid = WindowGrid.for_encoder(448, 16, 14)  # 28x28 tokens: exactly 2x2 windows, no padding
    assert (grid.rows, grid.cols, grid.padded_h) == (2, 2, 28)
    assert all(w.num_tokens == 196 for w in grid.windows)


@settings(max_examples=150, deadline=None)
@given(grids)
def test_windows_tile_the_token_grid_once(grid: WindowGrid) -> None:
    cover = np.zeros((grid.grid_h, grid.grid_w), dtype=np.int64)
    for wid, w in enumerate(grid.windows):
        assert w.id == wid == w.row * grid.cols + w.col
        assert (w.top, w.left) == (w.row * grid.window_size, w.col * grid.window_size)
        assert 1 <= w.height <= grid.window_size and 1 <= w.width <= grid.window_size
        assert grid.window(wid) == w
        cover[w.top : w.top + w.height, w.left : w.left + w.width] += 1
    assert sum(w.num_tokens for w in grid.windows) == grid.grid_h * grid.grid_w
    assert (cover == 1).all()
    assert grid.padded_h - grid.window_size < grid.grid_h <= grid.padded_h
    assert grid.padded_w - grid.window_size < grid.grid_w <= grid.padded_w


@settings(max_examples=100, deadline=None)
@given(grids)
def test_neighbours_are_the_edge_sharing_windows(grid: WindowGrid) -> None:
    pairs = set()
    for w in grid.windows:
        found = grid.neighbours(w.id)
        assert list(found) == sorted(set(found))
        for other in map(grid.window, found):
            assert abs(other.row - w.row) + abs(other.col - w.col) == 1
            assert w.id in grid.neighbours(other.id)
            pairs.add(frozenset((w.id, other.id)))
    # Every edge-sharing pair is found: the grid graph has this many edges.
    assert len(pairs) == grid.rows * (grid.cols - 1) + grid.cols * (grid.rows - 1)


def test_neighbours_of_vit_b_corner_and_centre() -> None:
    grid = WindowGrid.for_encoder(1024, 16, 14)
    assert grid.neighbours(0) == (1, 5)
    assert grid.neighbours(12) == (7, 11, 13, 17)
    assert grid.neighbours(24) == (19, 23)


def test_token_owner_map_marks_each_share_and_leaves_the_rest() -> None:
    grid = WindowGrid(30, 20, 14)  # 3x2 windows; bottom row 2 tokens tall, right column 6 wide
    owner = grid.token_owner_map([(0, 3), (5,)])
    assert owner.shape == (30, 20) and owner.dtype == np.int32
    assert (owner[0:14, 0:14] == 0).all()
    assert (owner[14:28, 14:20] == 0).all()
    assert (owner[28:30, 14:20] == 1).all()
    assert (owner[0:14, 14:20] == -1).all()
    assert (owner[14:30, 0:14] == -1).all()
    assert np.count_nonzero(owner == 0) == 196 + 14 * 6


@settings(max_examples=60, deadline=None)
@given(grids, st.data())
def test_token_owner_map_counts_match_window_tokens(grid: WindowGrid, data: st.DataObject) -> None:
    labels = data.draw(st.lists(st.integers(-1, 3), min_size=grid.num_windows, max_size=grid.num_windows))
    shares = [[wid for wid, label in enumerate(labels) if label == s] for s in range(4)]
    owner = grid.token_owner_map(shares)
    for s in range(-1, 4):
        expected = sum(grid.window(wid).num_tokens for wid, label in enumerate(labels) if label == s)
        assert np.count_nonzero(owner == s) == expected


def test_token_owner_map_rejects_overlap_and_unknown_windows() -> None:
    grid = WindowGrid.for_encoder(1024, 16, 14)
    with pytest.raises(PartitionError, match="window 3 is in share 0 and share 1"):
        grid.token_owner_map([(1, 3), (3,)])
    with pytest.raises(PartitionError, match=r"no window 25 .* ids are 0\.\.24"):
        grid.token_owner_map([(25,)])


@pytest.mark.parametrize("wid", [-1, 25, 1000])
def test_window_out_of_range(wid: int) -> None:
    grid = WindowGrid.for_encoder(1024, 16, 14)
    with pytest.raises(PartitionError, match=r"5x5 window grid; ids are 0\.\.24"):
        grid.window(wid)
    with pytest.raises(PartitionError):
        grid.neighbours(wid)


@pytest.mark.parametrize(
    ("args", "needle"),
    [((0, 64, 14), "grid_h must be at least 1"), ((64, -3, 14), "grid_w must be at least 1"), ((64, 64, 0), "window_size must be at least 1")],
)
def test_invalid_grid_says_which_size(args: tuple[int, int, int], needle: str) -> None:
    with pytest.raises(PartitionError, match=needle):
        WindowGrid(*args)


def test_encoder_smaller_than_a_patch() -> None:
    with pytest.raises(PartitionError, match="smaller than patch_size"):
        WindowGrid.for_encoder(8, 16, 14)
    with pytest.raises(PartitionError, match="patch_size must be at least 1"):
        WindowGrid.for_encoder(1024, 0, 14)


def test_grid_and_window_are_frozen_values() -> None:
    grid = WindowGrid(64, 64, 14)
    assert grid == WindowGrid(64, 64, 14) and hash(grid) == hash(WindowGrid(64, 64, 14))
    assert grid != WindowGrid(64, 64, 7)
    with pytest.raises(dataclasses.FrozenInstanceError):
        grid.grid_h = 3  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        grid.windows[0].height = 3  # type: ignore[misc]
