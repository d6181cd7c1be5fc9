"""pedsam-mini's training: it learns, and a resumed run ends where an unbroken one does."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from pedsam.stream.media.composites import TextureBank
from pedsam.stream.mini.train import TrainConfig, fresh_model, scene_batch, train, train_step, tune_step
from tests.support import scene

# The training loop at the tiny preset's size: the recipe is the same, the steps take a second.
SMALL = TrainConfig(preset="tiny", steps=2, tune_steps=2, batch=2, warmup=1, tune_warmup=1, save_every=1, lr=1e-3)


@pytest.fixture(scope="module")
def bank() -> TextureBank:
    return TextureBank([scene(240, 320, seed=s) for s in range(3)])


@pytest.mark.parametrize("step", [train_step, tune_step], ids=["first stage", "second stage (prompt priors)"])
def test_a_few_steps_lower_the_loss_on_the_scenes_they_see(bank: TextureBank, step: Callable[..., Any]) -> None:
    torch.manual_seed(0)
    sam = fresh_model("tiny", seed=0)
    batch = scene_batch(sam, bank, np.random.default_rng(0), 2)
    optimiser = torch.optim.AdamW(sam.parameters(), lr=2e-3)

    def loss() -> float:
        with torch.no_grad():
            return float(step(sam, batch, np.random.default_rng(1))[0])

    before = loss()
    for _ in range(8):
        value, figures = step(sam, batch, np.random.default_rng(1))
        optimiser.zero_grad()
        value.backward()
        optimiser.step()
    assert loss() < 0.9 * before
    assert set(figures) == {"click", "box"}
    assert all(0.0 <= v <= 1.0 for v in figures.values() if v == v)  # a stage-one batch may hold no box: NaN


def test_a_resumed_run_ends_with_the_same_weights(bank: TextureBank, tmp_path: Path) -> None:
    whole = train(SMALL, bank, tmp_path / "whole")
    # Stopped at the end of the first stage (step 2), then the same command again.
    first = train(TrainConfig(**{**_fields(SMALL), "tune_steps": 0}), bank, tmp_path / "halves")
    assert first.exists()
    state = torch.load(tmp_path / "halves" / "state.pt", weights_only=True)
    assert state["step"] == 2
    resumed = train(SMALL, bank, tmp_path / "halves")
    a, b = torch.load(whole, weights_only=True), torch.load(resumed, weights_only=True)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-4), (name, float((a[name] - b[name]).abs().max()))
    with open(tmp_path / "halves" / "log.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]  # one row per step, none twice
    # Training flushes subnormal floats to zero for its own speed; the rest of the process does not.
    assert np.float32(1e-38) / np.float32(10) > 0


def test_a_second_stage_without_the_encoder_leaves_it_as_the_first_stage_made_it(bank: TextureBank,
                                                                                  tmp_path: Path) -> None:
    config = TrainConfig(**{**_fields(SMALL), "tune_encoder": False})
    train(TrainConfig(**{**_fields(config), "tune_steps": 0}), bank, tmp_path)
    first = torch.load(tmp_path / "pedsam-mini.pth", weights_only=True)
    second = torch.load(train(config, bank, tmp_path), weights_only=True)
    encoder = [name for name in first if name.startswith("image_encoder.")]
    assert all(torch.equal(first[name], second[name]) for name in encoder)
    assert not torch.equal(first["mask_decoder.iou_token.weight"], second["mask_decoder.iou_token.weight"])


def _fields(config: TrainConfig) -> dict[str, object]:
    return {name: getattr(config, name) for name in config.__dataclass_fields__}
