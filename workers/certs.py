"""A throwaway certificate authority and tokens for a demo fleet (``pedsam certs``).

Writes into one folder:

- ``ca.pem``: the CA certificate the edge trusts (``--tls-ca``) and workers check client
  certificates against (``--tls-client-ca``); ``ca.key`` is its key (keep it off the workers);
- ``worker-<i>.pem`` / ``worker-<i>.key``: worker ``i``'s server certificate for its host
  (plus ``localhost`` and ``127.0.0.1``, so the same files work for a loopback demo);
- ``worker-<i>.token``: worker ``i``'s bearer token (``--token-file`` on the worker);
- ``edge.pem`` / ``edge.key``: the edge's client certificate for mutual TLS;
- ``edge-tokens``: ``HOST:PORT TOKEN`` per worker (``--token-file`` on the edge).

Keys are ECDSA P-256, certificates valid for 30 days: fine for a demo, not a production PKI.
Private keys and tokens are written readable by their owner only.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["DemoPki", "make_demo_pki"]

VALID_DAYS = 30


@dataclass(frozen=True, slots=True)
class DemoPki:
    """Paths of what :func:`make_demo_pki` wrote."""

    folder: Path
    ca: Path
    workers: tuple[tuple[Path, Path, Path], ...]  # (cert, key, token) per worker
    ports: tuple[int, ...]  # per worker, the port it is to listen on
    edge_cert: Path
    edge_key: Path
    edge_tokens: Path


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pedsam demo"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write(path: Path, data: bytes, private: bool) -> Path:
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    with open(os.open(path, flags, 0o600 if private else 0o644), "wb") as file:
        file.write(data)
    return path


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _sign(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    hosts: Sequence[str] = (),
    client: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer.subject if issuer else _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
    )
    if issuer is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False), critical=True)
    else:
        builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if hosts:
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_demo_pki(folder: str | os.PathLike[str], hosts: Sequence[str], *, port: int = 50051) -> DemoPki:
    """Write a CA, one server certificate and token per host in ``hosts``, and an edge identity.

    Args:
        folder: created if missing; existing files of the same names are replaced.
        hosts: one worker host name or IP address per worker.
        port: the first worker port: workers on one host get ``port``, ``port + 1``, ... so
            that no two share an address (``DemoPki.ports``); written in ``edge-tokens``.

    The folder also gets a ``.gitignore`` of ``*``: it holds private keys (the CA's too) and
    tokens, which belong in no repository.
    """
    if not hosts:
        raise ValueError("give at least one worker host")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _sign("pedsam demo CA", ca_key, None, ca_key)
    ca_path = _write(out / "ca.pem", ca.public_bytes(serialization.Encoding.PEM), private=False)
    _write(out / "ca.key", _key_pem(ca_key), private=True)
    (out / ".gitignore").write_text("# private keys and tokens: never commit\n*\n")
    workers = []
    lines = []
    ports: list[int] = []
    for index, host in enumerate(hosts):
        ports.append(port + sum(1 for h in hosts[:index] if h == host))
        key = ec.generate_private_key(ec.SECP256R1())
        names = list(dict.fromkeys([host, "localhost", "127.0.0.1"]))
        cert = _sign(f"pedsam worker {index}", key, ca, ca_key, hosts=names)
        token = secrets.token_urlsafe(32)
        workers.append((
            _write(out / f"worker-{index}.pem", cert.public_bytes(serialization.Encoding.PEM), private=False),
            _write(out / f"worker-{index}.key", _key_pem(key), private=True),
            _write(out / f"worker-{index}.token", f"{token}\n".encode(), private=True),
        ))
        shown = f"[{host}]" if ":" in host else host
        lines.append(f"{shown}:{ports[-1]} {token}\n")
    edge_key = ec.generate_private_key(ec.SECP256R1())
    edge = _sign("pedsam edge", edge_key, ca, ca_key, client=True)
    return DemoPki(
        folder=out,
        ca=ca_path,
        workers=tuple(workers),
        ports=tuple(ports),
        edge_cert=_write(out / "edge.pem", edge.public_bytes(serialization.Encoding.PEM), private=False),
        edge_key=_write(out / "edge.key", _key_pem(edge_key), private=True),
        edge_tokens=_write(out / "edge-tokens", "".join(lines).encode(), private=True),
    )
