"""An edge session behind emulated links (``EdgeConfig.links``, ``--link``): exact results, and each
worker's link as the edge measured it, in its Prometheus metrics and in a run's summary."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import torch

from pedsam.stream.core.prompts import ObjectPrompt
from pedsam.stream.core.session import EdgeConfig, EdgeSession
from pedsam.stream.errors import ConfigError
from pedsam.stream.fleet.links import PROFILES, LinkSpec
from pedsam.stream.media.sources import FileSource
from pedsam.stream.media.synthetic import make_clip
from pedsam.stream.runs.job import RunSettings, run_source
from tests.support import TINY, scene, scrape, unstalled

LTE, WIFI = PROFILES["lte"], PROFILES["wifi"]


def encode(session: EdgeSession, image: torch.Tensor) -> torch.Tensor:
    """SAM's own image encoder on ``image`` (on a thread: the test times the event loop)."""
    with torch.inference_mode():
        return session.sam.image_encoder(image)  # type: ignore[no-any-return]


def test_one_link_for_all_or_one_per_worker() -> None:
    workers = ("127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3")
    assert EdgeConfig(model=TINY, workers=workers, links=(LTE,)).links == (LTE, LTE, LTE)
    assert EdgeConfig(model=TINY, local_workers=2, local_standby=1, links=(LTE, WIFI, LTE)).links == (LTE, WIFI, LTE)
    assert EdgeConfig(model=TINY, workers=workers).links == ()
    with pytest.raises(ConfigError, match="--link gives 2 links for 3 workers"):
        EdgeConfig(model=TINY, workers=workers, links=(LTE, WIFI))
    with pytest.raises(ConfigError, match="--link gives 2 links for 4 workers"):
        EdgeConfig(model=TINY, workers=workers[:2], standby=workers[2:] + ("127.0.0.1:4",), links=(LTE, WIFI))


async def test_a_session_behind_links_is_exact_and_reports_what_it_measured(
    tiny_workers: list[str], tmp_path: Path
) -> None:
    # Rates that make every message take 40-100 ms: the contiguous scheme gives these workers
    # about 115, 115 and 33 kB per request each way.
    links = (LinkSpec.parse("10mbit/20mbit:20ms"), LinkSpec.parse("10mbit:30ms"), LinkSpec.parse("4mbit:10ms"))
    config = EdgeConfig(model=TINY, workers=tuple(tiny_workers), links=links, metrics_port=0)
    clip = make_clip(tmp_path / "clip.mp4", frames=3, width=160, height=120)
    prompt = ObjectPrompt(points=(clip.objects[0].centres[0],), labels=(1,))

    async def run() -> tuple[dict[str, Any], dict[Any, float]]:
        async with EdgeSession(config) as session:
            embedding = await session.embed(scene(300, 400))
            reference = await asyncio.to_thread(encode, session, embedding.prepared.tensor)
            assert float((embedding.tensor - reference).abs().max() / reference.abs().max()) <= 1e-4
            assert session.executor_names == tiny_workers  # named as given, though dialled through relays
            async with FileSource(clip.path) as source:
                summary = await run_source(session, source, [prompt], RunSettings())
            assert session.metrics_port is not None
            return summary, await asyncio.to_thread(scrape, session.metrics_port)

    def check(result: tuple[dict[str, Any], dict[Any, float]]) -> None:
        summary, metrics = result
        assert summary["frames"] == 3 and set(summary["links"]) == set(tiny_workers)
        for name, spec in zip(tiny_workers, links):
            figures = summary["links"][name]
            print(f"{spec}: round trip {figures['rtt_ms']:.2f} ms, "
                  f"up {figures['up_bytes_per_second'] * 8e-6:.2f} Mbit/s, "
                  f"down {figures['down_bytes_per_second'] * 8e-6:.2f} Mbit/s")  # pytest -rP shows it
            assert figures["emulated"] == spec.to_json()
            assert figures["up_messages"] == figures["down_messages"] == 8  # 4 frames x 2 segments
            # As in tests/stream/fleet/test_link_meter.py; the round trip is looser still: three
            # workers, their relays and the edge share one event loop here, and a probe that the
            # machine delays a few ms at every hop reads several ms long.
            assert spec.rtt * 1e3 - 1 <= figures["rtt_ms"] <= spec.rtt * 1e3 + 8
            assert figures["up_bytes_per_second"] == pytest.approx(spec.up_bps / 8, rel=0.15)
            assert figures["down_bytes_per_second"] == pytest.approx(spec.down_bps / 8, rel=0.15)
            worker = (("worker", name),)
            # Scraped after the summary was made: the base round trip can only have gone down since.
            measured = metrics[("pedsam_edge_link_rtt_seconds", worker)]
            assert spec.rtt - 0.001 <= measured <= figures["rtt_ms"] / 1e3 + 1e-6
            for direction, rate in (("up", spec.up_bps / 8), ("down", spec.down_bps / 8)):
                labels = (("direction", direction), ("worker", name))
                assert metrics[("pedsam_edge_link_bytes_per_second", labels)] == pytest.approx(rate, rel=0.15)
                moved = metrics[("pedsam_edge_link_bytes_total", labels)]
                assert moved > 0 and moved / metrics[("pedsam_edge_link_transfer_seconds_total", labels)] == (
                    pytest.approx(rate, rel=0.15))

    await unstalled(run, check)
