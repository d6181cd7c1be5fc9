"""The privacy report: every rotation policy over real videos, attacked from each server's view.

For each video (frames ``0, s, 2s, ...`` up to ``max_frames`` of them) the edge model's
prologue gives each frame's first-segment tokens, passed through the wire codec as a worker
decodes them (:mod:`pedsam.stream.privacy.wire`); the camera offset comes from
:class:`pedsam.stream.core.motion.MotionEstimator`. Every policy schedules the frames through a
:class:`pedsam.partitioner.scheduler.Scheduler` (with the report's budget), and for every server:

- *token inversion*: its windows' pixels, recovered from the tokens it received
  (:mod:`pedsam.stream.privacy.inversion`); the frame-level PSNR of that recovery is reported once per
  video (it does not depend on the policy);
- *mosaic*: those pixels laid into a motion-compensated scene mosaic that keeps the best view of
  each scene pixel; every ``eval_every`` frames the mosaic is cut out at the current frame and
  compared with it (coverage, PSNR and SSIM over covered pixels), and its *panorama coverage* is
  taken: the share of the scene the camera showed so far that the mosaic holds, in scene
  coordinates;
- *detection*: every ``detect_every`` frames, people (HOG or the SSD CNN) and faces (Haar or
  dlib's CNN) on that cut-out (gaps filled grey) against the same detectors on the true frame,
  matched on the visible part of each reference box (:mod:`pedsam.stream.privacy.detection`).

Per policy the report gives the worst single worker, one worker over the whole run (for each
figure the worker whose whole-run figure is highest), since one curious worker is the threat,
and the worst coalition of 2 up to ``coalitions`` workers likewise, both with 95% bootstrap
intervals over frames and the count of reference detections (:mod:`pedsam.stream.privacy.parties`).
The exposure maxima and whole-run shares are exact counts of what was sent, not estimates. The
``monolithic`` baseline is one cloud server receiving every window of every frame.
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
from pedsam.stream.core.sensitive import KeepLocal, SensitiveRegions, windows_touching
from pedsam.stream.errors import ConfigError
from pedsam.stream.media.video import probe_video, read_frames
from pedsam.stream.privacy.detection import FACE_ATTACKERS, PERSON_ATTACKERS, Detectors, matched
from pedsam.stream.privacy.intervals import RESAMPLES, ratio_interval
from pedsam.stream.privacy.inversion import TokenInverter, prologue
from pedsam.stream.privacy.mosaic import Mosaic, merge_views, psnr, ssim
from pedsam.stream.privacy.parties import Party, figure, parties_of, worst
from pedsam.stream.privacy.wire import through_wire
from pedsam.workers.codec import CODECS
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
        codec: the wire codec the first-segment tokens cross (``fp32``, ``fp16``, ``int8``); the
            attacks see the tokens as a worker decodes them.
        seed: seed of the bootstrap intervals.
        defaults: the rotation settings and scheme of the ``defaults`` row; None: no such row.
        keep_local: sensitive regions the edge keeps home (``--keep-local``): every frame is
            searched and regions held as a run does (:class:`SensitiveRegions`, one tracker per
            video), and under every policy but the baseline the windows touching them go to no
            server, through the same scheduler ``keep`` a run uses. Off by default.
        face_attacker: the face detector of the detection attack (and of its reference on the
            true frames): ``haar`` or ``cnn`` (:class:`~pedsam.stream.privacy.detection.Detectors`).
        cnn_upsample: times the ``cnn`` attacker doubles each image first (1: faces down to about
            40 px; 0: about 80 px, about 4 times faster).
        person_attacker: the person detector of the detection attack (and of its reference):
            ``hog``, ``ssd`` (the CNN of :mod:`pedsam.stream.privacy.ssd`) or ``ssd+hog`` (both).
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
    codec: str = "fp32"
    seed: int = 0
    defaults: tuple[RotationSettings, str] | None = (RotationSettings(), DEFAULT_SCHEME)
    keep_local: KeepLocal = KeepLocal()
    face_attacker: str = "haar"
    cnn_upsample: int = 1
    person_attacker: str = "hog"

    def __post_init__(self) -> None:
        if self.face_attacker not in FACE_ATTACKERS:
            raise ConfigError(f"unknown face attacker {self.face_attacker!r}; choose one of {', '.join(FACE_ATTACKERS)}")
        if self.person_attacker not in PERSON_ATTACKERS:
            raise ConfigError(f"unknown person attacker {self.person_attacker!r}; choose one of "
                              f"{', '.join(PERSON_ATTACKERS)}")
        unknown = [p for p in self.policies if p not in ROTATIONS]
        if unknown:
            raise ConfigError(f"unknown rotation policies {unknown}; use some of: {', '.join(ROTATIONS)}")
        if self.cnn_upsample not in (0, 1, 2):
            raise ConfigError(f"cnn-upsample must be 0, 1 or 2, got {self.cnn_upsample}")
        for name in ("servers", "pool_size", "max_frames", "stride", "eval_every", "detect_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.servers < 2:
            raise ConfigError("the report compares split policies: give --servers 2 or more")
        if self.codec not in CODECS:
            raise ConfigError(f"unknown codec {self.codec!r}; choose one of {', '.join(CODECS)}")


@dataclass
class PolicyResult:
    """One policy on one video: the scheduler, every worker's mosaic, and every party's measurements."""

    label: str
    servers: tuple[str, ...]
    scheduler: Scheduler
    mosaics: dict[str, Mosaic]
    singles: list[Party]
    groups: list[Party]
    scheme: str = ""
    modes: dict[str, int] = field(default_factory=dict)  # frames per policy mode (adaptive: still / travel)
    frames: list[int] = field(default_factory=list)  # evaluated frames
    edge: list[tuple[int, int]] = field(default_factory=list)  # per frame: (picture windows kept on the edge, all)

    def to_json(self, num_windows: int, people_reference: Sequence[int], faces_reference: Sequence[int],
                seed: int) -> dict[str, Any]:
        summary = self.scheduler.summary()
        servers = summary["exposure"].values()
        coalitions = summary.get("coalitions", {})
        worst_coalition = max(coalitions, key=lambda name: coalitions[name]["max_run_scene_share"], default=None)
        worker = figure(self.singles, people_reference, faces_reference, seed)
        assert worker is not None
        coverage, people, faces = worker["coverage"], worker["people"], worker["faces"]
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
                "edge_share_ci": ratio_interval([e for e, _ in self.edge], [n for _, n in self.edge], seed=seed),
                "frames": len(self.edge),
                "worst_coalition": worst_coalition,
                "coalition_run_scene_share": (None if worst_coalition is None
                                              else coalitions[worst_coalition]["max_run_scene_share"]),
            },
            "mosaic": {
                "worker": coverage["party"],
                "coverage_mean": coverage["mean"],
                "coverage_mean_ci": coverage["ci"],
                "coverage_final": coverage["final"],
                "frames": coverage["frames"],
                "psnr_db_mean": coverage["psnr_db"],
                "ssim_mean": coverage["ssim"],
                "panorama_worker": worker["panorama"]["party"],
                "panorama_coverage": worker["panorama"]["share"],
            },
            "detection": {
                "people_worker": people["party"],
                "people_recall": people["recall"],
                "people_recall_ci": people["ci"],
                "people_reference": people["reference"],
                "faces_worker": faces["party"],
                "faces_recall": faces["recall"],
                "faces_recall_ci": faces["ci"],
                "faces_reference": faces["reference"],
                "frames": people["frames"],
            },
            "coalition": figure(self.groups, people_reference, faces_reference, seed),
            "workers": {
                p.name: {
                    "coverage": [_round(c) for c in p.coverage],
                    "panorama": [_round(c) for c in p.panorama],
                    "people": list(p.people),
                    "faces": list(p.faces),
                }
                for p in self.singles
            },
            "series": {
                "frame": self.frames,
                "coverage": _series(self.singles, coverage["party"], "coverage"),
                "panorama": _series(self.singles, worker["panorama"]["party"], "panorama"),
            },
        }

    def worst_worker(self) -> Party:
        """The worker whose view of the current frame covers most over the run (the page's mosaic)."""
        found = worst(self.singles, lambda p: statistics.fmean(p.coverage) if p.coverage else 0.0)
        assert found is not None
        return found


def _series(parties: Sequence[Party], name: str, attribute: str) -> list[float]:
    party = next(p for p in parties if p.name == name)
    return [_round(v) for v in getattr(party, attribute)]


@dataclass
class VideoResult:
    """One video's results: the JSON-ready record and, for the page, its thumbnails."""

    record: dict[str, Any]
    truth: np.ndarray | None  # the last evaluated frame, (H, W, 3) uint8 RGB
    views: dict[str, np.ndarray]  # per policy: its worst worker's view of that frame
    panoramas: dict[str, np.ndarray] = field(default_factory=dict)  # per policy: that worker's whole mosaic


def _round(value: float) -> float:
    return round(float(value), 4)


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
        singles, groups = parties_of(names, config.coalitions)
        out.append(PolicyResult(label=label, servers=names, scheduler=scheduler, scheme=scheme,
                                mosaics={s: Mosaic(frame_size, low, high) for s in names},
                                singles=singles, groups=groups))
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
    scene = Mosaic(frame_size, low, high)  # where the camera looked: the scene of the run
    whole = np.ones(frame_size, bool)
    inversion: list[float] = []
    people_reference: list[int] = []
    faces_reference: list[int] = []
    truth: np.ndarray | None = None
    last = len(frames) - 1
    sensitive = SensitiveRegions(config.keep_local) if config.keep_local.enabled else None
    for index, (image, offset_px) in enumerate(zip(frames, offsets)):
        keep: tuple[int, ...] = ()
        if sensitive is not None:  # every used frame is searched, as a run searches every frame it sends
            keep = windows_touching(sensitive.update(image), frame_size, grid, img_size, patch)
        tokens, prepared = prologue(sam, image)
        received, sigma = through_wire(tokens, config.codec)
        recon = inverter.reconstruct(received, prepared, sigma)
        error = inverter.pixel_error(sigma, prepared)
        value = psnr(image, recon, whole)
        if value is not None:
            inversion.append(value)
        scene.paste(image, whole, offset_px, index)
        offset = token_offset(offset_px, frame_size, img_size, patch)
        evaluate = index % config.eval_every == 0 or index == last
        detect = index % config.detect_every == 0
        reference: tuple[list[Any], list[Any]] | None = None
        if detect:
            reference = (detectors.people(image), detectors.face_boxes(image))
            people_reference.append(len(reference[0]))
            faces_reference.append(len(reference[1]))
        if evaluate:
            truth = image
        for result in results:
            scheduled = result.scheduler.schedule(index, offset=offset, content=content,
                                                  keep=keep if result.label != BASELINE else ())
            result.modes[scheduled.mode] = result.modes.get(scheduled.mode, 0) + 1
            picture = [w for w in range(grid.num_windows) if scheduled.picture[w]]
            kept = set(scheduled.assignment.shares.get(EDGE, ()))
            result.edge.append((sum(1 for w in picture if w in kept), len(picture)))
            for server, ids in scheduled.assignment.shares.items():
                if server == EDGE or not ids:
                    continue
                mask = np.logical_or.reduce([masks[w] for w in ids])
                result.mosaics[server].paste(recon, mask, offset_px, index, error)
            if evaluate or reference is not None:
                _attack(result, index, image, offset_px, scene, evaluate, reference, detectors)
        if index % 20 == 0:
            progress(f"{path}: frame {index + 1}/{len(frames)}")
    record = {
        "video": path,
        "size": [frame_size[1], frame_size[0]],
        "rate": str(info.rate),
        "frames": len(frames),
        "stride": config.stride,
        "codec": config.codec,
        "keep_local": config.keep_local.to_json() if sensitive is not None else None,
        "windows_per_frame": grid.num_windows,
        "padding_windows": grid.num_windows - len(grid.picture_windows(content)),  # the edge's, every segment
        "content_tokens": list(content),
        "motion": {
            "estimated": config.motion,
            "cuts": motion.cuts,
            "offset_range_px": [[round(low[0], 1), round(high[0], 1)], [round(low[1], 1), round(high[1], 1)]],
        },
        "inversion_psnr_db": _round(statistics.fmean(inversion)) if inversion else None,
        "reference": {"people": people_reference, "faces": faces_reference},
        "policies": {r.label: r.to_json(grid.num_windows, people_reference, faces_reference, config.seed)
                     for r in results},
        "seconds": round(time.perf_counter() - started, 1),
    }
    views: dict[str, np.ndarray] = {}
    panoramas: dict[str, np.ndarray] = {}
    for r in results:
        party = r.worst_worker()
        if party.view is not None:
            views[r.label] = party.view
        mosaic = r.mosaics[party.members[0]]
        panorama = mosaic.canvas.copy()
        panorama[~mosaic.filled] = 128
        panorama[~scene.filled] = 255  # outside the scene of the run
        panoramas[r.label] = panorama
    return VideoResult(record=record, truth=truth, views=views, panoramas=panoramas)


def _attack(result: PolicyResult, index: int, image: np.ndarray, offset_px: tuple[float, float], scene: Mosaic,
            evaluate: bool, reference: tuple[list[Any], list[Any]] | None, detectors: Detectors) -> None:
    """Every party of a policy attacks this frame: its view compared with the frame (``evaluate``),
    its panorama measured, the detectors run on its view (``reference``: the true frame's boxes)."""
    own = {s: result.mosaics[s].view(offset_px) for s in result.servers}
    if evaluate:
        result.frames.append(index)
        seen = scene.filled
        area = int(seen.sum())
        held = {s: result.mosaics[s].filled & seen for s in result.servers}
    for party in (*result.singles, *result.groups):
        view, covered, _, _ = merge_views([own[s] for s in party.members])
        if evaluate:
            party.coverage.append(float(covered.mean()))
            party.psnr.append(psnr(image, view, covered))
            party.ssim.append(ssim(image, view, covered))
            filled = np.logical_or.reduce([held[s] for s in party.members])
            party.panorama.append(float(filled.sum()) / area)
            party.view = view
        if reference is not None:
            people_ref, faces_ref = reference
            found_people = found_faces = 0
            if covered.any():
                shown = view.copy()
                shown[~covered] = 128
                if people_ref:
                    found_people = matched(people_ref, detectors.people(shown), covered=covered)
                if faces_ref:
                    found_faces = matched(faces_ref, detectors.face_boxes(shown), covered=covered)
            party.people.append(found_people)
            party.faces.append(found_faces)


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
    detectors = Detectors(config.face_attacker, config.cnn_upsample, config.person_attacker)
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
        "codec": config.codec,
        "bootstrap": {"seed": config.seed, "resamples": RESAMPLES, "level": 0.95, "unit": "frame"},
        "defaults": None if config.defaults is None else {"scheme": config.defaults[1],
                                                         **config.defaults[0].to_json()},
        "eval_every": config.eval_every,
        "detect_every": config.detect_every,
        "face_attacker": config.face_attacker,
        **({"cnn_upsample": config.cnn_upsample} if config.face_attacker == "cnn" else {}),
        "person_attacker": config.person_attacker,
        "videos": [r.record for r in results],
    }
    return report, results
