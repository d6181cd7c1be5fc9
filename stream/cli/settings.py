"""From a command line (and its ``--config`` file) to the typed configuration, once.

:func:`resolve` lays three layers over one another, later ones winning: each option's default
(or the command's own default for it), the values of the ``--config`` file, and the flags given
on the command line. Nothing reads argparse's internals: the parser only records which flags
were given (their defaults are suppressed, see :mod:`pedsam.stream.cli.options`).

The builders turn the resolved values into the library's frozen configs (:class:`EdgeConfig`,
:class:`RunSettings`, prompts); the configs validate themselves, so every check happens once.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from pedsam.stream.cli.config_file import EdgeFile, check_providers, load
from pedsam.stream.cli.options import GROUPS, Option, cap, frames_or_none
from pedsam.stream.errors import ConfigError, PromptError
from pedsam.stream.fleet.providers import split_provider

if TYPE_CHECKING:  # the builders import these when called: the command line starts quickly
    from pedsam.partitioner.budget import Budget
    from pedsam.stream.core.prompts import ObjectPrompt
    from pedsam.stream.core.session import EdgeConfig
    from pedsam.stream.runs.engine import DropPolicy
    from pedsam.stream.runs.job import RunSettings
    from pedsam.workers.models import ModelSource

__all__ = ["Values", "budget", "defaults_in_force", "resolve"]


@dataclass(frozen=True, slots=True)
class Values(Mapping[str, Any]):
    """The resolved settings of one command: ``values[dest]``, and the config file if any."""

    command: str
    data: Mapping[str, Any]
    file: EdgeFile | None = None
    given: frozenset[str] = field(default_factory=frozenset)  # dests set on the command line

    def __getitem__(self, dest: str) -> Any:
        return self.data[dest]

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


def resolve(
    command: str,
    args: argparse.Namespace,
    accepted: Sequence[Option],
    defaults: Mapping[str, Any] | None = None,
) -> Values:
    """Defaults, then the ``--config`` file, then the given flags; see the module docstring."""
    given = {k: v for k, v in vars(args).items() if k not in ("command", "verbose", "log_format")}
    values: dict[str, Any] = {option.dest: option.default for option in accepted}
    values.update(defaults or {})
    file = None
    path = given.get("config")
    if path:
        every = [option for group in GROUPS.values() for option in group]
        file = load(path, accepted, every)
        check_providers(file)
        values.update(file.values)
        if "local_workers" in given and "workers" not in given:  # replaces the file's fleet
            values["workers"] = values["standby"] = None
        else:
            def entry(w: Any) -> str:
                return f"{w.address}@{w.provider}" if w.provider else w.address

            active = [entry(w) for w in file.workers if not w.standby]
            spare = [entry(w) for w in file.workers if w.standby]
            if active:
                values["workers"] = ",".join(active)
            if spare:
                values["standby"] = ",".join(spare)
    values.update(given)
    return Values(command=command, data=values, file=file, given=frozenset(given))


def addresses(text: str | None) -> tuple[str, ...]:
    """The addresses of ``HOST:PORT[@PROVIDER],...``."""
    return tuple(split_provider(w)[0] for w in (text or "").split(",") if w.strip())


def providers(*texts: str | None) -> tuple[tuple[str, str], ...]:
    """``(address, provider)`` of every ``HOST:PORT@PROVIDER`` in ``texts``."""
    found = []
    for text in texts:
        for entry in (text or "").split(","):
            if entry.strip():
                address, provider = split_provider(entry)
                if provider is not None:
                    found.append((address, provider))
    return tuple(found)


def budget(values: Mapping[str, Any]) -> Budget:
    """The :class:`~pedsam.partitioner.scheduler.Budget` of the rotation flags (caps, horizon, coalition)."""
    from pedsam.partitioner.errors import PartitionerError
    from pedsam.partitioner.budget import Budget

    def parsed(dest: str, parse: Any) -> Any:
        value = values.get(dest)
        return parse(value) if isinstance(value, str) else value  # defaults are the words themselves

    frame_cap = parsed("frame_cap", cap)
    if frame_cap is None:
        raise ConfigError("--frame-cap none: a per-frame cap is always in force (no worker sees a whole frame); "
                          "give a share in (0, 1] or auto")
    try:
        return Budget(
            frame_cap=None if frame_cap == "auto" else frame_cap,
            scene_cap=parsed("scene_cap", cap),
            horizon_cap=parsed("horizon_cap", cap),
            run_cap=parsed("run_cap", frames_or_none),
            coalition=values.get("coalition") or 1,
            coalition_cap=parsed("coalition_cap", cap),
            horizon=values["horizon"],
            on_exceed=values.get("on_budget") or "edge",
        )
    except PartitionerError as exc:
        raise ConfigError(str(exc)) from None
    except argparse.ArgumentTypeError as exc:
        raise ConfigError(str(exc)) from None


def defaults_in_force(values: Values) -> dict[str, Any]:
    """The privacy settings a command runs with that nobody chose: flag -> its default, for every
    split and rotation flag neither given nor set by the config file."""
    chosen = set(values.given) | set(values.file.values if values.file is not None else ())
    found: dict[str, Any] = {}
    for option in (*GROUPS["split"], *GROUPS["rotation and exposure budgets (per server, over video)"]):
        if option.dest in values.data and option.dest not in chosen and option.dest != "secret":
            default = values.data[option.dest]
            if option.kind is bool or default is None:
                continue  # a switch left off, or a setting the policy picks (--slots)
            found[option.flags[0]] = default
    return found


def model_source(values: Mapping[str, Any]) -> ModelSource:
    """The :class:`~pedsam.workers.models.ModelSource` of ``--model/--checkpoint/--seed``; the
    preset is read from the checkpoint when ``--model`` is not given."""
    from pedsam.workers.models import ModelSource, infer_preset

    preset = values["model"]
    checkpoint = values.get("checkpoint")
    if preset is None:
        preset = infer_preset(checkpoint) if checkpoint else "mini"
    return ModelSource(preset=preset, checkpoint=checkpoint, seed=values["seed"])


def edge_config(values: Values, *, background_sam: bool = False) -> EdgeConfig:
    """The :class:`~pedsam.stream.core.session.EdgeConfig` of an edge command's values;
    ``background_sam`` for a live run whose keyframes run behind its frame path."""
    from pedsam.stream.core.scheduling import RotationSettings
    from pedsam.stream.core.sensitive import KeepLocal
    from pedsam.stream.core.session import EdgeConfig
    from pedsam.stream.fleet.links import parse_links
    from pedsam.stream.fleet.transport import ClientSecurity

    local = values.get("local_workers")
    if local is not None and local < 1:
        raise ConfigError("--local-workers must be at least 1")
    security = ClientSecurity.from_files(
        insecure=values["insecure"], ca=values["tls_ca"], cert=values["tls_cert"], key=values["tls_key"],
        token_file=values["token_file"], server_name=values["tls_server_name"],
    )
    if values.file is not None and values.file.tokens and values.get("workers"):
        # per-worker tokens from the config file; a --token-file line wins
        security = replace(security, tokens={**values.file.tokens, **security.tokens})
    rotation = RotationSettings(policy=values["rotation"], slots=values["slots"], budget=budget(values),
                                motion=not values["no_motion"])
    timeout = values["request_timeout"]
    keep_local = KeepLocal.parse(values.get("keep_local") or "none", hold=values.get("keep_local_hold"))
    return EdgeConfig(
        model=model_source(values),
        workers=addresses(values.get("workers")),
        local_workers=local or 0,
        scheme=values["scheme"],
        secret=values["secret"].encode() if values["secret"] else None,
        codec=values["codec"],
        plan="default" if values["plan"] == "auto" else values["plan"],
        auto_plan=values["plan"] == "auto",
        allow_single_server=values["allow_single_server"],
        connect_timeout=values["connect_timeout"],
        request_timeout=timeout if timeout and timeout > 0 else None,
        security=security,
        rotation=rotation,
        standby=addresses(values.get("standby")),
        local_standby=values.get("local_standby") or 0,
        on_failure=values["on_failure"],
        reconnect_interval=values["reconnect_interval"],
        metrics_port=values["metrics_port"],
        background_sam=background_sam,
        links=parse_links(values.get("link")),
        remote_segments=values.get("remote_segments"),
        compression=values["compression"],
        device=values["device"],
        compute_dtype=values["compute_dtype"],
        providers=providers(values.get("workers"), values.get("standby")),
        verify=values["verify"],
        keep_local=keep_local,
        capture_local=values.get("capture_local"),
    )


def run_settings(values: Values, *, drops: DropPolicy) -> RunSettings:
    """The :class:`~pedsam.stream.runs.job.RunSettings` of a command that runs frames."""
    from pedsam.stream.runs.job import RunSettings
    from pedsam.stream.runs.keyframes import KeyframePolicy

    return RunSettings(drops=drops, in_flight=values["in_flight"], max_frames=values.get("max_frames"),
                       duration=values.get("duration"), keyframes=KeyframePolicy.parse(values["keyframes"]))


def prompts(values: Values, *, required: bool = True) -> list[ObjectPrompt]:
    """The objects given with --point/--neg-point/--box/--object, in order."""
    from pedsam.stream.core.prompts import objects_from_items
    from pedsam.stream.media.masks_io import read_mask

    objects = objects_from_items(values.get("items") or [], read_mask=read_mask)
    if required and not objects:
        raise PromptError("give at least one prompt: --point X,Y, --box X0,Y0,X1,Y1 or --mask MASK.png")
    return objects
