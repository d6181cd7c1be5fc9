"""The ``pedsam`` command line: a thin layer over the library API.

Every command exits 0 on success; on a user-facing error it prints one line
(``pedsam: error: ...``) to stderr and exits 2, with no traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from pedsam.partitioner.errors import PartitionerError
from pedsam.partitioner.offload import PLANS
from pedsam.partitioner.scheduler import FAILOVER
from pedsam.partitioner.schemes import SCHEMES
from pedsam.stream.core.prompts import ObjectPrompt, objects_from_items
from pedsam.stream.core.scheduling import RotationSettings
from pedsam.stream.core.session import EdgeConfig, EdgeSession
from pedsam.stream.errors import ConfigError, PedsamError, PromptError
from pedsam.stream.fleet.transport import ClientSecurity
from pedsam.stream.logs import FORMATS
from pedsam.stream.logs import configure as configure_logs
from pedsam.workers.codec import CODECS
from pedsam.workers.errors import WorkerSideError
from pedsam.workers.models import DEFAULT_SEED, PRESETS, RANDOM_WEIGHTS_NOTICE, ModelSource

log = logging.getLogger("pedsam")


class _PromptItem(argparse.Action):
    """Keeps --point/--neg-point/--box/--object in command-line order in ``args.items``."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        items = list(getattr(namespace, "items", None) or [])
        items.append((self.const, values if values is not None else ""))
        namespace.items = items


