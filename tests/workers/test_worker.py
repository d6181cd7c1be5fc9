"""The gRPC window worker on real loopback servers: contract, refusals, health, processes."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest
import torch
import zstandard
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pedsam.protos import pedsam_pb2 as pb
from pedsam.protos import pedsam_pb2_grpc as pb_grpc
from pedsam.stream.fleet.local import LocalWorkers
from pedsam.stream.fleet.remote import RemoteWorker, channel_options
from pedsam.workers import codec as wire
from pedsam.workers import entropy
from pedsam.workers.models import ModelSource
from pedsam.workers.server import WorkerLimits, WorkerModel, WorkerServer
from tests.support import TINY

WHOLE = (14, 14)
BORDER = (4, 14)


def request(model: WorkerModel, request_id: int, extents: list[tuple[int, int]], *, segment: int = 0,
            seed: int = 0, fingerprint: str | None = None) -> tuple[pb.SegmentRequest, torch.Tensor]:
    rows = sum(h * w for h, w in extents)
    tokens = torch.randn(rows, model.preset.embed_dim, generator=torch.Generator().manual_seed(seed))
    return (
        pb.SegmentRequest(
            request_id=request_id,
            frame_id=7,
            segment=segment,
            model_fingerprint=model.fingerprint if fingerprint is None else fingerprint,
            extents=[pb.WindowExtent(height=h, width=w) for h, w in extents],
            tokens=wire.encode(tokens, pb.CODEC_FP32),
        ),
        tokens,
    )


@pytest.fixture
async def server(tiny_worker_model: WorkerModel):
    srv = WorkerServer(tiny_worker_model, WorkerLimits(max_windows_per_request=8))
    address = await srv.start("127.0.0.1", 0)
    channel = grpc.aio.insecure_channel(address, options=channel_options(64 << 20))
    try:
        yield address, pb_grpc.WindowWorkerStub(channel), tiny_worker_model
    finally:
        await channel.close()
        await srv.stop(0)


async def test_describe_and_health(server) -> None:
    address, stub, model = server
    info = await stub.Describe(pb.DescribeRequest())
    assert info.preset == "tiny" and info.fingerprint == model.fingerprint
    assert info.num_segments == 2 and info.window_size == 14 and info.embed_dim == 64
    assert info.random_weights
    # Where it computes; no device memory limit on a CPU.
    assert (info.device, info.device_name, info.compute_dtype, info.device_memory_bytes) == ("cpu", "cpu", "fp32", 0)
    assert info.max_windows_per_request == 8
    async with grpc.aio.insecure_channel(address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_stream_round_trip_matches_local_runner(server) -> None:
    _, stub, model = server
    call = stub.Process()
    sent = {}
    for request_id, extents in enumerate([[WHOLE, BORDER], [BORDER], [WHOLE, WHOLE, (14, 4)]], start=1):
        req, tokens = request(model, request_id, extents, segment=request_id % 2, seed=request_id)
        sent[request_id] = (req, tokens, extents)
        await call.write(req)  # several requests in flight on one stream
    await call.done_writing()
    results = [r async for r in call]
    assert sorted(r.request_id for r in results) == [1, 2, 3]
    for result in results:
        req, tokens, extents = sent[result.request_id]
        assert (result.frame_id, result.segment) == (7, req.segment)
        expected = model.runner.run(req.segment, tokens, extents)
        torch.testing.assert_close(wire.decode(result.tokens), expected, rtol=0, atol=0)


async def test_residual_result_is_what_the_blocks_added(server) -> None:
    """Asked for a residual, the worker returns result minus the tokens it received, and says so."""
    _, stub, model = server
    req, tokens = request(model, 1, [WHOLE, BORDER], segment=1, seed=4)
    req.residual_result = True
    call = stub.Process()
    await call.write(req)
    await call.done_writing()
    [result] = [r async for r in call]
    assert result.residual
    expected = model.runner.run(1, tokens, [WHOLE, BORDER])
    torch.testing.assert_close(wire.decode(result.tokens), expected - tokens, rtol=0, atol=0)
    torch.testing.assert_close(wire.decode_result(result.tokens, result.residual, tokens), expected)


def compressed(request: pb.SegmentRequest, spoil=lambda data: data) -> None:
    """The request's tokens compressed as an edge would, then ``spoil``-ed."""
    request.tokens.data = spoil(entropy.compress(request.tokens.data, 4, pb.COMPRESSION_ZSTD_PLANES))
    request.tokens.compression = pb.COMPRESSION_ZSTD_PLANES


