"""Start worker processes on loopback for a session, and stop them on every exit path.

Each worker is ``pedsam worker --port 0 ...`` in a process of its own, forked by the session's
:class:`~pedsam.stream.fleet.spawner.Spawner` (one import of torch for all of them); it binds a
free port, prints its address once it is serving, and the launcher then confirms SERVING through
``grpc.health.v1``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import tempfile
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2

from pedsam.stream.errors import WorkerError
from pedsam.stream.fleet.spawner import SpawnedProcess, Spawner, adopt
from pedsam.workers.health import ask, status_name
from pedsam.workers.models import ModelSource

log = logging.getLogger(__name__)

_SERVING = re.compile(r"pedsam worker serving on (\S+)")


@dataclass
class LocalWorker:
    process: SpawnedProcess
    address: str


async def wait_serving(address: str, timeout: float) -> None:
    """Poll ``grpc.health.v1`` at ``address`` until it says SERVING, or raise WorkerError."""
    async with grpc.aio.insecure_channel(address) as channel:
        try:
            status = await ask(channel, timeout=timeout, wait_for_ready=True)
        except grpc.aio.AioRpcError as exc:
            raise WorkerError(f"worker {address} did not become healthy: {exc.code().name}") from None
    if status != health_pb2.HealthCheckResponse.SERVING:
        raise WorkerError(f"worker {address} reports {status_name(status)}")


def capture_path(folder: str, index: int) -> str:
    """Where local worker ``index`` keeps its capture in ``folder``."""
    return os.path.join(folder, f"worker-{index}.bin")


class LocalWorkers:
    """N worker child processes serving ``source`` on 127.0.0.1."""

    def __init__(
        self,
        count: int,
        source: ModelSource,
        *,
        threads: int = 1,
        start_timeout: float = 120.0,
        token: str | None = None,
        nice: int = 0,
        device: str = "cpu",
        compute_dtype: str = "fp32",
        capture: str | None = None,
    ) -> None:
        """``nice``: added to the workers' scheduling niceness (a live edge keeps its own
        frame path ahead of the keyframes the workers compute on the same machine).
        ``device``, ``compute_dtype``: each worker's ``--device`` and ``--compute-dtype`` (an edge
        passes its own, so a GPU edge's local workers share its GPU). ``capture``: a folder; worker
        ``i`` keeps every first-segment request it receives in ``worker-i.bin`` there
        (``pedsam worker --capture``), for ``pedsam attack-capture``."""
        if count < 1:
            raise WorkerError("--local-workers needs at least 1")
        self.nice = nice
        self.count = count
        self.source = source
        self.threads = threads
        self.device = device
        self.compute_dtype = compute_dtype
        self.start_timeout = start_timeout
        self.token = token
        self.capture = capture
        self._token_dir: tempfile.TemporaryDirectory[str] | None = None
        self.workers: list[LocalWorker] = []
        self._spawner: Spawner | None = None

    @property
    def addresses(self) -> list[str]:
        return [w.address for w in self.workers]

    async def start(self) -> list[str]:
        """Start all workers concurrently; on any failure stop those already started."""
        try:
            self._spawner = adopt()
            await self._spawner.start()
            started = await asyncio.gather(*(self._start_one(i) for i in range(self.count)), return_exceptions=True)
            for item in started:
                if isinstance(item, LocalWorker):
                    self.workers.append(item)
            errors = [item for item in started if isinstance(item, BaseException)]
            if errors:
                raise errors[0]
            await asyncio.gather(*(wait_serving(w.address, self.start_timeout) for w in self.workers))
        except BaseException:
            await self.stop()
            raise
        return self.addresses

    async def _start_one(self, index: int) -> LocalWorker:
        assert self._spawner is not None
        args = [
            "worker",
            "--host", "127.0.0.1", "--port", "0",
            "--model", self.source.preset,
            "--seed", str(self.source.seed),
            "--threads", str(self.threads),
            "--device", self.device,
            "--compute-dtype", self.compute_dtype,
            "--stop-on-stdin-eof",  # its stdin is a pipe from this process: it ends when we do
        ]
        if self.token is not None:
            args += ["--token-file", self._token_file()]
        if self.capture is not None:
            args += ["--capture", capture_path(self.capture, index)]
        if self.source.checkpoint:
            args += ["--checkpoint", self.source.checkpoint]
        spawning = asyncio.ensure_future(self._spawner.spawn(args, nice=self.nice))
        try:
            process = await asyncio.shield(spawning)
        except asyncio.CancelledError:
            # Asked for already: the child exists (or soon will); stop it before giving up, so
            # nothing it needs (its token file) is removed under it.
            await _terminate(await spawning)
            raise
        try:
            address = await asyncio.wait_for(self._read_address(process), self.start_timeout)
        except BaseException:
            await _terminate(process)
            raise
        log.info("local worker %d serving on %s (pid %d)", index, address, process.pid)
        return LocalWorker(process=process, address=address)

    @staticmethod
    async def _read_address(process: SpawnedProcess) -> str:
        assert process.stdout is not None
        while True:
            line = await process.stdout.readline()
            if not line:
                code = await process.wait()
                raise WorkerError(f"local worker exited with status {code} before serving")
            match = _SERVING.search(line.decode(errors="replace"))
            if match:
                return match.group(1)

    def _token_file(self) -> str:
        """The session token in a file only this user can read (never on a command line)."""
        if self._token_dir is None:
            self._token_dir = tempfile.TemporaryDirectory(prefix="pedsam-token-")
            path = os.path.join(self._token_dir.name, "token")
            with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as file:
                file.write((self.token or "") + "\n")
        return os.path.join(self._token_dir.name, "token")

    async def stop(self) -> None:
        """SIGTERM every worker, wait for them to drain, SIGKILL any that linger."""
        workers, self.workers = self.workers, []
        await asyncio.gather(*(_terminate(w.process) for w in workers))
        if self._spawner is not None:
            spawner, self._spawner = self._spawner, None
            await spawner.close()
        if self._token_dir is not None:
            self._token_dir.cleanup()
            self._token_dir = None

    async def __aenter__(self) -> LocalWorkers:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def _terminate(process: SpawnedProcess, timeout: float = 10.0) -> None:
    if process.returncode is None:
        try:
            process.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            await asyncio.wait_for(process.wait(), timeout)
        except asyncio.TimeoutError:
            process.kill()
            await process.wait()
    if process.stdin is not None:
        process.stdin.close()
    # Drain what the worker printed so its pipe is not left open.
    if process.stdout is not None:
        try:
            await process.stdout.read()
        except Exception:
            pass
