"""The edge's TOML configuration file (``--config FILE``), and ``pedsam config check``.

Every key stands for a command-line flag; flags given on the command line win over the file.
Paths in the file are relative to the file's folder. Example::

    local_workers = 3                   # or [[workers]] below; --local-workers
    link = "lte"                        # --link: emulated links, for tests and benches
    [model]
    preset = "vit_b"                    # --model
    checkpoint = "sam_vit_b_01ec64.pth" # --checkpoint
    seed = 0                            # --seed
    [split]
    scheme = "interleaved"              # --scheme
    codec = "fp32"                      # --codec
    plan = "default"                    # --plan
    remote_segments = 1                 # --remote-segments (default: all)
    compression = "auto"                # --compression
    keep_local = "faces,people"         # --keep-local; keep_local_hold = 8: --keep-local-hold
    in_flight = 3                       # --in-flight (run, stream)
    [compute]
    device = "auto"                     # --device: auto, cpu, cuda, cuda:N, mps
    dtype = "fp32"                      # --compute-dtype: fp32, or bf16/fp16 on a GPU
    [rotation]
    policy = "adaptive"                 # --rotation; also slots, frame_cap, scene_cap ("auto", "none"
    scene_cap = "auto"                  #   or a share), horizon_cap, run_cap, coalition, coalition_cap,
    horizon = 50                        #   horizon, on_budget, motion (false: --no-motion)
    [failover]
    on_failure = "standby"              # --on-failure; also reconnect_interval,
    request_timeout = 60                #   request_timeout, connect_timeout
    verify = 0.05                       # --verify: share of windows the edge rechecks
    [tls]
    ca = "pki/ca.pem"                   # --tls-ca; also cert, key, server_name, insecure
    [metrics]
    port = 9101                         # --metrics-port
    [[workers]]
    address = "a.example:50051"
    provider = "provider-a"             # who runs it: workers must be at different providers
    token_file = "pki/a.token"          # that worker's bearer token
    standby = false                     # true: only used when an active worker fails

Errors name the key that is wrong and say what it should be.
"""

from __future__ import annotations

import argparse
import os
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pedsam.stream.cli.options import Option, cap, frames_or_none
from pedsam.stream.errors import ConfigError

__all__ = ["EdgeFile", "WorkerEntry", "check_providers", "load"]

_WORKER_KEYS = {"address", "provider", "token_file", "standby"}


@dataclass(frozen=True, slots=True)
class WorkerEntry:
    """One ``[[workers]]`` table."""

    address: str
    provider: str | None
    token: str | None
    standby: bool


@dataclass(frozen=True, slots=True)
class EdgeFile:
    """A loaded configuration: option values by destination, and the workers."""

    path: Path
    values: dict[str, Any] = field(default_factory=dict)  # Option.dest -> value
    workers: tuple[WorkerEntry, ...] = ()

    @property
    def tokens(self) -> dict[str, str]:
        """Address -> token of every worker whose entry names a token file."""
        return {w.address: w.token for w in self.workers if w.token is not None}


def _where(path: Path, section: str, key: str) -> str:
    return f"{path}: [{section}] {key}" if section else f"{path}: {key}"


def _check(value: Any, option: Option, where: str) -> Any:
    """``value`` from the file, checked as the flag's own parsing would; returns what to store."""
    if option.kind in (cap, frames_or_none):  # a number, or a word the flag takes
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"{where} = {value!r}: give a number or a word the flag {option.flags[-1]} takes")
        try:
            return option.kind(str(value))
        except argparse.ArgumentTypeError as exc:
            raise ConfigError(f"{where} = {exc}") from None
    if option.kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} = {value!r}: give true or false")
        return (not value) if option.invert else value
    if option.kind in (int, float):
        number_types = (int,) if option.kind is int else (int, float)
        if isinstance(value, bool) or not isinstance(value, number_types):
            kind = "a whole number" if option.kind is int else "a number"
            raise ConfigError(f"{where} = {value!r}: give {kind}")
        value = option.kind(value)
    elif not isinstance(value, str):
        raise ConfigError(f"{where} = {value!r}: give a string")
    if option.choices is not None and value not in option.choices:
        raise ConfigError(f"{where} = {value!r}: choose one of {', '.join(map(str, option.choices))}")
    return value