def bomb(request: pb.SegmentRequest) -> None:
    """Tokens whose zstd frame (about 2 KB) inflates to 64 MB, and says so in its header."""
    compressed(request, lambda _: zstandard.ZstdCompressor(level=1).compress(bytes(64 << 20)))


async def test_compressed_both_ways_when_asked_and_plain_for_an_edge_that_does_not_ask(server) -> None:
    """The worker lists zstd; a request with compressed tokens asking for a compressed result gets
    one, a request as an older edge sends it (plain, no result_compression) gets plain bytes; both
    results are the segment's exact output."""
    _, stub, model = server
    info = await stub.Describe(pb.DescribeRequest())
    assert list(info.compressions) == [pb.COMPRESSION_ZSTD_PLANES]
    new, tokens = request(model, 1, [WHOLE, BORDER], segment=1, seed=8)
    compressed(new)
    new.result_compression = pb.COMPRESSION_ZSTD_PLANES
    old, _ = request(model, 2, [WHOLE, BORDER], segment=1, seed=8)
    call = stub.Process()
    await call.write(new)
    await call.write(old)
    await call.done_writing()
    results = {r.request_id: r for r in [r async for r in call]}
    assert results[1].tokens.compression == pb.COMPRESSION_ZSTD_PLANES
    assert results[2].tokens.compression == pb.COMPRESSION_NONE
    assert len(results[1].tokens.data) < len(results[2].tokens.data)
    expected = model.runner.run(1, tokens, [WHOLE, BORDER])
    for result in results.values():
        torch.testing.assert_close(wire.decode(result.tokens), expected, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("mutate", "code", "words"),
    [
        (lambda r: setattr(r, "model_fingerprint", "0" * 64), grpc.StatusCode.FAILED_PRECONDITION, "fingerprint"),
        (lambda r: setattr(r, "segment", 9), grpc.StatusCode.INVALID_ARGUMENT, "unknown segment"),
        (lambda r: r.tokens.shape.__setitem__(1, 32), grpc.StatusCode.INVALID_ARGUMENT, "shape"),
        (lambda r: setattr(r.tokens, "data", r.tokens.data[:-4]), grpc.StatusCode.INVALID_ARGUMENT, "bytes"),
        (lambda r: r.extents.add(height=15, width=1), grpc.StatusCode.INVALID_ARGUMENT, "extent"),
        (lambda r: [r.extents.add(height=1, width=1) for _ in range(9)], grpc.StatusCode.RESOURCE_EXHAUSTED, "at most 8"),
        (lambda r: setattr(r.tokens, "codec", 42), grpc.StatusCode.INVALID_ARGUMENT, "codec"),
        (bomb, grpc.StatusCode.INVALID_ARGUMENT, "tokens declare 67108864 bytes in their zstd frame, expected 50176"),
        (lambda r: compressed(r, lambda d: d[:-7]), grpc.StatusCode.INVALID_ARGUMENT, "tokens do not decompress"),
        (lambda r: setattr(r.tokens, "compression", pb.COMPRESSION_ZSTD_PLANES), grpc.StatusCode.INVALID_ARGUMENT,
         "tokens are not a zstd frame"),
        (lambda r: setattr(r.tokens, "compression", 9), grpc.StatusCode.INVALID_ARGUMENT, "compression 9"),
        (lambda r: setattr(r, "result_compression", 9), grpc.StatusCode.INVALID_ARGUMENT, "result compression 9"),
    ],
    ids=["fingerprint", "segment", "shape", "bytes", "extent", "windows", "codec", "zstd-bomb", "zstd-truncated",
         "zstd-not-a-frame", "unknown-compression", "unknown-result-compression"],
)
async def test_bad_request_gets_status_and_worker_keeps_serving(server, mutate, code, words) -> None:
    _, stub, model = server
    bad, _ = request(model, 1, [WHOLE])
    mutate(bad)
    call = stub.Process()
    await call.write(bad)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in call:
            pass
    assert info.value.code() == code
    assert words in info.value.details()
    # Another stream on the same worker is served normally afterwards.
    good, tokens = request(model, 2, [WHOLE])
    call = stub.Process()
    await call.write(good)
    await call.done_writing()
    [result] = [r async for r in call]
    torch.testing.assert_close(wire.decode(result.tokens), model.runner.run(0, tokens, [WHOLE]))


