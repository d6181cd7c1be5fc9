"""The privacy report: every rotation policy over real videos, attacked from each server's view.

For each video (frames ``0, s, 2s, ...`` up to ``max_frames`` of them) the edge model's
prologue gives each frame's first-segment tokens; the camera offset comes from
:class:`pedsam.stream.core.motion.MotionEstimator`. Every policy schedules the frames through a
:class:`pedsam.partitioner.scheduler.Scheduler` (with the report's budget), and for every server:

- *token inversion*: its windows' pixels, recovered from their tokens
  (:mod:`pedsam.stream.privacy.inversion`); the frame-level PSNR of that recovery is reported once per
  video (it does not depend on the policy);
- *mosaic*: those pixels laid into a motion-compensated scene mosaic; every ``eval_every``
  frames the mosaic is cut out at the current frame and compared with it (coverage, PSNR and
  SSIM over covered pixels);
- *detection*: every ``detect_every`` frames, HOG people and Haar faces on that cut-out (gaps
  filled grey) against the same detectors on the true frame.

Per policy the report gives the worst server (the one whose mosaic covers most of the frame,
and for detection the one with most matches), since one curious server is the threat, and the
worst coalition of up to ``coalitions`` servers by the share of the scene they saw together since
the start. The ``monolithic`` baseline is one cloud server receiving every window of every frame.
The ``defaults`` row is what a run with no flags does (``ReportConfig.defaults``: the default
rotation, scheme and budget), whatever the report's own policies, scheme and budget. Servers are
named ``s0, s1, ...``; ``pooled`` uses ``servers * pool_size`` of them.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pedsam.partitioner.assignment import EDGE
from pedsam.partitioner.geometry import WindowGrid
from pedsam.partitioner.rotation import ROTATIONS, make_rotation
from pedsam.partitioner.budget import Budget
from pedsam.partitioner.scheduler import Scheduler
from pedsam.stream.core.motion import MotionEstimator, content_tokens, input_scale, token_offset
from pedsam.stream.core.scheduling import DEFAULT_SCHEME, RotationSettings
from pedsam.stream.errors import ConfigError
from pedsam.stream.media.video import probe_video, read_frames
from pedsam.stream.privacy.detection import Detectors, matched
from pedsam.stream.privacy.inversion import TokenInverter, prologue
from pedsam.stream.privacy.mosaic import Mosaic, psnr, ssim
from pedsam.workers.models import ModelSource, get_preset

__all__ = ["BASELINE", "DEFAULTS", "PolicyResult", "ReportConfig", "VideoResult", "run_report"]

log = logging.getLogger(__name__)

BASELINE = "monolithic"
"""The label of the one-cloud-server baseline."""
DEFAULTS = "defaults"
"""The label of the row with no flags: the default rotation, scheme and budget."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ReportConfig:
    """What to evaluate.

    Attributes:
        model: the edge model whose prologue the servers receive (its patch embedding is what
            a server inverts; ``vit_b`` and larger invert exactly).
        servers: shares per frame ``k`` (and servers, except for ``pooled``).
        pool_size: servers per slot for ``pooled`` (``pooled`` uses ``k * pool_size`` servers).
        scheme: partition scheme of the shares.
        policies: rotation policies to compare (the baseline is always added).
        budget: exposure budget applied to every policy (not to the baseline).
        max_frames: frames per video at most (after ``stride``).
        stride: use every ``stride``-th frame.
        eval_every: compare mosaics with the frame every this many used frames.
        detect_every: run the detectors every this many used frames.
        secret: the edge secret of ``keyed-random`` and the ``random`` scheme (fixed, so the
            report is reproducible).
        motion: estimate camera motion; off, every frame is at offset 0 (right for a camera
            known to be fixed).
        coalitions: report the worst coalition of up to this many servers (below 2: none).
        defaults: the rotation settings and scheme of the ``defaults`` row; None: no such row.
    """

    model: ModelSource
    servers: int = 3
    pool_size: int = 2
    scheme: str = "contiguous"
    policies: tuple[str, ...] = ROTATIONS
    budget: Budget = Budget()
    max_frames: int = 200
    stride: int = 1
    eval_every: int = 5
    detect_every: int = 25
    secret: bytes = b"pedsam privacy report"
    motion: bool = True
    coalitions: int = 2
    defaults: tuple[RotationSettings, str] | None = (RotationSettings(), DEFAULT_SCHEME)

    def __post_init__(self) -> None:
        unknown = [p for p in self.policies if p not in ROTATIONS]
        if unknown:
            raise ConfigError(f"unknown rotation policies {unknown}; use some of: {', '.join(ROTATIONS)}")
        for name in ("servers", "pool_size", "max_frames", "stride", "eval_every", "detect_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.servers < 2:
            raise ConfigError("the report compares split policies: give --servers 2 or more")


@dataclass
class PolicyResult:
    """One policy on one video: exposure, the worst server's mosaic series, detection counts."""

    label: str
    servers: tuple[str, ...]
    scheduler: Scheduler
    mosaics: dict[str, Mosaic]
    scheme: str = ""
    modes: dict[str, int] = field(default_factory=dict)  # frames per policy mode (adaptive: still / travel)
    frames: list[int] = field(default_factory=list)
    coverage: list[float] = field(default_factory=list)
    psnr: list[float | None] = field(default_factory=list)
    ssim: list[float | None] = field(default_factory=list)
    people: list[int] = field(default_factory=lambda: [0, 0])  # [matched, reference]
    faces: list[int] = field(default_factory=lambda: [0, 0])
    view: np.ndarray | None = None  # the worst server's reconstruction at the last evaluation

    def to_json(self, num_windows: int) -> dict[str, Any]:
        summary = self.scheduler.summary()
        servers = summary["exposure"].values()
        coalitions = summary.get("coalitions", {})
        worst = max(coalitions, key=lambda name: coalitions[name]["max_run_scene_share"], default=None)
        defined_psnr = [v for v in self.psnr if v is not None]
        defined_ssim = [v for v in self.ssim if v is not None]
        return {
            "servers": len(self.servers),
            "slots": summary["slots"],
            "scheme": self.scheme,
            "budget": summary["budget"],
            "modes": dict(self.modes),
            "exposure": {
                "max_frame_share": max(s["max_frame_share"] for s in servers),
                "max_distinct_windows": max(s["max_distinct_windows"] for s in servers) / num_windows,
                "max_scene_share": max(s["max_scene_share"] for s in servers),
                "run_scene_share": max(s["run_scene_share"] for s in servers),
                "max_run_scene_share": max(s["max_run_scene_share"] for s in servers),
                "max_scene_frames": max(s["max_scene_frames"] for s in servers),
                "longest_run": max(s["longest_run"] for s in servers),
                "edge_share": summary["edge_share"],
                "worst_coalition": worst,
                "coalition_run_scene_share": None if worst is None else coalitions[worst]["max_run_scene_share"],
            },
            "mosaic": {
                "coverage_mean": _round(statistics.fmean(self.coverage)) if self.coverage else None,
                "coverage_final": _round(self.coverage[-1]) if self.coverage else None,
                "psnr_db_mean": _round(statistics.fmean(defined_psnr)) if defined_psnr else None,
                "ssim_mean": _round(statistics.fmean(defined_ssim)) if defined_ssim else None,
            },
            "detection": {
                "people_recall": _ratio(*self.people),
                "people_reference": self.people[1],
                "faces_recall": _ratio(*self.faces),
                "faces_reference": self.faces[1],
            },
            "series": {"frame": self.frames, "coverage": [_round(c) for c in self.coverage]},
        }


@dataclass
class VideoResult:
    """One video's results: the JSON-ready record and, for the page, its thumbnails."""

    record: dict[str, Any]
    truth: np.ndarray | None
    views: dict[str, np.ndarray]


def _round(value: float) -> float:
    return round(float(value), 4)


def _ratio(hit: int, total: int) -> float | None:
    return round(hit / total, 4) if total else None


def _window_masks(grid: WindowGrid, frame_size: tuple[int, int], img_size: int, patch: int) -> list[np.ndarray]:
    """Per window id, the (H, W) bool frame pixels its valid tokens cover."""
    height, width = frame_size
    per_px = patch / input_scale(frame_size, img_size)  # frame pixels per token
    masks = []
    for w in grid.windows:
        mask = np.zeros(frame_size, bool)
        y0, y1 = math.floor(w.top * per_px), min(height, math.ceil((w.top + w.height) * per_px))
        x0, x1 = math.floor(w.left * per_px), min(width, math.ceil((w.left + w.width) * per_px))
        if y0 < height and x0 < width:
            mask[y0:y1, x0:x1] = True
        masks.append(mask)
    return masks


def _tracking(budget: Budget, servers: int, coalitions: int) -> Budget:
    """``budget`` also tracking coalitions of up to ``coalitions`` servers (fewer than all of
    them), with no cap on those it tracks only for the report."""
    size = min(coalitions, servers - 1)
    if size <= budget.coalition:
        return budget
    return dataclasses.replace(budget, coalition=size, coalition_cap=None)


def _policies(config: ReportConfig, grid: WindowGrid, frame_size: tuple[int, int], low: tuple[float, float],
              high: tuple[float, float]) -> list[PolicyResult]:
    k = config.servers
    out = []
    cloud = make_rotation("fixed", grid, ["cloud"], allow_single=True)
    plans: list[tuple[str, Scheduler, str]] = [
        (BASELINE, Scheduler(cloud, grid, Budget(horizon=config.budget.horizon)), "whole frames")]
    rows: list[tuple[str, str, str, Budget, int | None]] = []
    for name in config.policies:
        rows.append((name, name, config.scheme, config.budget, k if name in ("pooled", "keyed-random") else None))
    if config.defaults is not None:
        settings, scheme = config.defaults
        rows.append((DEFAULTS, settings.policy, scheme, settings.budget, settings.slots))
    for label, name, scheme, budget, slots in rows:
        count = k * config.pool_size if name == "pooled" else k
        policy = make_rotation(name, grid, [f"s{i}" for i in range(count)], scheme=scheme, secret=config.secret,
                               slots=slots)
        plans.append((label, Scheduler(policy, grid, _tracking(budget, count, config.coalitions)), scheme))
    for label, scheduler, scheme in plans:
        names = scheduler.policy.servers
        out.append(PolicyResult(label=label, servers=names, scheduler=scheduler, scheme=scheme,
                                mosaics={s: Mosaic(frame_size, low, high) for s in names}))
    return out


def evaluate_video(
    path: str,
    config: ReportConfig,
    sam: Any,
    inverter: TokenInverter,
    detectors: Detectors,
    progress: Callable[[str], None] = lambda message: None,
) -> VideoResult:
    """Run every policy and attack over one video (see the module docstring)."""
    info = probe_video(path)
    started = time.perf_counter()
    frames: list[np.ndarray] = []
    offsets: list[tuple[float, float]] = []
    motion = MotionEstimator()
    for frame in read_frames(path):
        if frame.index % config.stride:
            continue
        frames.append(frame.image)
        offsets.append(motion.update(frame.image) if config.motion else (0.0, 0.0))
        if len(frames) >= config.max_frames:
            break
    if not frames:
        raise ConfigError(f"{path}: no frames to evaluate")
    frame_size = (int(frames[0].shape[0]), int(frames[0].shape[1]))
    preset = get_preset(config.model.preset)
    img_size, patch = preset.img_size, preset.patch_size
    grid = WindowGrid.for_encoder(img_size, patch, preset.window_size)
    low = (min(o[0] for o in offsets), min(o[1] for o in offsets))
    high = (max(o[0] for o in offsets), max(o[1] for o in offsets))
    masks = _window_masks(grid, frame_size, img_size, patch)
    content = content_tokens(frame_size, img_size, patch)
    results = _policies(config, grid, frame_size, low, high)
    inversion: list[float] = []
    truth: np.ndarray | None = None
    last = len(frames) - 1
    for index, (image, offset_px) in enumerate(zip(frames, offsets)):
        tokens, prepared = prologue(sam, image)
        recon = inverter.reconstruct(tokens, prepared)
        value = psnr(image, recon, np.ones(frame_size, bool))
        if value is not None:
            inversion.append(value)
        offset = token_offset(offset_px, frame_size, img_size, patch)
        evaluate = index % config.eval_every == 0 or index == last
        detect = index % config.detect_every == 0
        reference: tuple[list[Any], list[Any]] | None = None
        if detect:
            reference = (detectors.people(image), detectors.face_boxes(image))
        if evaluate:
            truth = image
        for result in results:
            scheduled = result.scheduler.schedule(index, offset=offset, content=content)
            result.modes[scheduled.mode] = result.modes.get(scheduled.mode, 0) + 1
            for server, ids in scheduled.assignment.shares.items():
                if server == EDGE or not ids:
                    continue
                mask = np.logical_or.reduce([masks[w] for w in ids])
                result.mosaics[server].paste(recon, mask, offset_px)
            if evaluate:
                _evaluate(result, index, image, offset_px)
            if reference is not None:
                _detect(result, reference, detectors, offset_px)
        if index % 20 == 0:
            progress(f"{path}: frame {index + 1}/{len(frames)}")
    record = {
        "video": path,
        "size": [frame_size[1], frame_size[0]],
        "rate": str(info.rate),
        "frames": len(frames),
        "stride": config.stride,
        "windows_per_frame": grid.num_windows,
        "padding_windows": grid.num_windows - len(grid.picture_windows(content)),  # the edge's, every segment
        "content_tokens": list(content),
        "motion": {
            "estimated": config.motion,
            "cuts": motion.cuts,
            "offset_range_px": [[round(low[0], 1), round(high[0], 1)], [round(low[1], 1), round(high[1], 1)]],
        },
        "inversion_psnr_db": _round(statistics.fmean(inversion)) if inversion else None,
        "policies": {r.label: r.to_json(grid.num_windows) for r in results},
        "seconds": round(time.perf_counter() - started, 1),
    }
    views = {r.label: r.view for r in results if r.view is not None}
    return VideoResult(record=record, truth=truth, views=views)


def _evaluate(result: PolicyResult, index: int, image: np.ndarray, offset_px: tuple[float, float]) -> None:
    best: tuple[float, float, str] | None = None
    views = {}
    for server in result.servers:
        view, covered = result.mosaics[server].view(offset_px)
        views[server] = (view, covered)
        coverage = float(covered.mean())
        score = (coverage, psnr(image, view, covered) or 0.0, server)
        if best is None or score[:2] > best[:2]:
            best = score
    assert best is not None
    view, covered = views[best[2]]
    result.frames.append(index)
    result.coverage.append(best[0])
    result.psnr.append(psnr(image, view, covered))
    result.ssim.append(ssim(image, view, covered))
    result.view = view


def _detect(result: PolicyResult, reference: tuple[list[Any], list[Any]], detectors: Detectors,
            offset_px: tuple[float, float]) -> None:
    people_ref, faces_ref = reference
    best_people = best_faces = 0
    for server in result.servers:
        view, covered = result.mosaics[server].view(offset_px)
        if not covered.any():
            continue
        view[~covered] = 128
        if people_ref:
            best_people = max(best_people, matched(people_ref, detectors.people(view)))
        if faces_ref:
            best_faces = max(best_faces, matched(faces_ref, detectors.face_boxes(view)))
    result.people[0] += best_people
    result.people[1] += len(people_ref)
    result.faces[0] += best_faces
    result.faces[1] += len(faces_ref)


def run_report(
    videos: Sequence[str],
    config: ReportConfig,
    progress: Callable[[str], None] = lambda message: None,
) -> tuple[dict[str, Any], list[VideoResult]]:
    """Evaluate every video; returns the JSON report and the per-video results (for the page)."""
    for video in videos:
        probe_video(video)  # a bad video fails before the model is built
    sam = config.model.build()
    inverter = TokenInverter.for_model(sam)
    detectors = Detectors()
    results = [evaluate_video(video, config, sam, inverter, detectors, progress) for video in videos]
    report = {
        "model": config.model.describe(),
        "random_weights": config.model.random_weights,
        "embed_dim": int(sam.image_encoder.patch_embed.proj.out_channels),
        "patch_pixels": 3 * int(sam.image_encoder.patch_embed.proj.kernel_size[0]) ** 2,
        "servers": config.servers,
        "pool_size": config.pool_size,
        "scheme": config.scheme,
        "budget": config.budget.to_json(),
        "coalitions": config.coalitions,
        "defaults": None if config.defaults is None else {"scheme": config.defaults[1],
                                                         **config.defaults[0].to_json()},
        "eval_every": config.eval_every,
        "detect_every": config.detect_every,
        "videos": [r.record for r in results],
    }
    return report, results
