"""``--plan auto``: predictions and choices, then a session choosing from a real calibration frame."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pedsam.stream.core.autoplan import Measured, choose, predict
from pedsam.stream.core.prompts import ObjectPrompt
from pedsam.stream.core.session import EdgeConfig, EdgeSession
from pedsam.stream.fleet.links import LinkSpec
from pedsam.stream.media.sources import FileSource
from pedsam.stream.media.synthetic import make_clip
from pedsam.stream.runs.engine import run_frames
from tests.support import TINY

# ViT-B-like figures: 4 segments, 25 MB of fp32 tokens each way per segment per worker.
VIT_B = dict(segments=4, up_bytes=25e6 / 2, down_bytes=25e6 / 2, scale_bytes=4 * 1100, worker_seconds=0.6,
             workers=2, edge_seconds=4.0)


def test_a_fast_link_keeps_the_exact_plan_and_a_slow_one_trades_bytes() -> None:
    lan = choose(Measured(rtt=0.001, up_rate=125e6, down_rate=125e6, **VIT_B))
    assert (lan.codec, lan.remote_segments) == ("fp32", 4)
    lte = choose(Measured(rtt=0.05, up_rate=2.5e6, down_rate=6.25e6, **VIT_B))
    assert lte.codec == "int8" and lte.remote_segments < 4
    assert lte.seconds == min(lte.predicted.values()) or lte.seconds <= min(lte.predicted.values()) / 0.9
    assert lte.seconds < lte.predicted["fp32/4"] / 3  # the choice is several times quicker than exact


def test_predictions_follow_bytes_round_trips_and_the_edge() -> None:
    m = Measured(rtt=0.1, up_rate=1e6, down_rate=1e6, **VIT_B)
    assert predict(m, "int8", 4) < predict(m, "fp16", 4) < predict(m, "fp32", 4)
    unlimited = Measured(rtt=0.0, up_rate=None, down_rate=None, **VIT_B)
    # with free links, keeping segments on the edge costs what the workers would have done together
    assert predict(unlimited, "fp32", 1) == pytest.approx(4.0 + 0.6 + 3 * 0.6 * 2)
    assert predict(unlimited, "fp32", 4) == pytest.approx(4.0 + 4 * 0.6)
    assert choose(unlimited).remote_segments == 4 and choose(unlimited).codec == "fp32"


async def test_a_session_chooses_from_its_calibration_frame_and_the_run_uses_it(
    tiny_workers: list[str], tmp_path: Path
) -> None:
    config = EdgeConfig(model=TINY, workers=tuple(tiny_workers), auto_plan=True,
                        links=(LinkSpec.parse("4mbit:30ms"),))
    async with EdgeSession(config) as session:
        choice = session.plan_choice
        assert choice is not None and choice.measured is not None
        assert choice.measured.up_rate == pytest.approx(0.5e6, rel=0.2)  # 4 Mbit/s, as measured
        assert choice.codec != "fp32" or choice.remote_segments < 2  # a slow link buys fewer bytes
        assert session.exposure_summary()["frames"] == 0  # the calibration frame is on no run's ledger
        clip = make_clip(tmp_path / "clip.mp4", frames=3, width=96, height=64)
        results = [r async for r in run_frames(session, FileSource(clip.path), [ObjectPrompt(box=(10, 10, 60, 50))])]
        assert all(r.error is None for r in results)
        segments = results[-1].audit.segments if results[-1].audit is not None else []
        kept = [s for s in segments if s.edge_only is not None]
        assert len(kept) == 2 - choice.remote_segments
    assert "plan auto: codec" in choice.line() and "Mbit/s" in choice.line()
    assert np.isfinite(choice.seconds)
