"""A coarse mask's outline is fitted to the frame's colour edges (pedsam-mini's decoder), and the
fit invents nothing where the mask had no support."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest
import torch

from pedsam.stream.core.edges import guided_filter, refine_logits, refine_mask
from pedsam.stream.core.predictor import MaskDecoder, prepare_image
from pedsam.stream.core.prompts import ObjectPrompt
from pedsam.stream.mini.evaluate import iou
from pedsam.workers.models import build_sam, get_preset
from tests.support import scene

CELL = 5  # frame pixels per low-resolution cell: pedsam-mini on a 640x480 frame


def star(height: int, width: int, centre: tuple[int, int], radius: int) -> np.ndarray:
    angles = np.linspace(0, 2 * np.pi, 11)[:-1]
    lengths = np.where(np.arange(10) % 2 == 0, radius, radius * 0.45)
    points = np.stack([centre[0] + lengths * np.cos(angles), centre[1] + lengths * np.sin(angles)], axis=1)
    mask = np.zeros((height, width), np.uint8)
    cv2.fillPoly(mask, [points.round().astype(np.int32)], 1)
    return mask.astype(bool)


def picture(truth: np.ndarray, seed: int = 0) -> np.ndarray:
    """An orange object over a blue-grey background, both with sensor-like noise."""
    rng = np.random.default_rng(seed)
    image = np.where(truth[..., None], np.array([220, 140, 40]), np.array([70, 90, 110])).astype(np.float64)
    image += rng.normal(0, 8, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def coarse_logits(truth: np.ndarray, shift: int = 0) -> np.ndarray:
    """What a small decoder gives: the truth at one value per cell, off by ``shift`` pixels,
    upsampled bilinearly, as logits."""
    height, width = truth.shape
    moved = np.roll(truth, shift, axis=1).astype(np.float32)
    cells = cv2.resize(moved, (width // CELL, height // CELL), interpolation=cv2.INTER_AREA)
    smooth = cv2.resize(cells, (width, height), interpolation=cv2.INTER_LINEAR)
    return np.asarray(8.0 * (smooth - 0.5), dtype=np.float32)


def test_a_coarse_mask_follows_the_object_s_outline_after_refinement() -> None:
    truth = star(480, 640, (300, 220), 110)
    image = picture(truth)
    logits = coarse_logits(truth, shift=6)  # placed more than a cell off
    raw = iou(logits > 0, truth)
    refined = refine_logits(logits, image, CELL)
    assert refined.shape == logits.shape and refined.dtype == np.float32
    assert raw < 0.85
    assert iou(refined > 0, truth) > 0.97


def test_refinement_invents_no_object_the_mask_did_not_hold() -> None:
    truth = star(480, 640, (160, 240), 90)
    other = star(480, 640, (500, 240), 90)  # as conspicuous, but not in the mask
    image = picture(truth | other)
    logits = coarse_logits(truth)
    refined = refine_logits(logits, image, CELL)
    assert not (refined > 0)[other].any()
    assert iou(refined > 0, truth) > 0.97
    nothing = np.full((480, 640), -20.0, np.float32)
    np.testing.assert_array_equal(refine_logits(nothing, image, CELL), nothing)


def test_a_warped_mask_a_little_off_snaps_back_to_the_object_and_an_empty_one_stays_empty() -> None:
    """A propagated mask (bool, sharp) placed 6 px off the object: fitted as a decoder's logits
    are, it follows the object's outline again."""
    truth = star(480, 640, (300, 220), 110)
    image = picture(truth)
    warped = np.roll(truth, 6, axis=1)
    assert iou(warped, truth) < 0.85
    fitted = refine_mask(warped, image, CELL)
    assert fitted.dtype == bool and iou(fitted, truth) > 0.97
    # computed in the box the fit reaches: the same as softening and fitting the whole frame
    soft = np.clip(cv2.GaussianBlur(warped.astype(np.float32), (0, 0), sigmaX=CELL / 2), 1e-4, 1 - 1e-4)
    np.testing.assert_array_equal(fitted, refine_logits(np.log(soft / (1 - soft)), image, CELL) > 0)
    empty = np.zeros_like(truth)
    assert not refine_mask(empty, image, CELL).any()


def test_without_edges_in_the_frame_the_mask_stays_where_it_was_with_a_rounder_outline() -> None:
    """The stated limit: with no colour edge to follow, the filter is a box blur of 2 x 6 cells,
    which keeps the mask in place and rounds its outline (a star's arms shorten, the notches
    between them fill a little)."""
    truth = star(240, 320, (160, 120), 80)
    flat = np.full((240, 320, 3), 128, np.uint8)
    before = coarse_logits(truth) > 0
    after = refine_logits(coarse_logits(truth), flat, CELL) > 0
    assert 0.5 < iou(after, before) < 0.95
    assert after.sum() < before.sum()
    centre = np.argwhere(after).mean(axis=0) - np.argwhere(before).mean(axis=0)
    assert np.abs(centre).max() < 2.0


def test_fitting_the_windows_at_half_resolution_gives_the_full_filter_s_mask() -> None:
    truth = star(240, 320, (160, 120), 80)
    image = picture(truth, seed=2)
    probability = 1.0 / (1.0 + np.exp(-coarse_logits(truth, shift=4)))
    full = guided_filter(image, probability, 30, 3e-4)
    fast = guided_filter(image, probability, 30, 3e-4, subsample=2)
    assert fast.shape == full.shape
    assert iou(fast > 0.5, full > 0.5) > 0.98 and iou(fast > 0.5, truth) > 0.97


def test_the_guided_filter_keeps_a_constant_and_rejects_a_guide_of_another_size() -> None:
    image = scene(60, 80)
    constant = np.full((60, 80), 0.7, np.float32)
    np.testing.assert_allclose(guided_filter(image, constant, 3, 1e-3), constant, atol=1e-4)
    with pytest.raises(ValueError, match="does not fit"):
        guided_filter(image, constant[:50], 3, 1e-3)


def test_mini_s_decoder_fits_the_mask_to_the_frame_and_keeps_the_model_s_logits_for_the_next_frame() -> None:
    """With the frame at hand the mask is the refined one; without it, the model's own. The
    low-resolution logits (the tracker's next prompt) are the model's either way; a preset that is
    not trained for it (tiny) is decoded as SamPredictor decodes it, frame or not."""
    image = scene(240, 320, seed=3)
    box = ObjectPrompt(box=(60.0, 40.0, 220.0, 180.0))
    for preset, refines in (("mini", True), ("tiny", False)):
        sam = build_sam(preset)
        prepared = prepare_image(sam, image)
        with torch.inference_mode():
            embedding = sam.image_encoder(prepared.tensor)
        decoder = MaskDecoder.for_preset(sam, get_preset(preset))
        fitted = decoder.predict(embedding, prepared, box)
        plain = decoder.predict(embedding, replace(prepared, image=None), box)
        np.testing.assert_array_equal(fitted.low_res_logits, plain.low_res_logits)
        assert (not np.array_equal(fitted.mask, plain.mask)) == refines, preset
        if refines:
            logits, scores, low = decoder.decode(embedding, prepared, box)
            want = refine_logits(logits[int(np.argmax(scores))], image, max(image.shape[:2]) / low.shape[-1]) > 0
            np.testing.assert_array_equal(fitted.mask, want)
