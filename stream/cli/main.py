"""The ``pedsam`` command line: argument parsing, and nothing else.

Every command is one row of :data:`COMMANDS`: its help, the option sections it takes (defined
once in :mod:`pedsam.stream.cli.options`), its own positional arguments, and its handler, named
as ``module:function`` and imported only when the command runs, so ``pedsam --help`` and
``pedsam worker`` load no more than they use. Every handler takes the resolved
:class:`~pedsam.stream.cli.settings.Values` and returns the exit status.

Exit status: 0 on success; 2 with one line ``pedsam: error: ...`` on stderr (no traceback) for a
user-facing error; 1 when a run finished but some frames failed; 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import importlib
import inspect
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pedsam.stream.cli.options import (
    EDGE,
    GROUPS,
    Section,
    add_logging,
    add_options,
    pick,
    sections,
)
from pedsam.stream.cli.settings import Values, resolve
from pedsam.stream.fleet.links import PROFILES

__all__ = ["COMMANDS", "Command", "build_parser", "main", "parse"]

log = logging.getLogger("pedsam")

Arguments = Callable[[argparse.ArgumentParser], None]


def _positional(*specs: tuple[str, dict[str, Any]]) -> Arguments:
    def add(parser: argparse.ArgumentParser) -> None:
        for name, kwargs in specs:
            parser.add_argument(*name.split(), **kwargs)
    return add


@dataclass(frozen=True, kw_only=True, slots=True)
class Command:
    """One subcommand: ``pedsam NAME ...``."""

    name: str
    help: str
    handler: str  # "module:function", imported when the command runs
    parts: Sequence[Section] = ()
    own: Arguments | None = None  # positional arguments and flags of this command alone
    defaults: Mapping[str, Any] = field(default_factory=dict)
    prompts: bool = False

    def run(self, values: Values) -> int:
        module, function = self.handler.split(":")
        with contextlib.ExitStack() as stack:
            if values.get("local_workers") or values.get("local_standby"):
                # Local workers' spawner first, forked before the edge's code is imported.
                from pedsam.stream.cli.forkserver import prestart
                from pedsam.stream.fleet.spawner import offered

                stack.enter_context(offered(prestart(main)))
            handler = getattr(importlib.import_module(module), function)
            result = handler(values)
            if inspect.isawaitable(result):
                result = asyncio.run(result)  # type: ignore[arg-type]
            return int(result)


_C = "pedsam.stream.cli.commands"
_RUN = sections(*EDGE, "run")
_OUT_DIR = ("--out", {"required": True, "metavar": "DIR", "help": "output folder"})

COMMANDS: tuple[Command, ...] = (
    Command(name="worker", help="serve a model's windowed blocks over gRPC", handler="pedsam.stream.cli.workers:worker",
            parts=[("worker", GROUPS["worker"]), ("model", GROUPS["model"]), ("device", GROUPS["device"])]),
    Command(name="embed", help="an image's SAM embedding, computed through the split", handler=f"{_C}:embed",
            parts=sections(*EDGE),
            own=_positional(("image", {"help": "the image (any format PIL reads)"}),
                            ("--save", {"required": True, "metavar": "EMB.npy",
                                        "help": "write the 1xCxHxW float32 embedding"}),
                            ("--audit", {"metavar": "AUDIT.jsonl", "help": "write which worker got which windows"}))),
    Command(name="segment", help="masks for prompts on one image", handler=f"{_C}:segment",
            parts=sections(*EDGE), prompts=True,
            own=_positional(("image", {"help": "the image (any format PIL reads)"}),
                            ("--out", {"required": True, "metavar": "MASK.png",
                                       "help": "mask PNG, 0/255; with several objects MASK-0.png, MASK-1.png, ..."}))),
    Command(name="run", help="follow prompted objects through a video file; every frame gets a record",
            handler=f"{_C}:run", parts=_RUN, prompts=True,
            own=_positional(("video", {"help": "the video file"}), _OUT_DIR)),
    Command(name="demo", help="the whole pipeline on a generated clip, 3 local workers by default, official "
                              "ViT-B weights when they are cached or can be fetched, else pedsam-mini",
            handler=f"{_C}:demo", parts=_RUN, defaults={"local_workers": 3, "keyframes": "adaptive"},
            own=_positional(("--out", {"default": "out/demo", "metavar": "DIR",
                                       "help": "output folder (default out/demo)"}),
                            ("--frames", {"type": int, "default": 24,
                                          "help": "length of the generated clip (default 24)"}),
                            ("--download-timeout", {"type": float, "default": 3.0,
                                                    "help": "seconds to wait for the network when fetching the "
                                                            "official ViT-B weights (default 3)"}))),
    Command(name="stream", help="follow prompted objects in a camera stream or a file, live", handler=f"{_C}:stream",
            parts=[*_RUN, *sections("live")], prompts=True, own=lambda parser: _source(parser),
            defaults={"keyframes": "adaptive"}),
    Command(name="serve", help="a web page that segments the browser's camera over WebRTC", handler=f"{_C}:serve",
            parts=[("serve", GROUPS["serve"]), *sections(*EDGE), ("run", pick("keyframes", "in_flight"))],
            defaults={"keyframes": "adaptive"}),
    Command(name="privacy-report",
            help="attack every rotation policy over videos (inversion, mosaic, detection); JSON + HTML",
            handler="pedsam.stream.cli.privacy:run",
            parts=[("privacy report", GROUPS["privacy report"]), ("model", GROUPS["model"]),
                   ("split and budgets", pick("scheme", "secret", "codec", "keep_local", "keep_local_hold", "horizon",
                                              "frame_cap", "scene_cap", "horizon_cap", "run_cap", "coalition",
                                              "coalition_cap", "on_budget", "no_motion"))],
            defaults={"model": "vit_b", "secret": "pedsam privacy report", "scheme": "contiguous",
                      "scene_cap": "none", "run_cap": "none"},
            own=_positional(("videos", {"nargs": "+", "metavar": "VIDEO",
                                        "help": "videos to evaluate (e.g. samples/media/vtest.avi)"}),
                            ("--out", {"required": True, "metavar": "DIR",
                                       "help": "folder for report.json and report.html"}))),
    Command(name="attack-capture",
            help="what workers' --capture files give away of a video: window positions, pixels, faces",
            handler="pedsam.stream.cli.privacy:attack_capture", parts=[("model", GROUPS["model"])],
            own=_positional(("video", {"help": "the video the edge ran (the truth the attack is scored on)"}),
                            ("captures", {"nargs": "+", "metavar": "CAPTURE",
                                          "help": "files of pedsam worker --capture, one per worker"}),
                            ("--face-attacker", {"choices": ("auto", "cnn", "haar"), "default": "auto",
                                                 "help": "the attack's face detector: cnn (dlib's CNN, "
                                                         "pedsam[attack]), haar, auto (cnn when installed) "
                                                         "(default auto)"}),
                            ("--cnn-upsample", {"type": int, "choices": (0, 1, 2), "default": 1,
                                                "help": "times the cnn face attacker doubles each image first: 1 "
                                                        "finds faces down to about 40 px, 0 to about 80 px in about "
                                                        "a quarter of the time (default 1)"}),
                            ("--max-frames", {"type": int, "default": 10**9, "metavar": "N",
                                              "help": "frames of the video to match at most"}),
                            ("--lookahead", {"type": int, "default": 30, "metavar": "N",
                                             "help": "frames past the latest one matched that a request may be of: "
                                                     "keyframe gaps, frames kept wholly home (default 30)"}),
                            ("--json", {"metavar": "FILE", "help": "also write the figures as JSON"}))),
    Command(name="weights", help="list, verify or download the official SAM checkpoints",
            handler="pedsam.stream.cli.weights:run", own=lambda parser: _weights(parser)),
    Command(name="health", help="ask a worker's grpc.health.v1 service whether it serves (exit 0 if so)",
            handler="pedsam.stream.cli.workers:health", parts=[("health", GROUPS["health"])],
            own=_positional(("address", {"help": "HOST:PORT of the worker (its port, or its --health-port)"}),
                            ("--token-file", {"dest": "health_token", "metavar": "FILE",
                                              "help": "bearer token for a worker that requires one"}))),
    Command(name="link", help="relay a local port to a worker over an emulated link (tests and benches)",
            handler="pedsam.stream.cli.workers:link",
            own=_positional(("spec", {"metavar": "SPEC", "help": "RATE:RTT (100mbit:10ms), UP/DOWN:RTT "
                                      f"(20mbit/50mbit:50ms; up: toward the worker) or {', '.join(PROFILES)}"}),
                            ("target", {"metavar": "HOST:PORT", "help": "the worker"}),
                            ("--port", {"type": int, "default": 0,
                                        "help": "port on 127.0.0.1 to listen on (default: a free one)"}))),
    Command(name="config", help="check an edge configuration file", handler=f"{_C}:config_check",
            own=_positional(("action", {"choices": ["check"], "help": "check: validate FILE, print what would run"}),
                            ("file", {"metavar": "FILE.toml"}))),
    Command(name="certs", help="a throwaway CA, worker certificates and tokens for a demo fleet",
            handler="pedsam.stream.cli.workers:certs",
            own=_positional(("out", {"metavar": "DIR", "help": "folder to write into"}),
                            ("--hosts", {"default": "localhost,localhost,localhost",
                                         "help": "comma-separated host of each worker (default: 3 on localhost)"}),
                            ("--port", {"type": int, "default": 50051,
                                        "help": "first worker port; workers on one host get consecutive ports "
                                                "(default 50051)"}))),
    Command(name="bench", help="stock SAM vs pedsam's kernels vs the split: time, CPU, memory, bytes, error",
            handler=f"{_C}:bench", parts=[("bench", GROUPS["bench"]), ("model", pick("model", "seed")),
                                           ("device", pick("device")), ("split", pick("scheme"))],
            defaults={"model": "vit_b", "scheme": "interleaved"}),
    Command(name="bench-link", help="live video through emulated links: mask fps, latency, keyframes, bytes "
                                    "per link and edge CPU per setting", handler=f"{_C}:bench_link",
            parts=[("bench", GROUPS["bench-link"]), ("model", pick("model"))], defaults={"model": "vit_b"}),
    Command(name="bench-propagation", help="mask propagation against generated truth: IoU by keyframe interval, "
                                           "drift curve, CPU per frame", handler=f"{_C}:bench_propagation",
            parts=[("bench", GROUPS["bench-propagation"])]),
    Command(name="bench-pipeline", help="throughput with 1 frame in flight against N, edge and workers pinned",
            handler=f"{_C}:bench_pipeline",
            parts=[("bench", GROUPS["bench-pipeline"]), ("model", pick("model", "seed")),
                   ("workers and split", pick("local_workers", "plan", "in_flight"))],
            defaults={"model": "tiny", "local_workers": 3, "in_flight": 3}),
    Command(name="bench-entropy", help="lossless compression of the wire's tensors on real footage: ratio and CPU",
            handler=f"{_C}:bench_entropy", parts=[("bench", GROUPS["bench-entropy"]), ("model", pick("seed"))]),
    Command(name="bench-verify", help="what --verify costs the edge: CPU and wall per frame against no checks, "
                                      "settings alternating frame by frame", handler=f"{_C}:bench_verify",
            parts=[("bench", GROUPS["bench-verify"]), ("model", pick("model", "seed")),
                   ("workers", pick("local_workers"))],
            defaults={"model": "tiny", "local_workers": 3}),
    Command(name="bench-keep-local", help="what --keep-local costs the edge per clip: detection CPU per frame and "
                                          "the share of windows kept home", handler=f"{_C}:bench_keep_local",
            parts=[("bench", GROUPS["bench-keep-local"]), ("model", pick("model")),
                   ("split", pick("keep_local", "keep_local_hold"))],
            defaults={"model": "vit_b", "keep_local": "faces,people"},
            own=_positional(("videos", {"nargs": "+", "metavar": "VIDEO",
                                        "help": "videos to measure (e.g. samples/media/vtest.avi)"}))),
    Command(name="bench-leakage", help="context leakage: how well a worker predicts windows it was not sent from "
                                       "every segment it ran, against the first segment alone; confidence intervals",
            handler="pedsam.stream.cli.privacy:leakage",
            parts=[("bench", GROUPS["bench-leakage"]), ("model", pick("model", "checkpoint")),
                   ("split", pick("scheme"))]),
    Command(name="bench-mini", help="pedsam-mini's quality and cost: IoU on held-out composite scenes (click, box) "
                                    "and on generated clips through run and stream, time per frame against tiny",
            handler=f"{_C}:bench_mini",
            parts=[("bench", GROUPS["bench-mini"]), ("model", pick("checkpoint")),
                   ("workers", pick("local_workers"))],
            defaults={"local_workers": 3}),
)


def _source(parser: argparse.ArgumentParser) -> None:
    which = parser.add_argument_group("source").add_mutually_exclusive_group(required=True)
    which.add_argument("--camera", metavar="DEVICE",
                       help="camera index (0), device path (/dev/video0) or stream URL OpenCV can open")
    which.add_argument("--file", metavar="VIDEO", help="a video file, read frame by frame without drops")


def _weights(parser: argparse.ArgumentParser) -> None:
    from pedsam.workers.presets import PRESETS
    from pedsam.workers.weights import DEFAULT_DIR, OFFICIAL

    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("list", help="the official checkpoints: file, size, MD5, URL")
    check = actions.add_parser("verify", help="check a local file's size, structure and MD5")
    check.add_argument("path", help="the .pth file")
    check.add_argument("--model", choices=sorted(PRESETS),
                       help="architecture it should fit (default: the one its file name says)")
    fetch = actions.add_parser("download", help="fetch an official checkpoint and verify it")
    fetch.add_argument("model", choices=sorted(OFFICIAL))
    fetch.add_argument("--dir", default=DEFAULT_DIR, help=f"folder to put it in (default {DEFAULT_DIR}/)")
    fetch.add_argument("--url", help="a mirror to fetch from instead of Meta's address")
    fetch.add_argument("--timeout", type=float, default=15.0, help="network timeout, seconds (default 15)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pedsam", description="Privacy-split Segment Anything for video.")
    add_logging(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        child = sub.add_parser(command.name, help=command.help, description=command.help)
        add_logging(child)
        if command.own is not None:
            command.own(child)
        add_options(child, command.parts, defaults=command.defaults, prompts=command.prompts)
    return parser


def _accepted(command: Command) -> list[Any]:
    return [option for _, options in command.parts for option in options]


def parse(argv: Sequence[str] | None = None) -> tuple[Command, Values]:
    """The command a command line names and its resolved settings (flags over ``--config``
    over defaults).

    Raises:
        SystemExit: argparse's usage error (exit status 2) or ``--help``.
        ConfigError: a ``--config`` file that is unreadable or wrong.
    """
    args = build_parser().parse_args(argv)
    command = next(c for c in COMMANDS if c.name == args.command)
    return command, resolve(command.name, args, _accepted(command), command.defaults)


def main(argv: Sequence[str] | None = None) -> int:
    from pedsam.stream.cli.errors import guard
    from pedsam.stream.logs import configure

    args = build_parser().parse_args(argv)
    verbose = getattr(args, "verbose", 0)
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    configure(level, getattr(args, "log_format", "text"))
    command = next(c for c in COMMANDS if c.name == args.command)
    return guard(lambda: command.run(resolve(command.name, args, _accepted(command), command.defaults)))


def entry() -> None:
    """The ``pedsam`` command (and ``python -m pedsam.stream``): :func:`main`, then exit without
    tearing down every module imported (about a second of CPU with torch loaded, at the end of
    every run and every worker). By then every output is closed: exit handlers still run (log
    handlers flush and close), and the standard streams are flushed."""
    code = main()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a reader that went away, or a stream already closed
            pass
    os._exit(code)


if __name__ == "__main__":
    entry()
