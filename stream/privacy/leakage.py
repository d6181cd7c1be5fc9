"""``pedsam bench-leakage``: context leakage, measured (what :mod:`~pedsam.stream.privacy.context`
records, attacked by :mod:`~pedsam.stream.privacy.attackers`).

Clips: generated scenes (``sprites``), or frames built to leak (``blocks``: one flat random colour
per window, so inpainting is at chance and the harness shows what context carries when there is
nothing else to go on). For each seed (the model's random weights, unless a checkpoint fixes them, and the deal of videos
into folds), each setting (plan x remote segments) and each attacker, every worker of a fixed
3-way split predicts the facts of every picture window it was not sent, from two views of what it
received:

- ``first``: the first segment's input only, its own windows' patch and position embedding. This
  is what the worker saw directly; predicting other windows from it is inpainting from
  neighbours, the baseline;
- ``all``: every tensor it received over the frame (every segment it ran; ``mixed`` too in the
  offload plan).

*Leakage* is ``all`` minus ``first``: the gain in R2 for each fact (thumbnail, mean colour, edge
energy) and in PSNR for the thumbnail, pooled over the workers and their unseen windows, with a
95% confidence interval over the seeds (Student's t). With ``--remote-segments 1`` the two views
are the same tensors, so the gain is zero by construction.

Seeded random weights bound nothing about trained SAM, in either direction: trained attention
mixes by content and may carry far more (or less) of other windows than random attention does.
Give ``--checkpoint`` for the real figure.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pedsam.stream.privacy.attackers import ATTACKERS, Layout, cross_predict, fact_columns, scores, summarise
from pedsam.stream.privacy.context import FACTS, FIRST, Key, Recording, block_frames, collect, scene_frames
from pedsam.workers.models import build_sam
from pedsam.workers.presets import get_preset

__all__ = [
    "LeakageConfig", "Setting", "interval", "run_leakage", "table", "view_scores", "worker_layout", "worker_view",
]

# Student's t, 97.5th percentile, by degrees of freedom (a df not listed takes the next one below).
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
         10: 2.228, 15: 2.131, 20: 2.086, 30: 2.042, 60: 2.000, 120: 1.980}


def interval(values: Sequence[float]) -> tuple[float, float, float]:
    """(mean, low, high): the mean of ``values`` and its 95% confidence interval (Student's t;
    one value: the interval is that value)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, mean, mean
    df = len(values) - 1
    t = _T975[max(k for k in _T975 if k <= df)]
    half = t * statistics.stdev(values) / math.sqrt(len(values))
    return mean, mean - half, mean + half


@dataclass(frozen=True, slots=True)
class Setting:
    """One way of running the split: the plan, and how many segments go to workers (None: all)."""

    plan: str
    remote_segments: int | None

    @property
    def label(self) -> str:
        return f"{self.plan}, remote {'all' if self.remote_segments is None else self.remote_segments}"


@dataclass(frozen=True, kw_only=True, slots=True)
class LeakageConfig:
    """The settings of one ``pedsam bench-leakage`` run (see the command's --help)."""

    preset: str = "tiny"
    checkpoint: str | None = None
    seeds: tuple[int, ...] = (0, 1, 2)
    settings: tuple[Setting, ...] = (Setting("default", None), Setting("offload", None), Setting("default", 1))
    attackers: tuple[str, ...] = ("ridge", "mlp", "cnn")
    videos: int = 8
    frames: int = 24
    step: int = 4
    width: int = 640
    height: int = 480
    workers: int = 3
    scheme: str = "interleaved"
    pool: int = 2
    folds: int = 4
    clips: str = "sprites"


def worker_view(recording: Recording, worker: str, keys: Sequence[Key]) -> np.ndarray:
    """(frames, features): the pooled tensors ``keys`` of ``worker``'s windows, side by side."""
    return np.concatenate([recording.views[key][wid] for key in keys for wid in recording.shares[worker]], axis=1)


def worker_layout(recording: Recording, worker: str, keys: Sequence[Key], unseen: Sequence[int]) -> Layout:
    """Where :func:`worker_view`'s blocks and the ``unseen`` windows' facts lie on the grid."""
    share = recording.shares[worker]
    return Layout(grid=recording.grid, pool=recording.pool,
                  inputs=tuple((g, wid) for g in range(len(keys)) for wid in share), outputs=tuple(unseen))


def _worker_view(recording: Recording, keys: Sequence[Key]) -> Callable[[str, tuple[int, ...]], np.ndarray]:
    return lambda worker, _unseen: worker_view(recording, worker, keys)


def _worker_layout(recording: Recording, keys: Sequence[Key]) -> Callable[[str, tuple[int, ...]], Layout]:
    return lambda worker, unseen: worker_layout(recording, worker, keys, unseen)


