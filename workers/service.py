"""A worker process: load the model's windowed blocks, serve them until told to stop.

``pedsam worker`` builds a :class:`WorkerSettings` from its flags and calls :func:`serve`; the
settings are checked once, here. The process holds only what a worker runs: the windowed blocks
and the per-token layers of the global blocks (see :class:`pedsam.workers.server.WorkerModel`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import signal
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
import torch
from grpc_health.v1 import health_pb2_grpc

from pedsam.workers.errors import ModelError
from pedsam.workers.metrics import WorkerCollector, serve_metrics
from pedsam.workers.models import ModelSource
from pedsam.workers.security import ServerSecurity
from pedsam.workers.server import WorkerLimits, WorkerModel, WorkerServer

__all__ = ["WorkerSettings", "is_loopback", "serve"]

log = logging.getLogger("pedsam.worker")


@dataclass(frozen=True, kw_only=True, slots=True)
class WorkerSettings:
    """Everything ``pedsam worker`` takes."""

    model: ModelSource
    host: str = "127.0.0.1"
    port: int = 0
    threads: int = 1
    max_message_mb: int = 256
    max_streams: int = WorkerLimits().max_streams
    stream_window_mb: float = WorkerLimits().stream_window_bytes / 2**20
    max_queued: int = WorkerLimits().max_queued_requests
    grace: float = 5.0
    health_port: int | None = None
    metrics_port: int | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    token_files: tuple[str, ...] = ()
    insecure: bool = False

    def __post_init__(self) -> None:
        if min(self.max_streams, self.max_queued, self.max_message_mb, self.threads) < 1 or self.stream_window_mb <= 0:
            raise ModelError("--max-streams, --max-queued, --max-message-mb, --threads and --stream-window-mb "
                             "must be positive")
        if not 0 <= self.port <= 65535:
            raise ModelError(f"--port {self.port} is not a TCP port")

    def security(self) -> ServerSecurity:
        """Plain text needs ``insecure``, except on a loopback address."""
        implied = not self.tls_cert and is_loopback(self.host)
        return ServerSecurity.from_files(
            cert=self.tls_cert, key=self.tls_key, client_ca=self.tls_client_ca,
            token_files=self.token_files, insecure=self.insecure or implied,
            plain_reason="--insecure" if self.insecure else "loopback only",
        )

    def limits(self) -> WorkerLimits:
        return WorkerLimits(
            max_message_bytes=self.max_message_mb * 1024 * 1024,
            max_streams=self.max_streams,
            max_queued_requests=self.max_queued,
            stream_window_bytes=int(self.stream_window_mb * 2**20),
        )


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or address, IPv6 with or without brackets) is this machine only."""
    name = host.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


async def serve(settings: WorkerSettings, *, ready: Sequence[str] = ()) -> int:
    """Serve until SIGINT or SIGTERM, then drain for ``settings.grace`` seconds.

    Prints ``pedsam worker serving on HOST:PORT ...`` once it serves (local workers and
    scripts read the address from that line).
    """
    torch.set_num_threads(settings.threads)
    security = settings.security()
    model = await asyncio.to_thread(WorkerModel, settings.model)
    server = WorkerServer(model, settings.limits(), security)
    address = await server.start(settings.host, settings.port)
    extras = []
    probe: grpc.aio.Server | None = None
    try:
        if settings.health_port is not None:
            # The kubelet's and Docker's probes speak plain-text gRPC and carry no token; this port
            # serves nothing but SERVING / NOT_SERVING, which reveals nothing of any frame.
            probe = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
            health_pb2_grpc.add_HealthServicer_to_server(server.health, probe)
            try:
                health_port = probe.add_insecure_port(f"{settings.host}:{settings.health_port}")
            except RuntimeError:
                health_port = 0
            if health_port == 0:
                raise OSError(f"cannot listen on {settings.host}:{settings.health_port} for health checks "
                              "(is the port in use?)")
            await probe.start()
            extras.append(f"health on port {health_port}")
        if settings.metrics_port is not None:
            info = {"preset": model.preset.name, "fingerprint": model.fingerprint[:12]}
            port = await asyncio.to_thread(
                serve_metrics, WorkerCollector(server.stats, info), settings.host, settings.metrics_port)
            extras.append(f"metrics on port {port}")
    except BaseException:
        await server.stop(0)
        raise
    print(
        f"pedsam worker serving on {address} model {settings.model.describe()} "
        f"fingerprint {model.fingerprint[:12]} ({', '.join([security.describe(), *extras])})",
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    waiter = asyncio.create_task(server.wait())
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        log.info("worker %s shutting down", address)
        await server.stop(settings.grace)
        if probe is not None:
            await probe.stop(0)
        for task in (waiter, stopper):
            task.cancel()
        await asyncio.wait({waiter, stopper})
    return 0
