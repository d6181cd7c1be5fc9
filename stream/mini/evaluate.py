"""Measuring pedsam-mini: ``pedsam bench-mini``, its quality and its cost.

Three measurements, each printed with its counts (and written as JSON with ``--json``):

1. **Held-out composites.** Scenes drawn as training draws them
   (:func:`~pedsam.stream.media.composites.compose`, objects of training's sizes), from photo textures training never saw:
   scikit-image's bundled images (astronaut, coffee, chelsea, ...; training cuts opencv-doc's
   photos). The shapes and the generated fills are of training's kinds. Scene ``i`` comes from a
   generator seeded with ``[seed, 10**6 + i]`` (training's steps use ``[seed, step]``). Every
   object visible in a scene is prompted twice, and each answer is compared with its visible mask:

   - *click*: one positive point at its most interior pixel
     (:func:`~pedsam.stream.core.predictor.interior_point`); SAM's three candidates, the one with
     the highest predicted IoU kept, as pedsam answers a lone point;
   - *box*: its tight box (:func:`~pedsam.stream.core.predictor.mask_box`), one mask.

   Reported: mean IoU over objects with a 95% percentile bootstrap interval over objects (the
   objects of one scene share a picture, so the interval is somewhat too narrow), and the counts.
2. **Clips through the split.** Generated :class:`~pedsam.stream.media.synthetic.Scene` clips,
   written as H.264, through the real commands in a child process each: ``pedsam run`` (every
   frame through the split, ``--local-workers``) and ``pedsam stream --realtime`` (the file
   played as a camera delivers it: adaptive keyframes through the split, masks propagated on the
   edge in between, frames dropped to stay current). Every object is prompted once, by a click at
   the most interior pixel of its visible mask on frame 0. :func:`clip_iou` reads the masks the
   command wrote and gives per object its mean IoU with the exact truth over the frames that have
   masks (a live run's dropped frames have none, nor the frames it showed while the first
   keyframe was computing; both are counted).
3. **Cost.** One frame, whole (preparation, the encoder with every window computed in this process
   by pedsam's kernels as the edge computes the windows it keeps, one click decoded), with mini
   and with tiny, alternating over rounds in one process so that the machine's drift falls on
   both alike: median seconds per frame and their ratio.

Targets (:data:`TARGETS`): click IoU >= 0.75, box IoU >= 0.85, every clip object >= 0.70 in
both commands, mini's time per frame at most twice tiny's.

Everything computes on the CPU. The model is ``mini`` from ``ModelSource(preset="mini")`` unless a
checkpoint file is given.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from os import PathLike
from pathlib import Path
from types import TracebackType
from typing import Any

import cv2
import numpy as np
import torch

from pedsam.partitioner.assignment import EDGE, Assignment
from pedsam.stream.core.encoder import SplitEncoder
from pedsam.stream.core.executors import LocalExecutor
from pedsam.stream.core.memory import release_large_blocks
from pedsam.stream.core.predictor import MaskDecoder, MaskPrediction, interior_point, mask_box, prepare_image
from pedsam.stream.core.prompts import ObjectPrompt
from pedsam.stream.errors import ConfigError, PedsamError
from pedsam.stream.media.composites import CompositeScene, TextureBank, compose
from pedsam.stream.media.masks_io import decode_rle, read_records
from pedsam.stream.media.synthetic import Scene, Sprite, demo_scene
from pedsam.stream.mini.train import OBJECT_SIZES
from pedsam.workers.models import ModelSource, get_preset
from pedsam.workers.segment import SegmentRunner

__all__ = [
    "COMMANDS", "PARTS", "TARGETS", "ClipScore", "Cost", "EvaluationError", "HeldOut", "LocalPipeline", "MiniBench",
    "bootstrap_interval", "clip_iou", "clip_scenes", "evaluate_heldout", "heldout_bank", "heldout_scenes", "iou",
    "measure_cost", "run", "second_scene", "table",
]

PARTS = ("heldout", "clips", "cost")
COMMANDS = ("run", "stream")
TARGETS = {"click": 0.75, "box": 0.85, "clip": 0.70, "cost_ratio": 2.0}
HELD_OUT = "scikit-image's bundled images"
SCENE_STREAM = 10**6  # held-out scene i is seeded [seed, SCENE_STREAM + i]; training's steps stay below


class EvaluationError(PedsamError):
    """A measurement could not be taken: a command failed, or its output is missing."""


@dataclass(frozen=True, kw_only=True, slots=True)
class MiniBench:
    """The settings of one ``pedsam bench-mini`` run (see the command's --help)."""

    checkpoint: str | None = None
    parts: tuple[str, ...] = PARTS
    scenes: int = 200
    width: int = 640
    height: int = 480
    frames: int = 60
    local_workers: int = 3
    rounds: int = 10
    live_runs: int = 3
    seed: int = 0
    json: str | None = None

    def __post_init__(self) -> None:
        unknown = [p for p in self.parts if p not in PARTS]
        if unknown or not self.parts:
            raise ConfigError(f"--parts {','.join(self.parts)!r}: give some of {', '.join(PARTS)}, comma-separated")
        if min(self.scenes, self.frames, self.rounds, self.live_runs) < 1:
            raise ConfigError("--scenes, --frames, --rounds and --live-runs must be at least 1")
        if self.local_workers < 2:
            raise ConfigError("--local-workers must be at least 2 (one worker would see whole frames)")
        if self.width < 64 or self.height < 64 or self.width % 2 or self.height % 2:
            raise ConfigError(f"--size {self.width}x{self.height}: give an even WxH of at least 64x64")

    @property
    def source(self) -> ModelSource:
        return ModelSource(preset="mini", checkpoint=self.checkpoint)


# ---- the pieces ---------------------------------------------------------------------------------


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two ``(H, W)`` bool masks; 1.0 when both are empty."""
    union = int(np.count_nonzero(a | b))
    return 1.0 if union == 0 else int(np.count_nonzero(a & b)) / union


def bootstrap_interval(
    values: Sequence[float], *, seed: int = 0, resamples: int = 2000, level: float = 0.95
) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean of ``values`` (items drawn with replacement),
    at ``level``; deterministic for a given ``seed``.

    Raises:
        ValueError: no values.
    """
    data = np.asarray(values, np.float64)
    if data.size == 0:
        raise ValueError("no values to bootstrap")
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, 250):  # (250, n) draws at a time: memory stays small
        stop = min(resamples, start + 250)
        means[start:stop] = data[rng.integers(0, data.size, size=(stop - start, data.size))].mean(axis=1)
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def heldout_bank() -> TextureBank | None:
    """The held-out textures: the images bundled with scikit-image (the folder of ``skimage.data``)
    that :meth:`TextureBank.from_folder` takes; None when scikit-image is not installed."""
    try:
        import skimage.data  # type: ignore[import-untyped,import-not-found,unused-ignore]  # the mini extra
    except ImportError:
        return None
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # one of its TIFFs is not for OpenCV: skipped
    try:
        return TextureBank.from_folder(Path(skimage.data.__file__).parent)
    finally:
        cv2.utils.logging.setLogLevel(level)


