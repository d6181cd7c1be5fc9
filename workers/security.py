"""Transport security of a worker: TLS (optionally mutual) and a bearer token on every RPC.

A worker serves TLS with its certificate and key; given a client CA it also demands a client
certificate signed by that CA (mutual TLS). Independently, a worker given tokens accepts an RPC
only with the metadata ``authorization: Bearer <token>`` for one of them and answers anything
else with ``UNAUTHENTICATED``. The standard health service stays open, so that orchestrators'
probes (which carry no token) work; it reveals nothing but SERVING / NOT_SERVING.

Plain text is allowed only when asked for explicitly (``insecure=True``): the edge and the
worker then trust the network between them, as on loopback.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from pedsam.workers.errors import ModelError

__all__ = ["HEALTH_PREFIX", "ServerSecurity", "TokenInterceptor", "read_secret"]

HEALTH_PREFIX = "/grpc.health.v1.Health/"


class SecurityError(ModelError):
    """A security setting that cannot be used (missing file, no TLS without --insecure)."""


def read_secret(path: str | os.PathLike[str], what: str) -> bytes:
    """The bytes of a key, certificate or token file; :class:`SecurityError` naming it if unreadable."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise SecurityError(f"cannot read {what} {str(path)!r}: {exc.strerror}") from None
    if not data.strip():
        raise SecurityError(f"{what} {str(path)!r} is empty")
    return data


@dataclass(frozen=True, kw_only=True, slots=True)
class ServerSecurity:
    """How a worker secures its port.

    Attributes:
        cert, key: PEM server certificate (chain) and private key; both or neither.
        client_ca: PEM CA bundle; when set, clients must present a certificate it signed.
        tokens: bearer tokens accepted (any one of them); empty accepts every caller.
        insecure: serve plain text; required when no certificate is given.
        plain_reason: why plain text is allowed, for :meth:`describe` (``"--insecure"``, or
            ``"loopback only"`` when the address cannot be reached from another machine).
    """

    cert: bytes | None = None
    key: bytes | None = None
    client_ca: bytes | None = None
    tokens: frozenset[str] = field(default_factory=frozenset)
    insecure: bool = False
    plain_reason: str = "--insecure"

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise SecurityError("give both --tls-cert and --tls-key, or neither")
        if self.cert is None and not self.insecure:
            raise SecurityError(
                "no TLS certificate: give --tls-cert and --tls-key, or --insecure to serve plain "
                "text (loopback and trusted networks only)"
            )
        if self.cert is not None and self.insecure:
            raise SecurityError("--insecure and a TLS certificate contradict each other; drop one")
        if self.client_ca is not None and self.cert is None:
            raise SecurityError("mutual TLS (--tls-client-ca) needs TLS: give --tls-cert and --tls-key")
        if any(not t or t != t.strip() for t in self.tokens):
            raise SecurityError("tokens must be non-empty and have no surrounding whitespace")

    @classmethod
    def from_files(
        cls,
        *,
        cert: str | None = None,
        key: str | None = None,
        client_ca: str | None = None,
        token_files: Iterable[str] = (),
        insecure: bool = False,
        plain_reason: str = "--insecure",
    ) -> ServerSecurity:
        """Read the PEM and token files (one token per line, blank lines ignored)."""
        tokens: set[str] = set()
        for path in token_files:
            lines = read_secret(path, "token file").decode().splitlines()
            tokens.update(line.strip() for line in lines if line.strip())
        return cls(
            cert=read_secret(cert, "TLS certificate") if cert else None,
            key=read_secret(key, "TLS key") if key else None,
            client_ca=read_secret(client_ca, "client CA") if client_ca else None,
            tokens=frozenset(tokens),
            insecure=insecure,
            plain_reason=plain_reason,
        )

    @property
    def mutual(self) -> bool:
        return self.client_ca is not None

    def credentials(self) -> Any:
        """``grpc.ServerCredentials`` for ``add_secure_port``; None for plain text."""
        if self.cert is None or self.key is None:
            return None
        return grpc.ssl_server_credentials(
            [(self.key, self.cert)],
            root_certificates=self.client_ca,
            require_client_auth=self.client_ca is not None,
        )

    def interceptors(self) -> list[Any]:
        return [TokenInterceptor(self.tokens)] if self.tokens else []

    def describe(self) -> str:
        if self.cert is None:
            transport = f"plain text ({self.plain_reason})"
        else:
            transport = "mutual TLS" if self.mutual else "TLS"
        return f"{transport}, {'bearer token required' if self.tokens else 'no token'}"


Handler = Any  # grpc.RpcMethodHandler; grpc ships no type information


class TokenInterceptor(grpc.aio.ServerInterceptor):
    """Refuses every RPC but health checks without a valid ``authorization: Bearer`` token."""

    def __init__(self, tokens: Iterable[str]) -> None:
        self._tokens = tuple(t.encode() for t in tokens)

    def _authorised(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> bool:
        for name, value in metadata or ():
            if name.lower() != "authorization":
                continue
            text = value.decode(errors="replace") if isinstance(value, bytes) else value
            scheme, _, token = text.partition(" ")
            if scheme.lower() != "bearer":
                return False
            presented = token.strip().encode()
            # Compare against every token without stopping early: timing says nothing.
            return sum(hmac.compare_digest(presented, t) for t in self._tokens) > 0
        return False

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or method.startswith(HEALTH_PREFIX):
            return handler
        if self._authorised(handler_call_details.invocation_metadata):
            return handler
        return _refusal(handler)


def _refusal(handler: Handler) -> Handler:
    """A handler of the same shape as ``handler`` that answers UNAUTHENTICATED."""
    message = "missing or invalid bearer token: send 'authorization: Bearer <token>' for this worker"

    async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    async def streaming(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        yield  # pragma: no cover (abort raises); makes this an async generator

    codecs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(streaming, **codecs)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(unary, **codecs)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(streaming, **codecs)
    return grpc.unary_unary_rpc_method_handler(unary, **codecs)
