"""pedsam.stream.core.verify: watched workers. A worker that tampers with its tokens is caught and
taken out of service, no frame returned after that carries its tokens, and honest workers are never
flagged."""

from __future__ import annotations

import asyncio
import logging
import math
import random
import threading
from collections.abc import Callable

import numpy as np
import pytest
import torch

from pedsam.partitioner.assignment import EDGE
from pedsam.partitioner.geometry import WindowGrid
from pedsam.protos import pedsam_pb2 as pb
from pedsam.stream.bench.modes import bench_image
from pedsam.stream.cli.options import GROUPS
from pedsam.stream.core.session import EdgeConfig, EdgeSession, Embedding
from pedsam.stream.core.verify import DEFAULT_VERIFY, Watch, differing_windows, impossible_windows, tolerance
from pedsam.stream.errors import ConfigError
from pedsam.workers import codec as wire
from pedsam.workers.device import Hardware, select
from pedsam.workers.models import ModelPreset, ModelSource
from pedsam.workers.server import WorkerLimits, WorkerModel, WorkerServer
from tests.support import TINY, scene

FRAMES = [np.roll(scene(240, 320, seed=5), shift=6 * i, axis=1) for i in range(12)]

Perturb = Callable[[torch.Tensor], torch.Tensor]


def tamper(server: WorkerServer, from_frame: int, perturb: Perturb) -> None:
    """Make ``server`` change the tokens (and qkv) it returns from its ``from_frame``-th frame on
    (counting from 0, every frame it is given a share of)."""
    service = server._service  # every request a worker computes goes through its servicer's _compute
    compute = service._compute
    lock = threading.Lock()
    frames = [0]  # its frames so far: the wire carries no frame number, so count first segments

    def lying(request: pb.SegmentRequest) -> pb.SegmentResult:
        with lock:
            if request.segment == 0 and not request.skip_segment:
                frames[0] += 1
            frame = frames[0] - 1
        result = compute(request)
        if frame >= from_frame:
            for name in ("tokens", "qkv"):
                if result.HasField(name):
                    tensor = getattr(result, name)
                    changed = perturb(wire.decode(tensor).clone())
                    getattr(result, name).CopyFrom(wire.encode(changed, tensor.codec))
        return result

    service._compute = lying  # type: ignore[method-assign]


def exact(session: EdgeSession, embedding: Embedding) -> bool:
    """The embedding equals monolithic SAM's for its frame (the split is exact in fp32)."""
    with torch.inference_mode():
        want = session.sam.image_encoder(embedding.prepared.tensor)
    return float((embedding.tensor - want).abs().max() / want.abs().max()) <= 1e-4


def share_of(embedding: Embedding, worker: str) -> int:
    """Windows per segment ``worker`` was assigned in this frame."""
    return len(embedding.audit.assignment.shares.get(worker, ()))


# ---- the parts -----------------------------------------------------------------------------------


def test_each_window_is_picked_with_probability_f() -> None:
    assert Watch(0.0).pick(50) == []
    assert Watch(1.0).pick(50) == list(range(50))
    watch = Watch(0.25, rng=random.Random(1))
    picked = sum(len(watch.pick(10)) for _ in range(4000))
    assert abs(picked / 40_000 - 0.25) < 0.01  # 4.6 standard deviations
    assert isinstance(Watch(0.5).rng, random.SystemRandom)  # secret by default
    for bad in (-0.1, 1.5, math.nan):
        with pytest.raises(ValueError, match="--verify"):
            Watch(bad)


def test_checks_name_the_windows_that_fail() -> None:
    grid = WindowGrid.for_encoder(448, 16, 14)  # 28 x 28 tokens: 2 x 2 windows of 14 x 14
    windows = [grid.window(i) for i in (0, 3, 1)]
    got = torch.randn(3 * 196, 8)
    assert impossible_windows(windows, [got], [100.0]) == ([], "")
    got[200, 2] = float("nan")  # window 3's rows are 196..391
    got[500, 0] = 1e3  # window 1's
    bad, why = impossible_windows(windows, [got], [100.0])
    assert bad == [1, 3] and "not finite" in why
    want = got[196:392].clone()
    assert differing_windows(windows, [1], [got], [want], 1e-4) == ([3], math.inf)  # NaN never passes
    got = torch.randn(3 * 196, 8)
    want = torch.cat([got[:196], got[392:]])  # the edge's windows 0 and 1, in that order
    assert differing_windows(windows, [0, 2], [got], [want], 1e-4) == ([], 0.0)
    want[200] *= 1.01
    bad, worst = differing_windows(windows, [0, 2], [got], [want], 1e-4)
    assert bad == [1] and 1e-3 < worst < 2e-2


