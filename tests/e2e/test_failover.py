"""Fault injection with real worker processes: killed, stalled, closing and restarted workers.

Each run must complete with every frame exact (equal to the monolithic encoder), or fail with a
clear error when the settings leave no safe place; the audit must show where every window went
and no server over its cap or budget.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from pedsam.partitioner import EDGE, Budget
from pedsam.stream.core.predictor import prepare_image
from pedsam.stream.core.prompts import ObjectPrompt
from pedsam.stream.core.scheduling import RotationSettings
from pedsam.stream.core.session import EdgeConfig, EdgeSession, Embedding
from pedsam.stream.errors import WorkerError
from pedsam.stream.media.masks_io import read_records
from pedsam.stream.media.sources import FileSource
from pedsam.stream.media.synthetic import make_clip
from pedsam.stream.runs.job import RunSettings, run_source
from pedsam.stream.runs.recorder import Recorder
from tests.support import TINY, scene

FRAMES = [np.roll(scene(200, 280, seed=9), shift=4 * i, axis=1) for i in range(10)]


def config(**overrides: Any) -> EdgeConfig:
    settings: dict[str, Any] = dict(
        model=TINY, local_workers=3, request_timeout=3.0, connect_timeout=2.0, reconnect_interval=0.3,
    )
    settings.update(overrides)
    return EdgeConfig(**settings)


def worker_process(session: EdgeSession, index: int) -> asyncio.subprocess.Process:
    assert session._local is not None
    return session._local.workers[index].process


async def embed_all(
    session: EdgeSession, frames: list[np.ndarray], fault_at: int, fault: Callable[[], Awaitable[None]]
) -> list[Embedding]:
    """Embed ``frames`` two at a time; inject ``fault`` just after frames fault_at, fault_at+1 start."""
    out: list[Embedding] = []
    for start in range(0, len(frames), 2):
        tasks = [asyncio.create_task(session.embed(f)) for f in frames[start : start + 2]]
        if start == fault_at:
            await asyncio.sleep(0.02)  # requests are on the wire
            await fault()
        out.extend(await asyncio.gather(*tasks))
    return out


def assert_exact(session: EdgeSession, frames: list[np.ndarray], embeddings: list[Embedding]) -> None:
    for frame, embedding in zip(frames, embeddings):
        with torch.inference_mode():
            want = session.sam.image_encoder(prepare_image(session.sam, frame).tensor)
        assert float((embedding.tensor - want).abs().max() / want.abs().max()) <= 1e-4


def assert_audit(embeddings: list[Embedding], windows: int) -> dict[str, int]:
    """Every window computed once per segment, servers within the per-frame cap (a share of the
    frame's picture, from the frame's exposure record); returns failovers per worker."""
    failovers: dict[str, int] = {}
    for embedding in embeddings:
        exposure = embedding.audit.exposure
        assert exposure is not None
        picture, cap = exposure["picture"], exposure["limits"]["frame"]
        for segment in embedding.audit.segments:
            computed = sorted(w for ids in segment.shares.values() for w in ids)
            assert computed == list(range(windows))
            for name, ids in segment.shares.items():
                assert name == EDGE or sum(picture[w] for w in ids) <= cap * sum(picture) + 1e-6
            for name, record in segment.failover.items():
                assert set(record["edge"]) <= set(segment.shares[EDGE])
                failovers[name] = failovers.get(name, 0) + 1
    return failovers


async def test_kill_9_mid_video_fails_over_to_the_edge_exactly() -> None:
    async with EdgeSession(config()) as session:
        victim = session.executor_names[1]

        async def kill() -> None:
            worker_process(session, 1).kill()

        embeddings = await embed_all(session, FRAMES, 4, kill)
        assert_exact(session, FRAMES, embeddings)
        failovers = assert_audit(embeddings, 9)
        assert failovers.get(victim, 0) >= 1
        # Frames scheduled after the failure never name the dead worker.
        last = embeddings[-1].audit
        assert victim not in last.assignment.shares and EDGE in last.assignment.shares
        assert last.exposure is not None and last.exposure["failover"][victim]
        events = session.fleet_summary()["events"]
        assert [e["event"] for e in events if e["worker"] == victim][:1] == ["down"]


async def test_a_stalled_worker_misses_its_deadline_and_the_run_goes_on() -> None:
    async with EdgeSession(config(request_timeout=1.0)) as session:
        process = worker_process(session, 2)

        async def stall() -> None:
            process.send_signal(signal.SIGSTOP)

        try:
            embeddings = await embed_all(session, FRAMES[:6], 2, stall)
        finally:
            process.send_signal(signal.SIGCONT)
        assert_exact(session, FRAMES[:6], embeddings)
        reasons = [r["reason"] for e in embeddings for s in e.audit.segments for r in s.failover.values()]
        assert any("missed its deadline" in r for r in reasons)


async def test_a_worker_that_closes_its_stream_is_failed_over() -> None:
    async with EdgeSession(config(reconnect_interval=60)) as session:
        victim = session.executor_names[0]

        async def stop() -> None:  # SIGTERM: the worker drains and ends streams with UNAVAILABLE
            worker_process(session, 0).terminate()
            await worker_process(session, 0).wait()

        embeddings = await embed_all(session, FRAMES[:6], 2, stop)
        assert_exact(session, FRAMES[:6], embeddings)
        assert assert_audit(embeddings, 9).get(victim, 0) >= 1
        assert session.fleet_summary()["down"] == [victim]


async def test_a_restarted_worker_is_reconnected_and_used_again() -> None:
    async with EdgeSession(config()) as session:
        victim = session.executor_names[1]
        port = victim.rsplit(":", 1)[1]
        assert session._local is not None
        token_file = session._local._token_file()
        restarted: list[asyncio.subprocess.Process] = []

        async def restart() -> None:
            worker_process(session, 1).kill()
            await worker_process(session, 1).wait()
            restarted.append(await asyncio.create_subprocess_exec(
                sys.executable, "-m", "pedsam.stream", "worker", "--port", port, "--model", "tiny", "--token-file", token_file,
                stdout=asyncio.subprocess.PIPE,
            ))

        try:
            embeddings = await embed_all(session, FRAMES[:4], 0, restart)
            assert restarted[0].stdout is not None
            await asyncio.wait_for(restarted[0].stdout.readline(), 120)  # serving again
            for _ in range(200):
                if victim not in session.fleet_summary()["down"]:
                    break
                await asyncio.sleep(0.1)
            later = [await session.embed(f) for f in FRAMES[4:7]]
            assert_exact(session, FRAMES, [*embeddings, *later])
            events = [e["event"] for e in session.fleet_summary()["events"] if e["worker"] == victim]
            assert events == ["down", "up"]
            # Back in service: it computes its share of frames scheduled after it came back.
            assert later[-1].audit.segments[0].shares.get(victim)
        finally:
            for process in restarted:
                process.terminate()
                await process.wait()


async def test_a_standby_takes_over_within_its_budget() -> None:
    budget = Budget(frame_cap=0.4, scene_cap=0.6, horizon=20)
    settings = config(local_workers=2, local_standby=1, on_failure="standby",
                      rotation=RotationSettings(budget=budget, motion=False))
    async with EdgeSession(settings) as session:
        [standby] = session.standby_names

        async def kill() -> None:
            worker_process(session, 0).kill()

        embeddings = await embed_all(session, FRAMES, 2, kill)
        assert_exact(session, FRAMES, embeddings)
        assert_audit(embeddings, 9)
        used = [e for e in embeddings if standby in e.audit.assignment.shares]
        assert used, "the standby never took over"
        for embedding in embeddings:
            assert embedding.audit.exposure is not None
            for exposure in embedding.audit.exposure["servers"].values():
                assert exposure["frame_share"] <= 0.4 + 1e-9
                assert exposure["scene_frames"] <= 0.6 + 1e-9


async def test_stop_fails_with_a_clear_error_naming_the_worker() -> None:
    async with EdgeSession(config(on_failure="stop")) as session:
        victim = session.executor_names[0]
        worker_process(session, 0).kill()
        await worker_process(session, 0).wait()
        with pytest.raises(WorkerError, match=victim.replace(".", r"\.")):
            await session.embed(FRAMES[0])
        with pytest.raises(WorkerError, match="is down and the settings say stop"):
            await session.embed(FRAMES[1])


async def test_a_batch_run_loses_no_frame_when_a_worker_dies(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "clip.mp4", frames=16, width=160, height=128)
    out = tmp_path / "out"
    async with EdgeSession(config()) as session:
        victim = worker_process(session, 2)

        async def killer() -> None:
            while not (out / "masks.jsonl").exists() or len(read_records(out / "masks.jsonl")) < 4:
                await asyncio.sleep(0.05)
            os.kill(victim.pid, signal.SIGKILL)

        kill = asyncio.create_task(killer())
        recorder = Recorder(out, num_windows=session.encoder.grid.num_windows)
        summary = await run_source(session, FileSource(clip.path), [ObjectPrompt(points=((40.0, 40.0),), labels=(1,))],
                                   RunSettings(), recorder=recorder)
        await kill
    assert (summary["frames"], summary["frames_ok"], summary["frames_failed"]) == (16, 16, 0)
    records = read_records(out / "masks.jsonl")
    assert [r["frame"] for r in records] == list(range(16)) and all("error" not in r for r in records)
    audit = read_records(out / "audit.jsonl")
    assert any("failover" in line for line in audit)
    for line in audit:
        assert sorted(w for ids in line["shares"].values() for w in ids) == list(range(line["num_windows"]))
        picture = line["picture"]
        assert all(sum(picture[w] for w in ids) <= line["cap"] * sum(picture) + 1e-6
                   for name, ids in line["shares"].items() if name != EDGE)
    fleet = json.loads((out / "summary.json").read_text())["fleet"]
    assert fleet["events"][0]["event"] == "down"
