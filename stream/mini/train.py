"""Training pedsam-mini: SAM's architecture at the ``mini`` preset, taught on composite scenes.

The recipe is SAM's, scaled to a CPU, in two stages. The first (:func:`train_step`) draws a
batch of composite scenes (:mod:`pedsam.stream.media.composites`) each step, prompts up to four
objects of each with a click (one positive point, three candidate masks, the best one counts)
or a box (one mask), then prompts them again as SAM's interactive training and pedsam's tracker
do: either the first prompt plus a correction point in the error of the first answer, or a
moved box of the object; both with the first answer's low-resolution logits as ``mask_input``.
The loss: cross-entropy + dice on the mask (see :func:`_mask_loss` for why not SAM's focal),
plus the squared error of the predicted IoU, on the 4x-token-grid logits.

From scratch, that teaches the model to cut out objects well but to find the prompted one
poorly: it mostly answers with the scene's most conspicuous object wherever the click is. The
second stage (:func:`tune_step`) therefore gives every prompt also as its
:func:`~pedsam.stream.core.predictor.prompt_prior` in the mask input, as pedsam's decoder gives
prompts to a model of a ``prompt_prior`` preset, and prompts every object with both a click and
a box each step.

Step ``i`` draws its scenes from a generator seeded with ``(seed, i)``, so a run that resumes from
its last saved state continues exactly as if it had not stopped. The output folder holds
``state.pt`` (model and optimiser, written every ``save_every`` steps), ``log.csv`` (per step:
loss, click IoU, box IoU, learning rate, seconds), ``plot.png`` and, at the end, ``pedsam-mini.pth``:
the model's state dict in fp32, loadable as any SAM checkpoint of the ``mini`` preset.
"""

from __future__ import annotations

import csv
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from pedsam.workers.models import trainable_sam
from pedsam.workers.sam import Sam

from pedsam.stream.core.predictor import prompt_prior
from pedsam.stream.media.composites import TextureBank, compose

__all__ = ["TrainConfig", "fresh_model", "scene_batch", "train", "train_step", "tune_step"]

CANVASES = ((512, 512), (512, 384), (512, 288), (384, 512))  # (width, height), long side = img_size
MAX_OBJECTS = 4
PE_SCALE = 4.0
OBJECT_SIZES = (0.08, 0.6)  # an object's extent, as a fraction of the picture's longer side


@dataclass(frozen=True, kw_only=True, slots=True)
class TrainConfig:
    """One training run; the same values and textures give the same weights."""

    steps: int = 1000
    batch: int = 8
    lr: float = 6e-4
    warmup: int = 150
    weight_decay: float = 0.05
    seed: int = 0
    save_every: int = 100
    balanced_steps: int = 700  # steps with the class-balanced mask loss (see _mask_loss)
    preset: str = "mini"
    # The second stage (tune_step), after the first ``steps``: prompts drawn as the mask input too.
    tune_steps: int = 1400
    tune_lr: float = 3e-4
    tune_warmup: int = 50
    tune_encoder: bool = True  # the image encoder learns in the second stage too

    @property
    def total_steps(self) -> int:
        return self.steps + self.tune_steps


def fresh_model(preset: str = "mini", seed: int = 0) -> Sam:
    """SAM's modules for ``preset`` as its constructors initialise them, in train mode.

    (A ViT-style truncated normal of std 0.02 everywhere starved the mask decoder's MLPs, which
    have no normalisation: masks stayed empty for hundreds of steps.)"""
    sam = trainable_sam(preset, seed=seed)
    _informative_patches(sam.image_encoder.patch_embed.proj)
    with torch.no_grad():  # finer prompt positions than SAM's scale of 1 gives 32 frequencies
        sam.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix.mul_(PE_SCALE)
    sam.requires_grad_(True)
    return sam


