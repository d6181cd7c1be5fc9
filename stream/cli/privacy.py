"""``pedsam privacy-report``: every rotation policy over videos, attacked; JSON + HTML out.

    pedsam privacy-report VIDEO [VIDEO ...] --out DIR [--model vit_b] [--servers 3]
        [--policies fixed,round-robin,...] [--max-frames N] [--stride S] [--scene-cap F] ...

Writes ``DIR/report.json`` and ``DIR/report.html`` and prints two lines per policy and video.
The ``worker`` line: the worst single worker (one worker over the whole run, per figure) with its
largest frame share, scene share over the horizon (``scene``) and since the start (``whole``), the
longest run, the edge's share of the picture windows, and the attacks: mean coverage of the
current frame, panorama coverage of the run's scene, PSNR and SSIM, people and face recall. The
``coal`` line: the worst coalition of up to ``--coalitions`` workers likewise (``whole``: its
share of the scene since the start). Brackets are 95% bootstrap intervals over frames; ``of N``
the reference detections on the true frames. The attacks see the first segment's tokens as they
cross the wire in ``--codec``. The listed policies run under ``--scheme``
and the budget flags, which for this command default to ``contiguous`` and no scene or run cap (a
policy on its own); the ``defaults`` row is what a run with no flags does. No workers are needed:
what each server would receive is computed from the frames' prologue.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Sequence
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
        codec=args["codec"],
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
        print(f"{video['video']}: {video['frames']} frames, {video['codec']} tokens, token inversion "
              f"{video['inversion_psnr_db']} dB, {video['padding_windows']} of {video['windows_per_frame']} windows "
              "pure padding (kept on the edge)")
        print(f"  {'policy':<15}{'who':<9}{'frame':>6}{'scene':>6}{'whole':>6}{'run':>5}{'edge':>18}"
              f"{'cover':>18}{'pano':>6}{'psnr':>6}{'ssim':>6}{'people':>24}{'faces':>24}")
        for label, p in video["policies"].items():
            e, m, d = p["exposure"], p["mosaic"], p["detection"]
            print(f"  {label:<15}{'worker':<9}{e['max_frame_share']:>6.2f}{e['max_scene_share']:>6.2f}"
                  f"{e['max_run_scene_share']:>6.2f}{e['longest_run']:>5}{_ci(e['edge_share'], e['edge_share_ci']):>18}"
                  f"{_ci(m['coverage_mean'], m['coverage_mean_ci']):>18}{_num(m['panorama_coverage']):>6}"
                  f"{_num(m['psnr_db_mean'], 1):>6}{_num(m['ssim_mean']):>6}"
                  f"{_ci(d['people_recall'], d['people_recall_ci'], d['people_reference']):>24}"
                  f"{_ci(d['faces_recall'], d['faces_recall_ci'], d['faces_reference']):>24}")
            c = p["coalition"]
            if c is not None:
                size = max(len(c[k]["party"].split("+")) for k in ("coverage", "people"))
                print(f"  {'':<15}{f'{size} coal':<9}{'':>6}{'':>6}{_num(e['coalition_run_scene_share']):>6}{'':>5}"
                      f"{'':>18}{_ci(c['coverage']['mean'], c['coverage']['ci']):>18}"
                      f"{_num(c['panorama']['share']):>6}{_num(c['coverage']['psnr_db'], 1):>6}"
                      f"{_num(c['coverage']['ssim']):>6}"
                      f"{_ci(c['people']['recall'], c['people']['ci'], c['people']['reference']):>24}"
                      f"{_ci(c['faces']['recall'], c['faces']['ci'], c['faces']['reference']):>24}")
    print(f"report: {out / 'report.json'}, {out / 'report.html'}")
    return 0


def _num(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _ci(value: float | None, interval: Sequence[float] | None, reference: int | None = None) -> str:
    """``0.35 [0.20,0.50]``, with `` of 26`` reference detections when given."""
    text = _num(value) if interval is None else f"{value:.2f} [{interval[0]:.2f},{interval[1]:.2f}]"
    return text if reference is None else f"{text} of {reference}"
