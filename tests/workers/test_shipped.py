"""pedsam-mini's shipped weights: the file in the package is the released one, loads through the
checkpoint path, fingerprints like any model, and a damaged copy is refused."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
from pathlib import Path

import pytest
import torch

from pedsam.workers.errors import CheckpointError
from pedsam.workers.models import TRAINED_NOTICE, ModelSource, build_sam, fingerprint, get_preset, infer_preset
from pedsam.workers.shipped import SHIPPED, checked, shipped_path


def test_the_shipped_file_is_the_released_one() -> None:
    entry = SHIPPED["mini"]
    path = shipped_path("mini")
    data = path.read_bytes()
    assert len(data) == entry.size <= 10_000_000  # the size limit for a shipped model
    assert hashlib.sha256(data).hexdigest() == entry.sha256
    assert infer_preset(path) == "mini"


def test_mini_without_a_checkpoint_is_the_shipped_model_and_says_so() -> None:
    source = ModelSource(preset="mini", seed=5)  # a seed does not change trained weights
    assert not source.random_weights and source.shipped_weights
    assert source.banner == TRAINED_NOTICE and "UNTRAINED" not in source.describe()
    sam = source.build()
    from_file = build_sam("mini", checkpoint=shipped_path("mini"))
    for name, tensor in from_file.state_dict().items():
        assert torch.equal(tensor, sam.state_dict()[name]), name
    # Edge and workers agree on the fingerprint of the same weights, and it is not the one of
    # the same architecture with seeded random weights.
    spec = get_preset("mini")
    assert fingerprint(sam, spec) == fingerprint(from_file, spec)
    assert fingerprint(sam, spec) != fingerprint(build_sam("mini", seed=0, shipped=False), spec)
    assert ModelSource(preset="tiny").banner is not None and ModelSource(preset="tiny").random_weights


@pytest.mark.parametrize("damage", ["truncated", "flipped", "missing"])
def test_a_damaged_copy_is_refused_by_name(tmp_path: Path, damage: str) -> None:
    entry = dataclasses.replace(SHIPPED["mini"], folder=tmp_path)
    copy = tmp_path / entry.file_name
    shutil.copyfile(shipped_path("mini"), copy)
    data = bytearray(copy.read_bytes())
    if damage == "truncated":
        copy.write_bytes(data[:-100])
    elif damage == "flipped":  # same size, one byte changed
        data[len(data) // 2] ^= 0xFF
        copy.write_bytes(bytes(data))
    else:
        copy.unlink()
    with pytest.raises(CheckpointError, match="reinstall pedsam") as caught:
        checked(entry)
    assert {"truncated": "bytes", "flipped": "SHA-256", "missing": "missing"}[damage] in str(caught.value)
