"""pedsam.stream.fleet.link_meter: what the edge makes of its own traffic, on a made-up timeline and
through a relay of known rate and delay to a real tiny worker (``pytest -rP`` shows the figures)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import torch

from pedsam.protos import pedsam_pb2 as pb
from pedsam.protos import pedsam_pb2_grpc as pb_grpc
from pedsam.stream.fleet.link_meter import LinkMeter
from pedsam.stream.fleet.links import LinkRelay, LinkSpec
from pedsam.stream.fleet.remote import RemoteWorker
from pedsam.workers.server import WorkerModel
from tests.support import unstalled


def test_fifo_directions_and_the_worker_clock() -> None:
    meter = LinkMeter()
    assert meter.rtt is None and meter.up.rate is None and meter.down.rate is None
    meter.probed(0.0, 100.010, 0.020)  # the worker's clock is 100 s ahead of the edge's
    meter.probed(1.0, 101.020, 1.050)  # a slower probe changes neither the base round trip nor the clock
    assert meter.rtt == pytest.approx(0.020) and meter.last_rtt == pytest.approx(0.050)
    meter.sent(1, 1.0, 1000)
    meter.sent(2, 1.0, 1000)  # written at once: it waits on the link behind request 1
    # Results come back out of order; request 2's upload can only be timed once request 1's is.
    meter.answered(2, size=500, at=1.41, received=101.210, left=101.300)
    assert (meter.up.messages, meter.up.timed, meter.down.messages, meter.down.timed) == (1, 0, 1, 1)
    meter.answered(1, size=500, at=1.50, received=101.110, left=101.350)
    # Up: request 1 from 1.0 to 1.100 (arrival 1.110 minus 10 ms of propagation), request 2 from
    # 1.100 to 1.200. Down: result 2 from 1.300 to 1.400; result 1 left at 1.350 but the link was
    # busy with result 2 until 1.400, so from 1.400 to 1.490.
    assert meter.up.seconds == pytest.approx(0.200) and meter.up.bytes == 2000
    assert meter.up.mean_rate == pytest.approx(10_000)
    assert meter.down.seconds == pytest.approx(0.190) and meter.down.bytes == 1000
    summary = meter.summary()
    assert summary["rtt_ms"] == 20.0 and summary["rtt_last_ms"] == 50.0 and summary["probes"] == 2
    assert summary["up_messages"] == summary["up_timed_messages"] == 2 and summary["down_bytes"] == 1000


def test_a_request_read_late_times_neither_it_nor_the_one_behind_it() -> None:
    meter = LinkMeter()
    meter.probed(0.0, 0.005, 0.010)
    for request_id in (1, 2, 3):
        meter.sent(request_id, 1.0, 1000)
    meter.answered(1, size=10, at=2.0, received=0.0, left=1.9)  # the worker could not say when it arrived
    meter.answered(2, size=10, at=2.1, received=1.3, left=2.0)  # behind it: when did it start?
    meter.answered(3, size=10, at=2.2, received=1.4, left=2.1)
    # Every message is counted, only one is timed.
    assert meter.up.messages == 3 and meter.up.timed == 1 and meter.up.seconds == pytest.approx(0.1)
    assert meter.up.bytes == 3000 and meter.up.timed_bytes == 1000 and meter.down.messages == 3
    meter.sent(4, 3.0, 1000)
    meter.forget()  # the stream broke: request 4 will never be answered
    meter.sent(5, 4.0, 1000)
    meter.answered(5, size=10, at=4.3, received=4.2, left=4.25)
    # Request 4 never crossed as far as the edge knows: not counted.
    assert meter.up.messages == 4 and meter.up.timed == 2 and meter.up.seconds == pytest.approx(0.295)


def test_a_message_too_fast_to_time_is_still_counted() -> None:
    # On a fast link a result can arrive sooner than the clock estimate says it left: its transfer
    # is not timed, but it crossed, and the counts a user reads must say so.
    meter = LinkMeter()
    meter.probed(0.0, 0.0025, 0.004)  # worker clock 0.5 ms ahead
    meter.sent(1, 1.0, 5000)
    meter.answered(1, size=800, at=1.0040, received=1.0030, left=1.0060)
    assert (meter.down.messages, meter.down.bytes, meter.down.timed, meter.down.rate) == (1, 800, 0, None)
    assert (meter.up.messages, meter.up.timed) == (1, 1)
    summary = meter.summary()
    assert (summary["down_messages"], summary["down_timed_messages"], summary["down_timed_bytes"]) == (1, 0, 0)


@pytest.mark.parametrize("in_flight", [1, 3])
async def test_measured_link_is_the_set_link(tiny_workers: list[str], tiny_worker_model: WorkerModel,
                                             in_flight: int) -> None:
    model = tiny_worker_model
    spec = LinkSpec.parse("20mbit/50mbit:40ms")
    extents = [(14, 14)] * 8  # 400 kB each way per request: 160 ms up, 64 ms down
    tokens = torch.randn(8 * 196, model.preset.embed_dim, generator=torch.Generator().manual_seed(2))

    async def measure() -> LinkMeter:
        async with LinkRelay(tiny_workers[0], spec) as relay:
            worker = RemoteWorker(tiny_workers[0], fingerprint=model.fingerprint, via=relay.address,
                                  probe_interval=0.2)
            await worker.connect()
            try:
                for batch in range(6 // in_flight):
                    await asyncio.gather(*(worker.run(batch, 0, tokens, extents) for _ in range(in_flight)))
            finally:
                await worker.close()
        return worker.link

    def check(link: LinkMeter) -> None:
        print(f"{spec}, {in_flight} in flight: round trip {link.rtt * 1e3:.2f} ms, up {link.up.rate * 8e-6:.2f} "
              f"Mbit/s (all messages {link.up.mean_rate * 8e-6:.2f}), down {link.down.rate * 8e-6:.2f} Mbit/s "
              f"(all messages {link.down.mean_rate * 8e-6:.2f})")
        assert link.up.messages == link.down.messages == 6
        # The probe's round trip holds the link's and gRPC's own: 1-4 ms here, with the edge, the relay
        # and the worker on one event loop of a shared machine (more when the machine is busy). Each
        # way, the delay line may be half a ms early.
        assert spec.rtt - 0.001 <= link.rtt <= spec.rtt + 0.006
        # Rates: typically within 2 %; a busy event loop reads messages late, which lowers them.
        assert link.up.rate == pytest.approx(spec.up_bps / 8, rel=0.10)
        assert link.down.rate == pytest.approx(spec.down_bps / 8, rel=0.10)
        assert link.up.mean_rate == pytest.approx(spec.up_bps / 8, rel=0.10)
        assert link.down.mean_rate == pytest.approx(spec.down_bps / 8, rel=0.10)

    await unstalled(measure, check)


async def test_a_worker_without_probes_is_used_but_its_link_not_measured(tiny_worker_model: WorkerModel) -> None:
    class OlderWorker(pb_grpc.WindowWorkerServicer):
        """A worker from before link probes: Describe and Process, no Ping, no clock in results."""

        pings = 0

        async def Ping(self, request: pb.PingRequest, context: Any) -> pb.PingReply:
            OlderWorker.pings += 1
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not implemented!")  # as gRPC's own stub
            raise AssertionError("abort returned")

        async def Describe(self, request: pb.DescribeRequest, context: Any) -> pb.ModelInfo:
            return pb.ModelInfo(preset="tiny", fingerprint=tiny_worker_model.fingerprint)

        async def Process(self, requests: Any, context: Any) -> AsyncIterator[pb.SegmentResult]:
            async for request in requests:
                yield pb.SegmentResult(request_id=request.request_id, tokens=request.tokens)

    server = grpc.aio.server()
    pb_grpc.add_WindowWorkerServicer_to_server(OlderWorker(), server)
    address = "127.0.0.1:%d" % server.add_insecure_port("127.0.0.1:0")
    await server.start()
    worker = RemoteWorker(address, fingerprint=tiny_worker_model.fingerprint, probe_interval=0.05)
    try:
        await worker.connect()
        tokens = torch.randn(196, tiny_worker_model.preset.embed_dim)
        assert torch.equal(await worker.run(0, 0, tokens, [(14, 14)]), tokens)  # it echoes
        await asyncio.sleep(0.2)
    finally:
        await worker.close()
        await server.stop(0)
    assert OlderWorker.pings == 1  # one refused probe, then no more tries
    assert worker.link.probes == 0 and worker.link.rtt is None
    # Its messages are counted, their transfers not timed: there is no clock to time them by.
    assert worker.link.up.messages == worker.link.down.messages == 1
    assert worker.link.up.timed == worker.link.down.timed == 0
    assert worker.link.summary()["up_bytes_per_second"] is None
