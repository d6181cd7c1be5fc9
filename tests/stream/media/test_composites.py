"""Composite scenes: exact visible masks, reproducible from the generator's state."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from pedsam.stream.media.composites import TextureBank, compose
from tests.support import scene


@pytest.fixture(scope="module")
def bank() -> TextureBank:
    return TextureBank([scene(240, 320, seed=s) for s in range(3)])


def test_visible_masks_are_disjoint_and_paint_what_they_claim(bank: TextureBank) -> None:
    found = 0
    for i in range(12):
        drawn = compose(np.random.default_rng([7, i]), bank, 320, 240)
        assert drawn.image.shape == (240, 320, 3) and drawn.image.dtype == np.uint8
        cover = np.zeros((240, 320), np.int32)
        for mask in drawn.masks:
            assert mask.shape == (240, 320) and mask.sum() >= 0.002 * 320 * 240
            cover += mask
        assert cover.max() <= 1  # a pixel belongs to one object at most: the one painted last
        found += len(drawn.masks)
    assert found >= 12


def test_a_painted_object_changes_the_pixels_of_its_mask() -> None:
    """Over a flat background, an object's visible pixels differ from the background: the mask is
    where the object went, not somewhere else (a shifted or transposed mask would fail)."""
    flat = TextureBank([np.full((200, 200, 3), 128, np.uint8)])
    checked = 0
    for i in range(20):
        drawn = compose(np.random.default_rng([3, i]), flat, 160, 120, objects=(1, 1))
        if not drawn.masks:
            continue
        blank = compose(np.random.default_rng([3, i]), flat, 160, 120, objects=(0, 0))
        inner = cv2.erode(drawn.masks[0].astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        outer = ~cv2.dilate(drawn.masks[0].astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        if inner.sum() < 50:
            continue
        moved = np.abs(drawn.image.astype(int) - blank.image.astype(int)).sum(axis=2)
        assert np.mean(moved[outer] > 0) < 0.05 or np.median(moved[outer]) < np.median(moved[inner])
        checked += 1
    assert checked >= 5


def test_the_same_generator_state_gives_the_same_scene(bank: TextureBank) -> None:
    a = compose(np.random.default_rng([1, 2]), bank, 256, 192)
    b = compose(np.random.default_rng([1, 2]), bank, 256, 192)
    c = compose(np.random.default_rng([1, 3]), bank, 256, 192)
    assert np.array_equal(a.image, b.image) and len(a.masks) == len(b.masks)
    assert all(np.array_equal(x, y) for x, y in zip(a.masks, b.masks))
    assert not np.array_equal(a.image, c.image)


def test_a_folder_without_images_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        TextureBank.from_folder(tmp_path / "nowhere")
    (tmp_path / "notes.txt").write_text("not a picture")
    cv2.imwrite(str(tmp_path / "small.png"), np.zeros((20, 20, 3), np.uint8))
    with pytest.raises(ValueError, match="no image of at least 96 px"):
        TextureBank.from_folder(tmp_path)
    cv2.imwrite(str(tmp_path / "big.png"), np.zeros((120, 130, 3), np.uint8))
    assert len(TextureBank.from_folder(tmp_path)) == 1
