"""``pedsam bench-propagation``: how well masks hold between keyframes, and what it costs the edge.

Each method of :data:`METHODS` propagates every object's mask through a clip whose true masks
are known, with the true mask as the keyframe every N frames (``--intervals``, 10 and 30 by
default), and the command reports:

- the mean IoU of the propagated frames (keyframes excluded) for each N, the worst frame, and
  the object the method does worst on;
- the drift curve: mean IoU against frames since the keyframe, as a table and a matplotlib plot;
- edge CPU per frame and per frame per object: process CPU time (every thread) spent in
  :meth:`~pedsam.stream.core.propagation.MaskPropagator.step`, over all propagated frames, and
  once more with a single object, where the per-frame work shared by objects is not split;
- how well each method's confidence flags bad masks: the ROC AUC of ``1 - confidence`` for
  telling masks with IoU below 0.8 from the rest (0.5 is chance; 1 ranks every bad mask first);
- jumps (``--jumps``): the same with only every k-th frame propagated, as a live run jumps after
  the frames it dropped (the keyframe still every N frames of the clip, N the largest interval).

The clip is :func:`pedsam.stream.media.synthetic.demo_scene` (640x480, four textured objects
that move, turn, zoom, stretch, bend and pass behind each other over a textured background),
rendered exactly or, with ``--encoded``, through H.264 and back. When Debian's labelme example
frames are present (``python samples/fetch_media.py --labelme``), the same is measured on those
five real frames (keyframe on the first) with their hand-drawn polygons as the truth.

Outputs (``--out``): ``propagation.json`` with every number, and ``drift.png``.
"""

from __future__ import annotations

import itertools
import json
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pedsam.stream.core.propagation import MaskPropagator, PropagationConfig
from pedsam.stream.errors import ConfigError, MediaError
from pedsam.stream.media.synthetic import demo_scene
from pedsam.stream.media.video import read_frames

__all__ = ["METHODS", "PropagationBench", "run"]

METHODS: dict[str, PropagationConfig] = {
    # Farneback dense flow, previous mask warped frame to frame: the common baseline.
    "dense": PropagationConfig(method="dense"),
    # Lucas-Kanade points, one RANSAC affine per object, no mesh, no keyframe refinement.
    "points-affine": PropagationConfig(grid=0, refine=False),
    # The default: affine + smooth mesh residual, points re-matched against the keyframe, and
    # an object's tint where grey loses its points.
    "points": PropagationConfig(),
    # The default without tints: grey alone.
    "points-grey": PropagationConfig(tint=False),
}
BAD_IOU = 0.8


@dataclass(frozen=True, kw_only=True, slots=True)
class PropagationBench:
    """The settings of one ``pedsam bench-propagation`` run (see :func:`main`'s --help)."""

    size: str = "640x480"
    frames: int = 240
    intervals: tuple[int, ...] = (10, 30)
    jumps: tuple[int, ...] = (4, 8)
    methods: tuple[str, ...] = tuple(METHODS)
    seed: int = 0
    encoded: bool = False
    labelme: str | None = "samples/media/labelme-video"
    out: str | None = "out/bench-propagation"
    threads: int = 1

    @classmethod
    def of(cls, values: Mapping[str, Any]) -> PropagationBench:
        return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})


