"""The edge's Prometheus metrics, scraped over HTTP from a running session."""

from __future__ import annotations

import asyncio

from pedsam.stream.core.session import EdgeConfig, EdgeSession
from tests.support import TINY, scene, scrape


async def test_metrics_count_frames_bytes_exposure_and_failovers() -> None:
    config = EdgeConfig(model=TINY, local_workers=3, metrics_port=0, reconnect_interval=60)
    async with EdgeSession(config) as session:
        assert session.metrics_port
        for seed in range(2):
            await session.embed(scene(120, 160, seed=seed))
        metrics = await asyncio.to_thread(scrape, session.metrics_port)
        assert metrics[("pedsam_edge_frames_total", ())] == 2
        assert metrics[("pedsam_edge_frame_seconds_count", ())] == 2
        shares = []
        for name in session.executor_names:
            worker = (("worker", name),)
            assert metrics[("pedsam_edge_worker_requests_total", worker)] == 2 * 2  # 2 frames x 2 segments
            assert metrics[("pedsam_edge_sent_bytes_total", worker)] > 0
            assert metrics[("pedsam_edge_segment_seconds_count", worker)] == 4
            assert metrics[("pedsam_edge_worker_up", worker)] == 1
            share = metrics[("pedsam_edge_exposure_max_frame_share", (("server", name),))]
            ledger = session.exposure_summary()["exposure"][name]  # type: ignore[index]
            assert share == ledger["max_frame_share"] and 0 <= share < 1  # nobody saw a whole frame
            shares.append(share)
        assert max(shares) > 0
        victim = session.executor_names[0]
        assert session._local is not None
        session._local.workers[0].process.kill()
        await session._local.workers[0].process.wait()
        await session.embed(scene(120, 160, seed=5))
        metrics = await asyncio.to_thread(scrape, session.metrics_port)
        assert metrics[("pedsam_edge_failovers_total", (("worker", victim),))] >= 1
        assert metrics[("pedsam_edge_worker_up", (("worker", victim),))] == 0
        assert metrics[("pedsam_edge_frames_total", ())] == 3
