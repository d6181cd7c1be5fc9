"""Asking a worker's ``grpc.health.v1`` service whether it serves: ``pedsam health ADDRESS``.

Container health checks and operators use this; it speaks the standard health protocol, so
any gRPC health probe works as well. Exit status: 0 SERVING, 1 anything else, 2 unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import grpc
from grpc_health.v1 import health_pb2

__all__ = ["add_arguments", "ask", "check", "main"]

_CHECK = "/grpc.health.v1.Health/Check"


async def ask(
    channel: grpc.aio.Channel, *, service: str = "", timeout: float = 5.0, wait_for_ready: bool = False
) -> int:
    """One ``grpc.health.v1.Health/Check`` on ``channel``: the ``ServingStatus`` number.

    Raises:
        grpc.aio.AioRpcError: unreachable within ``timeout``, or ``service`` unknown.
    """
    call = channel.unary_unary(
        _CHECK,
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )
    reply = await call(health_pb2.HealthCheckRequest(service=service), timeout=timeout, wait_for_ready=wait_for_ready)
    return int(reply.status)


def status_name(status: int) -> str:
    """``ServingStatus`` number -> its name, e.g. ``"SERVING"``."""
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(status))


async def check(address: str, *, service: str = "", timeout: float = 5.0, credentials: Any = None) -> str:
    """The serving status name (``"SERVING"``, ``"NOT_SERVING"``, ...) ``address`` reports.

    Raises:
        grpc.aio.AioRpcError: the worker could not be reached or does not know ``service``.
    """
    if credentials is None:
        channel = grpc.aio.insecure_channel(address)
    else:
        channel = grpc.aio.secure_channel(address, credentials)
    async with channel:
        return status_name(await ask(channel, service=service, timeout=timeout))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("address", help="HOST:PORT of the worker's health service (its --health-port, or its port)")
    parser.add_argument("--service", default="", help="service name to ask about (default: the whole server)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")
    parser.add_argument("--tls-ca", metavar="PEM", help="check over TLS, trusting this CA")


def main(args: argparse.Namespace) -> int:
    credentials = None
    if args.tls_ca:
        with open(args.tls_ca, "rb") as file:
            credentials = grpc.ssl_channel_credentials(root_certificates=file.read())
    try:
        status = asyncio.run(check(args.address, service=args.service, timeout=args.timeout, credentials=credentials))
    except grpc.aio.AioRpcError as exc:
        print(f"{args.address}: unreachable ({exc.code().name}: {exc.details()})")
        return 2
    print(f"{args.address}: {status}")
    return 0 if status == "SERVING" else 1