@dataclass
class Trial:
    """One method on one clip with one keyframe interval."""

    method: str
    interval: int
    objects: int
    ious: list[list[float]] = field(default_factory=list)  # per object, per propagated frame
    ages: list[int] = field(default_factory=list)  # frames since the keyframe, per propagated frame
    confidences: list[list[float]] = field(default_factory=list)  # as ious
    cpu: float = 0.0  # seconds in step()

    @property
    def frames(self) -> int:
        return len(self.ages)

    def mean(self) -> float:
        return float(np.mean(self.ious)) if self.frames else float("nan")

    def drift(self) -> list[float]:
        """Mean IoU (over objects and keyframes) at 1 .. interval - 1 frames since the keyframe."""
        table = np.asarray(self.ious)  # (objects, frames)
        ages = np.asarray(self.ages)
        return [float(table[:, ages == age].mean()) if (ages == age).any() else float("nan")
                for age in range(1, self.interval)]

    def summary(self) -> dict[str, Any]:
        table = np.asarray(self.ious)
        return {
            "method": self.method, "interval": self.interval, "objects": self.objects, "frames": self.frames,
            "mean_iou": self.mean(), "min_iou": float(table.min()) if table.size else None,
            "mean_iou_per_object": [float(v) for v in table.mean(axis=1)] if table.size else [],
            "drift": self.drift(),
            "cpu_ms_per_frame": 1000 * self.cpu / max(1, self.frames),
            "cpu_ms_per_frame_per_object": 1000 * self.cpu / max(1, self.frames * self.objects),
            "confidence_auc": confidence_auc(self.ious, self.confidences),
        }


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two bool masks; 1.0 when both are empty (nothing to find)."""
    union = int(np.count_nonzero(a | b))
    return 1.0 if union == 0 else int(np.count_nonzero(a & b)) / union


def confidence_auc(ious: Sequence[Sequence[float]], confidences: Sequence[Sequence[float]]) -> float | None:
    """ROC AUC of low confidence as a detector of masks with IoU below :data:`BAD_IOU` (None
    when every mask is good or every mask is bad)."""
    iou_all, conf_all = np.ravel(ious), np.ravel(confidences)
    bad, good = conf_all[iou_all < BAD_IOU], conf_all[iou_all >= BAD_IOU]
    if not len(bad) or not len(good):
        return None
    # Probability that a bad mask has lower confidence than a good one (ties count half).
    lower = (bad[:, None] < good[None, :]).sum() + 0.5 * (bad[:, None] == good[None, :]).sum()
    return float(lower / (len(bad) * len(good)))


def measure(
    method: str, config: PropagationConfig, clip: Iterable[tuple[np.ndarray, Sequence[np.ndarray]]], interval: int,
    only: int | None = None,
) -> Trial:
    """Propagate through ``clip`` (``(HxWx3 uint8 RGB, per-object HxW bool truth)`` pairs), the
    truth being the keyframe every ``interval`` frames; ``only`` keeps a single object."""
    propagator = MaskPropagator(config)
    trial: Trial | None = None
    for index, (image, truth) in enumerate(clip):
        masks = [truth[only]] if only is not None else list(truth)
        if trial is None:
            trial = Trial(method, interval, len(masks), [[] for _ in masks], [], [[] for _ in masks])
        if index % interval == 0:
            propagator.reset(image, masks)
            continue
        started = time.process_time()
        results = propagator.step(image)
        trial.cpu += time.process_time() - started
        trial.ages.append(index % interval)
        for k, (result, mask) in enumerate(zip(results, masks)):
            trial.ious[k].append(iou(result.mask, mask))
            trial.confidences[k].append(result.confidence)
    if trial is None:
        raise MediaError("the clip has no frames")
    return trial


class PackedMasks:
    """Per-frame lists of ``(H, W)`` bool masks, held as bits (an eighth of the memory)."""

    def __init__(self) -> None:
        self._frames: list[list[np.ndarray]] = []
        self._width = 0

    def append(self, masks: Sequence[np.ndarray]) -> None:
        self._width = masks[0].shape[1] if masks else self._width
        self._frames.append([np.packbits(mask, axis=1) for mask in masks])

    def __iter__(self) -> Iterator[list[np.ndarray]]:
        for masks in self._frames:
            yield [np.unpackbits(m, axis=1, count=self._width).astype(bool) for m in masks]


def scene_clip(args: PropagationBench, folder: Path) -> tuple[str, list[np.ndarray], PackedMasks]:
    """The demo scene's frames (exact, or through H.264 with ``encoded``) and its true masks."""
    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--size {args.size!r} is not WxH, e.g. 640x480") from None
    if width < 64 or height < 64 or width % 2 or height % 2:
        raise ConfigError(f"--size must be even and at least 64x64, got {args.size}")
    scene = demo_scene(width=width, height=height, frames=args.frames, seed=args.seed)
    images: list[np.ndarray] = []
    truth = PackedMasks()
    for frame in scene:
        images.append(frame.image)
        truth.append(frame.masks)
    label = f"demo scene {width}x{height}, {args.frames} frames"
    if args.encoded:
        path = folder / "scene.mp4"
        scene.write(path, fps=30)
        images = [frame.image for frame in read_frames(path)]
        label += ", H.264 crf 18 decoded"
    else:
        label += ", exact frames"
    return label, images, truth