def heldout_scenes(
    bank: TextureBank, count: int, *, width: int = 640, height: int = 480, seed: int = 0
) -> Iterator[CompositeScene]:
    """``count`` composite scenes of ``width`` x ``height``, scene ``i`` drawn from a generator
    seeded with ``[seed, 10**6 + i]``; the same arguments give the same scenes."""
    for i in range(count):
        yield compose(np.random.default_rng([seed, SCENE_STREAM + i]), bank, width, height, sizes=OBJECT_SIZES)


class LocalPipeline:
    """One model's whole frame in this process, through pedsam's own path: the frame prepared as
    SamPredictor prepares it, the split encoder with every window on the edge (pedsam's kernels),
    and the edge's :class:`~pedsam.stream.core.predictor.MaskDecoder`. On the CPU.

    Use it as a context manager: it owns the thread the torch work runs on.
    """

    def __init__(self, source: ModelSource) -> None:
        self.source = source
        preset = get_preset(source.preset)
        self.sam = source.build()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"eval-{source.preset}")
        self._encoder = SplitEncoder(self.sam, preset, {EDGE: LocalExecutor(SegmentRunner(self.sam, preset), self._pool)},
                                     self._pool)
        self._everything = tuple(range(self._encoder.grid.num_windows))
        self._decoder = MaskDecoder.for_preset(self.sam, preset)
        self._frames = 0

    def __enter__(self) -> LocalPipeline:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._pool.shutdown(wait=True)

    async def segment(self, image: np.ndarray, prompts: Sequence[ObjectPrompt]) -> list[MaskPrediction]:
        """``image`` (H, W, 3) uint8 RGB embedded once, then one prediction per prompt (a lone
        point: the best-scoring of SAM's three candidates), masks at the image's size."""
        index, self._frames = self._frames, self._frames + 1
        loop = asyncio.get_running_loop()
        prepared = await loop.run_in_executor(self._pool, prepare_image, self.sam, image)
        embedding, _ = await self._encoder.encode(index, prepared.tensor,
                                                  Assignment(frame_index=index, shares={EDGE: self._everything}))
        return [await loop.run_in_executor(self._pool, self._decoder.predict, embedding, prepared, prompt)
                for prompt in prompts]


