"""Asking a worker's ``grpc.health.v1`` service whether it serves: ``pedsam health ADDRESS``.

Container health checks and operators use this; it speaks the standard health protocol, so
any gRPC health probe works as well. Exit status: 0 SERVING, 1 anything else, 2 unreachable.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from grpc_health.v1 import health_pb2

__all__ = ["ask", "check", "probe", "status_name"]

_CHECK = "/grpc.health.v1.Health/Check"


async def ask(
    channel: grpc.aio.Channel,
    *,
    service: str = "",
    timeout: float = 5.0,
    wait_for_ready: bool = False,
    metadata: tuple[tuple[str, str], ...] | None = None,
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
    reply = await call(health_pb2.HealthCheckRequest(service=service), timeout=timeout, wait_for_ready=wait_for_ready,
                       metadata=metadata)
    return int(reply.status)


def status_name(status: int) -> str:
    """``ServingStatus`` number -> its name, e.g. ``"SERVING"``."""
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(status))


async def check(
    address: str, *, service: str = "", timeout: float = 5.0, credentials: Any = None, token: str | None = None
) -> str:
    """The serving status name (``"SERVING"``, ``"NOT_SERVING"``, ...) ``address`` reports.

    Raises:
        grpc.aio.AioRpcError: the worker could not be reached or does not know ``service``.
    """
    if credentials is None:
        channel = grpc.aio.insecure_channel(address)
    else:
        channel = grpc.aio.secure_channel(address, credentials)
    async with channel:
        metadata = (("authorization", f"Bearer {token}"),) if token else None
        return status_name(await ask(channel, service=service, timeout=timeout, metadata=metadata))


def probe(
    address: str,
    *,
    service: str = "",
    timeout: float = 5.0,
    ca: str | None = None,
    cert: str | None = None,
    key: str | None = None,
    token_file: str | None = None,
) -> int:
    """``pedsam health``: print the status; 0 SERVING, 1 anything else, 2 unreachable.

    With ``ca`` the check goes over TLS, with ``cert``/``key`` as a mutual-TLS client; a worker
    that requires tokens takes the one in ``token_file`` (its health service answers without
    one, but a token does no harm).
    """
    from pedsam.workers.errors import ModelError
    from pedsam.workers.security import read_secret

    if (cert is None) != (key is None):
        raise ModelError("give --tls-cert and --tls-key together")
    credentials = None
    if ca or cert:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=read_secret(ca, "CA bundle") if ca else None,
            private_key=read_secret(key, "client key") if key else None,
            certificate_chain=read_secret(cert, "client certificate") if cert else None,
        )
    token = read_secret(token_file, "token file").decode().strip() if token_file else None
    try:
        status = asyncio.run(check(address, service=service, timeout=timeout, credentials=credentials, token=token))
    except grpc.aio.AioRpcError as exc:
        print(f"{address}: unreachable ({exc.code().name}: {exc.details()})")
        return 2
    print(f"{address}: {status}")
    return 0 if status == "SERVING" else 1
