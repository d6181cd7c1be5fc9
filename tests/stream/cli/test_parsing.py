"""The command line as a new user meets it: flags where they put them, presets read from files,
the worker's own account of itself."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pedsam.stream.cli.main import build_parser, parse
from pedsam.stream.cli.settings import model_source
from pedsam.workers.errors import CheckpointError
from pedsam.workers.models import build_sam, infer_preset, read_state


def test_logging_flags_go_before_or_after_the_command() -> None:
    after = build_parser().parse_args(["embed", "x.png", "--save", "e.npy", "-vv", "--log-format", "json"])
    before = build_parser().parse_args(["-v", "--log-format", "json", "embed", "x.png", "--save", "e.npy"])
    assert (after.verbose, after.log_format) == (2, "json")
    assert (before.verbose, before.log_format) == (1, "json")


def test_a_checkpoint_without_model_brings_its_own_preset(tmp_path: Path) -> None:
    path = tmp_path / "my-weights.pth"
    torch.save(build_sam("tiny", seed=4).state_dict(), path)
    assert infer_preset(path) == "tiny"
    _, values = parse(["embed", "x.png", "--save", "e.npy", "--checkpoint", str(path), "--local-workers", "2"])
    assert model_source(values).preset == "tiny" and model_source(values).checkpoint == str(path)
    _, values = parse(["embed", "x.png", "--save", "e.npy", "--local-workers", "2"])
    # No checkpoint and no --model: pedsam-mini with the weights pedsam ships, not random ones.
    assert model_source(values).preset == "mini" and model_source(values).shipped_weights
    assert not model_source(values).random_weights
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"not a checkpoint at all " * 20)
    with pytest.raises(CheckpointError) as caught:
        read_state(broken)
    message = str(caught.value)
    reason = message[message.index("(") + 1 : -1]
    assert "is not a readable torch state dict" in message and len(reason) <= 160
    assert reason.endswith(" ...") or len(reason) < 150  # shortened at a word, never mid-word


def test_every_run_takes_max_frames_and_the_demo_takes_model_and_workers() -> None:
    _, run = parse(["run", "v.mp4", "--out", "o", "--point", "1,1", "--local-workers", "2", "--max-frames", "5"])
    assert run["max_frames"] == 5
    _, demo = parse(["demo", "--model", "vit_b", "--workers", "a:1,b:2", "--keyframes", "every:4"])
    assert demo["model"] == "vit_b" and demo["workers"] == "a:1,b:2" and demo["keyframes"] == "every:4"
    _, stream = parse(["stream", "--file", "v.mp4", "--mask", "m.png", "--realtime", "--local-workers", "2"])
    assert stream["keyframes"] == "adaptive" and stream["realtime"] and stream["items"] == [("mask", "m.png")]


def test_a_worker_says_why_it_serves_plain_text() -> None:
    process = subprocess.Popen([sys.executable, "-m", "pedsam.stream", "worker", "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
    finally:
        process.terminate()
        process.wait(30)
    assert "plain text (loopback only)" in line and "--insecure" not in line
