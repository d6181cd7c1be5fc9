"""A live worker survives anything a client sends, and its memory stays bounded under many sessions."""

from __future__ import annotations

import asyncio
import re
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pedsam.protos import pedsam_pb2 as pb
from pedsam.protos import pedsam_pb2_grpc as pb_grpc
from pedsam.workers import codec as wire
from pedsam.workers.server import WorkerLimits, WorkerModel, WorkerServer

REFUSALS = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}


class LiveWorker:
    """An in-process worker on its own event-loop thread, so sync hypothesis tests can call it."""

    def __init__(self, model: WorkerModel) -> None:
        self.model = model
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server, self.address, self.channel = self.call(self._start())

    async def _start(self) -> tuple[WorkerServer, str, grpc.aio.Channel]:
        # gRPC's asyncio objects belong to the loop they are made on: make them on this one.
        server = WorkerServer(self.model, WorkerLimits(max_windows_per_request=16, max_message_bytes=1 << 20))
        address = await server.start("127.0.0.1", 0)
        return server, address, grpc.aio.insecure_channel(address)

    def call(self, coroutine: Any, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.call(self.channel.close())
        self.call(self.server.stop(0))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def live(tiny_worker_model: WorkerModel) -> Iterator[LiveWorker]:
    worker = LiveWorker(tiny_worker_model)
    try:
        yield worker
    finally:
        worker.close()


async def send(channel: grpc.aio.Channel, payload: bytes) -> tuple[grpc.StatusCode, list[pb.SegmentResult]]:
    """Send one raw message on a new Process stream; the final status and any results."""
    process = channel.stream_stream(
        "/pedsam.v1.WindowWorker/Process",
        request_serializer=lambda b: b,
        response_deserializer=pb.SegmentResult.FromString,
    )
    call = process()
    results = []
    try:
        await call.write(payload)
        await call.done_writing()
        async for result in call:
            results.append(result)
    except grpc.aio.AioRpcError as exc:
        return exc.code(), results
    return grpc.StatusCode.OK, results


def valid_request(model: WorkerModel, seed: int = 0) -> tuple[pb.SegmentRequest, torch.Tensor]:
    tokens = torch.randn(196 + 14 * 4, 64, generator=torch.Generator().manual_seed(seed))
    request = pb.SegmentRequest(
        request_id=9, frame_id=1, segment=1, model_fingerprint=model.fingerprint,
        extents=[pb.WindowExtent(height=14, width=14), pb.WindowExtent(height=4, width=14)],
        tokens=wire.encode(tokens, pb.CODEC_FP32),
    )
    return request, tokens


def assert_still_exact(live: LiveWorker, seed: int) -> None:
    request, tokens = valid_request(live.model, seed)
    code, [result] = live.call(send(live.channel, request.SerializeToString()))
    assert code == grpc.StatusCode.OK
    expected = live.model.runner.run(1, tokens, [(14, 14), (4, 14)])
    torch.testing.assert_close(wire.decode(result.tokens), expected, rtol=0, atol=0)


NAN = b"\x00\x00\xc0\x7f"  # a float32 NaN, little-endian as on the wire (as float16: 0 then NaN)


@st.composite
def malformed(draw: st.DrawFn, fingerprint: str) -> tuple[bytes, bool]:
    """A SegmentRequest with any of its fields drawn wild, serialized; and whether its tokens
    carry NaNs in a float codec (a request no worker may answer OK)."""
    extents = draw(st.lists(st.tuples(st.integers(0, 20), st.integers(0, 20)), max_size=20))
    rows = sum(h * w for h, w in extents)
    shape = draw(st.one_of(
        st.just([rows, 64]),
        st.lists(st.integers(0, 5000), max_size=4),
    ))
    size = draw(st.one_of(st.just(rows * 64 * 4), st.integers(0, 300_000)))
    codec = draw(st.sampled_from([0, 1, 2, 3, 7, 2**31 - 1]))
    data = draw(st.one_of(
        st.binary(max_size=64),
        st.just(NAN * (size // 4)),
        st.just(b"\x00" * size),
    ))
    nan = bool(data) and data == NAN * (len(data) // 4) and codec in (pb.CODEC_FP32, pb.CODEC_FP16)
    request = pb.SegmentRequest(
        request_id=draw(st.integers(0, 2**64 - 1)),
        frame_id=draw(st.integers(0, 2**64 - 1)),
        segment=draw(st.integers(0, 2**32 - 1)),
        model_fingerprint=draw(st.sampled_from([fingerprint, "", "0" * 64, "\u00e9" * 3])),
        extents=[pb.WindowExtent(height=h, width=w) for h, w in extents],
        tokens=pb.Tensor(codec=codec, shape=shape, data=data, scales=draw(st.binary(max_size=16))),
        result_codec=draw(st.sampled_from([0, 1, 2, 3, 99])),
    )
    return request.SerializeToString(), nan


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_malformed_requests_are_refused_and_the_worker_keeps_serving(live: LiveWorker, data: st.DataObject) -> None:
    payload, nan = data.draw(malformed(live.model.fingerprint))
    code, results = live.call(send(live.channel, payload))
    assert code in REFUSALS or (code == grpc.StatusCode.OK and len(results) == 1 and not nan)
    assert_still_exact(live, seed=len(payload))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.binary(min_size=1, max_size=4096))
def test_random_bytes_never_break_the_worker(live: LiveWorker, payload: bytes) -> None:
    code, results = live.call(send(live.channel, payload))
    # Bytes that do not parse never reach pedsam's code: gRPC answers INTERNAL or drops them.
    assert code in REFUSALS | {grpc.StatusCode.INTERNAL} or (code == grpc.StatusCode.OK and not results)
    assert_still_exact(live, seed=len(payload))


def test_a_message_over_the_limit_is_resource_exhausted(live: LiveWorker) -> None:
    request, _ = valid_request(live.model)
    request.tokens.data = b"\x00" * (2 << 20)
    code, _ = live.call(send(live.channel, request.SerializeToString()))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert_still_exact(live, seed=1)


def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmHWM:\s+(\d+) kB", status)
    assert match is not None
    return int(match.group(1)) / 1024


SESSIONS, REQUESTS = 32, 64
MESSAGE_MB = 9 * 196 * 64 * 4 / 2**20  # one request of 9 tiny windows, fp32
# What a worker may hold by design: per stream, its 1 MB read-ahead window and
# max_inflight_per_stream (4) requests, each alive as message, decoded tokens, result and its
# encoding; plus a fixed allowance for threads and allocator slack. Buffering every request
# would take SESSIONS * REQUESTS * MESSAGE_MB (about 900 MB) instead.
GROWTH_CAP_MB = SESSIONS * (1 + 4 * 4 * MESSAGE_MB) + 150


async def test_memory_stays_bounded_under_many_sessions(tiny_worker_model: WorkerModel) -> None:
    """32 sessions at once push 64 requests each (about 900 MB of windows in all) at a worker
    process limited to 32 streams: every result is exact, a 33rd session is refused, and the
    worker's peak resident memory grows by less than the designed bound over its idle size."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pedsam.stream", "worker", "--port", "0", "--model", "tiny", "--max-streams", str(SESSIONS),
        "--max-queued", "4", "--stream-window-mb", "1", stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 120)).decode()
        address = line.split()[4]
        idle = peak_rss_mb(process.pid)
        model = tiny_worker_model
        windows = [(14, 14)] * 9
        async with grpc.aio.insecure_channel(address, options=[("grpc.max_receive_message_length", 64 << 20)]) as channel:
            stub = pb_grpc.WindowWorkerStub(channel)
            everyone_in = asyncio.Event()
            opened = 0

            async def session(index: int) -> int:
                nonlocal opened
                call = stub.Process()
                tokens = torch.randn(196 * 9, 64, generator=torch.Generator().manual_seed(index))
                message = pb.SegmentRequest(
                    frame_id=index, segment=0, model_fingerprint=model.fingerprint,
                    extents=[pb.WindowExtent(height=h, width=w) for h, w in windows],
                    tokens=wire.encode(tokens, pb.CODEC_FP32),
                )
                await call.write(message)
                opened += 1
                if opened == SESSIONS:
                    everyone_in.set()
                await everyone_in.wait()

                async def write_rest() -> None:
                    for request_id in range(1, REQUESTS):
                        message.request_id = request_id
                        await call.write(message)
                    await call.done_writing()

                writer = asyncio.create_task(write_rest())
                expected = model.runner.run(0, tokens, windows)
                seen = []
                async for result in call:
                    torch.testing.assert_close(wire.decode(result.tokens), expected, rtol=0, atol=0)
                    seen.append(result.request_id)
                await writer
                assert sorted(seen) == list(range(REQUESTS))
                return len(seen)

            sessions = [asyncio.create_task(session(i)) for i in range(SESSIONS)]
            await asyncio.wait_for(everyone_in.wait(), 120)
            extra = stub.Process()
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await extra.read()
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert await asyncio.wait_for(asyncio.gather(*sessions), 600) == [REQUESTS] * SESSIONS
        growth = peak_rss_mb(process.pid) - idle
        assert growth < GROWTH_CAP_MB, f"peak RSS grew by {growth:.0f} MB over {idle:.0f} MB idle"
        assert GROWTH_CAP_MB < 0.5 * SESSIONS * REQUESTS * MESSAGE_MB  # the bound means something
    finally:
        process.terminate()
        await process.wait()