def _informative_patches(conv: torch.nn.Conv2d) -> None:
    """Start the patch embedding (C, 3, P, P) as a 2-D DCT: each patch's mean colour, then
    luminance frequencies from low to high (the lowest also in two colour-opponent forms), each
    filter of unit norm, so tokens say what a patch looks like from the first step."""
    channels, _, size, _ = conv.weight.shape
    axis = torch.arange(size, dtype=torch.float32)

    def basis(u: int, v: int) -> torch.Tensor:
        b = torch.cos(math.pi * (axis + 0.5) * v / size)[:, None] * torch.cos(math.pi * (axis + 0.5) * u / size)[None]
        return torch.as_tensor(b / b.norm())

    luminance = torch.ones(3) / math.sqrt(3.0)
    opponents = (torch.tensor([1.0, -1.0, 0.0]) / math.sqrt(2.0), torch.tensor([1.0, 1.0, -2.0]) / math.sqrt(6.0))
    filters = [torch.eye(3)[c][:, None, None] * basis(0, 0) for c in range(3)]
    for u, v in sorted(((u, v) for u in range(size) for v in range(size) if u + v), key=lambda f: (f[0] + f[1], f)):
        filters.append(luminance[:, None, None] * basis(u, v))
        if u + v <= 2:
            filters.extend(o[:, None, None] * basis(u, v) for o in opponents)
        if len(filters) >= channels:
            break
    with torch.no_grad():
        conv.weight.copy_(torch.stack(filters[:channels]))
        if conv.bias is not None:
            conv.bias.zero_()


@dataclass(frozen=True, slots=True)
class SceneBatch:
    """``images`` (B, 3, S, S) float32 normalised and padded as SAM's preprocess; ``masks`` per
    image a (N, 4g, 4g) float32 tensor of the objects' visible parts at the logits' resolution
    (area fractions in 0..1), ``full`` the same at (N, S, S) bool, for prompts."""

    images: torch.Tensor
    masks: list[torch.Tensor]
    full: list[np.ndarray]


def scene_batch(sam: Sam, bank: TextureBank, rng: np.random.Generator, size: int) -> SceneBatch:
    """``size`` composite scenes of one random canvas, at most :data:`MAX_OBJECTS` objects each."""
    side = sam.image_encoder.img_size
    width, height = CANVASES[int(rng.integers(len(CANVASES)))]
    width, height = width * side // 512, height * side // 512
    images: list[torch.Tensor] = []
    masks: list[torch.Tensor] = []
    full: list[np.ndarray] = []
    low = side // 4
    while len(images) < size:
        scene = compose(rng, bank, width, height, sizes=OBJECT_SIZES)
        if not scene.masks:
            continue
        picked = rng.permutation(len(scene.masks))[:MAX_OBJECTS]
        stack = np.zeros((len(picked), side, side), bool)
        for row, k in enumerate(picked):
            stack[row, :height, :width] = scene.masks[k]
        pixels = torch.from_numpy(scene.image).permute(2, 0, 1).float()
        images.append(sam.preprocess(pixels[None])[0])
        masks.append(F.interpolate(torch.from_numpy(stack).float()[:, None], size=(low, low), mode="area")[:, 0])
        full.append(stack)
    return SceneBatch(torch.stack(images), masks, full)


def _mask_loss(logits: torch.Tensor, target: torch.Tensor, balanced: bool = True) -> torch.Tensor:
    """Per mask: binary cross-entropy + dice; logits and target (N, K, h, w). ``balanced``: the
    object's pixels weigh as much as the rest together in the cross-entropy.

    Not SAM's 20 x focal (alpha 0.25) + dice: from scratch and at a few thousand steps, focal's
    down-weighting of the object's pixels, and plain cross-entropy too, settle on empty masks
    (IoU 0.00 from step 100 to 350 here). Balanced, they do not; but balanced for good, masks
    grow about 5 times too large (step 1000), since a false positive costs so little: training
    balances the loss for its first :attr:`TrainConfig.balanced_steps` steps only."""
    prob = logits.sigmoid()
    inside = target.sum(dim=(-2, -1), keepdim=True)
    outside = target[0, 0].numel() - inside
    weight = torch.where(target > 0.5, outside / inside.clamp(min=1.0), torch.ones_like(target)).clamp(max=50.0)
    if not balanced:
        weight = torch.ones_like(target)
    ce = F.binary_cross_entropy_with_logits(logits, target, weight=weight, reduction="none").sum(dim=(-2, -1))
    ce = ce / weight.sum(dim=(-2, -1))
    dice = 1 - (2 * (prob * target).sum(dim=(-2, -1)) + 1) / (prob.sum(dim=(-2, -1)) + target.sum(dim=(-2, -1)) + 1)
    return ce + dice