def labelme_clip(folder: Path) -> tuple[list[np.ndarray], list[list[np.ndarray]], list[str]]:
    """Debian's labelme ``video_annotation`` frames (JPEG + JSON polygons, sorted by name):
    images RGB, per frame one mask per polygon (polygons matched by their order), and labels.

    Raises:
        MediaError: a missing or unreadable file, or frames that disagree on their polygons.
    """
    images: list[np.ndarray] = []
    truth: list[list[np.ndarray]] = []
    labels: list[str] = []
    for path in sorted(folder.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise MediaError(f"cannot read {path}: {exc}") from exc
        if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
            raise MediaError(f"{path} is not a labelme annotation (no list of shapes)")
        bgr = cv2.imread(str(path.with_suffix(".jpg")))
        if bgr is None:
            raise MediaError(f"cannot read {path.with_suffix('.jpg')}")
        height, width = bgr.shape[:2]
        masks = []
        for shape in data["shapes"]:
            canvas = np.zeros((height, width), np.uint8)
            try:
                polygon = np.round(np.asarray(shape["points"], np.float64) * 16).astype(np.int32)  # 4 fraction bits
            except (KeyError, TypeError, ValueError) as exc:
                raise MediaError(f"{path}: a shape without a list of (x, y) points") from exc
            cv2.fillPoly(canvas, [polygon.reshape(-1, 2)], 1, lineType=cv2.LINE_8, shift=4)
            masks.append(canvas.astype(bool))
        frame_labels = [str(shape.get("label", "")) for shape in data["shapes"]]
        if labels and frame_labels != labels:
            raise MediaError(f"{path.name}: its polygons {frame_labels} differ from the first frame's {labels}")
        labels = frame_labels
        images.append(np.ascontiguousarray(bgr[..., ::-1]))
        truth.append(masks)
    if len(images) < 2:
        raise MediaError(f"{folder}: fewer than two annotated frames")
    return images, truth, labels


def plot(trials: Sequence[Trial], path: Path, title: str) -> None:
    """The drift curves: mean IoU against frames since the keyframe, one line per method and N."""
    from matplotlib.figure import Figure  # only this command needs matplotlib

    figure = Figure(figsize=(7.0, 4.2), dpi=110)
    axes = figure.subplots()
    colours: dict[str, str] = {}
    for trial in trials:
        colour = colours.setdefault(trial.method, f"C{len(colours)}")
        style = "-" if trial.interval == max(t.interval for t in trials) else "--"
        axes.plot(range(1, trial.interval), trial.drift(), style, color=colour, marker=".",
                  label=f"{trial.method}, keyframe every {trial.interval}")
    axes.set_xlabel("frames since keyframe")
    axes.set_ylabel("mean IoU with the true mask")
    axes.set_title(title, fontsize=9)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)


def _table(trials: Sequence[Trial]) -> Iterator[str]:
    yield f"{'method':<14} {'N':>3} {'mean IoU':>8} {'min IoU':>7} {'worst object':>12} " \
          f"{'CPU ms/frame':>12} {'ms/frame/object':>15} {'conf AUC':>8}"
    for trial in trials:
        s = trial.summary()
        worst = int(np.argmin(s["mean_iou_per_object"]))
        auc = f"{s['confidence_auc']:.2f}" if s["confidence_auc"] is not None else "-"
        yield (f"{trial.method:<14} {trial.interval:>3} {s['mean_iou']:>8.3f} {s['min_iou']:>7.2f} "
               f"{worst:>4} ({s['mean_iou_per_object'][worst]:.3f}) {s['cpu_ms_per_frame']:>12.2f} "
               f"{s['cpu_ms_per_frame_per_object']:>15.2f} {auc:>8}")


def _drift_table(trials: Sequence[Trial]) -> Iterator[str]:
    longest = max(t.interval for t in trials)
    chosen = [t for t in trials if t.interval == longest]
    yield f"drift, keyframe every {longest}: mean IoU by frames since the keyframe"
    yield f"{'k':>3} " + " ".join(f"{t.method:>14}" for t in chosen)
    curves = [t.drift() for t in chosen]
    for age in range(1, longest):
        yield f"{age:>3} " + " ".join(f"{curve[age - 1]:>14.3f}" for curve in curves)