def poisoned(tokens: torch.Tensor, value: float, codec: int) -> pb.Tensor:
    """``tokens`` on the wire in ``codec`` with one value (in the border window) made ``value``;
    in int8 through the token's scale, the only float an int8 tensor carries."""
    bad = tokens.clone()
    if codec != pb.CODEC_INT8:
        bad[14 * 14 + 30, 5] = value
        return wire.encode(bad, codec)
    tensor = wire.encode(bad, codec)
    scales = np.frombuffer(tensor.scales, dtype="<f4").copy()
    scales[14 * 14 + 30] = value
    tensor.scales = scales.tobytes()
    return tensor


@pytest.mark.parametrize(
    ("field", "codec", "value"),
    [
        ("tokens", pb.CODEC_FP32, float("nan")),
        ("tokens", pb.CODEC_FP32, float("inf")),
        ("tokens", pb.CODEC_FP16, float("-inf")),
        ("tokens", pb.CODEC_INT8, float("nan")),
        ("mixed", pb.CODEC_FP32, float("nan")),
    ],
    ids=["fp32-nan", "fp32-inf", "fp16-minus-inf", "int8-nan-scale", "offload-mixed-nan"],
)
async def test_tokens_that_are_not_finite_are_refused_by_name(server, field: str, codec: int, value: float) -> None:
    """A NaN or an infinity anywhere in a request's tensors gets INVALID_ARGUMENT saying so (never
    an OK answer computed from it), and the worker goes on serving exactly."""
    _, stub, model = server
    bad, tokens = request(model, 1, [WHOLE, BORDER], segment=1, seed=5)
    if field == "tokens":
        bad.tokens.CopyFrom(poisoned(tokens, value, codec))
    else:  # the offload plan's attention output, finishing global block 2 before segment 1
        bad.finish_block = 2
        bad.mixed.CopyFrom(poisoned(tokens, value, codec))
    call = stub.Process()
    await call.write(bad)
    await call.done_writing()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in call:
            pass
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in info.value.details() and "NaN or infinity" in info.value.details()
    good, tokens = request(model, 2, [WHOLE, BORDER], segment=1, seed=6)
    call = stub.Process()
    await call.write(good)
    await call.done_writing()
    [result] = [r async for r in call]
    torch.testing.assert_close(wire.decode(result.tokens), model.runner.run(1, tokens, [WHOLE, BORDER]),
                               rtol=0, atol=0)


async def test_edge_refuses_worker_with_other_weights(server) -> None:
    address, _, model = server
    from pedsam.stream.errors import WorkerError

    client = RemoteWorker(address, fingerprint="f" * 64)
    with pytest.raises(WorkerError, match="other weights"):
        await client.connect()


async def test_unreachable_worker_is_a_clear_error() -> None:
    from pedsam.stream.errors import WorkerError

    client = RemoteWorker("127.0.0.1:9", fingerprint="x", connect_timeout=0.5)
    with pytest.raises(WorkerError, match="unreachable"):
        await client.connect()


async def test_real_worker_processes_round_trip(tiny_worker_model: WorkerModel) -> None:
    """Two worker processes started like --local-workers; a client runs work on each."""
    async with LocalWorkers(2, TINY) as local:
        assert len(set(local.addresses)) == 2
        for address in local.addresses:
            client = RemoteWorker(address, fingerprint=tiny_worker_model.fingerprint)
            await client.connect()
            try:
                assert client.device_json() == {"device": "cpu", "name": "cpu", "compute_dtype": "fp32"}
                tokens = torch.randn(14 * 14 + 4 * 14, 64)
                extents = [WHOLE, BORDER]
                got = await client.run(0, 1, tokens, extents)
                torch.testing.assert_close(got, tiny_worker_model.runner.run(1, tokens, extents))
            finally:
                await client.close()
        processes = [w.process for w in local.workers]
    # Leaving the context stopped every process.
    assert all(p.returncode is not None for p in processes)


async def test_worker_process_with_other_seed_is_refused() -> None:
    from pedsam.stream.errors import WorkerError

    async with LocalWorkers(1, ModelSource(preset="tiny", seed=5)) as local:
        model = await asyncio.to_thread(WorkerModel, TINY)
        client = RemoteWorker(local.addresses[0], fingerprint=model.fingerprint)
        with pytest.raises(WorkerError, match="other weights"):
            await client.connect()