def _iou(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU of ``logits > 0`` with ``target > 0.5``, per mask: (N, K)."""
    pred, truth = logits > 0, target > 0.5
    inter = (pred & truth).sum(dim=(-2, -1)).float()
    union = (pred | truth).sum(dim=(-2, -1)).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def _inside_point(rng: np.random.Generator, mask: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(mask)
    k = int(rng.integers(len(xs)))
    return float(xs[k]) + 0.5, float(ys[k]) + 0.5


def _box(rng: np.random.Generator, mask: np.ndarray, jitter: float) -> list[float]:
    ys, xs = np.nonzero(mask)
    x0, x1, y0, y1 = float(xs.min()), float(xs.max() + 1), float(ys.min()), float(ys.max() + 1)
    w, h = x1 - x0, y1 - y0
    noise = rng.normal(0, jitter, 4) * np.array([w, h, w, h])
    return [x0 + noise[0], y0 + noise[1], x1 + noise[2], y1 + noise[3]]


def _decode(sam: Sam, embedding: torch.Tensor, points: tuple[torch.Tensor, torch.Tensor] | None,
            boxes: torch.Tensor | None, mask_input: torch.Tensor | None, multimask: bool
            ) -> tuple[torch.Tensor, torch.Tensor]:
    sparse, dense = sam.prompt_encoder(points=points, boxes=boxes, masks=mask_input)
    masks, scores = sam.mask_decoder(image_embeddings=embedding, image_pe=sam.prompt_encoder.get_dense_pe(),
                                     sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                     multimask_output=multimask)
    return masks, scores


def train_step(sam: Sam, batch: SceneBatch, rng: np.random.Generator, *, balanced: bool = True
               ) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss of one batch (to back-propagate) and its figures: click and box IoU of the first
    answers (the best of three for a click, as pedsam picks it: by predicted IoU). ``balanced``:
    see :func:`_mask_loss`."""
    embeddings = sam.image_encoder(batch.images)  # (B, C, g, g)
    losses: list[torch.Tensor] = []
    ious: dict[str, list[float]] = {"click": [], "box": []}
    for b in range(embeddings.shape[0]):
        target, full = batch.masks[b], batch.full[b]
        n = target.shape[0]
        click = rng.random() < 0.5
        if click:
            coords = torch.tensor([[_inside_point(rng, m)] for m in full])  # (N, 1, 2)
            labels = torch.ones(n, 1, dtype=torch.int)
            points: tuple[torch.Tensor, torch.Tensor] | None = (coords, labels)
            boxes = None
        else:
            points = None
            boxes = torch.tensor([_box(rng, m, 0.05) for m in full], dtype=torch.float)
        logits, predicted = _decode(sam, embeddings[b : b + 1], points, boxes, None, click)
        per_mask = _mask_loss(logits, target[:, None].expand_as(logits), balanced)  # (N, K)
        actual = _iou(logits.detach(), target[:, None].expand_as(logits))
        best = per_mask.argmin(dim=1)
        rows = torch.arange(n)
        losses.append(per_mask[rows, best].mean() + F.mse_loss(predicted, actual))
        chosen = predicted.detach().argmax(dim=1)
        ious["click" if click else "box"].append(float(actual[rows, chosen].mean()))
        previous = logits.detach()[rows, best][:, None]  # (N, 1, low, low)
        losses.append(_second_round(sam, embeddings[b : b + 1], rng, previous, target, full, points, boxes, balanced))
    figures = {key: float(np.mean(v)) if v else float("nan") for key, v in ious.items()}
    return torch.stack(losses).mean(), figures


def _second_round(sam: Sam, embedding: torch.Tensor, rng: np.random.Generator, previous: torch.Tensor,
                  target: torch.Tensor, full: np.ndarray, points: tuple[torch.Tensor, torch.Tensor] | None,
                  boxes: torch.Tensor | None, balanced: bool) -> torch.Tensor:
    """The loss of prompting again from a first answer's logits ``previous`` (N, 1, low, low):
    the first prompt plus a correction click in the answer's error, as an interactive user gives
    one, or pedsam's tracker's prompt (the object's box, loosely, and the answer's logits moved a
    little, as by the object's motion); both with the logits as ``mask_input``."""
    n, low = target.shape[0], target.shape[-1]
    if rng.random() < 0.5:  # a correction click
        wrong = (previous[:, 0] > 0) != (target > 0.5)
        extra, extra_labels = [], []
        for k in range(n):
            cells = torch.nonzero(wrong[k]).numpy()
            if len(cells):
                y, x = cells[int(rng.integers(len(cells)))]
                scale = full.shape[-1] / low
                extra.append([(x + 0.5) * scale, (y + 0.5) * scale])
                extra_labels.append(int(target[k, y, x] > 0.5))
            else:
                extra.append(list(_inside_point(rng, full[k])))
                extra_labels.append(1)
        new = (torch.tensor(extra, dtype=torch.float)[:, None], torch.tensor(extra_labels, dtype=torch.int)[:, None])
        points = new if points is None else (torch.cat([points[0], new[0]], 1), torch.cat([points[1], new[1]], 1))
        mask_input = previous
    else:  # the tracker's
        points = None
        boxes = torch.tensor([_box(rng, m, 0.08) for m in full], dtype=torch.float)
        shift = [int(v) for v in rng.integers(-4, 5, 2)]
        mask_input = torch.roll(previous, shifts=shift, dims=(-2, -1))
    logits, predicted = _decode(sam, embedding, points, boxes, mask_input, False)
    actual = _iou(logits.detach(), target[:, None])
    return _mask_loss(logits, target[:, None], balanced).mean() + F.mse_loss(predicted, actual)


def tune_step(sam: Sam, batch: SceneBatch, rng: np.random.Generator) -> tuple[torch.Tensor, dict[str, float]]:
    """A step of the second stage (see :class:`TrainConfig`): every object of every scene
    prompted twice, with a click and with a box, each also drawn as
    :func:`~pedsam.stream.core.predictor.prompt_prior` in the mask input (as pedsam's decoder
    gives it to a model of this preset), then once more from the click's answer as in
    :func:`_second_round`. Returns the loss and the first answers' click and box IoU."""
    embeddings = sam.image_encoder(batch.images)
    side = sam.image_encoder.img_size
    losses: list[torch.Tensor] = []
    ious: dict[str, list[float]] = {"click": [], "box": []}
    for b in range(embeddings.shape[0]):
        target, full = batch.masks[b], batch.full[b]
        n = target.shape[0]
        rows = torch.arange(n)
        expanded = target[:, None]
        clicks = [_inside_point(rng, m) for m in full]
        points = (torch.tensor([[c] for c in clicks]), torch.ones(n, 1, dtype=torch.int))
        priors = torch.from_numpy(np.stack([prompt_prior(np.array([c]), np.ones(1), None, side) for c in clicks]))
        logits, predicted = _decode(sam, embeddings[b : b + 1], points, None, priors, True)
        per_mask = _mask_loss(logits, expanded.expand_as(logits), False)
        actual = _iou(logits.detach(), expanded.expand_as(logits))
        best = per_mask.argmin(dim=1)
        losses.append(per_mask[rows, best].mean() + F.mse_loss(predicted, actual))
        ious["click"].append(float(actual[rows, predicted.detach().argmax(dim=1)].mean()))
        previous = logits.detach()[rows, best][:, None]
        boxes = [_box(rng, m, 0.05) for m in full]
        priors = torch.from_numpy(np.stack([prompt_prior(None, None, np.array(box), side) for box in boxes]))
        box_logits, box_predicted = _decode(sam, embeddings[b : b + 1], None, torch.tensor(boxes, dtype=torch.float),
                                            priors, False)
        box_actual = _iou(box_logits.detach(), expanded)
        losses.append(_mask_loss(box_logits, expanded, False).mean() + F.mse_loss(box_predicted, box_actual))
        ious["box"].append(float(box_actual.mean()))
        losses.append(_second_round(sam, embeddings[b : b + 1], rng, previous, target, full, points, None, False))
    figures = {key: float(np.mean(v)) for key, v in ious.items()}
    return torch.stack(losses).mean(), figures


def _lr(config: TrainConfig, step: int) -> float:
    """Linear warm-up, then a cosine down to 5 % of the peak, in each stage."""
    peak, warmup, first, length = config.lr, config.warmup, 0, config.steps
    if step >= config.steps:
        peak, warmup, first, length = config.tune_lr, config.tune_warmup, config.steps, config.tune_steps
    step -= first
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, length - warmup)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def _optimiser(sam: Sam, config: TrainConfig, stage: int) -> torch.optim.Optimizer:
    """AdamW over what learns in ``stage`` (0 or 1), weight decay on matrices only."""
    for name, parameter in sam.named_parameters():
        parameter.requires_grad_(stage == 0 or config.tune_encoder or not name.startswith("image_encoder."))
    learning = [(n, p) for n, p in sam.named_parameters() if p.requires_grad]
    decay = [p for n, p in learning if p.dim() >= 2 and "pos" not in n]
    rest = [p for n, p in learning if not (p.dim() >= 2 and "pos" not in n)]
    return torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                              {"params": rest, "weight_decay": 0.0}], lr=config.lr)


