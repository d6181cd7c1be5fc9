"""Local workers forked by the spawner: each a process of its own, as a user and the edge see it."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest
import torch

from pedsam.stream.errors import WorkerError
from pedsam.stream.fleet.remote import RemoteWorker
from pedsam.stream.fleet.spawner import Spawner
from pedsam.workers.server import WorkerModel
from tests.support import edge_imports

WORKER = ["worker", "--host", "127.0.0.1", "--port", "0", "--model", "tiny", "--stop-on-stdin-eof"]


async def serving_address(stdout: asyncio.StreamReader) -> str:
    line = (await asyncio.wait_for(stdout.readline(), 120)).decode()
    assert line.startswith("pedsam worker serving on"), line
    return line.split()[4]


async def test_spawned_workers_compute_on_their_own_and_report_how_they_ended(
    tiny_worker_model: WorkerModel,
) -> None:
    """Two workers with two threads each (a parallel loop in a child forked after the parent
    had run one would hang): both answer exactly, then one ends on SIGTERM (status 0), the
    other on SIGKILL (-9), and each status reaches the edge."""
    spawner = Spawner()
    await spawner.start()
    try:
        children = [await spawner.spawn([*WORKER, "--threads", "2"]) for _ in range(2)]
        assert len({child.pid for child in children} | {os.getpid()}) == 3
        for child in children:
            assert Path(f"/proc/{child.pid}/comm").read_text().strip() == "pedsam-worker"
            client = RemoteWorker(await serving_address(child.stdout), fingerprint=tiny_worker_model.fingerprint)
            await client.connect()
            try:
                tokens = torch.randn(14 * 14, 64)
                got = await client.run(0, 1, tokens, [(14, 14)])
                torch.testing.assert_close(got, tiny_worker_model.runner.run(1, tokens, [(14, 14)]))
            finally:
                await client.close()
        children[0].terminate()
        children[1].kill()
        assert await asyncio.wait_for(children[0].wait(), 30) == 0
        assert await asyncio.wait_for(children[1].wait(), 30) == -signal.SIGKILL
        with pytest.raises(ProcessLookupError):  # an ended child's pid is never signalled again
            children[0].terminate()
    finally:
        await spawner.close()


async def test_a_spawned_worker_that_cannot_start_says_why_and_exits_2(capfd: pytest.CaptureFixture[str]) -> None:
    spawner = Spawner()
    await spawner.start()
    try:
        child = await spawner.spawn([*WORKER, "--checkpoint", "/nonexistent/sam.pth"])
        assert await child.stdout.read() == b""  # never served
        assert await asyncio.wait_for(child.wait(), 60) == 2
    finally:
        await spawner.close()
    err = capfd.readouterr().err
    assert "pedsam: error:" in err and "/nonexistent/sam.pth" in err and "Traceback" not in err


async def test_closing_the_edge_s_end_stops_the_spawner_and_its_children() -> None:
    """What the edge's death looks like to its workers: their stdin and the spawner's socket
    close. Nothing is left running."""
    spawner = Spawner()
    await spawner.start()
    child = await spawner.spawn(WORKER)
    await serving_address(child.stdout)
    assert spawner._helper is not None
    helper = spawner._helper.pid
    await spawner.close()
    assert not Path(f"/proc/{helper}").exists()  # ended, and reaped
    child.stdin.close()
    for _ in range(200):  # it drains for at most --grace (5 s)
        if not Path(f"/proc/{child.pid}").exists():
            break
        await asyncio.sleep(0.05)
    assert not Path(f"/proc/{child.pid}").exists(), "a spawned worker outlived its edge"
    with pytest.raises(WorkerError, match="not running"):
        await spawner.spawn(WORKER)


async def test_a_spawned_worker_imports_nothing_of_the_edge(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str],
) -> None:
    """The spawner preloads what ``pedsam worker`` imports and no more: a forked worker holds
    no OpenCV, PyAV or aiortc, as one started on its own (tests/e2e/test_cli.py). And a SIGTERM
    sent as soon as it says it serves is one it drains on (exit 0), not one that kills it."""
    monkeypatch.setenv("PYTHONPROFILEIMPORTTIME", "1")  # the spawner's imports, and its child's
    spawner = Spawner()
    await spawner.start()
    try:
        child = await spawner.spawn(WORKER)
        await serving_address(child.stdout)
        child.terminate()
        assert await asyncio.wait_for(child.wait(), 30) == 0
    finally:
        await spawner.close()
    assert edge_imports(capfd.readouterr().err) == []


async def test_where_fork_alone_is_unsafe_each_worker_is_a_fresh_interpreter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The path macOS takes (PEDSAM_WORKERS_EXEC=1 here): the child executes ``python -m
    pedsam.stream worker ...`` and is otherwise the same process to the edge."""
    monkeypatch.setenv("PEDSAM_WORKERS_EXEC", "1")
    spawner = Spawner()
    await spawner.start()
    try:
        child = await spawner.spawn(WORKER)
        await serving_address(child.stdout)
        command = Path(f"/proc/{child.pid}/cmdline").read_bytes().split(b"\0")
        assert command[1:4] == [b"-m", b"pedsam.stream", b"worker"]
        child.terminate()
        assert await asyncio.wait_for(child.wait(), 30) == 0
    finally:
        await spawner.close()