def test_tolerance_adds_the_codec_and_the_coarsest_precision() -> None:
    assert tolerance("fp32", ("fp32", "")) == pytest.approx(2e-4)
    assert tolerance("int8", ("fp32",)) > tolerance("fp16", ("fp32",)) > tolerance("fp32", ("fp32",))
    assert tolerance("fp32", ("fp32", "bf16")) == pytest.approx(1e-4 + 2e-2)
    with pytest.raises(ValueError):
        tolerance("fp8", ())


def test_the_default_is_one_value_everywhere() -> None:
    [option] = [o for o in GROUPS["workers"] if o.dest == "verify"]
    assert option.default == DEFAULT_VERIFY == EdgeConfig(model=TINY, local_workers=2).verify
    for bad in (2, -0.5, math.nan):
        with pytest.raises(ConfigError, match="--verify"):
            EdgeConfig(model=TINY, local_workers=2, verify=bad)


# ---- a tampering worker on real loopback -----------------------------------------------------------


@pytest.mark.parametrize("plan", ["default", "offload"])
async def test_a_worker_that_tampers_is_caught_on_its_first_frame_with_verify_1(
    tiny_servers: dict[str, WorkerServer], plan: str, caplog: pytest.LogCaptureFixture
) -> None:
    """``--verify 1``: the first tampered frame is caught (a 1 % change, far below any magnitude
    check), that frame and every later one equal monolithic SAM's, the liar is down for good and
    given nothing more, the audit names frame, segment and windows, and one line says so."""
    liar = list(tiny_servers)[1]
    tamper(tiny_servers[liar], 3, lambda t: t * 1.01)
    config = EdgeConfig(model=TINY, workers=tuple(tiny_servers), verify=1.0, plan=plan, reconnect_interval=0.05)
    with caplog.at_level(logging.WARNING):
        async with EdgeSession(config) as session:
            embeddings = [await session.embed(frame) for frame in FRAMES[:7]]
            assert all(exact(session, e) for e in embeddings)
            fleet = session.fleet_summary()
    caught = [(e.audit.frame, s.segment, s.failover[liar]["caught"])
              for e in embeddings for s in e.audit.segments if "caught" in s.failover.get(liar, {})]
    assert len(caught) == 1
    frame, segment, record = caught[0]
    assert (frame, segment) == (3, 0) and record["check"] == "recomputed"
    assert record["windows"] and set(record["windows"]) <= set(embeddings[3].audit.assignment.shares[liar])
    assert all(w in embeddings[3].audit.segments[0].shares[EDGE] for w in record["windows"])
    assert all(liar not in e.audit.assignment.shares for e in embeddings[4:])  # never scheduled again
    assert fleet["down"] == [liar] and fleet["workers_caught"] == 1
    assert fleet["caught"] == {liar: {"frame": 3, "segment": 0, "windows": record["windows"], "check": "recomputed"}}
    assert [e["event"] for e in fleet["events"]] == ["down"]  # 0.05 s reconnects: never brought back
    assert fleet["windows_verified"] >= 7 * 3  # every worker window of every frame (tiny: 2 segments)
    lines = [r.getMessage() for r in caplog.records if "tampered" in r.getMessage()]
    assert len(lines) == 1 and liar in lines[0] and "frame 3 segment 0" in lines[0]