def run(args: PropagationBench) -> int:
    """The ``pedsam bench-propagation`` command; returns the exit status.

    Raises:
        ConfigError: a bad setting.
        MediaError: labelme frames that cannot be read.
    """
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown or not args.methods:
        raise ConfigError(f"--methods must name some of {', '.join(METHODS)}; unknown: {', '.join(unknown)}")
    if not args.intervals or min(args.intervals) < 2 or args.frames < 2 * max(args.intervals):
        raise ConfigError("--intervals must be at least 2, and --frames at least twice the largest interval")
    if args.threads < 1:
        raise ConfigError("--threads must be at least 1")
    if any(k < 2 or k >= max(args.intervals) for k in args.jumps):
        raise ConfigError("--jumps must be at least 2 and below the largest interval")
    threads = cv2.getNumThreads()
    cv2.setNumThreads(args.threads)
    try:
        return _run(args)
    finally:
        cv2.setNumThreads(threads)


def _run(args: PropagationBench) -> int:
    report: dict[str, Any] = {"settings": asdict(args)}
    with tempfile.TemporaryDirectory(prefix="pedsam-propagation-") as tmp:
        label, images, truth = scene_clip(args, Path(tmp))
    objects = len(next(iter(truth)))
    print(f"bench-propagation: {label}, {objects} objects, OpenCV threads {args.threads}", flush=True)
    trials = [measure(name, METHODS[name], zip(images, truth), n) for n in args.intervals for name in args.methods]
    for line in _table(trials):
        print(line)
    print()
    for line in _drift_table(trials):
        print(line)
    longest = max(args.intervals)
    single = [measure(name, METHODS[name], zip(images, truth), longest, only=0) for name in args.methods]
    print(f"\nCPU with a single object (object 0, N={longest}): "
          + ", ".join(f"{t.method} {1000 * t.cpu / t.frames:.2f} ms/frame" for t in single))
    jumps = [(k, measure(name, METHODS[name], itertools.islice(zip(images, truth), 0, None, k), max(2, longest // k)))
             for k in args.jumps for name in args.methods]
    if jumps:
        print(f"\njumps: every k-th frame propagated, keyframe every {longest} frames")
        print(f"{'method':<14} {'k':>3} {'mean IoU':>8} {'min IoU':>7} {'worst object':>12}")
        for k, trial in jumps:
            s = trial.summary()
            worst = int(np.argmin(s["mean_iou_per_object"]))
            print(f"{trial.method:<14} {k:>3} {s['mean_iou']:>8.3f} {s['min_iou']:>7.2f} "
                  f"{worst:>4} ({s['mean_iou_per_object'][worst]:.3f})")
    report["scene"] = {"label": label, "trials": [t.summary() for t in trials],
                       "single_object": [t.summary() for t in single],
                       "jumps": [{"jump": k, **t.summary()} for k, t in jumps]}
    del images, truth

    labelme = Path(args.labelme) if args.labelme else None
    if labelme is not None and labelme.is_dir():
        frames, masks, labels = labelme_clip(labelme)
        print(f"\nlabelme video_annotation ({labelme}): {len(frames)} frames "
              f"{frames[0].shape[1]}x{frames[0].shape[0]}, keyframe on the first; objects {labels}")
        real = [measure(name, METHODS[name], zip(frames, masks), len(frames)) for name in args.methods]
        print(f"{'method':<14} {'mean IoU':>8} " + " ".join(f"{'k=' + str(k):>6}" for k in range(1, len(frames)))
              + "  per object (mean)")
        for trial in real:
            per_object = " ".join(f"{np.mean(o):.3f}" for o in trial.ious)
            print(f"{trial.method:<14} {trial.mean():>8.3f} " + " ".join(f"{v:>6.3f}" for v in trial.drift())
                  + f"  {per_object}")
        report["labelme"] = {"labels": labels, "trials": [t.summary() for t in real]}
    elif labelme is not None:
        print(f"\nlabelme: {labelme} not found (python samples/fetch_media.py --labelme fetches it)")

    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "propagation.json").write_text(json.dumps(report, indent=1) + "\n")
        plot(trials, out / "drift.png", f"mask propagation, {label}")
        print(f"\nwrote {out / 'propagation.json'} and {out / 'drift.png'}")
    return 0
