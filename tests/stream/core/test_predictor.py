"""The edge's decoder gives a model trained with prompt priors its prompt as a mask input too."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pedsam.stream.core.predictor import (
    PRIOR_BOX, PRIOR_FLOOR, MaskDecoder, PreparedImage, prepare_image, prompt_prior, to_input_frame,
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
