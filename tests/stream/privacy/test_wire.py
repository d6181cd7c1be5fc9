"""The attacks see what crossed the wire: tokens through the chosen codec, as a worker decodes them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pedsam.stream.media.panning import make_pan_clip
from pedsam.stream.privacy.report import ReportConfig, run_report
from pedsam.stream.privacy.wire import through_wire
from pedsam.workers import codec as wire
from pedsam.workers.models import ModelSource


def test_tokens_cross_the_codec_token_by_token() -> None:
    tokens = np.random.default_rng(0).normal(size=(4, 5, 32)).astype(np.float32)
    exact, sigma = through_wire(tokens, "fp32")
    np.testing.assert_array_equal(exact, tokens)
    assert not sigma.any()
    # One window's tokens alone, as the edge sends them, decode to the same values.
    received, sigma = through_wire(tokens, "int8")
    window = wire.decode(wire.encode(torch.from_numpy(tokens[1:3, 2:5].reshape(-1, 32).copy()),
                                     wire.codec_id("int8")), (6, 32)).numpy()
    np.testing.assert_array_equal(received[1:3, 2:5].reshape(-1, 32), window)
    step = np.abs(tokens).max(axis=2) / 127
    assert np.allclose(sigma, step / np.sqrt(12), rtol=1e-5)
    assert np.abs(received - tokens).max() <= step.max() / 2 + 1e-6


def test_int8_on_the_wire_lowers_what_inversion_recovers(tmp_path: Path) -> None:
    clip = make_pan_clip(tmp_path / "pan.mp4", frames=1, width=160, height=120)
    psnr = {}
    for codec in ("fp32", "int8"):
        config = ReportConfig(model=ModelSource(preset="vit_b", seed=0), max_frames=1, policies=("fixed",),
                              coalitions=0, defaults=None, codec=codec)
        report, _ = run_report([clip.path], config)
        assert report["codec"] == report["videos"][0]["codec"] == codec
        psnr[codec] = report["videos"][0]["inversion_psnr_db"]
    assert psnr["fp32"] > 33.0 and psnr["int8"] < psnr["fp32"] - 0.3, psnr
