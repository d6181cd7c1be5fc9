"""pedsam.stream.runs.engine: the frame engine on real tiny workers, real files and a real loopback camera stream."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pedsam.stream.core.prompts import ObjectPrompt
from pedsam.stream.core.session import EdgeConfig, EdgeSession
from pedsam.stream.errors import PromptError, WorkerError
from pedsam.stream.media.sources import CameraSource, FileSource
from pedsam.stream.media.synthetic import make_clip
from pedsam.stream.media.video import Frame
from pedsam.stream.runs.board import ObjectBoard
from pedsam.stream.runs.engine import run_frames
from pedsam.stream.runs.results import FrameResult
from pedsam.stream.runs.stats import RunStats, percentile
from pedsam.workers.server import WorkerLimits, WorkerModel, WorkerServer
from tests.mjpeg_server import PERIOD, MjpegServer, read_mark
from tests.support import TINY


@pytest.fixture
async def session(tiny_workers: list[str]) -> AsyncIterator[EdgeSession]:
    async with EdgeSession(EdgeConfig(model=TINY, workers=tuple(tiny_workers))) as edge:
        yield edge


def count_concurrent_embeds(session: EdgeSession) -> dict[str, int]:
    """Wrap ``session.embed`` to record how many frames were being embedded at once."""
    seen = {"now": 0, "max": 0, "calls": 0}
    embed = session.embed

    async def counting(*args: Any, **kwargs: Any) -> Any:
        seen["now"] += 1
        seen["calls"] += 1
        seen["max"] = max(seen["max"], seen["now"])
        try:
            return await embed(*args, **kwargs)
        finally:
            seen["now"] -= 1

    session.embed = counting  # type: ignore[method-assign]
    return seen


async def test_a_file_loses_no_frame_and_pipelining_changes_no_mask(session: EdgeSession, tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "clip.mp4", frames=8, width=160, height=120)
    prompt = ObjectPrompt(points=(clip.objects[0].centres[0],), labels=(1,))
    batch = [r async for r in run_frames(session, FileSource(clip.path), [prompt], in_flight=1)]
    seen = count_concurrent_embeds(session)
    stats = RunStats()
    live = [r async for r in run_frames(session, FileSource(clip.path), ObjectBoard([prompt]), drops="latest",
                                        in_flight=3, stats=stats)]
    assert [r.frame.index for r in live] == list(range(8))
    assert seen["max"] == 3  # three frames really were in flight at once
    assert stats.frames == stats.frames_segmented == stats.frames_ok == 8 and stats.dropped == 0
    assert len(stats.latencies) == 8 and all(latency > 0 for latency in stats.latencies)
    for got, want in zip(live, batch):
        assert got.error is None and got.audit is not None
        assert [o.id for o in got.objects] == [0]
        np.testing.assert_array_equal(got.objects[0].mask, want.objects[0].mask)
        assert got.objects[0].score == pytest.approx(want.objects[0].score, rel=1e-4)
    # Each frame was embedded once, under its own session frame index.
    assert len({r.audit.frame for r in live if r.audit}) == 8


def record_encoding(session: EdgeSession) -> dict[int, list[tuple[float, float]]]:
    """Wrap every executor's ``run`` (workers and the edge) to record, per frame id, when each of
    its windowed segments was being computed: (start, end) in ``time.perf_counter`` seconds."""
    work: dict[int, list[tuple[float, float]]] = {}
    for executor in session.encoder.executors.values():
        run = executor.run

        async def timed(frame_id: int, *args: Any, _run: Any = run, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await _run(frame_id, *args, **kwargs)
            finally:
                work.setdefault(frame_id, []).append((started, time.perf_counter()))

        executor.run = timed  # type: ignore[method-assign]
    return work


async def test_frames_in_flight_are_encoded_at_the_same_time(session: EdgeSession, tmp_path: Path) -> None:
    """Two frames in flight are not just two tasks: while one frame's segments are computed,
    another frame's are too (a lock around a frame's encoding would make them take turns)."""
    clip = make_clip(tmp_path / "clip.mp4", frames=6, width=160, height=120)
    work = record_encoding(session)
    board = ObjectBoard([ObjectPrompt(points=((40.0, 30.0),), labels=(1,))])
    results = [r async for r in run_frames(session, FileSource(clip.path), board, in_flight=2)]
    assert [r.frame.index for r in results] == list(range(6)) and all(r.error is None for r in results)
    # From a frame's first segment request to its last result, per frame (6 frames, 2 segments each).
    spans = {frame: (min(s for s, _ in calls), max(e for _, e in calls)) for frame, calls in work.items()}
    # Each segment: at least the 3 workers' shares (the edge's share is the bottom row, pure
    # padding of 4:3, whose first segment is computed once, plus what a budget keeps home).
    assert len(spans) == 6 and all(len(calls) >= 2 * 3 for calls in work.values())
    overlapping = {
        frame for frame, (start, end) in spans.items()
        for other, (other_start, other_end) in spans.items()
        if other != frame and start < other_end and other_start < end
    }
    assert len(overlapping) >= 4, f"frames encoded one at a time: {sorted(spans.values())}"


async def test_one_frame_in_flight_means_one_at_a_time(session: EdgeSession, tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "clip.mp4", frames=4, width=96, height=64)
    seen = count_concurrent_embeds(session)
    work = record_encoding(session)
    board = ObjectBoard([ObjectPrompt(points=((40.0, 30.0),), labels=(1,))])
    async with FileSource(clip.path) as source:
        results = [r async for r in run_frames(session, source, board, drops="latest", in_flight=1)]
    assert len(results) == 4 and seen == {"now": 0, "max": 1, "calls": 4}
    spans = sorted((min(s for s, _ in calls), max(e for _, e in calls)) for calls in work.values())
    assert len(spans) == 4 and all(end <= start for (_, end), (start, _) in zip(spans, spans[1:]))


async def test_closing_a_live_run_stops_every_frame_in_flight(session: EdgeSession, tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "clip.mp4", frames=10, width=96, height=64)
    seen = count_concurrent_embeds(session)
    board = ObjectBoard([ObjectPrompt(points=((40.0, 30.0),), labels=(1,))])
    async with FileSource(clip.path) as source:
        results = run_frames(session, source, board, drops="latest", in_flight=3)
        async with contextlib.aclosing(results):
            async for _ in results:
                break
        assert seen["calls"] >= 2  # more frames had been started ...
        assert seen["now"] == 0  # ... and none is still being embedded once the run is closed


def slow_link(session: EdgeSession, seconds: float) -> None:
    """Make every segment request take ``seconds`` longer, as over a slow link to the workers."""
    for executor in session.encoder.executors.values():
        run = executor.run

        async def delayed(*args: Any, _run: Any = run, **kwargs: Any) -> Any:
            await asyncio.sleep(seconds)
            return await _run(*args, **kwargs)

        executor.run = delayed  # type: ignore[method-assign]


async def test_a_live_camera_that_outruns_the_pipeline_stays_current(session: EdgeSession) -> None:
    """60 fps in, at most 20 fps out: frames are dropped and counted, latency does not grow.

    The link to the workers adds 50 ms to each of a frame's two segments, so with two frames in
    flight the pipeline cannot pass 20 fps however fast the machine is: the camera outruns it
    by at least three times everywhere, not only on a slow CPU."""
    slow_link(session, 0.05)
    stats = RunStats()
    results: list[tuple[FrameResult, float, int]] = []  # result, seconds since start, frames sent
    board = ObjectBoard([ObjectPrompt(points=((100.0, 150.0),), labels=(1,))])
    with MjpegServer(fps=60, frames=None).running() as server:
        async with CameraSource(server.url) as source:
            started = time.monotonic()
            async for result in run_frames(session, source, board, drops="latest", in_flight=2, stats=stats):
                results.append((result, time.monotonic() - started, server.sent))
                if time.monotonic() - started > 4.0:
                    break
            dropped = source.dropped
    indices = [r.frame.index for r, _, _ in results]
    assert indices == sorted(set(indices))
    for result, _, _ in results:
        assert read_mark(result.frame.image) == result.frame.index % PERIOD
        assert len(result.objects) == 1
    assert dropped > len(results)  # it fell far behind the camera ...
    assert dropped >= indices[-1] + 1 - len(results)  # ... and every frame it skipped is counted
    assert 0 < stats.dropped <= dropped
    # ... yet stays current: a queueing pipeline's latency would grow with the run's length
    # (about 0.9 s per second here); this one's stays below half the elapsed time.
    late = [(r, t) for r, t, _ in results if t > 2.0]
    assert late
    for result, elapsed in late:
        assert result.latency < 0.5 * elapsed
    # And the frame it shows is the camera's newest when it was taken: no buffer between camera
    # and pipeline holds old frames back (the gap is the latency's worth of frames, plus half a second).
    for result, _, sent in results[len(results) // 2 :]:
        assert result.frame.index > sent - 60 * (result.latency + 0.5), (result.frame.index, sent, result.latency)


async def test_objects_come_and_go_and_nothing_leaves_the_edge_without_one(
    session: EdgeSession, tmp_path: Path
) -> None:
    clip = make_clip(tmp_path / "clip.mp4", frames=14, width=128, height=96)
    board = ObjectBoard()
    def requests() -> int:
        return sum(e.stats.requests for e in session.encoder.executors.values() if hasattr(e, "stats"))

    results = []
    async with FileSource(clip.path) as source:
        async for result in run_frames(session, source, board, drops="latest", in_flight=2):
            results.append(result)
            if result.frame.index == 2:
                assert requests() == 0  # no object yet: no frame was sent to any worker
                object_id = board.add(ObjectPrompt(points=((40.0, 30.0),), labels=(1,)), frame_size=(128, 96))
                assert object_id == 0
            if result.frame.index == 8:
                assert board.remove(0)
                assert not board.remove(0)
    with_objects = [r.frame.index for r in results if r.objects]
    assert [r.frame.index for r in results] == list(range(14))
    assert with_objects and min(with_objects) > 2 and max(with_objects) <= 8 + 2
    for result in results:
        if result.objects:
            assert result.audit is not None
        if result.frame.index <= 2:
            assert result.audit is None  # passed straight through
    assert board.add(ObjectPrompt(box=(1.0, 1.0, 20.0, 20.0))) == 1  # ids are never reused
    assert board.describe()[0]["id"] == 1 and board.describe()[0]["colour"] == "#e6194b"


async def test_a_prompt_outside_the_frame_stops_the_run_with_a_clear_error(
    session: EdgeSession, tmp_path: Path
) -> None:
    clip = make_clip(tmp_path / "clip.mp4", frames=3, width=64, height=48)
    board = ObjectBoard([ObjectPrompt(points=((100.0, 10.0),), labels=(1,))])
    with pytest.raises(PromptError, match="outside the 64x48 frame"):
        async with FileSource(clip.path) as source:
            async for _ in run_frames(session, source, board, drops="latest"):
                pass
    with pytest.raises(PromptError):
        ObjectBoard().add(ObjectPrompt(points=((64.0, 1.0),), labels=(1,)), frame_size=(64, 48))


@pytest.mark.parametrize("on_failure", ["stop", "edge"])
async def test_a_worker_lost_mid_run(tiny_worker_model: WorkerModel, tmp_path: Path, on_failure: str) -> None:
    """With --on-failure stop a lost worker ends the live run with an error; by default the edge
    takes over its windows and the run goes on to the end of the source."""
    servers = [WorkerServer(tiny_worker_model, WorkerLimits()) for _ in range(2)]
    addresses = [await s.start("127.0.0.1", 0) for s in servers]
    clip = make_clip(tmp_path / "clip.mp4", frames=30, width=96, height=64)
    got = 0
    try:
        config = EdgeConfig(model=TINY, workers=tuple(addresses), on_failure=on_failure, reconnect_interval=60)
        async with EdgeSession(config) as edge:
            board = ObjectBoard([ObjectPrompt(points=((40.0, 30.0),), labels=(1,))])

            async def play() -> None:
                nonlocal got
                async with FileSource(clip.path) as source:
                    async for _ in run_frames(edge, source, board, drops="latest"):
                        got += 1
                        if got == 2:
                            await servers[1].stop(0)

            if on_failure == "stop":
                with pytest.raises(WorkerError):
                    await play()
            else:
                await play()
                assert edge.fleet_summary()["down"] == [addresses[1]]
    finally:
        for server in servers:
            await server.stop(0)
    if on_failure == "stop":
        assert 2 <= got < 30
    else:
        assert got == 30


def result(latency: float, *, segmented: bool, error: str | None = None) -> FrameResult:
    frame = Frame(index=0, pts=None, time=0.0, image=np.zeros((4, 4, 3), np.uint8))
    return FrameResult(frame=frame, objects=(), error=error, audit=None, latency=latency, segmented=segmented)


def test_run_stats_figures() -> None:
    now = [100.0]
    stats = RunStats(window=2.0, clock=lambda: now[0])
    assert stats.to_json()["latency_p50_s"] is None and "latency" not in stats.line()
    for i in range(20):
        now[0] += 0.1
        stats.add(result(0.01 * (i + 1), segmented=i % 2 == 0, error="boom" if i == 19 else None))
    stats.dropped = 7
    figures = stats.to_json()
    assert figures["frames"] == 20 and figures["frames_segmented"] == 10
    assert figures["frames_ok"] == 19 and figures["frames_failed"] == 1 and figures["first_error"] == "boom"
    assert figures["frames_dropped"] == 7
    assert figures["fps"] == pytest.approx(10.0)
    assert stats.recent_fps == pytest.approx(10.0)
    # segmented latencies: 0.01, 0.03, ..., 0.19; nearest rank: the 5th and the 10th of 10
    assert figures["latency_p50_s"] == pytest.approx(0.09)
    assert figures["latency_p95_s"] == pytest.approx(0.19)
    assert stats.line().startswith("20 frames, 7 dropped, 10 fps, latency p50 0.09 s p95 0.19 s")
    recent = stats.to_json(last=4)  # the last four segmented frames: 0.13 .. 0.19
    assert recent["latency_p50_s"] == pytest.approx(0.15) and recent["latency_mean_s"] == pytest.approx(0.16)
    assert recent["frames"] == 20


def test_one_percentile_definition_nearest_rank() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0], 95) == 3.0
    values = [float(v) for v in range(1, 21)]  # 1..20
    assert percentile(values, 50) == 10.0 and percentile(values, 95) == 19.0 and percentile(values, 100) == 20.0
    assert percentile(list(reversed(values)), 5) == 1.0


def test_a_slow_model_shows_its_real_rate() -> None:
    """A frame every 8 s (ViT-B on a CPU) reads as 0.125 fps, not 0.0."""
    now = [0.0]
    stats = RunStats(window=3.0, clock=lambda: now[0])
    for _ in range(4):
        now[0] += 8.0
        stats.add(result(7.5, segmented=True))
    assert " 0.125 fps" in stats.line()
