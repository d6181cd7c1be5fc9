"""``pedsam worker``: serve one model's windowed blocks over gRPC."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import signal
import sys
from collections.abc import Sequence

import grpc
import torch
from grpc_health.v1 import health_pb2_grpc

from pedsam.workers.errors import ModelError, WorkerSideError
from pedsam.workers.metrics import WorkerCollector, serve_metrics
from pedsam.workers.models import DEFAULT_SEED, PRESETS, ModelSource
from pedsam.workers.security import ServerSecurity
from pedsam.workers.server import WorkerLimits, WorkerModel, WorkerServer

log = logging.getLogger("pedsam.worker")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port (default 0: pick a free one)")
    parser.add_argument("--model", default="tiny", choices=sorted(PRESETS), help="model preset")
    parser.add_argument("--checkpoint", help="official SAM checkpoint (.pth); default: seeded random weights")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of random weights")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for compute (default 1)")
    parser.add_argument("--max-message-mb", type=int, default=256, help="largest gRPC message, MiB")
    defaults = WorkerLimits()
    parser.add_argument("--max-streams", type=int, default=defaults.max_streams,
                        help=f"edge sessions served at once; more are refused (default {defaults.max_streams})")
    parser.add_argument("--stream-window-mb", type=float, default=defaults.stream_window_bytes / 2**20,
                        help="HTTP/2 read-ahead per session, MiB: higher helps long links, costs memory "
                             f"(default {defaults.stream_window_bytes / 2**20:g})")
    parser.add_argument("--max-queued", type=int, default=defaults.max_queued_requests,
                        help="requests held for compute across all sessions; beyond it, senders wait "
                             f"(default {defaults.max_queued_requests})")
    parser.add_argument("--grace", type=float, default=5.0, help="seconds to drain on shutdown")
    parser.add_argument("--health-port", type=int, metavar="PORT",
                        help="also serve grpc.health.v1 alone, in plain text, on this port (for probes)")
    parser.add_argument("--metrics-port", type=int, metavar="PORT",
                        help="serve Prometheus metrics at http://HOST:PORT/metrics")
    security = parser.add_argument_group("transport security")
    security.add_argument("--tls-cert", metavar="PEM", help="server certificate (chain)")
    security.add_argument("--tls-key", metavar="PEM", help="server private key")
    security.add_argument("--tls-client-ca", metavar="PEM",
                          help="require client certificates signed by this CA (mutual TLS)")
    security.add_argument("--token-file", action="append", default=[], metavar="FILE",
                          help="accept only RPCs bearing a token listed in FILE (one per line; repeatable)")
    security.add_argument("--insecure", action="store_true",
                          help="serve plain text; needed without --tls-cert unless --host is loopback")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or address, IPv6 with or without brackets) is this machine only."""
    name = host.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def server_security(args: argparse.Namespace) -> ServerSecurity:
    """The worker's :class:`ServerSecurity` from its flags; plain text on loopback needs no flag."""
    insecure = args.insecure or (not args.tls_cert and is_loopback(args.host))
    return ServerSecurity.from_files(
        cert=args.tls_cert, key=args.tls_key, client_ca=args.tls_client_ca,
        token_files=args.token_file, insecure=insecure,
    )


async def serve(args: argparse.Namespace) -> int:
    torch.set_num_threads(max(1, args.threads))
    security = server_security(args)
    source = ModelSource(preset=args.model, checkpoint=args.checkpoint, seed=args.seed)
    model = await asyncio.to_thread(WorkerModel, source)
    if min(args.max_streams, args.max_queued, args.max_message_mb, args.threads) < 1 or args.stream_window_mb <= 0:
        raise ModelError("--max-streams, --max-queued, --max-message-mb, --threads and --stream-window-mb "
                         "must be positive")
    limits = WorkerLimits(
        max_message_bytes=args.max_message_mb * 1024 * 1024,
        max_streams=args.max_streams,
        max_queued_requests=args.max_queued,
        stream_window_bytes=int(args.stream_window_mb * 2**20),
    )
    server = WorkerServer(model, limits, security)
    address = await server.start(args.host, args.port)
    extras = []
    probe: grpc.aio.Server | None = None
    if args.health_port is not None:
        # The kubelet's and Docker's probes speak plain-text gRPC and carry no token; this port
        # serves nothing but SERVING / NOT_SERVING, which reveals nothing of any frame.
        probe = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(server.health, probe)
        health_port = probe.add_insecure_port(f"{args.host}:{args.health_port}")
        if health_port == 0:
            raise OSError(f"cannot listen on {args.host}:{args.health_port} for health checks")
        await probe.start()
        extras.append(f"health on port {health_port}")
    if args.metrics_port is not None:
        info = {"preset": model.preset.name, "fingerprint": model.fingerprint[:12]}
        port = await asyncio.to_thread(serve_metrics, WorkerCollector(server.stats, info), args.host, args.metrics_port)
        extras.append(f"metrics on port {port}")
    print(
        f"pedsam worker serving on {address} model {source.describe()} "
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
        log.info("worker %s shutting down", address)
        await server.stop(args.grace)
        if probe is not None:
            await probe.stop(0)
        for task in (waiter, stopper):
            task.cancel()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pedsam worker", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        return asyncio.run(serve(args))
    except (WorkerSideError, OSError) as exc:
        print(f"pedsam worker: error: {exc}", file=sys.stderr)
        return 2
