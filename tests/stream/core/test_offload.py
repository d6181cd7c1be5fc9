"""The offload plan: workers also run the global blocks' per-token parts; results stay exact."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest
import torch

from pedsam.partitioner.offload import OffloadStage, offload_stages
from pedsam.partitioner.plan import model_plan
from pedsam.protos import pedsam_pb2 as pb
from pedsam.protos import pedsam_pb2_grpc as pb_grpc
from pedsam.stream.bench.modes import raw_bytes_per_frame
from pedsam.stream.core.session import EdgeConfig, EdgeSession
from pedsam.stream.fleet.remote import RemoteWorker, channel_options
from pedsam.workers import codec as wire
from pedsam.workers.server import WorkerLimits, WorkerModel, WorkerServer
from tests.support import TINY, scene


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).abs().max() / want.abs().max())


def test_vit_b_stages_finish_and_start_the_neighbouring_global_blocks() -> None:
    stages = offload_stages(model_plan(12, (2, 5, 8, 11)))
    assert stages == (
        OffloadStage(segment=0, finish=None, start=2),
        OffloadStage(segment=1, finish=2, start=5),
        OffloadStage(segment=2, finish=5, start=8),
        OffloadStage(segment=3, finish=8, start=11),
    )


def test_global_blocks_without_a_neighbouring_segment_stay_on_the_edge() -> None:
    # Blocks 0 and 3, 4 are global: 0 has no segment before it, 3 none after it.
    stages = offload_stages(model_plan(6, (0, 3, 4)))
    assert stages == (
        OffloadStage(segment=0, finish=0, start=3),
        OffloadStage(segment=1, finish=4, start=None),
    )


@pytest.mark.parametrize("scheme", ["interleaved", "contiguous"])
async def test_offload_embedding_equals_monolithic(tiny_workers: list[str], scheme: str) -> None:
    image = scene(300, 400, seed=2)
    config = EdgeConfig(model=TINY, workers=tuple(tiny_workers), scheme=scheme, plan="offload")
    async with EdgeSession(config) as session:
        embedding = await session.embed(image)
        with torch.inference_mode():
            reference = session.sam.image_encoder(embedding.prepared.tensor)
        stats = [e.stats for e in session.encoder.executors.values() if isinstance(e, RemoteWorker)]
    assert relative_error(embedding.tensor, reference) <= 1e-4
    # The audit still says, per segment, which worker got which windows: all 9, once each.
    assert [s.segment for s in embedding.audit.segments] == [0, 1]
    for segment in embedding.audit.segments:
        assert sorted(w for ids in segment.shares.values() for w in ids) == list(range(9))
    # Exactly the tensors the plan says cross, no more: fp32 payload equals the raw count (the
    # bottom row of windows, pure padding of this 4:3 frame, never crosses).
    moved = sum(s.payload_sent + s.payload_received for s in stats)
    assert moved == raw_bytes_per_frame("tiny", "offload", frame_size=(300, 400)) == raw_bytes_per_frame("tiny", "offload") * 7 // 8
    assert raw_bytes_per_frame("tiny", "offload") > 2 * raw_bytes_per_frame("tiny", "default")


async def test_offload_and_default_plans_agree_frame_after_frame(tiny_workers: list[str]) -> None:
    frames = [scene(200, 260, seed=s) for s in (4, 5)]
    results = {}
    for plan in ("default", "offload"):
        config = EdgeConfig(model=TINY, workers=tuple(tiny_workers[:2]), plan=plan)
        async with EdgeSession(config) as session:
            results[plan] = [(await session.embed(f)).tensor for f in frames]
    for default, offload in zip(results["default"], results["offload"]):
        assert relative_error(offload, default) <= 1e-5


def stage_request(model: WorkerModel, *, finish: int | None, start: int | None, skip: bool = False) -> pb.SegmentRequest:
    gen = torch.Generator().manual_seed(11)
    tokens = torch.randn(196, 64, generator=gen)
    request = pb.SegmentRequest(
        request_id=1, frame_id=3, segment=1, model_fingerprint=model.fingerprint,
        extents=[pb.WindowExtent(height=14, width=14)], tokens=wire.encode(tokens, pb.CODEC_FP32),
        skip_segment=skip,
    )
    if finish is not None:
        request.finish_block = finish
        request.mixed.CopyFrom(wire.encode(torch.randn(196, 64, generator=gen), pb.CODEC_FP32))
    if start is not None:
        request.start_block = start
    return request


@pytest.fixture
async def stub(tiny_worker_model: WorkerModel):
    server = WorkerServer(tiny_worker_model, WorkerLimits())
    address = await server.start("127.0.0.1", 0)
    channel = grpc.aio.insecure_channel(address, options=channel_options(64 << 20))
    try:
        yield pb_grpc.WindowWorkerStub(channel), tiny_worker_model
    finally:
        await channel.close()
        await server.stop(0)


async def test_worker_runs_a_stage_like_the_local_runner(stub) -> None:
    client, model = stub
    info = await client.Describe(pb.DescribeRequest())
    assert list(info.global_blocks) == [2, 5]
    request = stage_request(model, finish=2, start=5)
    call = client.Process()
    await call.write(request)
    await call.done_writing()
    [result] = [r async for r in call]
    tokens, qkv = model.runner.run_stage(
        1, wire.decode(request.tokens), [(14, 14)], finish=2, mixed=wire.decode(request.mixed), start=5
    )
    assert qkv is not None
    assert torch.equal(wire.decode(result.tokens), tokens)
    assert tuple(result.qkv.shape) == (196, 192)
    assert torch.equal(wire.decode(result.qkv), qkv)


@pytest.mark.parametrize(
    ("mutate", "words"),
    [
        (lambda r: setattr(r, "finish_block", 3), "finish_block 3 is not a global block"),
        (lambda r: setattr(r, "start_block", 0), "start_block 0 is not a global block"),
        (lambda r: r.ClearField("finish_block"), "mixed tokens are only taken with finish_block"),
        (lambda r: r.mixed.shape.__setitem__(0, 100), "mixed have shape"),
        (lambda r: (r.ClearField("finish_block"), r.ClearField("mixed"), r.ClearField("start_block"),
                    setattr(r, "skip_segment", True)), "asks for nothing"),
    ],
)
async def test_bad_stage_request_gets_invalid_argument_and_worker_keeps_serving(stub, mutate, words) -> None:
    client, model = stub
    bad = stage_request(model, finish=2, start=5)
    mutate(bad)
    call = client.Process()
    await call.write(bad)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in call:
            pass
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert words in info.value.details()
    call = client.Process()
    await call.write(stage_request(model, finish=5, start=None, skip=True))  # the final stage shape
    await call.done_writing()
    [result] = [r async for r in call]
    assert tuple(result.tokens.shape) == (196, 64) and not result.HasField("qkv")


async def test_cli_plan_offload_writes_the_same_embedding(tiny_workers: list[str], tmp_path) -> None:
    from PIL import Image

    from pedsam.stream.cli.main import main

    image = tmp_path / "frame.png"
    Image.fromarray(scene(240, 320, seed=6)).save(image)
    outputs = {}
    for plan in ("default", "offload"):
        out = tmp_path / f"{plan}.npy"
        argv = ["embed", str(image), "--model", "tiny", "--workers", ",".join(tiny_workers[:2]),
                "--plan", plan, "--save", str(out)]
        assert await asyncio.to_thread(main, argv) == 0
        outputs[plan] = np.load(out)
    error = np.abs(outputs["offload"] - outputs["default"]).max() / np.abs(outputs["default"]).max()
    assert error <= 1e-5


async def test_edge_keeps_global_blocks_that_have_no_segment_beside_them() -> None:
    """A plan with a leading global block and two global blocks in a row: the edge starts block 0
    and finishes block 3 itself; the result is still the monolithic encoder's."""
    from concurrent.futures import ThreadPoolExecutor
    from dataclasses import replace

    from pedsam.partitioner.assignment import EDGE, Assignment
    from pedsam.stream.core.encoder import SplitEncoder
    from pedsam.stream.core.executors import LocalExecutor
    from pedsam.workers.models import build_sam, get_preset
    from pedsam.workers.segment import SegmentRunner

    preset = replace(get_preset("tiny"), name="odd", global_attn_indexes=(0, 3, 4))
    sam = build_sam(preset, seed=1)

    image = torch.randn(1, 3, 512, 512, generator=torch.Generator().manual_seed(3))
    with ThreadPoolExecutor(1) as pool:
        executor = LocalExecutor(SegmentRunner(sam, preset), pool)
        encoder = SplitEncoder(sam, preset, {EDGE: executor}, pool, execution="offload")
        embedding, audit = await encoder.encode(0, image, Assignment(frame_index=0, shares={EDGE: tuple(range(9))}))
    with torch.inference_mode():
        reference = sam.image_encoder(image)
    assert relative_error(embedding, reference) <= 1e-4
    assert [s.segment for s in audit.segments] == [0, 1]
