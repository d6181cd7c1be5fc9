"""Model presets, seeded weights, checkpoints and fingerprints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from segment_anything.modeling import Sam

from pedsam.workers.errors import CheckpointError, ModelError
from pedsam.workers.models import PRESETS, build_sam, fingerprint, get_preset


def test_presets_match_sam_configs() -> None:
    assert PRESETS["vit_b"].global_attn_indexes == (2, 5, 8, 11)
    assert PRESETS["vit_l"].global_attn_indexes == (5, 11, 17, 23)
    assert PRESETS["vit_h"].global_attn_indexes == (7, 15, 23, 31)
    assert PRESETS["vit_b"].segments() == ((0, 1), (3, 4), (6, 7), (9, 10))
    tiny = PRESETS["tiny"]
    assert len(tiny.segments()) >= 2 and len(tiny.global_attn_indexes) >= 2


def test_builder_returns_standard_sam_with_seeded_weights() -> None:
    a = build_sam("tiny", seed=3)
    b = build_sam("tiny", seed=3)
    c = build_sam("tiny", seed=4)
    assert isinstance(a, Sam)
    assert fingerprint(a, PRESETS["tiny"]) == fingerprint(b, PRESETS["tiny"])
    assert fingerprint(a, PRESETS["tiny"]) != fingerprint(c, PRESETS["tiny"])
    # The constants SAM initialises to zero are randomised too, so tests exercise them.
    # Every tensor of the model is reproducible, buffers included, whatever torch's global seed.
    torch.manual_seed(1234)
    again = build_sam("tiny", seed=3)
    for name, tensor in a.state_dict().items():
        assert torch.equal(tensor, again.state_dict()[name]), name
    assert not torch.equal(
        a.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix,
        c.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix,
    )
    assert a.image_encoder.pos_embed.abs().sum() > 0
    assert a.image_encoder.blocks[0].attn.rel_pos_h.abs().sum() > 0


def test_unknown_preset() -> None:
    with pytest.raises(ModelError, match="choose one of"):
        get_preset("vit_x")


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    sam = build_sam("tiny", seed=11)
    path = tmp_path / "tiny.pth"
    torch.save(sam.state_dict(), path)
    loaded = build_sam("tiny", checkpoint=path)
    assert fingerprint(loaded, PRESETS["tiny"]) == fingerprint(sam, PRESETS["tiny"])


def test_checkpoint_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        build_sam("tiny", checkpoint=tmp_path / "missing.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a readable torch state dict"):
        build_sam("tiny", checkpoint=garbage)
    state = build_sam("tiny").state_dict()
    state["image_encoder.pos_embed"] = torch.zeros(1, 8, 8, 64)
    wrong = tmp_path / "wrong.pth"
    torch.save(state, wrong)
    with pytest.raises(CheckpointError, match=r"image_encoder.pos_embed has shape \(1, 8, 8, 64\), expected \(1, 32, 32, 64\)"):
        build_sam("tiny", checkpoint=wrong)
    del state["image_encoder.pos_embed"]
    partial = tmp_path / "partial.pth"
    torch.save(state, partial)
    with pytest.raises(CheckpointError, match="1 missing"):
        build_sam("tiny", checkpoint=partial)