# ---- 1. held-out composites ---------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class HeldOut:
    """Per object of the held-out scenes, in scene order: its IoU prompted by a click and by its
    box, and its visible area in pixels."""

    scenes: int
    textures: int
    click: tuple[float, ...]
    box: tuple[float, ...]
    areas: tuple[int, ...]

    def figure(self, kind: str, seed: int = 0) -> dict[str, Any]:
        """``kind`` ("click" or "box"): mean, 95% interval, objects, target, whether it is met."""
        values = self.click if kind == "click" else self.box
        mean = float(np.mean(values)) if values else float("nan")
        low, high = bootstrap_interval(values, seed=seed) if values else (float("nan"), float("nan"))
        return {"mean": round(mean, 4), "ci95": [round(low, 4), round(high, 4)], "objects": len(values),
                "target": TARGETS[kind], "met": bool(values) and mean >= TARGETS[kind]}


async def evaluate_heldout(
    model: LocalPipeline, bank: TextureBank, count: int, *, width: int = 640, height: int = 480, seed: int = 0,
    progress: Callable[[str], None] = lambda _: None,
) -> HeldOut:
    """Every object of :func:`heldout_scenes`, prompted by a click and by its box (see the module
    docstring)."""
    click: list[float] = []
    box: list[float] = []
    areas: list[int] = []
    for i, scene in enumerate(heldout_scenes(bank, count, width=width, height=height, seed=seed)):
        prompts = [ObjectPrompt(points=(interior_point(m),), labels=(1,)) for m in scene.masks]
        prompts += [ObjectPrompt(box=mask_box(m)) for m in scene.masks]
        answers = await model.segment(scene.image, prompts) if prompts else []
        n = len(scene.masks)
        for k, mask in enumerate(scene.masks):
            click.append(iou(answers[k].mask, mask))
            box.append(iou(answers[n + k].mask, mask))
            areas.append(int(mask.sum()))
        if (i + 1) % 25 == 0 or i + 1 == count:
            progress(f"held-out scene {i + 1}/{count}: {len(click)} objects, click IoU {np.mean(click):.3f}, "
                     f"box IoU {np.mean(box):.3f}")
    return HeldOut(scenes=count, textures=len(bank), click=tuple(click), box=tuple(box), areas=tuple(areas))


# ---- 2. clips through the split -----------------------------------------------------------------


def second_scene(frames: int = 60) -> Scene:
    """A clip unlike :func:`~pedsam.stream.media.synthetic.demo_scene`: 512x384, another seed, a
    disc drifting right, a star turning and stretching behind it, a box zooming across in front."""
    sprites = (
        Sprite(name="disc", shape="ellipse", colour=(200, 60, 200), centre=(130, 120), half_size=(55, 50), depth=1,
               velocity=(2.0, 0.5), spin=0.5),
        Sprite(name="star", shape="star", colour=(230, 120, 30), centre=(380, 110), half_size=(60, 60), depth=2,
               sway=(60, 30), period=90, spin=-1.5, stretch=0.2, morph_period=45),
        Sprite(name="block", shape="rectangle", colour=(60, 200, 200), centre=(360, 270), half_size=(70, 45),
               depth=0, velocity=(-2.5, -0.8), spin=1.2, zoom=0.15, morph_period=40),
    )
    return Scene(512, 384, sprites, frames=frames, seed=1)


def clip_scenes(*, frames: int = 60, width: int = 640, height: int = 480) -> list[tuple[str, Scene]]:
    """The bench's clips, named: the propagation bench's scene at ``width`` x ``height`` and
    :func:`second_scene`."""
    return [(f"demo {width}x{height}", demo_scene(width=width, height=height, frames=frames, seed=0)),
            ("second 512x384", second_scene(frames))]


