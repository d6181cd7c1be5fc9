"""Start local worker processes by forking them from one helper process that holds torch, instead
of starting a fresh Python for each.

A worker process spends about 3.5 CPU seconds importing torch before it builds its model; three
local workers and their edge paid that four times over, most of a short run on a 2-core edge. The
command line forks the helper (:func:`pedsam.stream.cli.forkserver.prestart`) once it has
imported torch and before it imports the edge's code, and offers it here (:func:`offered`); a
:class:`Spawner` with no helper offered starts one as a fresh interpreter
(``python -m pedsam.stream.cli.helper``). The helper imports the rest of what ``pedsam worker``
imports, computes nothing, and forks a child for each worker asked for. Each child runs
``pedsam worker`` with the arguments given, as its own process: its own model, gRPC server and
threads, stdin and stdout pipes to the edge as before, killable and stoppable on its own.

Off Linux (macOS's system frameworks are not safe to fork without exec) the helper imports
nothing and each child executes ``python -m pedsam.stream`` instead: slower, same processes.

Why a helper, and not workers forked from the edge when they are asked for: by then the edge has
run torch, and a child forked from a process whose OpenMP pool exists hangs at its first
parallel loop (GNU libgomp keeps no state across fork). The helper is forked before any of that
and itself never computes, creates no thread and no gRPC object before it forks.

The edge and the helper talk over a Unix socket pair, one JSON message per datagram:

- edge to helper: ``{"argv": [...], "nice": n}`` with two descriptors attached (the child's
  stdin and stdout);
- helper to edge: ``{"spawned": pid}`` in request order, then ``{"exited": pid, "status": s}``
  when a child ends (``s`` as :attr:`asyncio.subprocess.Process.returncode`: the exit code, or
  minus the signal). The helper ends when the edge's end of the socket closes; its children
  then see their stdin close too and stop (``--stop-on-stdin-eof``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from pedsam.stream.errors import WorkerError

HELPER = "pedsam.stream.cli.helper"  # the helper's module (python -m), in the command line's layer
MESSAGE = 1 << 16  # bytes: the largest message either way


class _Pipe:
    """The write end of a child's stdin: the edge writes nothing, and closing it tells the child
    its edge is gone."""

    def __init__(self, fd: int) -> None:
        self.fd: int | None = fd

    def close(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)


class SpawnedProcess:
    """A worker forked by the helper: the parts of :class:`asyncio.subprocess.Process` that
    :class:`~pedsam.stream.fleet.local.LocalWorkers` uses (pid, stdin, stdout, signals, wait)."""

    def __init__(self, pid: int, stdin: _Pipe, stdout: asyncio.StreamReader) -> None:
        self.pid = pid
        self.stdin = stdin
        self.stdout = stdout
        self.returncode: int | None = None
        self._ended = asyncio.get_running_loop().create_future()

    def _exited(self, status: int) -> None:
        self.returncode = status
        if not self._ended.done():
            self._ended.set_result(status)

    def send_signal(self, sig: int) -> None:
        if self.returncode is not None:  # its pid may belong to another process by now
            raise ProcessLookupError(self.pid)
        os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    async def wait(self) -> int:
        return await asyncio.shield(self._ended)


class Spawner:
    """The edge's end of the helper. :meth:`launch` (or ``await start()``), then
    ``await spawn(argv)`` per worker; ``await close()`` ends the helper (children it forked live
    on until their stdin closes)."""

    def __init__(self) -> None:
        self._socket: socket.socket | None = None
        self._helper: _Helper | None = None
        self._reading = False
        self._waiting: deque[asyncio.Future[int]] = deque()
        self._children: dict[int, SpawnedProcess] = {}
        self._early: dict[int, int] = {}  # exits reported before their process object existed
        self._watchers: set[asyncio.Task[None]] = set()
        self.adopted = False  # taken by a LocalWorkers (see :func:`offered`)

    def launch(self) -> None:
        """Start the helper now; it imports torch while this process goes on (no event loop
        needed)."""
        if self._helper is not None:
            return
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            theirs.set_inheritable(True)  # the one descriptor it gets besides /dev/null
            pid = os.posix_spawn(
                sys.executable, [sys.executable, "-m", HELPER, str(theirs.fileno())], os.environ,
                file_actions=[(os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_RDWR, 0) for fd in (0, 1)],
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.adopt_helper(ours, pid)

    def adopt_helper(self, channel: socket.socket, pid: int) -> None:
        """Use a helper that is a child of this process (forked by the command line, or started
        by :meth:`launch`): ``channel`` is this end of its socket."""
        channel.setblocking(False)
        self._socket, self._helper = channel, _Helper(pid)

    async def start(self) -> None:
        self.launch()
        if self._socket is not None and not self._reading:
            asyncio.get_running_loop().add_reader(self._socket.fileno(), self._read)
            self._reading = True

    async def spawn(self, argv: list[str], *, nice: int = 0) -> SpawnedProcess:
        """Fork a child running ``pedsam <argv>``, its stdin and stdout piped to this process."""
        if self._socket is None:
            raise WorkerError("the worker spawner is not running")
        await self.start()
        loop = asyncio.get_running_loop()
        child_in, edge_in = os.pipe()
        edge_out, child_out = os.pipe()
        stdin = _Pipe(edge_in)
        try:
            try:
                message = json.dumps({"argv": argv, "nice": nice}).encode()
                socket.send_fds(self._socket, [message], [child_in, child_out])
            finally:
                os.close(child_in)
                os.close(child_out)
            reply: asyncio.Future[int] = loop.create_future()
            self._waiting.append(reply)
            pid = await reply
        except BaseException:
            stdin.close()
            os.close(edge_out)
            raise
        stdout = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdout), os.fdopen(edge_out, "rb", 0))
        process = SpawnedProcess(pid, stdin, stdout)
        self._children[pid] = process
        if pid in self._early:
            process._exited(self._early.pop(pid))
        return process

    def _read(self) -> None:
        assert self._socket is not None
        while True:
            try:
                data = self._socket.recv(MESSAGE)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._lost("the worker spawner ended")
                return
            message: dict[str, Any] = json.loads(data)
            if "spawned" in message or "error" in message:
                reply = self._waiting.popleft()
                if not reply.done():
                    if "error" in message:
                        reply.set_exception(WorkerError(f"could not start a local worker: {message['error']}"))
                    else:
                        reply.set_result(int(message["spawned"]))
            elif "exited" in message:
                pid, status = int(message["exited"]), int(message["status"])
                child = self._children.pop(pid, None)
                if child is None:
                    self._early[pid] = status
                else:
                    child._exited(status)

    def _lost(self, why: str) -> None:
        """The helper is gone: nothing more will be spawned, and no exit will be reported."""
        if self._socket is not None:
            if self._reading:
                asyncio.get_running_loop().remove_reader(self._socket.fileno())
                self._reading = False
            self._socket.close()
            self._socket = None
        while self._waiting:
            reply = self._waiting.popleft()
            if not reply.done():
                reply.set_exception(WorkerError(why))
        # Children still running were orphaned: report each as ended once it is gone.
        for child in self._children.values():
            task = asyncio.get_running_loop().create_task(_watch(child))
            self._watchers.add(task)
            task.add_done_callback(self._watchers.discard)
        self._children.clear()

    async def close(self) -> None:
        """End the helper: it exits when its end of the socket reads end of file."""
        if self._socket is not None:
            self._lost("the worker spawner was closed")
        if self._helper is not None:
            helper, self._helper = self._helper, None
            await asyncio.to_thread(helper.wait, 10.0)

    def discard(self) -> None:
        """End a helper that was never asked for a worker (maybe still importing): kill it."""
        if self._socket is not None and not self._reading:
            self._socket.close()
            self._socket = None
        if self._helper is not None:
            helper, self._helper = self._helper, None
            helper.kill()
            helper.wait()


class _Helper:
    """The helper process, a child of this one."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> None:
        """Reap it; after ``timeout`` seconds kill it first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                pid, _ = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                return
            if pid:
                return
            if deadline is not None and time.monotonic() > deadline:
                self.kill()
                deadline = None
            time.sleep(0.02)


_OFFERED: ContextVar[Spawner | None] = ContextVar("pedsam_offered_spawner", default=None)


@contextlib.contextmanager
def offered(spawner: Spawner) -> Iterator[None]:
    """Within the block, ``spawner`` (its helper started early by the command line, before it
    imports the edge's code) for the first :class:`~pedsam.stream.fleet.local.LocalWorkers` to
    take (:func:`adopt`). One never taken is killed at the end."""
    token = _OFFERED.set(spawner)
    try:
        yield
    finally:
        _OFFERED.reset(token)
        if not spawner.adopted:
            spawner.discard()


def adopt() -> Spawner:
    """The spawner :func:`offered` if nobody took it yet, else a new one."""
    spawner = _OFFERED.get()
    if spawner is None or spawner.adopted:
        spawner = Spawner()
    spawner.adopted = True
    return spawner


async def _watch(child: SpawnedProcess) -> None:
    """Poll for a child's end once its exit can no longer be reported (status unknown: -1)."""
    while child.returncode is None:
        try:
            os.kill(child.pid, 0)
        except ProcessLookupError:
            child._exited(-1)
            return
        await asyncio.sleep(0.05)
