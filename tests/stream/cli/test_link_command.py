"""``pedsam link SPEC HOST:PORT``: an emulated link in front of a worker, as a command."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
import time

from tests.support import assert_one_line_error, pedsam


async def test_link_command_relays_with_its_delay_until_interrupted() -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1024):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    target = "127.0.0.1:%d" % server.sockets[0].getsockname()[1]
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pedsam.stream", "link", "wifi", target,
        stdout=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        match = re.fullmatch(rf"pedsam link 100mbit:10ms to {target} on 127\.0\.0\.1:(\d+)\n", line)
        assert match, line
        reader, writer = await asyncio.open_connection("127.0.0.1", int(match.group(1)))
        times = []
        for _ in range(5):
            started = time.perf_counter()
            writer.write(b"ping")
            assert await reader.readexactly(4) == b"ping"
            times.append(time.perf_counter() - started)
        assert min(times) >= 0.009  # the profile's 10 ms round trip (to within the timer's grain)
        process.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(process.wait(), 10) == 130
        assert await asyncio.wait_for(reader.read(), 5) == b""  # its connections went with it
        writer.close()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        server.close()
        await server.wait_closed()


async def test_link_command_refuses_a_bad_spec_in_one_line() -> None:
    assert_one_line_error(await pedsam("link", "100mbps:10ms", "127.0.0.1:1"), "rate '100mbps' is not a number")
