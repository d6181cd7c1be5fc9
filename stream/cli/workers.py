"""The commands of the worker side: ``pedsam worker``, ``pedsam health``, ``pedsam certs``, and
``pedsam link``, an emulated link to put in front of a worker.

Apart from the edge's commands so that a worker process imports no edge code (no OpenCV, PyAV,
aiortc or aiohttp): it runs SAM's windowed blocks and nothing else.
"""

from __future__ import annotations

import asyncio

from pedsam.stream.cli.settings import Values, model_source
from pedsam.stream.errors import ConfigError

__all__ = ["certs", "health", "link", "worker"]


async def worker(values: Values) -> int:
    """``pedsam worker``: serve the windowed blocks until SIGTERM."""
    from pedsam.workers.errors import ModelError
    from pedsam.workers.service import WorkerSettings, serve

    settings = WorkerSettings(
        model=model_source(values), host=values["host"], port=values["port"], threads=values["threads"],
        max_message_mb=values["max_message_mb"], max_streams=values["max_streams"],
        stream_window_mb=values["stream_window_mb"], max_queued=values["max_queued"], grace=values["grace"],
        health_port=values["health_port"], metrics_port=values["metrics_port"], tls_cert=values["tls_cert"],
        tls_key=values["tls_key"], tls_client_ca=values["tls_client_ca"],
        token_files=tuple(values["token_files"] or ()), insecure=values["insecure"], device=values["device"],
        compute_dtype=values["compute_dtype"], device_memory_mb=values["device_memory_mb"],
        stop_on_stdin_eof=bool(values["stop_on_stdin_eof"]), capture=values["capture"],
    )
    try:
        return await serve(settings)
    except OSError as exc:
        raise ModelError(str(exc)) from None


def health(values: Values) -> int:
    """``pedsam health``: 0 SERVING, 1 anything else, 2 unreachable."""
    from pedsam.workers.health import probe

    return probe(values["address"], service=values["service"], timeout=values["timeout"], ca=values["tls_ca"],
                 cert=values["tls_cert"], key=values["tls_key"], token_file=values["health_token"])


def certs(values: Values) -> int:
    """``pedsam certs DIR``: a throwaway CA, worker identities and tokens, and the command lines."""
    from pedsam.workers.certs import make_demo_pki

    hosts = [h.strip() for h in values["hosts"].split(",") if h.strip()]
    if not hosts:
        raise ConfigError("--hosts needs at least one host")
    try:
        pki = make_demo_pki(values["out"], hosts, port=values["port"])
    except OSError as exc:
        raise ConfigError(f"cannot write into {values['out']!r}: {exc.strerror}") from None
    print(f"wrote a demo CA and {len(hosts)} worker identities into {pki.folder} (private: it has a .gitignore)")
    for index, ((cert, key, token), port) in enumerate(zip(pki.workers, pki.ports, strict=True)):
        print(f"worker {index}: pedsam worker --host 0.0.0.0 --port {port} --tls-cert {cert} "
              f"--tls-key {key} --tls-client-ca {pki.ca} --token-file {token}")
    print(f"edge: --tls-ca {pki.ca} --tls-cert {pki.edge_cert} --tls-key {pki.edge_key} "
          f"--token-file {pki.edge_tokens}")
    return 0


async def link(values: Values) -> int:
    """``pedsam link SPEC HOST:PORT``: relay 127.0.0.1:PORT to a worker over an emulated link
    (:mod:`pedsam.stream.fleet.links`) until Ctrl-C or SIGTERM."""
    from pedsam.stream.fleet.links import LinkRelay, LinkSpec

    spec = LinkSpec.parse(values["spec"])
    relay = LinkRelay(values["target"], spec, port=values["port"])
    try:
        await relay.start()
    except OSError as exc:
        raise ConfigError(f"cannot listen on 127.0.0.1:{values['port']}: {exc.strerror}") from None
    try:
        print(f"pedsam link {spec} to {values['target']} on {relay.address}", flush=True)
        await asyncio.Event().wait()
    finally:
        await relay.close()
    return 0
