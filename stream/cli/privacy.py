"""``pedsam privacy-report``: every rotation policy over videos, attacked; JSON + HTML out.

    pedsam privacy-report VIDEO [VIDEO ...] --out DIR [--model vit_b] [--servers 3]
        [--policies fixed,round-robin,...] [--max-frames N] [--stride S] [--scene-cap F] ...

Writes ``DIR/report.json`` and ``DIR/report.html`` and prints one line per policy and video:
the worst server's largest frame share, scene share over the horizon (``scene``) and since the
start (``whole``), the worst coalition's share since the start (``coal``), the longest run, the
edge's share of the picture windows, and the attacks. The listed policies run under ``--scheme``
and the budget flags, which for this command default to ``contiguous`` and no scene or run cap (a
policy on its own); the ``defaults`` row is what a run with no flags does. No workers are needed:
what each server would receive is computed from the frames' prologue.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from pedsam.stream.cli.errors import require
from pedsam.stream.cli.options import GROUPS
from pedsam.stream.cli.settings import Values, budget, model_source
from pedsam.stream.errors import ConfigError

__all__ = ["run"]


async def run(args: Values) -> int:
    require("matplotlib", "report", "privacy-report")
    from pedsam.stream.core.scheduling import RotationSettings
    from pedsam.stream.privacy.html import render_html
    from pedsam.stream.privacy.report import ReportConfig, run_report

    # The defaults row: what `pedsam run` does with no flags, read from the one option table.
    plain = {o.dest: o.default for name in ("split", "rotation and exposure budgets (per server, over video)")
             for o in GROUPS[name]}
    defaults = RotationSettings(policy=plain["rotation"], budget=budget(plain), motion=not args["no_motion"])
    config = ReportConfig(
        model=model_source(args),
        servers=args["servers"],
        pool_size=args["pool_size"],
        scheme=args["scheme"],
        policies=tuple(p.strip() for p in args["policies"].split(",") if p.strip()),
        budget=budget(args),
        max_frames=args["max_frames"],
        stride=args["stride"],
        eval_every=args["eval_every"],
        detect_every=args["detect_every"],
        secret=args["secret"].encode(),
        motion=not args["no_motion"],
        coalitions=args["coalitions"],
        defaults=(defaults, plain["scheme"]),
    )
    out = Path(args["out"])
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create output folder {str(out)!r}: {exc.strerror}") from None

    def progress(message: str) -> None:
        print(f"privacy-report: {message}", file=sys.stderr)

    report, results = await asyncio.to_thread(run_report, args["videos"], config, progress)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    page = await asyncio.to_thread(render_html, report, results)
    (out / "report.html").write_text(page)
    for video in report["videos"]:
        print(f"{video['video']}: {video['frames']} frames, token inversion {video['inversion_psnr_db']} dB, "
              f"{video['padding_windows']} of {video['windows_per_frame']} windows pure padding (kept on the edge)")
        print(f"  {'policy':<15}{'frame':>7}{'scene':>7}{'whole':>7}{'coal':>6}{'run':>5}{'edge':>6}{'cover':>7}"
              f"{'psnr':>7}{'ssim':>6}{'people':>8}{'faces':>7}")
        for label, p in video["policies"].items():
            e, m, d = p["exposure"], p["mosaic"], p["detection"]
            print(f"  {label:<15}{e['max_frame_share']:>7.2f}{e['max_scene_share']:>7.2f}"
                  f"{e['max_run_scene_share']:>7.2f}{_num(e['coalition_run_scene_share']):>6}{e['longest_run']:>5}"
                  f"{e['edge_share']:>6.2f}{_num(m['coverage_mean']):>7}{_num(m['psnr_db_mean'], 1):>7}"
                  f"{_num(m['ssim_mean']):>6}{_num(d['people_recall']):>8}{_num(d['faces_recall']):>7}")
    print(f"report: {out / 'report.json'}, {out / 'report.html'}")
    return 0


def _num(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"