def train(config: TrainConfig, bank: TextureBank, out: str | Path,
          progress: Callable[[int, int, dict[str, float]], None] | None = None) -> Path:
    """Train (or resume training) into folder ``out``; returns the path of ``pedsam-mini.pth``."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    # Weights and Adam's moments drift into subnormal floats as training goes on; on a CPU
    # every operation on one then takes a slow path (steps slowed from 1.6 s to 10 s here).
    # The setting is the whole process's, so it is undone at the end (other code here, and
    # hypothesis in the tests, expect IEEE subnormals).
    torch.set_flush_denormal(True)
    try:
        return _train(config, bank, folder, progress)
    finally:
        torch.set_flush_denormal(False)


def _train(config: TrainConfig, bank: TextureBank, folder: Path,
           progress: Callable[[int, int, dict[str, float]], None] | None) -> Path:
    state_path, log_path = folder / "state.pt", folder / "log.csv"
    sam = fresh_model(config.preset, config.seed)
    start = 0
    optimiser = _optimiser(sam, config, 0)
    if state_path.exists():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        sam.load_state_dict(state["model"])
        start = int(state["step"])
        if start >= config.steps:
            optimiser = _optimiser(sam, config, 1)
        if start != config.steps:  # at the boundary the second stage starts its own optimiser
            optimiser.load_state_dict(state["optimiser"])
        _truncate_log(log_path, start)
    fields = ["step", "loss", "click_iou", "box_iou", "lr", "seconds"]
    with open(log_path, "a", newline="") as handle:
        writer = csv.writer(handle)
        if start == 0:
            handle.truncate(0)
            writer.writerow(fields)
        for step in range(start, config.total_steps):
            began = time.perf_counter()
            if step == config.steps and step > start:
                optimiser = _optimiser(sam, config, 1)
            rng = np.random.default_rng([config.seed, step])
            for group in optimiser.param_groups:
                group["lr"] = _lr(config, step)
            batch = scene_batch(sam, bank, rng, config.batch)
            if step < config.steps:
                loss, figures = train_step(sam, batch, rng, balanced=step < config.balanced_steps)
            else:
                loss, figures = tune_step(sam, batch, rng)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            torch.nn.utils.clip_grad_norm_([p for p in sam.parameters() if p.requires_grad], 1.0)
            optimiser.step()
            row = {"loss": float(loss.detach()), "click_iou": figures["click"], "box_iou": figures["box"],
                   "lr": _lr(config, step), "seconds": time.perf_counter() - began}
            writer.writerow([step + 1] + [f"{row[k]:.5g}" for k in fields[1:]])
            handle.flush()
            if progress is not None:
                progress(step + 1, config.total_steps, row)
            if (step + 1) % config.save_every == 0 or step + 1 in (config.steps, config.total_steps):
                _save({"model": sam.state_dict(), "optimiser": optimiser.state_dict(), "step": step + 1}, state_path)
    weights = folder / "pedsam-mini.pth"
    _save({k: v.detach().float().contiguous() for k, v in sam.state_dict().items()}, weights)
    return weights


def _save(obj: object, path: Path) -> None:
    """Write ``obj`` with torch.save to a temporary name, then rename: a kill never leaves half a file."""
    partial = path.with_suffix(path.suffix + ".partial")
    torch.save(obj, partial)
    os.replace(partial, path)


def _truncate_log(path: Path, steps: int) -> None:
    """Keep the log's header and its first ``steps`` rows: rows written after the last saved
    state are written again by the resumed run."""
    if not path.exists():
        return
    lines = path.read_text().splitlines()[: steps + 1]
    path.write_text("".join(line + "\n" for line in lines))
