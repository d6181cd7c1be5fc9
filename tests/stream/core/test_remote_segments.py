"""``--remote-segments N``: only the first N segments leave the edge; the embedding stays exact, the
bytes scale with N, and the audit (and so invariants 2 and 3 checked from it) says where each
segment was computed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pedsam.partitioner.assignment import EDGE
from pedsam.partitioner.offload import PLANS
from pedsam.stream.core.session import EdgeConfig, EdgeSession
from pedsam.stream.errors import ConfigError
from pedsam.stream.fleet.remote import RemoteWorker
from pedsam.stream.media.masks_io import read_records
from pedsam.stream.media.panning import make_pan_clip
from pedsam.workers.server import WorkerLimits, WorkerModel, WorkerServer
from tests.support import TINY, check_audit, pedsam, record_requests, scene

MATRIX = 32 * 32 * 64 * 4  # tiny: one (N, C) float32 over the whole 32x32 token grid
# Tensor bytes per frame, both ways, by plan and N (tiny: global blocks 2 and 5, segments 0 and 1).
# Default plan: each segment's tokens out and back. Offload: stage 0 sends tokens and returns
# tokens and block 2's qkv (1 + 4); stage 1 sends tokens and block 2's attention output, returns
# tokens and block 5's qkv (2 + 4).
RAW = {("default", 1): 2 * MATRIX, ("default", 2): 4 * MATRIX, ("offload", 1): 5 * MATRIX, ("offload", 2): 11 * MATRIX}
# A 300x400 frame fills 24 of the 32 token rows: the bottom row of windows (6, 7, 8: 128 of the
# 1024 tokens) is pure padding and never leaves the edge, so 7/8 of each matrix crosses.
PADDING = [6, 7, 8]


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).abs().max() / want.abs().max())


@pytest.mark.parametrize("plan", PLANS)
async def test_only_the_first_n_segments_leave_the_edge_and_the_embedding_stays_exact(
    tiny_servers: dict[str, WorkerServer], plan: str
) -> None:
    received = {address: record_requests(server) for address, server in tiny_servers.items()}
    image = scene(300, 400, seed=1)
    for n in (1, 2):  # every N of tiny's 2 segments
        for seen in received.values():
            seen.clear()
        config = EdgeConfig(model=TINY, workers=tuple(tiny_servers), plan=plan, remote_segments=n)
        async with EdgeSession(config) as session:
            embedding = await session.embed(image)
            with torch.inference_mode():
                reference = session.sam.image_encoder(embedding.prepared.tensor)
            remotes = [e for e in session.encoder.executors.values() if isinstance(e, RemoteWorker)]
            raw = sum(r.stats.raw_sent + r.stats.raw_received for r in remotes)
            round_trips = {r.name: r.stats.requests for r in remotes}
        assert relative_error(embedding.tensor, reference) <= 1e-4, (plan, n)
        assert raw == RAW[plan, n] * 7 // 8
        assert round_trips == {address: n for address in tiny_servers}  # one request per segment sent
        assert {r.segment for seen in received.values() for r in seen} == set(range(n))
        audit = embedding.audit.to_json()["segments"]
        assert [s["segment"] for s in audit] == [0, 1]
        for segment in audit:
            windows = sorted(w for ids in segment["shares"].values() for w in ids)
            assert windows == list(range(9))
            if segment["segment"] < n:  # the 3 workers, and the padding on the edge
                assert "edge_only" not in segment and len(segment["shares"]) == 4
                assert segment["shares"][EDGE] == PADDING
            else:  # the edge computed every window and no worker got any
                assert segment["shares"] == {EDGE: list(range(9))} and segment["edge_only"] == "remote_segments"


async def test_a_worker_failing_with_one_remote_segment_fails_over_and_the_rest_stays_on_the_edge(
    tiny_worker_model: WorkerModel,
) -> None:
    servers = [WorkerServer(tiny_worker_model, WorkerLimits()) for _ in range(3)]
    addresses = [await server.start("127.0.0.1", 0) for server in servers]
    victim = addresses[1]
    try:
        config = EdgeConfig(model=TINY, workers=tuple(addresses), remote_segments=1, reconnect_interval=60)
        async with EdgeSession(config) as session:
            first = await session.embed(scene(240, 320, seed=3))
            await servers[1].stop(0)
            second = await session.embed(scene(240, 320, seed=4))
            with torch.inference_mode():
                reference = session.sam.image_encoder(second.prepared.tensor)
    finally:
        for server in servers:
            await server.stop(0)
    assert relative_error(second.tensor, reference) <= 1e-4
    assert not any(s.failover for s in first.audit.segments)
    zero, one = second.audit.segments
    assert zero.failover[victim]["edge"] == list(second.audit.assignment.shares[victim])
    assert sorted(zero.shares[EDGE]) == sorted([*second.audit.assignment.shares[victim], *PADDING])
    assert victim not in zero.shares and set(zero.shares) == {EDGE, addresses[0], addresses[2]}
    assert one.shares == {EDGE: list(range(9))} and one.edge_only == "remote_segments" and not one.failover


async def test_run_audit_keeps_invariants_2_and_3_checkable(tmp_path: Path, tiny_workers: list[str]) -> None:
    """``pedsam run --remote-segments 1`` with a horizon budget: from the audit file alone, every
    window of every segment once, no server over its cap or budget, segment 1 all on the edge."""
    clip = make_pan_clip(tmp_path / "pan.mp4", frames=6, velocity=(0.0, 6.0))
    out = tmp_path / "out"
    done = await pedsam(
        "run", clip.path, "--point", "160,120", "--workers", ",".join(tiny_workers), "--model", "tiny", "--rotation", "round-robin",
        "--horizon-cap", "0.6", "--remote-segments", "1", "--out", str(out), "--no-progress",
    )
    assert done.code == 0, done.err
    check_audit(out / "audit.jsonl", frames=6, segments=2, remote_segments=1)
    records = read_records(out / "audit.jsonl")
    firsts = [r for r in records if r["segment"] == 0]
    assert all("exposure" in r for r in firsts)
    for record in firsts:
        for name, exposure in record["exposure"]["servers"].items():
            assert exposure["scene_frames"] <= 0.6
            assert exposure["windows"] == len(record["shares"].get(name, []))
    assert any(r["shares"].get(EDGE) for r in firsts)  # the budget kept windows of segment 0 on the edge
    summary = json.loads((out / "summary.json").read_text())
    assert summary["remote_segments"] == 1 and summary["segments"] == 2


def test_remote_segments_out_of_range_is_a_config_error() -> None:
    workers = ("127.0.0.1:1", "127.0.0.1:2")
    for n in (0, 3):
        with pytest.raises(ConfigError, match=rf"--remote-segments {n}: tiny has 2 windowed segments; give 1..2"):
            EdgeConfig(model=TINY, workers=workers, remote_segments=n)
    assert EdgeConfig(model=TINY, workers=workers, remote_segments=2).remote_segments == 2


# ViT-B with N = 1 and 3: tests/stream/core/test_encoder.py::test_vit_b_split_embedding_equals_monolithic,
# which shares its model, frame and reference.