async def test_a_worker_caught_with_verify_below_1_within_the_predicted_frames(
    tiny_servers: dict[str, WorkerServer],
) -> None:
    """``--verify 0.1`` against a worker that tampers with every window from frame 2 on: each frame
    catches it with probability ``1 - 0.9^(w s)``, here w = 2 windows in each of s = 2 segments,
    0.34; so P(not caught within 22 frames) = 0.9^88 < 1e-4 whatever the draws. The test's draws
    are seeded (repeatable): caught in frame 6, segment 1, after frame 6's segment 0 had taken its
    unchecked windows, so frame 6 is computed again without it. Frames returned after the catch are
    exact; frames 2 to 5, before it, carry tampered tokens (what ``--verify`` below 1 lets through)."""
    liar = list(tiny_servers)[0]
    tamper(tiny_servers[liar], 2, lambda t: t * 1.01)
    frames = [np.roll(scene(240, 320, seed=5), shift=6 * i, axis=1) for i in range(24)]
    config = EdgeConfig(model=TINY, workers=tuple(tiny_servers), verify=0.1)
    async with EdgeSession(config) as session:
        assert session.watch is not None
        session.watch.rng = random.Random(7)
        embeddings, after = [], []
        for frame in frames:
            embeddings.append(await session.embed(frame))
            after.append(bool(session.watch.caught))
            if sum(after) == 3:
                break
        results = [exact(session, e) for e in embeddings]
    caught = session.watch.caught[liar]
    assert after.index(True) == caught["frame"] < 24
    assert all(share_of(e, liar) == 2 for e in embeddings[: caught["frame"] + 1])  # w = 2 while it served
    assert (caught["frame"], caught["segment"]) == (6, 1)  # the seeded draws
    assert embeddings[6].audit.attempt == 2 and [s.attempt for s in embeddings[6].audit.segments] == [1, 1, 2, 2]
    assert all(liar not in s.shares for s in embeddings[6].audit.segments if s.attempt == 2)
    assert results == [True, True, False, False, False, False, True, True, True]


async def test_a_standby_takes_over_from_a_worker_caught(tiny_servers: dict[str, WorkerServer]) -> None:
    """``--on-failure standby``: the frame that caught the liar finishes on the edge, and later
    frames give its share to the standby, as for a worker that died."""
    liar, honest, standby = list(tiny_servers)
    tamper(tiny_servers[liar], 1, lambda t: t * 1.01)
    config = EdgeConfig(model=TINY, workers=(liar, honest), standby=(standby,), on_failure="standby", verify=1.0)
    async with EdgeSession(config) as session:
        embeddings = [await session.embed(frame) for frame in FRAMES[:4]]
        assert all(exact(session, e) for e in embeddings)
    assert liar in embeddings[1].audit.segments[0].failover
    assert all(standby in e.audit.assignment.shares and liar not in e.audit.assignment.shares for e in embeddings[2:])


async def test_a_share_with_impossible_values_is_refused_without_recomputing(
    tiny_servers: dict[str, WorkerServer],
) -> None:
    """``--verify 0`` recomputes nothing, and still refuses a NaN or a value no block can produce."""
    first, second = list(tiny_servers)[:2]
    tamper(tiny_servers[first], 1, lambda t: t.index_fill_(0, torch.tensor([0]), float("nan")))
    tamper(tiny_servers[second], 2, lambda t: t.index_fill_(0, torch.tensor([0]), 1e6))
    config = EdgeConfig(model=TINY, workers=tuple(tiny_servers), verify=0.0)
    async with EdgeSession(config) as session:
        embeddings = [await session.embed(frame) for frame in FRAMES[:4]]
        assert all(exact(session, e) for e in embeddings)
        fleet = session.fleet_summary()
    assert fleet["windows_verified"] == 0 and fleet["workers_caught"] == 2
    assert fleet["caught"][first]["check"] == fleet["caught"][second]["check"] == "impossible"
    assert (fleet["caught"][first]["frame"], fleet["caught"][second]["frame"]) == (1, 2)
    assert sorted(fleet["down"]) == sorted([first, second])


async def test_frames_in_flight_when_a_worker_is_caught_are_returned_clean(
    tiny_servers: dict[str, WorkerServer],
) -> None:
    """Two frames in flight: a frame that took the liar's unchecked windows and is returned after
    the catch is computed again without it."""
    liar = list(tiny_servers)[2]
    tamper(tiny_servers[liar], 0, lambda t: t * 1.01)
    config = EdgeConfig(model=TINY, workers=tuple(tiny_servers), verify=0.2)
    async with EdgeSession(config) as session:
        assert session.watch is not None
        session.watch.rng = random.Random(3)
        watch = session.watch

        async def embed(frame: np.ndarray) -> tuple[Embedding, bool]:
            embedding = await session.embed(frame)
            return embedding, bool(watch.caught)

        done: list[tuple[Embedding, bool]] = []
        for start in range(0, len(FRAMES), 2):
            done += await asyncio.gather(*(embed(f) for f in FRAMES[start : start + 2]))
        assert watch.caught
        for embedding, after in done:
            if after:
                assert exact(session, embedding), embedding.audit.frame


