"""``pedsam bench-link``: live video through emulated links, every setting measured the same way.

For each link profile, keyframe policy, codec and number of remote segments, one whole
``pedsam stream --file CLIP --realtime --mask M.png --link PROFILE ...`` process runs for
``seconds`` over a generated 640x480 25 fps scene (an object given by its mask, as a user would
click it once), two local workers on this machine, and its ``summary.json`` gives the row:

- mask fps: frames with masks per second of the run, against the source's 25;
- latency p50/p95: capture to mask;
- SAM keyframes (frames that went through the split) and their mean interval;
- bytes per second per link, each way, as the edge measured them;
- edge CPU per frame (the edge process's CPU, every thread; workers not included).

Settings run in an order that alternates them, so the machine's drift falls on all alike.
"""

from __future__ import annotations

import itertools
import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image

from pedsam.stream.errors import ConfigError, PedsamError
from pedsam.stream.media.masks_io import read_records
from pedsam.stream.media.synthetic import demo_scene

__all__ = ["LinkBench", "run"]


@dataclass(frozen=True, kw_only=True, slots=True)
class LinkBench:
    """The settings of one ``pedsam bench-link`` run (see the command's --help)."""

    profiles: str = "lan,wifi,lte"
    policies: str = "all,adaptive"
    codecs: str = "fp32,int8"
    remote: str = "4,1"
    model: str = "vit_b"
    seconds: float = 20.0
    fps: int = 25
    json: str | None = None

    @classmethod
    def of(cls, values: Mapping[str, Any]) -> LinkBench:
        return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})


def _list(text: str, flag: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise ConfigError(f"{flag} needs at least one value")
    return items


def _row(summary: dict[str, Any], records: list[dict[str, Any]], setting: dict[str, Any]) -> dict[str, Any]:
    seconds = max(1e-9, float(summary["seconds"]))
    masked = sum(1 for r in records if r.get("objects"))
    sam = sum(1 for r in records if "audit_frame" in r)
    links = summary.get("links") or {}
    up = [v.get("up_bytes", 0) / seconds for v in links.values()]
    down = [v.get("down_bytes", 0) / seconds for v in links.values()]
    return {
        **setting,
        "frames": summary["frames"],
        "dropped": summary["frames_dropped"],
        "mask_fps": round(masked / seconds, 2),
        "latency_p50_s": summary["latency_p50_s"],
        "latency_p95_s": summary["latency_p95_s"],
        "sam_keyframes": sam,
        "keyframe_interval_s": round(seconds / sam, 2) if sam else None,
        "up_mbit_s_per_link": round(8 * max(up) / 1e6, 2) if up else None,
        "down_mbit_s_per_link": round(8 * max(down) / 1e6, 2) if down else None,
        "edge_cpu_ms_per_frame": round(1e3 * summary["edge_cpu_s"] / max(1, summary["frames"]), 1),
    }


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    head = ("link", "keyframes", "codec", "remote", "mask fps", "p50 ms", "p95 ms", "SAM frames", "interval s",
            "up Mbit/s", "down Mbit/s", "edge CPU ms/frame")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value * 1e3:.0f}"

    for r in rows:
        cells = (r["link"], r["keyframes"], r["codec"], str(r["remote"]), f"{r['mask_fps']:.1f}",
                 ms(r["latency_p50_s"]), ms(r["latency_p95_s"]), str(r["sam_keyframes"]),
                 "-" if r["keyframe_interval_s"] is None else f"{r['keyframe_interval_s']:.1f}",
                 str(r["up_mbit_s_per_link"]), str(r["down_mbit_s_per_link"]), f"{r['edge_cpu_ms_per_frame']:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run(args: LinkBench) -> int:
    profiles = _list(args.profiles, "--profiles")
    policies = _list(args.policies, "--policies")
    codecs = _list(args.codecs, "--codecs")
    try:
        remote = [int(v) for v in _list(args.remote, "--remote")]
    except ValueError:
        raise ConfigError(f"--remote takes numbers of segments, comma-separated; got {args.remote!r}") from None
    if args.seconds <= 0:
        raise ConfigError("--seconds must be positive")
    settings = list(itertools.product(profiles, policies, codecs, remote))
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="pedsam-bench-link-") as tmp:
        folder = Path(tmp)
        frames = int(args.seconds * args.fps)
        scene = demo_scene(width=640, height=480, frames=frames)
        clip = folder / "scene.mp4"
        scene.write(clip, fps=args.fps)
        mask = folder / "mask.png"
        PIL.Image.fromarray(scene.frame(0).masks[0].astype(np.uint8) * 255).save(mask)
        print(f"bench-link: {len(settings)} settings, {args.seconds:g} s of a 640x480 {args.fps} fps scene each, "
              f"{args.model}, 2 local workers", file=sys.stderr, flush=True)
        for number, (profile, policy, codec, segments) in enumerate(settings, 1):
            out = folder / f"run{number}"
            command = [
                sys.executable, "-m", "pedsam.stream", "stream", "--file", str(clip), "--realtime",
                "--mask", str(mask), "--model", args.model, "--local-workers", "2", "--link", profile,
                "--keyframes", policy, "--codec", codec, "--remote-segments", str(segments),
                "--duration", str(args.seconds + 60), "--record", str(out), "--no-progress",
            ]
            done = subprocess.run(command, capture_output=True, text=True, timeout=args.seconds * 20 + 600)
            if done.returncode != 0:
                raise PedsamError(f"bench-link: {profile} {policy} {codec} remote {segments} failed: "
                                  f"{done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")
            summary = json.loads((out / "summary.json").read_text())
            row = _row(summary, read_records(out / "masks.jsonl"),
                       {"link": profile, "keyframes": policy, "codec": codec, "remote": segments})
            rows.append(row)
            print(f"bench-link: [{number}/{len(settings)}] {profile} {policy} {codec} remote {segments}: "
                  f"{row['mask_fps']} mask fps, p50 {row['latency_p50_s']} s", file=sys.stderr, flush=True)
    print(format_table(rows))
    fps = [r["mask_fps"] for r in rows if r["keyframes"] == "adaptive"]
    if fps:
        print(f"\nadaptive keyframes: {statistics.median(fps):.1f} mask fps (median over settings) "
              f"against a {args.fps} fps source")
    if args.json:
        try:
            Path(args.json).write_text(json.dumps({"settings": {f.name: getattr(args, f.name) for f in fields(args)},
                                                   "rows": rows}, indent=2) + "\n")
        except OSError as exc:
            raise ConfigError(f"cannot write {args.json!r}: {exc.strerror}") from None
    return 0