def load(path: str | os.PathLike[str], accepted: Sequence[Option], every: Sequence[Option]) -> EdgeFile:
    """Read and check ``path``: a key must be one of ``every`` option's keys, and one the
    command takes (``accepted``).

    Raises:
        ConfigError: unreadable file, bad TOML, an unknown key, a value of the wrong kind, a key
            for a flag this command does not take, or a broken ``[[workers]]`` entry.
    """
    file = Path(path)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config {str(file)!r}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from None
    keys = {option.key: option for option in every if option.key is not None}
    takes = {option.dest for option in accepted}
    values: dict[str, Any] = {}
    known_sections = {section for section, _ in keys if section} | {"workers"}
    for name, value in data.items():
        if isinstance(value, dict):
            if name not in known_sections:
                raise ConfigError(f"{file}: unknown section [{name}]; sections are {', '.join(sorted(known_sections))}")
            items = [(name, key, v) for key, v in value.items()]
        elif name == "workers":
            continue
        else:
            items = [("", name, value)]
        for section, key, item in items:
            option = keys.get((section, key))
            where = _where(file, section, key)
            if option is None:
                names = sorted(k for s, k in keys if s == section)
                raise ConfigError(f"{where}: unknown key; [{section or 'top level'}] takes {', '.join(names)}")
            if option.dest not in takes:
                raise ConfigError(f"{where}: this command takes no {option.flags[-1]}")
            item = _check(item, option, where)
            if option.path:
                item = str((file.parent / item).resolve())
            values[option.dest] = item
    workers = _workers(file, data.get("workers", []))
    if workers and "workers" not in takes:
        raise ConfigError(f"{file}: [[workers]]: this command takes no workers")
    return EdgeFile(path=file, values=values, workers=workers)


def _workers(file: Path, entries: Any) -> tuple[WorkerEntry, ...]:
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ConfigError(f"{file}: workers must be [[workers]] tables")
    found: list[WorkerEntry] = []
    for index, entry in enumerate(entries):
        where = f"{file}: [[workers]] #{index + 1}"
        unknown = set(entry) - _WORKER_KEYS
        if unknown:
            raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]}; a worker takes {', '.join(sorted(_WORKER_KEYS))}")
        address = entry.get("address")
        if not isinstance(address, str) or ":" not in address:
            raise ConfigError(f"{where} address = {address!r}: give HOST:PORT")
        provider = entry.get("provider")
        if provider is not None and not isinstance(provider, str):
            raise ConfigError(f"{where} provider = {provider!r}: give a string")
        standby = entry.get("standby", False)
        if not isinstance(standby, bool):
            raise ConfigError(f"{where} standby = {standby!r}: give true or false")
        token = None
        token_file = entry.get("token_file")
        if token_file is not None:
            if not isinstance(token_file, str):
                raise ConfigError(f"{where} token_file = {token_file!r}: give a path")
            token_path = file.parent / token_file
            try:
                token = token_path.read_text().strip()
            except OSError as exc:
                raise ConfigError(f"{where} token_file: cannot read {str(token_path)!r}: {exc.strerror}") from None
            if not token or len(token.split()) != 1:
                raise ConfigError(f"{where} token_file: {str(token_path)!r} must hold exactly one token")
        found.append(WorkerEntry(address=address, provider=provider, token=token, standby=standby))
    addresses = [w.address for w in found]
    duplicate = next((a for a in addresses if addresses.count(a) > 1), None)
    if duplicate:
        raise ConfigError(f"{file}: worker {duplicate} is listed twice")
    return tuple(found)


def check_providers(config: EdgeFile) -> None:
    """Refuse two workers (active or standby) at one provider, and a worker off this machine that
    names none (:func:`pedsam.stream.fleet.providers.check_providers`), naming the file."""
    from pedsam.stream.fleet.providers import check_providers as check_fleet  # grpc: only with a file

    providers = {w.address: w.provider for w in config.workers if w.provider is not None}
    try:
        check_fleet([w.address for w in config.workers], providers)
    except ConfigError as exc:
        raise ConfigError(f"{config.path}: {exc}") from None
