"""``pedsam demo`` picks real weights when it can and says how to get them when it cannot."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pedsam.stream.cli.commands import demo_weights
from pedsam.stream.cli.main import parse
from pedsam.workers.weights import OFFICIAL, cached


def test_a_cached_official_checkpoint_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    folder = tmp_path / "pedsam" / "checkpoints"
    folder.mkdir(parents=True)
    entry = OFFICIAL["vit_b"]
    with (folder / entry.file_name).open("wb") as file:  # sparse: the official size, no disk
        file.truncate(entry.size - 1)
    assert cached("vit_b") is None  # a partial file does not count
    with (folder / entry.file_name).open("ab") as file:
        file.truncate(entry.size)
    assert cached("vit_b") == folder / entry.file_name
    _, values = parse(["demo"])
    chosen = demo_weights(values)
    assert chosen["model"] == "vit_b" and chosen["checkpoint"] == str(folder / entry.file_name)
    _, values = parse(["demo", "--model", "tiny"])  # what the user says wins
    assert demo_weights(values)["model"] == "tiny" and demo_weights(values)["checkpoint"] is None


def test_without_network_the_demo_falls_back_quickly_and_says_how(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr("pedsam.workers.weights.BASE_URL", "http://127.0.0.1:9/")  # nothing listens there
    _, values = parse(["demo", "--download-timeout", "2"])
    started = time.monotonic()
    chosen = demo_weights(values)
    assert time.monotonic() - started < 5
    assert chosen["model"] is None  # tiny, seeded
    err = capsys.readouterr().err
    assert "pedsam weights download vit_b" in err and str(tmp_path) in err
    assert not list(tmp_path.rglob("*.part"))  # nothing half-downloaded is left
