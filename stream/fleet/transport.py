"""How the edge reaches its workers: TLS (optionally with a client certificate) and tokens.

Each worker is a separate trust domain, so each may have its own token. Plain text is used
only when the user says ``--insecure`` or when every worker is on loopback (the traffic then
never leaves this machine).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import grpc

from pedsam.stream.errors import ConfigError

__all__ = ["ANY_WORKER", "ClientSecurity", "is_loopback_address", "open_channel"]

ANY_WORKER = "*"
"""Key of :attr:`ClientSecurity.tokens` for the token of every worker without its own."""


def is_loopback_address(address: str) -> bool:
    """Whether ``host:port`` (``[v6]:port`` for IPv6) names this machine only."""
    host = address.rsplit(":", 1)[0].strip("[]") if ":" in address else address
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _read(path: str | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path!r}: {exc.strerror}") from None
    if not data.strip():
        raise ConfigError(f"{what} {path!r} is empty")
    return data


def read_tokens(path: str) -> dict[str, str]:
    """A token file: one token for every worker, or lines ``HOST:PORT TOKEN`` per worker."""
    data = _read(path, "token file")
    assert data is not None
    tokens: dict[str, str] = {}
    for number, line in enumerate(data.decode().splitlines(), start=1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        if len(parts) > 2:
            raise ConfigError(f"{path}:{number}: expected 'TOKEN' or 'HOST:PORT TOKEN'")
        address = parts[0] if len(parts) == 2 else ANY_WORKER
        if address in tokens:
            which = "a token for every worker" if address == ANY_WORKER else f"a token for {address}"
            raise ConfigError(f"{path}:{number}: {which} is given twice; each worker needs its own line")
        tokens[address] = parts[-1]
    if not tokens:
        raise ConfigError(f"token file {path!r} holds no token")
    return tokens


@dataclass(frozen=True, kw_only=True, slots=True)
class ClientSecurity:
    """The edge's side of transport security.

    Attributes:
        insecure: plain-text channels.
        ca: PEM roots that worker certificates must chain to; None trusts the system's roots.
        cert, key: PEM client certificate and key, for workers that demand mutual TLS.
        tokens: worker address -> bearer token; :data:`ANY_WORKER` for all others.
        server_name: expected name in worker certificates, when it differs from the host.
    """

    insecure: bool = False
    ca: bytes | None = None
    cert: bytes | None = None
    key: bytes | None = None
    tokens: Mapping[str, str] = field(default_factory=dict)
    server_name: str | None = None

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise ConfigError("give both --tls-cert and --tls-key (the client certificate), or neither")
        if self.insecure and (self.ca or self.cert):
            raise ConfigError("--insecure and TLS files contradict each other; drop one")
        object.__setattr__(self, "tokens", MappingProxyType(dict(self.tokens)))

    @classmethod
    def from_files(
        cls,
        *,
        insecure: bool = False,
        ca: str | None = None,
        cert: str | None = None,
        key: str | None = None,
        token_file: str | None = None,
        server_name: str | None = None,
    ) -> ClientSecurity:
        return cls(
            insecure=insecure,
            ca=_read(ca, "CA bundle"),
            cert=_read(cert, "client certificate"),
            key=_read(key, "client key"),
            tokens=read_tokens(token_file) if token_file else {},
            server_name=server_name,
        )

    def describe(self) -> str:
        """How channels to workers are secured, in a few words (for ``pedsam config check``)."""
        if self.insecure:
            return "plain text (--insecure)"
        if self.cert is not None:
            return "mutual TLS (client certificate)"
        if self.ca is not None:
            return "TLS"
        return "TLS with the system's CAs (plain text on loopback)"

    def token_for(self, address: str) -> str | None:
        return self.tokens.get(address, self.tokens.get(ANY_WORKER))

    def metadata(self, address: str) -> tuple[tuple[str, str], ...]:
        """Call metadata for ``address``: its bearer token, if any."""
        token = self.token_for(address)
        return (("authorization", f"Bearer {token}"),) if token else ()

    def check(self, addresses: Sequence[str]) -> None:
        """Refuse plain text to a worker off this machine unless ``insecure`` was said."""
        if self.insecure or self.ca is not None or self.cert is not None:
            return
        remote = [a for a in addresses if not is_loopback_address(a)]
        if remote:
            raise ConfigError(
                f"plain text to {', '.join(remote)} would cross the network: give --tls-ca "
                "(and --tls-cert/--tls-key for mutual TLS), or --insecure on a trusted network"
            )

    def uses_tls(self, address: str) -> bool:
        if self.insecure:
            return False
        return self.ca is not None or self.cert is not None or not is_loopback_address(address)


def open_channel(
    address: str, security: ClientSecurity, options: list[tuple[str, Any]], *, via: str | None = None
) -> grpc.aio.Channel:
    """A channel to ``address``: TLS unless plain text is allowed, with ``options``.

    ``via``: dial this address instead (an emulated link's relay, see
    :mod:`pedsam.stream.fleet.links`). The channel's authority stays ``address``, and gRPC checks
    TLS certificates against the authority, so both ends see the same call as without ``via``.
    """
    if via is not None:
        options = [*options, ("grpc.default_authority", address)]
    if not security.uses_tls(address):
        return grpc.aio.insecure_channel(via or address, options=options)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=security.ca, private_key=security.key, certificate_chain=security.cert
    )
    if security.server_name:
        options = [*options, ("grpc.ssl_target_name_override", security.server_name)]
    return grpc.aio.secure_channel(via or address, credentials, options=options)