async def one_answer(stub: pb_grpc.WindowWorkerStub, request_: pb.SegmentRequest) -> pb.SegmentResult:
    call = stub.Process()
    await call.write(request_)
    await call.done_writing()
    [result] = [r async for r in call]
    return result


async def test_a_request_over_the_device_memory_limit_is_refused_naming_the_limit(
    tiny_worker_model: WorkerModel,
) -> None:
    """The device memory limit (set here on the CPU, where it is optional, to reach the path a GPU
    worker takes by default) caps what Describe offers and refuses a larger request by name."""
    runner = tiny_worker_model.runner
    budget = runner.request_bytes(2, stage=True)
    server = WorkerServer(tiny_worker_model, WorkerLimits(device_memory_bytes=budget))
    address = await server.start("127.0.0.1", 0)
    try:
        async with grpc.aio.insecure_channel(address, options=channel_options(64 << 20)) as channel:
            stub = pb_grpc.WindowWorkerStub(channel)
            info = await stub.Describe(pb.DescribeRequest())
            assert (info.max_windows_per_request, info.device_memory_bytes) == (2, budget)
            assert server.max_windows == 2
            big, _ = request(tiny_worker_model, 1, [WHOLE, WHOLE, BORDER])
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await one_answer(stub, big)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            details = refused.value.details()
            assert "3 windows need about" in details and "--device-memory-mb" in details
            assert "send at most 2 windows per request" in details
            fits, tokens = request(tiny_worker_model, 2, [WHOLE, BORDER])
            result = await one_answer(stub, fits)
            want = runner.run(0, tokens, [WHOLE, BORDER])
            torch.testing.assert_close(wire.decode(result.tokens), want, rtol=0, atol=0)
    finally:
        await server.stop(0)
    assert server.stats.requests[("any", "resource_exhausted")] == 1


async def test_a_device_that_runs_out_of_memory_refuses_that_request_and_serves_on(
    server, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, stub, model = server
    run = model.runner.run
    failures = iter([torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")])

    def first_fails(*args: object, **kwargs: object) -> torch.Tensor:
        for error in failures:
            raise error
        return run(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(model.runner, "run", first_fails)
    big, _ = request(model, 1, [WHOLE, WHOLE])
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await one_answer(stub, big)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "cpu ran out of memory computing 2 windows; send fewer windows" in refused.value.details()
    again, tokens = request(model, 2, [WHOLE])
    result = await one_answer(stub, again)
    torch.testing.assert_close(wire.decode(result.tokens), run(0, tokens, [WHOLE]), rtol=0, atol=0)


def old_model_info() -> type:
    """``ModelInfo`` as edges built before the device fields know it: pedsam.proto without them."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    proto = descriptor_pb2.FileDescriptorProto()
    pb.DESCRIPTOR.CopyToProto(proto)
    proto.name = "old/pedsam.proto"  # into a pool of its own: same package, fewer fields
    message = next(m for m in proto.message_type if m.name == "ModelInfo")
    kept = [f for f in message.field if f.number < 12]  # 11: compressions, older than the device fields
    assert len(kept) == len(message.field) - 4
    del message.field[:]
    message.field.extend(kept)
    del proto.service[:]
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("pedsam.v1.ModelInfo"))


async def test_an_edge_older_than_the_device_fields_reads_describe_as_before(server) -> None:
    _, stub, model = server
    data = (await stub.Describe(pb.DescribeRequest())).SerializeToString()
    old = old_model_info().FromString(data)
    assert (old.preset, old.fingerprint, old.num_segments, old.max_windows_per_request) == (
        "tiny", model.fingerprint, 2, 8)
    assert list(old.global_blocks) == [2, 5] and len(old.codecs) == 3
    # And a worker older than them reads on a new edge as "unknown", never as a wrong device.
    client = RemoteWorker("127.0.0.1:1", fingerprint=model.fingerprint)
    old.DiscardUnknownFields()  # what an old worker sends: no device fields at all
    client.info = pb.ModelInfo.FromString(old.SerializeToString())
    assert client.info.fingerprint == model.fingerprint and not client.info.device
    assert client.device_json() == {"device": "unknown", "name": "unknown", "compute_dtype": "unknown"}
