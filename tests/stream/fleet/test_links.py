"""pedsam.stream.fleet.links: the text form, and the relay on real loopback sockets: its rate each
way, its round trip, and a real tiny gRPC worker behind it giving exact results.

The timing tests print what they measured: ``pytest -rP tests/stream/fleet`` shows it."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator

import pytest
import torch

from pedsam.stream.errors import ConfigError, WorkerError
from pedsam.stream.fleet.links import MAX_LAG, PROFILES, LinkRelay, LinkSpec, _chunk, _TokenBucket, parse_links
from pedsam.stream.fleet.remote import RemoteWorker
from pedsam.workers.server import WorkerModel
from tests.support import unstalled

CHUNK = 64 * 1024


def test_text_forms_and_profiles() -> None:
    both = LinkSpec.parse("100mbit:10ms")
    assert (both.up_bps, both.down_bps, both.rtt, both.one_way) == (100e6, 100e6, 0.010, 0.005)
    split = LinkSpec.parse(" 20mbit/50MBIT:50ms ")
    assert (split.up_bps, split.down_bps, split.rtt) == (20e6, 50e6, 0.050)
    assert split == PROFILES["lte"] == LinkSpec.parse("LTE")
    assert PROFILES["lan"] == LinkSpec.parse("1gbit:1ms") and PROFILES["wifi"] == LinkSpec.parse("100mbit:10ms")
    assert LinkSpec.parse("1.5kbit/2gbit:250us") == LinkSpec(up_bps=1500, down_bps=2e9, rtt=250e-6)
    assert LinkSpec.parse("512kbit:0s").rtt == 0
    for spec in (both, split, LinkSpec.parse("1.5mbit/300kbit:2.5ms")):
        assert LinkSpec.parse(str(spec)) == spec
    assert str(split) == "20mbit/50mbit:50ms"
    assert parse_links("lan, 20mbit/50mbit:50ms") == (PROFILES["lan"], PROFILES["lte"])
    assert parse_links(None) == parse_links(" ") == ()


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("100mbit", "give RATE:RTT such as 100mbit:10ms"),
        ("satellite", "or one of lan, wifi, lte"),
        ("100mb:10ms", "rate '100mb' is not a number with a unit (bit, kbit, mbit, gbit)"),
        ("100mbit:10", "round trip '10' is not a number with a unit (us, ms, s)"),
        ("fast:10ms", "rate 'fast'"),
        ("0mbit:10ms", "rate '0mbit' must be positive"),
        ("1mbit/2mbit/3mbit:1ms", "at most two rates"),
        ("-5mbit:1ms", "rate '-5mbit' is not a number"),
        ("10mbit:2min", "round trip '2min'"),
        ("10mbit:90s", "outside 0..60 s"),
    ],
)
def test_bad_specs_say_what_is_wrong(text: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        LinkSpec.parse(text)
    assert words in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(ConfigError, match="empty item"):
        parse_links("lte,,wifi")


@pytest.fixture
async def far_end() -> AsyncIterator[tuple[str, dict[str, tuple[int, float]]]]:
    """A loopback server behind the relay. Its first byte picks what it does: ``p`` echoes (ping
    pong); ``x`` reads until end of stream while sending the number of bytes in the next 10 bytes
    (both ways at once). ``seen["up"]``: (bytes after the first chunk, seconds from first to last)."""
    seen: dict[str, tuple[int, float]] = {}

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        mode = await reader.readexactly(1)
        if mode == b"p":
            while data := await reader.read(CHUNK):
                writer.write(data)
                await writer.drain()
        else:
            size = int(await reader.readexactly(10))

            async def send() -> None:
                for start in range(0, size, CHUNK):
                    writer.write(bytes(min(CHUNK, size - start)))
                    await writer.drain()
                writer.write_eof()

            sending = asyncio.create_task(send())
            seen["up"] = await timed_read(reader)
            await sending
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield "127.0.0.1:%d" % server.sockets[0].getsockname()[1], seen
    finally:
        server.close()
        await server.wait_closed()


async def timed_read(reader: asyncio.StreamReader) -> tuple[int, float]:
    """Read to the end: bytes after the first chunk, and seconds from the first chunk to the last
    (so the time a link takes to deliver its first byte is left out)."""
    await reader.read(1)
    first, size = time.perf_counter(), 0
    while data := await reader.read(CHUNK):
        size += len(data)
        last = time.perf_counter()
    return size, last - first


async def connect(address: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = address.rsplit(":", 1)
    return await asyncio.open_connection(host, int(port))


async def test_each_direction_runs_at_its_rate_at_the_same_time(far_end) -> None:
    address, seen = far_end
    spec = LinkSpec.parse("20mbit/60mbit:20ms")
    up_size, down_size = int(spec.up_bps / 8), int(spec.down_bps / 8)  # a second's worth each way

    async def measure() -> tuple[float, float]:
        async with LinkRelay(address, spec) as relay:
            reader, writer = await connect(relay.address)
            writer.write(b"x%010d" % down_size)

            async def upload() -> None:
                for start in range(0, up_size, CHUNK):
                    writer.write(bytes(min(CHUNK, up_size - start)))
                    await writer.drain()
                writer.write_eof()

            uploading = asyncio.create_task(upload())
            down = await timed_read(reader)
            await uploading
            writer.close()
            assert relay.carried_down == down_size
        up = seen["up"]
        return up[0] * 8 / up[1], down[0] * 8 / down[1]

    def check(rates: tuple[float, float]) -> None:
        up_rate, down_rate = rates
        print(f"{spec}: up {up_rate / 1e6:.2f} Mbit/s, down {down_rate / 1e6:.2f} Mbit/s")  # pytest -rP shows it
        assert up_rate == pytest.approx(spec.up_bps, rel=0.05), f"up {up_rate / 1e6:.2f} Mbit/s"
        assert down_rate == pytest.approx(spec.down_bps, rel=0.05), f"down {down_rate / 1e6:.2f} Mbit/s"

    await unstalled(measure, check)


async def test_a_sender_catching_up_lets_the_loop_run_between_chunks() -> None:
    """A backlogged sender woken late may send MAX_LAG of its rate at once; the loop's other
    tasks (other links, the edge's frames) still run between its chunks."""
    bucket = _TokenBucket(1e9)
    chunk = _chunk(1e9)
    await asyncio.sleep(MAX_LAG)  # the sender was woken this late, with bytes waiting all along
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    ticking = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    start, sent = ticks, 0
    while sent < 1e9 / 8 * MAX_LAG / 2:  # half the allowance: never a wait on the clock
        await bucket.take(chunk, waiting=True)
        sent += chunk
    ticking.cancel()
    assert ticks - start >= sent // chunk - 1


@pytest.mark.parametrize("profile", ["wifi", "lte"])
async def test_round_trip_is_the_set_delay(far_end, profile: str) -> None:
    address, _ = far_end
    spec = PROFILES[profile]

    async def measure() -> list[float]:
        async with LinkRelay(address, spec) as relay:
            reader, writer = await connect(relay.address)
            writer.write(b"p")
            times = []
            for _ in range(20):
                started = time.perf_counter()
                writer.write(b"0123456789abcdef")
                await writer.drain()
                assert await reader.readexactly(16) == b"0123456789abcdef"
                times.append(time.perf_counter() - started)
            writer.close()
        return times

    def check(times: list[float]) -> None:
        print(f"{spec}: round trip median {statistics.median(times) * 1e3:.2f} ms, least {min(times) * 1e3:.2f} ms")
        # Timers wake up to half a millisecond early (links.TIMER_GRAIN), never a whole one.
        assert min(times) > spec.rtt - 0.001
        median = statistics.median(times)
        # and the process is woken up to about a millisecond late each way (see links.TIMER_GRAIN)
        assert median == pytest.approx(spec.rtt, abs=0.003), f"{median * 1e3:.2f} ms"

    await unstalled(measure, check)


async def test_a_grpc_worker_behind_a_link_gives_exact_results(
    tiny_workers: list[str], tiny_worker_model: WorkerModel
) -> None:
    model = tiny_worker_model
    spec = LinkSpec.parse("40mbit/80mbit:10ms")
    async with LinkRelay(tiny_workers[0], spec) as relay:
        worker = RemoteWorker(tiny_workers[0], fingerprint=model.fingerprint, via=relay.address, probe_interval=None)
        await worker.connect()
        try:
            assert worker.name == tiny_workers[0]  # the worker keeps its own name behind the link
            extents = [(14, 14), (4, 14), (14, 4), (14, 14)]
            tokens = torch.randn(sum(h * w for h, w in extents), model.preset.embed_dim,
                                 generator=torch.Generator().manual_seed(1))
            for segment in (0, 1):
                started = time.perf_counter()
                got = await worker.run(3, segment, tokens, extents)
                took = time.perf_counter() - started
                assert torch.equal(got, model.runner.run(segment, tokens, extents))
                # The bytes really crossed the shaped link: no faster than its rates and delay allow.
                assert took >= 0.95 * (4 * tokens.numel() * 8 / spec.up_bps + 4 * tokens.numel() * 8 / spec.down_bps
                                       + spec.rtt)
        finally:
            await worker.close()
        assert relay.carried_up >= worker.stats.message_sent and relay.carried_down >= worker.stats.message_received


async def test_a_refused_target_looks_like_a_dead_worker(tiny_worker_model: WorkerModel) -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    dead = "127.0.0.1:%d" % server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    async with LinkRelay(dead, PROFILES["wifi"]) as relay:
        worker = RemoteWorker(dead, fingerprint=tiny_worker_model.fingerprint, via=relay.address, connect_timeout=5)
        started = time.perf_counter()
        with pytest.raises(WorkerError, match=f"worker {dead} is unreachable"):
            await worker.connect()
        assert time.perf_counter() - started < 2  # refused at once, not after the timeout


async def test_closing_the_relay_cuts_its_connections(far_end) -> None:
    address, _ = far_end
    relay = LinkRelay(address, PROFILES["lan"])
    listening = await relay.start()
    reader, writer = await connect(listening)
    writer.write(b"p")
    writer.write(b"ping")
    assert await reader.readexactly(4) == b"ping"
    await relay.close()
    assert await asyncio.wait_for(reader.read(), 2) == b""
    writer.close()
    with pytest.raises(ConnectionRefusedError):
        await connect(listening)