@dataclass(frozen=True, kw_only=True, slots=True)
class ClipScore:
    """One clip through one command.

    ``objects``: the scene's sprite names that were prompted (those visible on frame 0);
    ``per_object``: each one's mean IoU over ``frames_with_masks`` frames; ``frames``: the clip's
    length; ``dropped``: frames a live run dropped (no masks); ``before_first``: frames a live
    run showed without masks while its first keyframe was computing (not scored); ``errors``:
    frames with an error record; ``keyframes``: frames showing SAM's masks of a keyframe as it
    came back (the others' were propagated).
    """

    command: str
    objects: tuple[str, ...]
    per_object: tuple[float, ...]
    frames: int
    frames_with_masks: int
    dropped: int
    errors: int
    keyframes: int
    before_first: int = 0


def clip_figure(name: str, scores: Sequence[ClipScore]) -> dict[str, Any]:
    """One clip and command over one or more runs (live runs differ with what the machine took in
    time): the first run's counts, per object the mean IoU over runs (``per_object``, what the
    target is checked on) and its range, and every run's figures under ``runs``."""
    first = scores[0]
    per_run = np.array([s.per_object for s in scores])
    return {"clip": name, **asdict(first), "per_object": per_run.mean(axis=0).tolist(),
            "per_object_range": [per_run.min(axis=0).tolist(), per_run.max(axis=0).tolist()],
            "runs": [asdict(s) for s in scores], "target": TARGETS["clip"],
            "met": float(per_run.mean(axis=0).min()) >= TARGETS["clip"]}


def clip_iou(
    scene: Scene,
    *,
    command: str = "run",
    checkpoint: str | PathLike[str] | None = None,
    local_workers: int = 3,
    flags: Sequence[str] = (),
    folder: str | PathLike[str] | None = None,
    timeout: float = 1800.0,
) -> ClipScore:
    """Write ``scene`` as a clip, run ``pedsam COMMAND`` on it with mini (``--checkpoint`` when
    given, else the preset's own weights) and ``local_workers`` loopback workers, one click per
    object visible on frame 0 (at its most interior pixel), and score the masks it wrote.

    ``command``: ``"run"`` (every frame) or ``"stream"`` (``--file --realtime``, live).
    ``flags``: more flags for the command (``--keyframes every:5``, ``--codec int8``, ...).
    ``folder``: where the clip and the command's outputs go (default: a temporary folder, removed).

    Raises:
        ValueError: an unknown command, or no object visible on frame 0.
        EvaluationError: the command failed or wrote no masks.
    """
    if command not in COMMANDS:
        raise ValueError(f"command must be one of {COMMANDS}, got {command!r}")
    if folder is None:
        with tempfile.TemporaryDirectory(prefix="pedsam-mini-") as temporary:
            return clip_iou(scene, command=command, checkpoint=checkpoint, local_workers=local_workers,
                            flags=flags, folder=temporary, timeout=timeout)
    root = Path(folder)
    first = scene.frame(0)
    prompted = [k for k, mask in enumerate(first.masks) if mask.any()]
    if not prompted:
        raise ValueError("no object is visible on the clip's first frame")
    video, out = root / "clip.mp4", root / command
    if not video.exists():
        scene.write(video)
    argv = [sys.executable, "-m", "pedsam.stream", command]
    argv += [str(video), "--out", str(out)] if command == "run" else ["--file", str(video), "--realtime", "--record",
                                                                       str(out)]
    argv += ["--model", "mini", "--local-workers", str(local_workers), "--no-progress"]
    if checkpoint is not None:
        argv += ["--checkpoint", str(checkpoint)]
    for k in prompted:
        x, y = interior_point(first.masks[k])
        argv += ["--object", "--point", f"{x:g},{y:g}"]
    argv += list(flags)
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise EvaluationError(f"pedsam {command} did not finish within {timeout:g} s") from None
    if done.returncode != 0:
        last = ([line for line in done.stderr.splitlines() if line.strip()] or ["(no output)"])[-1]
        raise EvaluationError(f"pedsam {command} failed with exit status {done.returncode}: {last}")
    try:
        summary = json.loads((out / "summary.json").read_text())
    except (OSError, ValueError) as exc:
        raise EvaluationError(f"pedsam {command} wrote no summary.json: {exc}") from None
    totals = np.zeros(len(prompted))
    with_masks = errors = keyframes = before_first = 0
    for record in read_records(out / "masks.jsonl"):
        if "objects" not in record:
            errors += 1
            continue
        if not record["objects"] and with_masks == 0:  # shown while the first keyframe was in flight
            before_first += 1
            continue
        with_masks += 1
        keyframes += bool(record.get("keyframe")) or "audit_frame" in record
        found = {o["id"]: o for o in record["objects"]}
        truth = scene.frame(record["frame"]).masks
        for j, k in enumerate(prompted):  # object ids follow the prompts' order
            mask = decode_rle(found[j]["rle"]) if j in found else np.zeros_like(truth[k])
            totals[j] += iou(mask, truth[k])
    if with_masks == 0:
        raise EvaluationError(f"pedsam {command} wrote no frame with masks")
    return ClipScore(
        command=command, objects=tuple(scene.sprites[k].name for k in prompted),
        per_object=tuple(float(t / with_masks) for t in totals), frames=scene.frames,
        frames_with_masks=with_masks, dropped=int(summary.get("frames_dropped", 0)), errors=errors,
        keyframes=keyframes, before_first=before_first,
    )


