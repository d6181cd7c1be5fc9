"""The edge's decoder gives a model trained with prompt priors its prompt as a mask input too, and
keeps a click's mask to the parts that hold the click when the preset asks for it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pedsam.stream.core.predictor import (
    CLICKED_LOGIT, PRIOR_BOX, PRIOR_FLOOR, MaskDecoder, PreparedImage, clicked_region, followed_region, prepare_image,
    prompt_prior, to_input_frame, told_apart,
)
from pedsam.stream.core.prompts import ObjectPrompt
from pedsam.workers.models import build_sam
from pedsam.workers.sam import Sam
from tests.support import scene


def test_the_prior_peaks_at_a_positive_point_dips_at_a_negative_one_and_fills_the_box() -> None:
    prior = prompt_prior(np.array([[102.0, 62.0], [302.0, 302.0]]), np.array([1, 0]),
                         np.array([80.0, 40.0, 200.0, 120.0]), 512)
    assert prior.shape == (1, 128, 128) and prior.dtype == np.float32
    cells = prior[0]
    assert np.unravel_index(int(cells.argmax()), cells.shape) == (15, 25)  # (62, 102) px: the cell centred there, 4 px a cell
    assert np.unravel_index(int(cells.argmin()), cells.shape) == (75, 75)
    assert cells[12, 45] == pytest.approx(PRIOR_BOX, abs=1e-3)  # in the box, far from both points
    assert cells[110, 10] == pytest.approx(PRIOR_FLOOR, abs=1e-3)  # outside everything


@pytest.fixture(scope="module")
def mini() -> tuple[Sam, PreparedImage, torch.Tensor]:
    sam = build_sam("mini")
    prepared = prepare_image(sam, scene(240, 320, seed=3))
    with torch.inference_mode():
        embedding = sam.image_encoder(prepared.tensor)
    return sam, prepared, embedding


def test_a_prompt_without_a_mask_reaches_the_model_as_its_prior(mini: tuple[Sam, PreparedImage, torch.Tensor]) -> None:
    sam, prepared, embedding = mini
    click = ObjectPrompt(points=((200.0, 90.0),), labels=(1,))
    points = to_input_frame(np.array([[200.0, 90.0]]), prepared.original_size, 512)
    drawn = prompt_prior(points, np.array([1]), None, 512)
    with_prior = MaskDecoder(sam, prompt_prior=True).decode(embedding, prepared, click)
    by_hand = MaskDecoder(sam).decode(embedding, prepared, click, mask_input=drawn, multimask=True)
    without = MaskDecoder(sam).decode(embedding, prepared, click)
    np.testing.assert_allclose(with_prior[0], by_hand[0], atol=1e-5)
    assert not np.allclose(with_prior[0], without[0], atol=1e-2)


def test_a_given_mask_input_is_not_replaced_by_the_prior(mini: tuple[Sam, PreparedImage, torch.Tensor]) -> None:
    sam, prepared, embedding = mini
    follow = ObjectPrompt(box=(120.0, 40.0, 260.0, 160.0))
    previous = np.random.default_rng(0).normal(0, 4, (1, 128, 128)).astype(np.float32)
    with_prior = MaskDecoder(sam, prompt_prior=True).decode(embedding, prepared, follow, mask_input=previous)
    plain = MaskDecoder(sam).decode(embedding, prepared, follow, mask_input=previous)
    np.testing.assert_array_equal(with_prior[0], plain[0])


def test_the_clicked_region_is_the_parts_that_hold_a_positive_click() -> None:
    mask = np.zeros((60, 80), bool)
    mask[5:20, 5:20] = True  # A
    mask[30:50, 50:75] = True  # B
    mask[40:45, 10:15] = True  # C
    a, b, c = (slice(5, 20), slice(5, 20)), (slice(30, 50), slice(50, 75)), (slice(40, 45), slice(10, 15))
    only_a = clicked_region(mask, np.array([[10.0, 10.0], [60.0, 40.0]]), np.array([1, 0]))  # negative on B
    assert only_a[a].all() and not only_a[b].any() and not only_a[c].any()
    both = clicked_region(mask, np.array([[10.0, 10.0], [60.0, 40.0]]), np.array([1, 1]))
    assert both[a].all() and both[b].all() and not both[c].any()
    assert clicked_region(mask, np.array([[40.0, 2.0]]), np.array([1])) is mask  # a click on no part
    single = np.zeros((60, 80), bool)
    single[5:20, 5:20] = True
    assert clicked_region(single, np.array([[70.0, 50.0]]), np.array([1])) is single


def test_the_followed_region_is_the_parts_that_continue_the_previous_mask() -> None:
    mask = np.zeros((60, 80), bool)
    mask[5:25, 5:25] = True  # A: the object, moved a little
    mask[30:50, 50:75] = True  # B: another object, touching the previous mask at one corner
    mask[50:55, 10:15] = True  # C: a piece of the object that came loose
    previous = np.zeros((60, 80), bool)
    previous[8:28, 8:28] = True
    previous[29:31, 49:51] = True
    previous[49:56, 9:16] = True
    kept = followed_region(mask, previous)
    assert kept[5:25, 5:25].all() and kept[50:55, 10:15].all() and not kept[30:50, 50:75].any()
    assert followed_region(mask, np.zeros_like(mask)) is mask


class _TwoBlobs(MaskDecoder):
    """The decoder's candidates replaced by one answer of two separate squares."""

    def decode(self, embedding: torch.Tensor, prepared: PreparedImage, prompt: ObjectPrompt, *,
               mask_input: np.ndarray | None = None, multimask: bool | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        logits = np.full((1, 240, 320), -5.0, np.float32)
        logits[0, 20:80, 20:80] = logits[0, 150:220, 200:300] = 5.0
        low = np.full((1, 128, 128), -5.0, np.float32)
        low[0, 8:32, 8:32] = low[0, 60:88, 80:120] = 5.0  # the same squares: 1.6 input px a pixel, 4 a cell
        return logits, np.array([0.9], np.float32), low


def test_a_click_keeps_its_own_part_and_the_tracker_logits_lose_the_other(
        mini: tuple[Sam, PreparedImage, torch.Tensor]) -> None:
    sam, prepared, embedding = mini
    click = ObjectPrompt(points=((50.0, 50.0),), labels=(1,))
    got = _TwoBlobs(sam, prompted_region=True).predict(embedding, prepared, click)
    assert got.mask[20:80, 20:80].all() and not got.mask[150:220, 200:300].any()
    assert (got.low_res_logits[0, 60:88, 80:120] <= CLICKED_LOGIT).all()
    assert (got.low_res_logits[0, 8:32, 8:32] == 5.0).all()  # the clicked part's logits untouched
    previous = np.full((1, 128, 128), -5.0, np.float32)
    previous[0, 9:30, 9:30] = 5.0  # the tracker: the clicked square on the frame before
    tracked = ObjectPrompt(box=(18.0, 18.0, 82.0, 82.0))
    followed = _TwoBlobs(sam, prompted_region=True).predict(embedding, prepared, tracked, mask_input=previous)
    assert followed.mask[20:80, 20:80].all() and not followed.mask[150:220, 200:300].any()
    assert (followed.low_res_logits[0, 60:88, 80:120] <= CLICKED_LOGIT).all()
    for decoder, prompt in ((_TwoBlobs(sam), click),  # a preset that does not ask for it
                            (_TwoBlobs(sam, prompted_region=True), ObjectPrompt(points=((50.0, 50.0),), labels=(1,),
                                                                               box=(10.0, 10.0, 310.0, 230.0)))):
        whole = decoder.predict(embedding, prepared, prompt)
        assert whole.mask[20:80, 20:80].all() and whole.mask[150:220, 200:300].all()
        assert (whole.low_res_logits[0, 60:88, 80:120] == 5.0).all()


class _Overlapping(MaskDecoder):
    """Two objects whose answers overlap: a click left of x=100 is object A (columns 20-130, logit
    4), any other object B (columns 90-200, logit 6 over 90-110 and 2 beyond)."""

    def decode(self, embedding: torch.Tensor, prepared: PreparedImage, prompt: ObjectPrompt, *,
               mask_input: np.ndarray | None = None, multimask: bool | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        logits = np.full((1, 240, 320), -5.0, np.float32)
        low = np.full((1, 128, 128), -5.0, np.float32)
        if prompt.points and prompt.points[0][0] < 100:
            logits[0, 40:120, 20:130] = 4.0
            low[0, 16:48, 8:52] = 4.0
        else:
            logits[0, 40:120, 90:200] = 2.0
            logits[0, 40:120, 90:110] = 6.0
            low[0, 16:48, 36:80] = 2.0
        return logits, np.array([0.9], np.float32), low


def test_objects_of_one_frame_do_not_share_pixels_with_a_trained_preset(
        mini: tuple[Sam, PreparedImage, torch.Tensor]) -> None:
    # Tracks of touching objects merged when each was decoded alone (each mask grew over both
    # objects, and its box and logits kept it so); a pixel two masks hold now goes to the higher
    # logit, and the other object's low-resolution logits lose it too.
    sam, prepared, embedding = mini
    prompts = {"a": (ObjectPrompt(points=((50.0, 80.0),), labels=(1,)), None),
               "b": (ObjectPrompt(points=((150.0, 80.0),), labels=(1,)), None)}
    got = _Overlapping(sam, prompted_region=True).predict_all(embedding, prepared, prompts)
    a, b = got["a"].mask, got["b"].mask
    assert not (a & b).any() and (a | b)[40:120, 20:200].all()
    assert b[40:120, 90:110].all() and not a[:, 90:110].any()  # B's logit is the higher there ...
    assert a[40:120, 110:130].all() and not b[:, 110:130].any()  # ... A's there
    # Frame columns 90-110 are low-resolution cells 36-44 (320 px -> 512, 4 a cell), 110-130 44-52.
    assert (got["a"].low_res_logits[0, 16:48, 37:43] <= CLICKED_LOGIT).all()
    assert (got["b"].low_res_logits[0, 16:48, 45:51] <= CLICKED_LOGIT).all()
    assert (got["a"].low_res_logits[0, 16:48, 8:35] == 4.0).all()  # what each kept is untouched
    assert (got["b"].low_res_logits[0, 16:48, 56:80] == 2.0).all()
    # SAM's own weights: each object exactly as SamPredictor decodes it, overlaps and all.
    alone = _Overlapping(sam).predict_all(embedding, prepared, prompts)
    assert alone["a"].mask[40:120, 20:130].all() and alone["b"].mask[40:120, 90:200].all()


def test_a_tracker_box_gets_a_negative_click_on_each_other_object_inside_it() -> None:
    box = ObjectPrompt(box=(10.0, 10.0, 100.0, 100.0))
    told = told_apart(box, [(50.0, 60.0), (150.0, 50.0), (99.5, 10.0)])
    assert told.box == box.box and told.points == ((50.0, 60.0), (99.5, 10.0)) and told.labels == (0, 0)
    assert told_apart(box, [(150.0, 50.0)]) is box  # nothing inside: as it was
    click = ObjectPrompt(points=((50.0, 50.0),), labels=(1,), box=box.box)
    assert told_apart(click, [(60.0, 60.0)]) is click  # a user's prompt is never changed


class _Recording(MaskDecoder):
    """Records each prompt it is asked (in ``asked``, set by the test); answers an empty mask."""

    asked: list[ObjectPrompt]

    def decode(self, embedding: torch.Tensor, prepared: PreparedImage, prompt: ObjectPrompt, *,
               mask_input: np.ndarray | None = None, multimask: bool | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        self.asked.append(prompt)
        return np.full((1, 240, 320), -5.0, np.float32), np.array([0.5], np.float32), np.full((1, 128, 128), -5.0,
                                                                                              np.float32)


def test_each_tracked_object_is_told_apart_from_the_others_it_touches(
        mini: tuple[Sam, PreparedImage, torch.Tensor]) -> None:
    # A box around an object that touches another holds part of it; without a negative click
    # there the model may answer with both, and the tracks of touching objects merged over a clip.
    sam, prepared, embedding = mini
    a_before = np.full((1, 128, 128), -5.0, np.float32)
    a_before[0, 16:48, 8:40] = 5.0  # frame columns 20-100, rows 40-120 (0.4 cells a pixel)
    b_before = np.full((1, 128, 128), -5.0, np.float32)
    b_before[0, 16:48, 44:56] = 5.0  # frame columns 110-140: its middle is inside A's box
    prompts = {"a": (ObjectPrompt(box=(20.0, 40.0, 130.0, 120.0)), a_before),
               "b": (ObjectPrompt(box=(110.0, 40.0, 200.0, 120.0)), b_before)}
    decoder = _Recording(sam, prompted_region=True)
    decoder.asked = []
    decoder.predict_all(embedding, prepared, prompts)
    told_a, told_b = decoder.asked
    assert told_a.labels == (0,) and 110 <= told_a.points[0][0] <= 140 and 40 <= told_a.points[0][1] <= 120
    assert told_b.points == ()  # A's middle is outside B's box
    plain = _Recording(sam)  # SAM's own weights: prompts exactly as given
    plain.asked = []
    plain.predict_all(embedding, prepared, prompts)
    assert [p.points for p in plain.asked] == [(), ()]


class _Counting(MaskDecoder):
    """Counts the previous masks it upsamples."""

    upsampled = 0

    def as_mask(self, mask_input: np.ndarray, prepared: PreparedImage) -> np.ndarray:
        self.upsampled += 1
        return super().as_mask(mask_input, prepared)


def test_a_frame_s_tracked_objects_upsample_each_previous_mask_once(
        mini: tuple[Sam, PreparedImage, torch.Tensor]) -> None:
    """The previous mask serves twice (the object's middle, to tell the others apart, and the
    region its new mask must continue); it is upsampled to the frame once, with the same masks."""
    sam, prepared, embedding = mini
    a_before = np.full((1, 128, 128), -5.0, np.float32)
    a_before[0, 16:48, 8:40] = 5.0
    b_before = np.full((1, 128, 128), -5.0, np.float32)
    b_before[0, 60:90, 80:110] = 5.0
    prompts = {"a": (ObjectPrompt(box=(20.0, 40.0, 100.0, 120.0)), a_before),
               "b": (ObjectPrompt(box=(200.0, 150.0, 275.0, 225.0)), b_before)}
    decoder = _Counting(sam, prompted_region=True)
    got = decoder.predict_all(embedding, prepared, prompts)
    assert decoder.upsampled == 2
    for key, (prompt, logits) in prompts.items():
        alone = MaskDecoder(sam, prompted_region=True).predict(embedding, prepared, prompt, mask_input=logits)
        np.testing.assert_array_equal(got[key].mask, alone.mask)