def _add_model(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", default="tiny", choices=sorted(PRESETS), help="model preset (default: tiny)")
    group.add_argument("--checkpoint", help="official SAM checkpoint .pth; default: seeded random weights")
    group.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of random weights (default 0)")


def add_rotation_arguments(parser: argparse.ArgumentParser) -> None:
    """``--rotation`` and the exposure-budget flags; every command that runs frames takes them."""
    from pedsam.partitioner.rotation import ROTATIONS
    from pedsam.partitioner.scheduler import ON_EXCEED

    group = parser.add_argument_group("rotation and exposure budgets (per server, over video)")
    group.add_argument("--rotation", default="fixed", choices=ROTATIONS,
                       help="which server gets which share on each frame (default fixed)")
    group.add_argument("--slots", type=int, metavar="K",
                       help="shares per frame for pooled (default workers/2) and keyed-random (default workers)")
    group.add_argument("--frame-cap", type=float, metavar="F",
                       help="most of one frame a server may get, 0-1 (default: no cap beyond ceil(windows/K))")
    group.add_argument("--scene-cap", type=float, metavar="F",
                       help="most scene a server may see over the horizon, in frames' worth, 0-1 (default none)")
    group.add_argument("--horizon", type=int, default=50, metavar="T",
                       help="frames in the sliding window of the exposure ledger and --scene-cap (default 50)")
    group.add_argument("--on-budget", default="edge", choices=ON_EXCEED,
                       help="over a cap: compute those windows on the edge (default) or stop")
    group.add_argument("--no-motion", action="store_true",
                       help="do not estimate camera motion (scene coordinates = image coordinates)")


def rotation_settings(args: argparse.Namespace) -> RotationSettings:
    """The :class:`RotationSettings` of flags added by :func:`add_rotation_arguments`."""
    from pedsam.partitioner.scheduler import Budget

    try:
        budget = Budget(frame_cap=args.frame_cap, scene_cap=args.scene_cap, horizon=args.horizon,
                        on_exceed=args.on_budget)
    except PartitionerError as exc:
        raise ConfigError(str(exc)) from None
    return RotationSettings(policy=args.rotation, slots=args.slots, budget=budget, motion=not args.no_motion)


def _add_workers(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("workers")
    which = group.add_mutually_exclusive_group()
    which.add_argument("--workers", help="comma-separated HOST:PORT of running workers")
    which.add_argument("--local-workers", type=int, metavar="N", help="start N workers on loopback for this run")
    group.add_argument("--scheme", default="contiguous", choices=SCHEMES, help="partition scheme (default contiguous)")
    group.add_argument("--secret", help="edge secret for the random scheme (default: fresh per run)")
    group.add_argument("--codec", default="fp32", choices=sorted(CODECS), help="wire codec (default fp32, exact)")
    group.add_argument("--plan", default="default", choices=PLANS,
                       help="default: global blocks whole on the edge; offload: workers also run their "
                            "per-token parts, the edge only the attention mixing (less edge CPU, ~3x the bytes)")
    group.add_argument("--allow-single-server", action="store_true",
                       help="allow one worker, which then sees whole frames")
    group.add_argument("--connect-timeout", type=float, default=10.0, help="seconds to reach a worker")
    group.add_argument("--request-timeout", type=float, default=60.0,
                       help="seconds a worker may take for one segment before it counts as failed (default 60)")
    spare = group.add_mutually_exclusive_group()
    spare.add_argument("--standby", metavar="HOST:PORT,...", help="standby workers, used only when one fails")
    spare.add_argument("--local-standby", type=int, metavar="N", help="start N standby workers on loopback")
    group.add_argument("--on-failure", default="edge", choices=FAILOVER,
                       help="where a failed worker's windows go: edge (default), standby (within its budget, "
                            "else the edge) or stop")
    group.add_argument("--reconnect-interval", type=float, default=5.0,
                       help="seconds between attempts to reconnect a failed worker (default 5)")
    group.add_argument("--config", metavar="FILE.toml",
                       help="read these settings from a TOML file; flags given here win (see pedsam config check)")
    group.add_argument("--metrics-port", type=int, metavar="PORT",
                       help="serve Prometheus metrics at http://127.0.0.1:PORT/metrics while running")
    tls = parser.add_argument_group("transport security (for --workers)")
    tls.add_argument("--tls-ca", metavar="PEM", help="CA bundle worker certificates must chain to")
    tls.add_argument("--tls-cert", metavar="PEM", help="client certificate, for workers that require mutual TLS")
    tls.add_argument("--tls-key", metavar="PEM", help="client private key")
    tls.add_argument("--tls-server-name", metavar="NAME", help="name expected in worker certificates")
    tls.add_argument("--token-file", metavar="FILE",
                     help="bearer tokens: one TOKEN for every worker, or lines 'HOST:PORT TOKEN'")
    tls.add_argument("--insecure", action="store_true",
                     help="plain text to workers off this machine (trusted networks only)")
    add_rotation_arguments(parser)


def _add_prompts(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("prompts (pixels of the first frame; x right, y down)")
    group.add_argument("--point", action=_PromptItem, const="point", metavar="X,Y", help="foreground point")
    group.add_argument("--neg-point", action=_PromptItem, const="neg", metavar="X,Y", help="background point")
    group.add_argument("--box", action=_PromptItem, const="box", metavar="X0,Y0,X1,Y1", help="box, XYXY")
    group.add_argument("--object", action=_PromptItem, const="object", nargs=0,
                       help="start a new object: later points and boxes belong to it")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pedsam", description="Privacy-split Segment Anything for video.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    parser.add_argument("--log-format", choices=FORMATS, default="text",
                        help="log lines as text (default) or one JSON object per line")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    from pedsam.workers.cli import add_arguments as add_worker_arguments

    worker = sub.add_parser("worker", help="serve a model's windowed blocks over gRPC")
    add_worker_arguments(worker)

    embed = sub.add_parser("embed", help="an image's SAM embedding, computed through the split")
    embed.add_argument("image")
    embed.add_argument("--save", required=True, metavar="EMB.npy", help="write the 1xCxHxW float32 embedding")
    embed.add_argument("--audit", metavar="AUDIT.jsonl", help="write which worker got which windows")
    _add_model(embed)
    _add_workers(embed)

    segment = sub.add_parser("segment", help="masks for prompts on one image")
    segment.add_argument("image")
    segment.add_argument("--out", required=True, metavar="MASK.png",
                         help="mask PNG: 0/255 for one object, label values 1..N for several")
    _add_prompts(segment)
    _add_model(segment)
    _add_workers(segment)

    run = sub.add_parser("run", help="follow prompted objects through a video file")
    run.add_argument("video")
    run.add_argument("--out", required=True, metavar="DIR", help="output folder")
    run.add_argument("--in-flight", type=int, default=2, help="frames in flight (default 2)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_prompts(run)
    _add_model(run)
    _add_workers(run)

    demo = sub.add_parser("demo", help="the whole pipeline on a generated clip with 3 local workers")
    demo.add_argument("--out", default="out/demo", metavar="DIR", help="output folder (default out/demo)")
    demo.add_argument("--frames", type=int, default=24, help="clip length in frames (default 24)")
    demo.add_argument("--local-workers", type=int, default=3, help="workers to start (default 3)")
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_rotation_arguments(demo)

    from pedsam.stream.cli.privacy import add_arguments as add_privacy_arguments

    privacy = sub.add_parser("privacy-report",
                             help="attack every rotation policy over videos (inversion, mosaic, detection); JSON + HTML")
    add_privacy_arguments(privacy)

    from pedsam.stream.cli.weights import add_arguments as add_weights_arguments

    weights = sub.add_parser("weights", help="list, verify or download the official SAM checkpoints")
    add_weights_arguments(weights)

    from pedsam.workers.health import add_arguments as add_health_arguments

    health = sub.add_parser("health", help="ask a worker's grpc.health.v1 service whether it serves (exit 0 if so)")
    add_health_arguments(health)

    config = sub.add_parser("config", help="check an edge configuration file")
    config_actions = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    check = config_actions.add_parser("check", help="validate FILE and print what would run")
    check.add_argument("file", metavar="FILE.toml")

    certs = sub.add_parser("certs", help="a throwaway CA, worker certificates and tokens for a demo fleet")
    certs.add_argument("out", metavar="DIR", help="folder to write into")
    certs.add_argument("--hosts", default="localhost,localhost,localhost",
                       help="comma-separated host of each worker (default: 3 on localhost)")
    certs.add_argument("--port", type=int, default=50051, help="worker port written into edge-tokens")

    from pedsam.stream.runs.live_run import add_arguments as add_live_arguments

    live = sub.add_parser("stream", help="follow prompted objects in a camera stream, live")
    add_live_arguments(live)
    _add_prompts(live)
    _add_model(live)
    _add_workers(live)

    from pedsam.stream.web.server import add_arguments as add_serve_arguments

    serve = sub.add_parser("serve", help="a web page that segments the browser's camera over WebRTC")
    add_serve_arguments(serve)
    _add_model(serve)
    _add_workers(serve)

    from pedsam.stream.bench.pipeline import add_arguments as add_pipeline_bench_arguments

    pipeline_bench = sub.add_parser("bench-pipeline", help="throughput with 1 frame in flight against N, pinned")
    add_pipeline_bench_arguments(pipeline_bench)

    from pedsam.stream.bench.encoder import add_arguments as add_bench_arguments

    bench = sub.add_parser("bench", help="stock SAM vs pedsam's kernels vs the split: time, CPU, memory, bytes, error")
    add_bench_arguments(bench)
    return parser


def _edge_config(args: argparse.Namespace) -> EdgeConfig:
    workers = tuple(w.strip() for w in (args.workers or "").split(",") if w.strip())
    if getattr(args, "local_workers", None) is not None and args.local_workers < 1:
        raise ConfigError("--local-workers must be at least 1")
    security = ClientSecurity.from_files(
        insecure=args.insecure, ca=args.tls_ca, cert=args.tls_cert, key=args.tls_key,
        token_file=args.token_file, server_name=args.tls_server_name,
    )
    tokens = getattr(args, "config_tokens", None)
    if tokens:  # per-worker tokens from the config file; a --token-file line wins
        security = replace(security, tokens={**tokens, **security.tokens})
    return EdgeConfig(
        model=ModelSource(preset=args.model, checkpoint=args.checkpoint, seed=args.seed),
        workers=workers,
        local_workers=args.local_workers or 0,
        scheme=args.scheme,
        secret=args.secret.encode() if args.secret else None,
        codec=args.codec,
        plan=args.plan,
        allow_single_server=args.allow_single_server,
        connect_timeout=args.connect_timeout,
        request_timeout=args.request_timeout if args.request_timeout > 0 else None,
        security=security,
        rotation=rotation_settings(args),
        standby=tuple(w.strip() for w in (args.standby or "").split(",") if w.strip()),
        local_standby=args.local_standby or 0,
        on_failure=args.on_failure,
        reconnect_interval=args.reconnect_interval,
        metrics_port=args.metrics_port,
    )


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found: argparse.ArgumentParser = action.choices[name]
            return found
    raise KeyError(name)


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line; with ``--config FILE`` the file's values become the command's
    defaults, so flags given on the command line win over it."""
    args = parser.parse_args(argv)
    path = getattr(args, "config", None)
    if not path:
        return args
    from pedsam.stream.cli.config_file import apply, check_providers, load, worker_tokens

    command = _subparser(parser, args.command)
    config = load(path, command)
    check_providers(config)
    given_local = args.local_workers is not None and "local_workers" not in config.flags
    args = apply(config, command, parser, argv)
    if given_local:  # --local-workers on the command line replaces the file's workers
        args.workers = args.standby = None
    else:
        args.config_tokens = dict(worker_tokens(config))
    return args


def edge_config_from(parser: argparse.ArgumentParser, argv: Sequence[str]) -> tuple[argparse.Namespace, EdgeConfig]:
    """The arguments and :class:`EdgeConfig` a command line (with its config file) makes."""
    args = parse(parser, argv)
    return args, _edge_config(args)


def _objects(args: argparse.Namespace) -> list[ObjectPrompt]:
    objects = objects_from_items(getattr(args, "items", None) or [])
    if not objects:
        raise PromptError("give at least one prompt: --point X,Y or --box X0,Y0,X1,Y1")
    return objects


def _notice(session: EdgeSession) -> None:
    if session.random_weights:
        print(f"note: {RANDOM_WEIGHTS_NOTICE} (give --checkpoint for real masks)", file=sys.stderr)


async def cmd_embed(args: argparse.Namespace) -> int:
    from pedsam.stream.media.video import read_image
    from pedsam.stream.runs.audit import AuditWriter

    image = read_image(args.image)
    async with EdgeSession(_edge_config(args)) as session:
        _notice(session)
        embedding = await session.embed(image)
        if args.audit:
            grid = session.encoder.grid
            with AuditWriter(args.audit, num_windows=grid.num_windows, cap=session.scheduler.window_cap) as audit:
                audit.write(embedding.audit)
    array = embedding.tensor.numpy().astype(np.float32)
    np.save(args.save, array)
    print(f"embedding {tuple(array.shape)} float32 -> {args.save}")
    return 0


async def cmd_segment(args: argparse.Namespace) -> int:
    from PIL import Image

    from pedsam.stream.media.video import read_image

    image = read_image(args.image)
    objects = _objects(args)
    for prompt in objects:
        prompt.check_inside(image.shape[1], image.shape[0])
    async with EdgeSession(_edge_config(args)) as session:
        _notice(session)
        predictions = await session.segment(image, objects)
    if len(predictions) == 1:
        out = predictions[0].mask.astype(np.uint8) * 255
    else:
        out = np.zeros(image.shape[:2], np.uint8)
        for i, prediction in enumerate(predictions):
            out[prediction.mask] = i + 1
    try:
        Image.fromarray(out).save(args.out)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot write {args.out!r}: {exc}") from None
    for i, prediction in enumerate(predictions):
        print(f"object {i}: score {prediction.score:.3f}, {int(prediction.mask.sum())} pixels")
    print(f"mask -> {args.out}")
    return 0


async def cmd_run(args: argparse.Namespace) -> int:
    from pedsam.stream.media.video import probe_video
    from pedsam.stream.runs.batch import run_video

    objects = _objects(args)
    if args.in_flight < 1:
        raise ConfigError("--in-flight must be at least 1")
    info = probe_video(args.video)  # a bad video or prompt fails before any worker starts
    for prompt in objects:
        prompt.check_inside(info.width, info.height)
    async with EdgeSession(_edge_config(args)) as session:
        _notice(session)
        summary = await run_video(session, args.video, objects, args.out,
                                  in_flight=args.in_flight, progress=not args.no_progress)
    return _report(summary.to_json(), Path(args.out))


def _report(summary: dict[str, Any], out: Path) -> int:
    print(f"{summary['frames']} frames ({summary['frames_ok']} ok, {summary['frames_failed']} failed) "
          f"in {summary['seconds']:.1f} s, {summary['fps']:.2f} fps")
    print(f"largest share any worker saw: {summary['max_windows_per_server']} of "
          f"{summary['windows_per_frame']} windows per frame")
    exposure = summary.get("exposure")
    if exposure:
        servers = exposure["exposure"].values()
        print(f"rotation {exposure['rotation']}: over any {exposure['horizon']} frames a worker saw at most "
              f"{max(s['max_scene_share'] for s in servers):.0%} of the scene; longest run on one window "
              f"{max(s['longest_run'] for s in servers)} frames; edge computed {exposure['edge_windows']} windows")
    print(f"outputs: {out / 'overlay.mp4'}, {out / 'masks.jsonl'}, {out / 'audit.jsonl'}, {out / 'summary.json'}")
    if summary["frames_failed"]:
        print(f"pedsam: error: {summary['frames_failed']} frames failed; first: {summary['first_error']}",
              file=sys.stderr)
        return 1
    return 0


async def cmd_privacy_report(args: argparse.Namespace) -> int:
    from pedsam.stream.cli.privacy import run as run_privacy_report

    return await run_privacy_report(args)


async def cmd_demo(args: argparse.Namespace) -> int:
    from pedsam.stream.media.synthetic import make_clip
    from pedsam.stream.runs.batch import run_video

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    clip = make_clip(out / "input.mp4", frames=args.frames)
    x, y = clip.objects[0].centres[0]
    objects = [ObjectPrompt(points=((x, y),), labels=(1,))]
    print(f"demo: generated {clip.frame_count}-frame clip {clip.path}; prompting object at ({x:.0f}, {y:.0f})")
    config = EdgeConfig(model=ModelSource(preset="tiny"), local_workers=args.local_workers,
                        rotation=rotation_settings(args))
    async with EdgeSession(config) as session:
        print(f"demo: {args.local_workers} local workers {', '.join(session.executor_names)}; "
              f"model {config.model.describe()}")
        summary = await run_video(session, clip.path, objects, out, progress=not args.no_progress)
    return _report(summary.to_json(), out)


async def cmd_stream(args: argparse.Namespace) -> int:
    from pedsam.stream.runs.live_run import run as run_live_command

    return await run_live_command(args, _edge_config(args), _objects(args))


async def cmd_serve(args: argparse.Namespace) -> int:
    from pedsam.stream.web.server import run as run_server

    return await run_server(args, _edge_config(args))


async def cmd_bench_pipeline(args: argparse.Namespace) -> int:
    from pedsam.stream.bench.pipeline import run as run_pipeline_bench

    return await run_pipeline_bench(args)


async def cmd_bench(args: argparse.Namespace) -> int:
    from pedsam.stream.bench.encoder import run as run_bench

    return await run_bench(args)


COMMANDS = {"embed": cmd_embed, "segment": cmd_segment, "run": cmd_run, "demo": cmd_demo, "privacy-report": cmd_privacy_report, "stream": cmd_stream,
            "serve": cmd_serve, "bench-pipeline": cmd_bench_pipeline, "bench": cmd_bench}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parse(parser, argv)
    except PedsamError as exc:
        print(f"pedsam: error: {exc}", file=sys.stderr)
        return 2
    level = logging.WARNING if args.verbose == 0 else logging.INFO if args.verbose == 1 else logging.DEBUG
    configure_logs(level, args.log_format)
    if args.command == "config":
        return _guard(lambda: cmd_config_check(parser, args.file))
    if args.command == "health":
        from pedsam.workers.health import main as health_main

        return _guard(lambda: health_main(args))
    if args.command == "certs":
        return _guard(lambda: cmd_certs(args))
    if args.command == "weights":
        from pedsam.stream.cli.weights import run as run_weights

        return _guard(lambda: run_weights(args))
    if args.command == "worker":
        from pedsam.workers.cli import serve

        return _guard(lambda: asyncio.run(serve(args)))
    return _guard(lambda: asyncio.run(COMMANDS[args.command](args)))


def cmd_config_check(parser: argparse.ArgumentParser, path: str) -> int:
    """Validate an edge configuration file as ``pedsam run`` would read it; print what would run."""
    args, config = edge_config_from(parser, ["run", "VIDEO", "--out", "OUT", "--config", path])
    from pedsam.stream.cli.config_file import load

    entries = {w.address: w for w in load(path, _subparser(parser, "run")).workers}
    security = config.security or ClientSecurity()

    def worker(address: str) -> str:
        entry = entries.get(address)
        notes = [entry.provider] if entry is not None and entry.provider else []
        notes.append("token" if security.token_for(address) else "no token")
        return f"{address} ({', '.join(notes)})"

    if config.local_workers:
        fleet = f"{config.local_workers} local" + (f", {config.local_standby} local standby" if config.local_standby else "")
    else:
        fleet = ", ".join(map(worker, config.workers))
        if config.standby:
            fleet += "; standby " + ", ".join(map(worker, config.standby))
    if config.local_workers:
        transport = "plain text on loopback, a fresh token per session"
    elif security.insecure:
        transport = "plain text (--insecure)"
    elif security.cert is not None:
        transport = "mutual TLS (client certificate)"
    elif security.ca is not None:
        transport = "TLS"
    else:
        transport = "TLS with the system's CAs (plain text on loopback)"
    budget = config.rotation.budget
    lines = [
        f"config ok: {path}",
        f"model      {config.model.describe()}",
        f"workers    {fleet}",
        f"transport  {transport}",
        f"split      scheme {config.scheme}, codec {config.codec}, plan {config.plan}, {args.in_flight} frames in flight",
        f"rotation   {config.rotation.policy}; budgets: frame {budget.frame_cap}, scene {budget.scene_cap} over "
        f"{budget.horizon} frames, on budget: {budget.on_exceed}",
        f"failover   on failure: {config.on_failure}, reconnect every {config.reconnect_interval:g} s, "
        f"request timeout {config.request_timeout} s",
        f"metrics    {'metrics on port ' + str(config.metrics_port) if config.metrics_port is not None else 'off'}",
    ]
    print("\n".join(lines))
    return 0


def cmd_certs(args: argparse.Namespace) -> int:
    from pedsam.workers.certs import make_demo_pki

    hosts = [h.strip() for h in args.hosts.split(",") if h.strip()]
    if not hosts:
        raise ConfigError("--hosts needs at least one host")
    try:
        pki = make_demo_pki(args.out, hosts, port=args.port)
    except OSError as exc:
        raise ConfigError(f"cannot write into {args.out!r}: {exc.strerror}") from None
    print(f"wrote a demo CA and {len(hosts)} worker identities into {pki.folder}")
    for index, (cert, key, token) in enumerate(pki.workers):
        print(f"worker {index}: pedsam worker --host 0.0.0.0 --port {args.port} --tls-cert {cert} "
              f"--tls-key {key} --tls-client-ca {pki.ca} --token-file {token}")
    print(f"edge: --tls-ca {pki.ca} --tls-cert {pki.edge_cert} --tls-key {pki.edge_key} "
          f"--token-file {pki.edge_tokens}")
    return 0


def _guard(action: Any) -> int:
    try:
        return int(action())
    except (PedsamError, WorkerSideError, PartitionerError) as exc:
        print(f"pedsam: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pedsam: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