# ---- 3. cost --------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class Cost:
    """Wall seconds per frame (embed + one click decoded), per round, of mini and of tiny."""

    mini: tuple[float, ...]
    tiny: tuple[float, ...]
    threads: int

    @property
    def ratio(self) -> float:
        return statistics.median(self.mini) / statistics.median(self.tiny)

    def summary(self) -> dict[str, Any]:
        per_round = [m / t for m, t in zip(self.mini, self.tiny, strict=True)]
        return {"mini_s": round(statistics.median(self.mini), 4), "tiny_s": round(statistics.median(self.tiny), 4),
                "ratio": round(self.ratio, 3), "ratio_range": [round(min(per_round), 3), round(max(per_round), 3)],
                "rounds": len(self.mini), "torch_threads": self.threads, "target": TARGETS["cost_ratio"],
                "met": self.ratio <= TARGETS["cost_ratio"], "mini_all_s": list(self.mini), "tiny_all_s": list(self.tiny)}


async def measure_cost(mini: ModelSource, image: np.ndarray, rounds: int, *, tiny: ModelSource | None = None) -> Cost:
    """Time one frame of ``image`` (H, W, 3 uint8 RGB) through :class:`LocalPipeline` with
    ``mini`` and ``tiny`` (default: tiny's seeded weights; weights do not change the time), one
    unmeasured frame each first, then ``rounds`` rounds of one frame each, the order swapped every
    round."""
    prompt = [ObjectPrompt(points=((image.shape[1] / 2, image.shape[0] / 2),), labels=(1,))]
    with LocalPipeline(mini) as first, LocalPipeline(tiny or ModelSource(preset="tiny")) as second:
        times: dict[int, list[float]] = {0: [], 1: []}
        models = (first, second)
        for model in models:
            await model.segment(image, prompt)
        for r in range(rounds):
            for which in ((0, 1) if r % 2 == 0 else (1, 0)):
                began = time.perf_counter()
                await models[which].segment(image, prompt)
                times[which].append(time.perf_counter() - began)
    return Cost(mini=tuple(times[0]), tiny=tuple(times[1]), threads=torch.get_num_threads())


# ---- the command --------------------------------------------------------------------------------


def run(bench: MiniBench, progress: Callable[[str], None] | None = None) -> int:
    """``pedsam bench-mini``: measure the parts asked for, print the table, write the JSON.
    Exit status 0.

    Raises:
        ConfigError: the held-out textures (scikit-image's images) are not installed.
    """
    say = progress or (lambda message: print(f"bench-mini: {message}", file=sys.stderr, flush=True))
    bank = None
    if "heldout" in bench.parts:
        bank = heldout_bank()
        if bank is None:
            raise ConfigError("pedsam bench-mini's held-out textures are scikit-image's images, which are not "
                              "installed: pip install 'pedsam[mini]' (or pip install scikit-image)")
    release_large_blocks()  # as an edge session does
    source = bench.source
    report: dict[str, Any] = {
        "settings": {**asdict(bench), "parts": list(bench.parts)}, "model": source.describe(),
        "random_weights": source.random_weights, "targets": TARGETS,
    }
    if bank is not None:
        with LocalPipeline(source) as model:
            held = asyncio.run(evaluate_heldout(model, bank, bench.scenes, width=bench.width, height=bench.height,
                                                seed=bench.seed, progress=say))
        report["heldout"] = {"textures": f"{HELD_OUT} ({held.textures} images), not used in training",
                             "scenes": held.scenes, "size": [bench.width, bench.height],
                             "click": held.figure("click", bench.seed), "box": held.figure("box", bench.seed),
                             "per_object": {"click": held.click, "box": held.box, "area": held.areas}}
    if "clips" in bench.parts:
        clips: list[dict[str, Any]] = []
        with tempfile.TemporaryDirectory(prefix="pedsam-bench-mini-") as temporary:
            for c, (name, scene) in enumerate(clip_scenes(frames=bench.frames, width=bench.width, height=bench.height)):
                folder = Path(temporary) / f"clip{c}"
                folder.mkdir()
                for command in COMMANDS:
                    scores = []
                    for r in range(1 if command == "run" else bench.live_runs):
                        run = "" if command == "run" else f", run {r + 1} of {bench.live_runs}"
                        say(f"clip {name}: pedsam {command} ({scene.frames} frames, {bench.local_workers} local "
                            f"workers{run})")
                        shutil.rmtree(folder / command, ignore_errors=True)
                        scores.append(clip_iou(scene, command=command, checkpoint=bench.checkpoint,
                                               local_workers=bench.local_workers, folder=folder))
                    clips.append(clip_figure(name, scores))
        report["clips"] = clips
    if "cost" in bench.parts:
        say(f"cost: mini against tiny, {bench.rounds} rounds")
        image = demo_scene(width=bench.width, height=bench.height, frames=1).frame(0).image
        cost = asyncio.run(measure_cost(source, image, bench.rounds))
        report["cost"] = {"size": [bench.width, bench.height], **cost.summary()}
    for line in table(report):
        print(line)
    if bench.json:
        try:
            Path(bench.json).write_text(json.dumps(report, indent=2) + "\n")
        except OSError as exc:
            raise ConfigError(f"cannot write {bench.json!r}: {exc.strerror}") from None
    return 0


