"""A worker process: load the model's windowed blocks, serve them until told to stop.

``pedsam worker`` builds a :class:`WorkerSettings` from its flags and calls :func:`serve`; the
settings are checked once, here, and the device (``--device``, ``--compute-dtype``; see
:mod:`pedsam.workers.device`) is selected before the model is built or a port is bound. The
process holds only what a worker runs: the windowed blocks and the per-token layers of the global
blocks (see :class:`pedsam.workers.server.WorkerModel`), on its device.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
import torch
from grpc_health.v1 import health_pb2_grpc

from pedsam.workers.capture import CaptureWriter
from pedsam.workers.device import Placement, check_request, select
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
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    compute_dtype: str = "fp32"  # fp32 | bf16 | fp16 (the latter two on a GPU only)
    device_memory_mb: float | None = None  # one request's device memory; None: 80 % of free (CUDA)
    # Shut down when standard input closes: an edge keeps its local workers' stdin open, so they
    # stop with it however it ends (kill -9 included) instead of holding their memory.
    stop_on_stdin_eof: bool = False
    # Append every first-segment request, as it arrived, to this file (pedsam.workers.capture).
    capture: str | None = None

    def __post_init__(self) -> None:
        if min(self.max_streams, self.max_queued, self.max_message_mb, self.threads) < 1 or self.stream_window_mb <= 0:
            raise ModelError("--max-streams, --max-queued, --max-message-mb, --threads and --stream-window-mb "
                             "must be positive")
        if not 0 <= self.port <= 65535:
            raise ModelError(f"--port {self.port} is not a TCP port")
        if self.device_memory_mb is not None and self.device_memory_mb <= 0:
            raise ModelError("--device-memory-mb must be positive")
        check_request(self.device, self.compute_dtype)

    def security(self) -> ServerSecurity:
        """Plain text needs ``insecure``, except on a loopback address."""
        implied = not self.tls_cert and is_loopback(self.host)
        return ServerSecurity.from_files(
            cert=self.tls_cert, key=self.tls_key, client_ca=self.tls_client_ca,
            token_files=self.token_files, insecure=self.insecure or implied,
            plain_reason="--insecure" if self.insecure else "loopback only",
        )

    def limits(self, model: WorkerModel | None = None) -> WorkerLimits:
        """The limits; the device memory one comes from ``--device-memory-mb``, else from
        ``model``'s device (:meth:`WorkerModel.default_device_memory`)."""
        memory = int(self.device_memory_mb * 2**20) if self.device_memory_mb is not None else None
        if memory is None and model is not None:
            memory = model.default_device_memory()
        return WorkerLimits(
            max_message_bytes=self.max_message_mb * 1024 * 1024,
            max_streams=self.max_streams,
            max_queued_requests=self.max_queued,
            stream_window_bytes=int(self.stream_window_mb * 2**20),
            device_memory_bytes=memory,
        )

    def placement(self) -> Placement:
        """The device this worker computes on (:func:`pedsam.workers.device.select`).

        Raises:
            DeviceError: a device this machine does not have, or a precision it cannot run.
        """
        return select(self.device, self.compute_dtype)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or address, IPv6 with or without brackets) is this machine only."""
    name = host.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _stop_on_eof(loop: asyncio.AbstractEventLoop, fd: int, stop: asyncio.Event) -> None:
    """Set ``stop`` once ``fd`` reads end of file (whatever else arrives is discarded).

    Read on a thread rather than watched by the loop: epoll refuses regular files and
    ``/dev/null``, which a script may well give a worker as its standard input."""

    def drain() -> None:
        while True:
            try:
                if not os.read(fd, 4096):
                    break
            except OSError:
                break
        log.warning("standard input closed: the process that started this worker is gone; shutting down")
        with contextlib.suppress(RuntimeError):  # the loop already ended: nothing left to stop
            loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=drain, name="stdin-eof", daemon=True).start()


async def serve(settings: WorkerSettings, *, ready: Sequence[str] = ()) -> int:
    """Serve until SIGINT or SIGTERM, then drain for ``settings.grace`` seconds.

    Prints ``pedsam worker serving on HOST:PORT ... device DEVICE ...`` once it serves (local
    workers and scripts read the address from that line).

    Raises:
        DeviceError: before any work, when the device asked for is not there.
    """
    placement = settings.placement()
    torch.set_num_threads(settings.threads)
    security = settings.security()
    model = await asyncio.to_thread(WorkerModel, settings.model, placement)
    limits = settings.limits(model)
    capture = CaptureWriter(settings.capture) if settings.capture else None
    server = WorkerServer(model, limits, security, capture)
    try:
        address = await server.start(settings.host, settings.port)
    except BaseException:
        if capture is not None:
            capture.close()
        raise
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
            device = {"device": placement.device, "name": placement.name, "compute_dtype": placement.compute_dtype}
            collector = WorkerCollector(server.stats, info, device=device,
                                        device_memory_bytes=limits.request_device_memory)
            port = await asyncio.to_thread(serve_metrics, collector, settings.host, settings.metrics_port)
            extras.append(f"metrics on port {port}")
    except BaseException:
        await server.stop(0)
        if capture is not None:
            capture.close()
        raise
    if placement.note:
        extras.append(placement.note)
    if capture is not None:
        extras.append(f"capturing first-segment requests into {capture.path}")
    if limits.request_device_memory is not None:
        extras.append(f"{limits.request_device_memory / 2**20:.0f} MiB of device memory a request, "
                      f"at most {server.max_windows} windows")
    # Before the line that says it serves: a SIGTERM sent as soon as it is read drains, too.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(
        f"pedsam worker serving on {address} model {settings.model.describe()} "
        f"fingerprint {model.fingerprint[:12]} device {placement.describe()} [{placement.reason}] "
        f"({', '.join([security.describe(), *extras])})",
        flush=True,
    )
    if settings.stop_on_stdin_eof:
        _stop_on_eof(loop, sys.stdin.fileno(), stop)
    waiter = asyncio.create_task(server.wait())
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        log.info("worker %s shutting down", address)
        await server.stop(settings.grace)
        if capture is not None:
            capture.close()
        if probe is not None:
            await probe.stop(0)
        for task in (waiter, stopper):
            task.cancel()
        await asyncio.wait({waiter, stopper})
    return 0