def view_scores(
    recording: Recording, view: Callable[[str, tuple[int, ...]], np.ndarray], attacker: str, *, folds: int, seed: int,
    layout: Callable[[str, tuple[int, ...]], Layout] | None = None,
) -> dict[str, dict[str, float]]:
    """R2 and PSNR per fact (:func:`~pedsam.stream.privacy.attackers.summarise`) of ``attacker``
    predicting, for every worker, the facts of the picture windows it was not sent from
    ``view(worker, unseen windows)`` (frames, features), videos cross-validated; ``layout(worker,
    unseen windows)`` places the view on the grid for the attackers that need it."""
    sums = []
    for worker, share in recording.shares.items():
        unseen = tuple(w for w in recording.picture if w not in share)
        truth = np.concatenate([recording.facts[w] for w in unseen], axis=1).astype(np.float64)
        width = next(iter(recording.facts.values())).shape[1]
        columns = fact_columns(FACTS, width, len(unseen))
        predicted, chance = cross_predict(ATTACKERS[attacker], view(worker, unseen), truth, recording.groups,
                                          columns, folds=folds, seed=seed,
                                          layout=layout(worker, unseen) if layout else None)
        sums.append(scores(truth, predicted, chance, columns))
    return summarise(sums)


def run_leakage(config: LeakageConfig, progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Every seed, setting and attacker of ``config``; the report (JSON-ready): per setting and
    attacker, per fact, the two views' R2 and PSNR per seed and the gain's mean and 95% interval."""
    preset = get_preset(config.preset)
    videos = range(1000, 1000 + config.videos)
    if config.clips == "blocks":
        frames = list(block_frames(videos, config.frames, width=config.width, height=config.height, preset=preset))
    else:
        frames = list(scene_frames(videos, config.frames, config.step, width=config.width, height=config.height))
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for seed in config.seeds:
        sam = build_sam(preset, checkpoint=config.checkpoint, seed=seed)
        for setting in config.settings:
            recording = collect(sam, preset, frames, plan=setting.plan, remote_segments=setting.remote_segments,
                                workers=config.workers, scheme=config.scheme, pool=config.pool)
            for attacker in config.attackers:
                found = {name: view_scores(
                    recording, _worker_view(recording, keys), attacker, folds=config.folds, seed=seed,
                    layout=_worker_layout(recording, keys),
                ) for name, keys in (("first", [FIRST]), ("all", recording.keys)) if name == "first" or keys != [FIRST]}
                found.setdefault("all", found["first"])  # one segment sent: the two views are the same tensors
                runs.setdefault(setting.label, {}).setdefault(attacker, []).append({"seed": seed, **found})
                progress(f"seed {seed}, {setting.label}, {attacker}: " + ", ".join(
                    f"{fact} R2 {found['first'][fact]['r2']:.3f} -> {found['all'][fact]['r2']:.3f}" for fact in FACTS))
    return {
        "model": config.preset,
        "weights": "checkpoint" if config.checkpoint else "shipped" if get_preset(config.preset).shipped else "random",
        "config": {k: getattr(config, k) for k in ("clips", "seeds", "videos", "frames", "step", "width", "height",
                                                   "workers", "scheme", "pool", "folds")},
        "results": {label: {attacker: _gains(per_seed) for attacker, per_seed in by_attacker.items()}
                    for label, by_attacker in runs.items()},
    }


def _gains(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"seeds": per_seed}
    for fact in FACTS:
        for metric in ("r2", "psnr_db"):
            if metric == "psnr_db" and fact != "thumbnail":
                continue
            first = [s["first"][fact][metric] for s in per_seed]
            full = [s["all"][fact][metric] for s in per_seed]
            gain = interval([b - a for a, b in zip(first, full, strict=True)])
            out.setdefault(fact, {})[metric] = {"first": statistics.fmean(first), "all": statistics.fmean(full),
                                                "gain": gain[0], "gain_low": gain[1], "gain_high": gain[2]}
    return out


def table(report: Mapping[str, Any]) -> Iterator[str]:
    """The report as printed lines: per setting, attacker and fact, the two views and the gain."""
    weights = {"random": "UNTRAINED random weights: no bound for trained SAM",
               "shipped": "pedsam-mini's trained weights"}.get(report["weights"], "checkpoint")
    yield (f"context leakage, {report['model']} ({weights}), {report['config']['clips']} clips, "
           f"seeds {report['config']['seeds']}")
    yield f"  {'setting':<20}{'attacker':<9}{'fact':<22}{'first':>8}{'all':>8}   gain [95% CI]"
    for label, by_attacker in report["results"].items():
        for attacker, found in by_attacker.items():
            for fact in FACTS:
                for metric, unit in (("r2", "R2"), ("psnr_db", "PSNR dB")):
                    if metric not in found[fact]:
                        continue
                    m = found[fact][metric]
                    yield (f"  {label:<20}{attacker:<9}{fact + ' ' + unit:<22}{m['first']:>8.3f}{m['all']:>8.3f}"
                           f"   {m['gain']:+.3f} [{m['gain_low']:+.3f}, {m['gain_high']:+.3f}]")