def _met(ok: bool) -> str:
    return "met" if ok else "MISSED"


def table(report: dict[str, Any]) -> list[str]:
    """The lines ``pedsam bench-mini`` prints for a report (see :func:`run`)."""
    lines = [f"pedsam-mini: {report['model']}"]
    if report.get("random_weights"):
        lines.append("note: UNTRAINED random weights: these figures say nothing about pedsam-mini")
    held = report.get("heldout")
    if held is not None:
        width, height = held["size"]
        lines += ["", f"held-out composites: {held['scenes']} scenes of {width}x{height}, photo textures from "
                      f"{held['textures']}"]
        for kind, label in (("click", "click (1 point, best of 3)"), ("box", "box (tight, 1 mask)")):
            f = held[kind]
            lines.append(f"  {label:<27} IoU {f['mean']:.3f} [{f['ci95'][0]:.3f}, {f['ci95'][1]:.3f}] over "
                         f"{f['objects']} objects   target >= {f['target']:.2f}: {_met(f['met'])}")
    clips = report.get("clips")
    if clips:
        workers = report["settings"]["local_workers"]
        lines += ["", f"clips through the split ({workers} local workers; IoU per object, mean over the frames "
                      "with masks)"]
        lines.append(f"  {'clip':<16} {'command':<8} {'frames with masks':<72} objects (live: mean of runs, range)")
        for c in clips:
            frames = f"{c['frames_with_masks']}/{c['frames']} ({c['keyframes']} keyframe{'' if c['keyframes'] == 1 else 's'}"
            frames += f", {c['dropped']} dropped" if c["dropped"] else ""
            frames += f", {c['before_first']} before the first mask)" if c.get("before_first") else ")"
            runs = len(c.get("runs", [c]))
            if runs > 1:
                frames = f"{runs} runs; first: {frames}"
                low, high = c["per_object_range"]
                objects = ", ".join(f"{n} {v:.3f} ({a:.2f}-{b:.2f})"
                                    for n, v, a, b in zip(c["objects"], c["per_object"], low, high, strict=True))
            else:
                objects = ", ".join(f"{n} {v:.3f}" for n, v in zip(c["objects"], c["per_object"], strict=True))
            lines.append(f"  {c['clip']:<16} {c['command']:<8} {frames:<72} {objects}   "
                         f"target >= {c['target']:.2f}: {_met(c['met'])}")
    cost = report.get("cost")
    if cost is not None:
        width, height = cost["size"]
        lines += ["", f"cost per {width}x{height} frame (embed + one click, this process, {cost['torch_threads']} "
                      f"torch threads, {cost['rounds']} rounds alternating; medians)",
                  f"  mini {cost['mini_s']:.3f} s   tiny {cost['tiny_s']:.3f} s   ratio {cost['ratio']:.2f} "
                  f"(rounds {cost['ratio_range'][0]:.2f}..{cost['ratio_range'][1]:.2f})   target <= "
                  f"{cost['target']:.1f}: {_met(cost['met'])}"]
    return lines