# ---- honest workers are never flagged ---------------------------------------------------------------


@pytest.mark.parametrize(("codec", "plan"), [("fp32", "default"), ("int8", "default"), ("fp16", "offload"),
                                             ("int8", "offload")])
async def test_an_honest_fleet_is_never_flagged(tiny_servers: dict[str, WorkerServer], codec: str, plan: str) -> None:
    """Every window of 30 frames checked: nothing caught, and the largest difference stays at a
    third of the tolerance or less (with ``-s``, the margins the README quotes)."""
    config = EdgeConfig(model=TINY, workers=tuple(tiny_servers), verify=1.0, codec=codec, plan=plan)
    async with EdgeSession(config) as session:
        for index in range(30):
            await session.embed(FRAMES[index % 12] if index % 2 else scene(240, 320, seed=index))
        fleet = session.fleet_summary()
        allowed = tolerance(codec, ("fp32",))
    print(f"\n{codec} {plan}: largest difference {fleet['largest_difference']:.2e}, tolerance {allowed:.1e}, "
          f"{fleet['windows_verified']} windows")
    assert fleet["workers_caught"] == 0 and fleet["down"] == []
    assert fleet["windows_verified"] >= 30 * 2 * 3
    assert fleet["largest_difference"] <= allowed / 3


async def test_an_honest_bf16_worker_is_not_flagged_by_an_fp32_edge(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker computing in bf16 (described as having native bf16): the edge recomputes in fp32
    and allows for bf16's error; the worker is not flagged."""
    monkeypatch.setattr(Hardware, "probe", classmethod(lambda cls: Hardware(no_cuda="none here", cpu_bf16=True)))
    monkeypatch.setattr("pedsam.workers.device.cpu_has_bf16", lambda: True)
    model = WorkerModel(TINY, select("cpu", "bf16"))
    servers = [WorkerServer(model, WorkerLimits()) for _ in range(2)]
    addresses = [await server.start("127.0.0.1", 0) for server in servers]
    try:
        async with EdgeSession(EdgeConfig(model=TINY, workers=tuple(addresses), verify=1.0)) as session:
            for frame in FRAMES[:6]:
                await session.embed(frame)
            fleet = session.fleet_summary()
    finally:
        for server in servers:
            await server.stop(0)
    print(f"\nbf16 worker: largest difference {fleet['largest_difference']:.2e}")
    assert fleet["workers_caught"] == 0 and 1e-4 < fleet["largest_difference"] <= tolerance("fp32", ("bf16",)) / 3


async def test_an_honest_vit_b_fleet_in_int8_is_not_flagged(vit_b_shape: ModelPreset) -> None:
    """ViT-B shape, int8 on the wire, the offload plan (the largest honest differences measured on
    tiny): every window of a 4:3 frame checked, with ``-s`` the largest difference."""
    source = ModelSource(preset=vit_b_shape.name)
    model = WorkerModel(source)
    servers = [WorkerServer(model, WorkerLimits()) for _ in range(3)]
    addresses = [await server.start("127.0.0.1", 0) for server in servers]
    try:
        config = EdgeConfig(model=source, workers=tuple(addresses), verify=1.0, codec="int8", plan="offload")
        async with EdgeSession(config) as session:
            await session.embed(bench_image(1024, 0)[:768])
            fleet = session.fleet_summary()
    finally:
        for server in servers:
            await server.stop(0)
    print(f"\n{vit_b_shape.name} int8 offload: largest difference {fleet['largest_difference']:.2e}, "
          f"{fleet['windows_verified']} windows")
    assert fleet["workers_caught"] == 0 and fleet["largest_difference"] <= tolerance("int8", ("fp32",)) / 3
