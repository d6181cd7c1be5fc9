"""An active worker: it shapes the tokens it returns to read a window it was not sent.

A worker's first-segment result becomes, at its windows, queries, keys and values of the edge's
next global block, and that block's output at its windows comes back to it as the next segment's
input. A worker that knows the public architecture (and the weights it runs) can add a
perturbation ``delta`` to what it returns, chosen so that its windows' next input says as much as
possible about one target window it was never sent. Here it learns ``delta`` (one for every
frame: the worker cannot see the rest of a frame, so it cannot tailor ``delta`` to it) by
gradient steps through the global block (``segment_anything``'s own :class:`Block`, differentiable),
jointly with a linear read-out, on frames of its own (frames it simulates whole), under a bound
``|delta| <= bound x`` the largest honest token magnitude:

- ``bound = 1``: a free worker, stopped only by checks it cannot pass;
- ``bound =`` the tolerance ``--verify`` allows (``int8`` on the wire: 5e-2; fp32: 2e-4): a change
  the secret sample cannot tell from rounding.

:func:`steer_report` measures what it reads back (ridge, fresh, on what it received through the
real split encoder, videos cross-validated) against the honest worker, and how soon ``--verify F``
catches it (sessions of frames with a :class:`~pedsam.stream.core.verify.Watch`; the worker
tampers every window of its first segment, so each frame catches it with probability
``1 - (1 - F)^windows``).

Default plan only: in the offload plan the worker's result reaches the edge as qkv, a different
attack surface this module does not cover.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from pedsam.workers.sam import Sam

from pedsam.partitioner.assignment import EDGE, Assignment
from pedsam.partitioner.geometry import WindowGrid
from pedsam.partitioner.offload import OffloadStage
from pedsam.partitioner.schemes import partition
from pedsam.stream.core.encoder import SplitEncoder
from pedsam.stream.core.executors import LocalExecutor, SegmentExecutor
from pedsam.stream.core.predictor import prepare_image
from pedsam.stream.core.shares import gather_windows, scatter_windows
from pedsam.stream.core.verify import Watch
from pedsam.stream.privacy.attackers import cross_predict, ridge, scores, summarise
from pedsam.stream.privacy.context import FACTS, FIRST, block_frames, collect
from pedsam.workers.presets import ModelPreset
from pedsam.workers.segment import Extent, SegmentRunner

__all__ = ["SteeringExecutor", "learn_delta", "steer_report"]

ATTACKER = "w0"


class SteeringExecutor:
    """A worker that adds ``delta`` ((N, C), its windows' valid tokens in window-id order) to its
    first segment's result and computes everything else honestly."""

    def __init__(self, inner: SegmentExecutor, delta: torch.Tensor) -> None:
        self._inner = inner
        self.delta = delta

    @property
    def name(self) -> str:
        return self._inner.name

    async def run(self, frame_id: int, segment: int, tokens: torch.Tensor, extents: Sequence[Extent]) -> torch.Tensor:
        result = await self._inner.run(frame_id, segment, tokens, extents)
        return result + self.delta if segment == 0 else result

    async def run_stage(
        self, frame_id: int, stage: OffloadStage, tokens: torch.Tensor, mixed: torch.Tensor | None,
        extents: Sequence[Extent],
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        return await self._inner.run_stage(frame_id, stage, tokens, mixed, extents)

    async def close(self) -> None:
        await self._inner.close()


def _shares(preset: ModelPreset, grid: WindowGrid, width: int, height: int, workers: int) -> dict[str, tuple[int, ...]]:
    scale = preset.img_size / max(width, height)
    content = (-(-round(height * scale) // preset.patch_size), -(-round(width * scale) // preset.patch_size))
    return {f"w{i}": share for i, share in enumerate(partition(grid, workers, "interleaved", content=content))}


@torch.no_grad()
def _first_outputs(sam: Sam, preset: ModelPreset, grid: WindowGrid, runner: SegmentRunner,
                   image: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """A frame -> (its honest first-segment output grid (H, W, C), its resized pixels' mean colour
    per window (windows, 3)), as the attacker simulates them on frames of its own."""
    prepared = prepare_image(sam, image)
    encoder = sam.image_encoder
    tokens = encoder.patch_embed(prepared.tensor)[0] + encoder.pos_embed[0]  # (H, W, C)
    windows = [grid.window(w) for w in range(grid.num_windows)]
    out = torch.empty_like(tokens)
    scatter_windows(out, windows, runner.run(0, gather_windows(tokens, windows), [(w.height, w.width) for w in windows]))
    pixels = prepared.tensor[0] * sam.pixel_std + sam.pixel_mean  # (3, S, S), padding included
    p = preset.patch_size
    colours = torch.stack([pixels[:, w.top * p:(w.top + w.height) * p, w.left * p:(w.left + w.width) * p].mean((1, 2))
                           for w in windows])
    return out, colours


def learn_delta(
    sam: Sam, preset: ModelPreset, frames: Sequence[np.ndarray], share: Sequence[int], target: int, bound: float,
    *, steps: int = 150, batch_size: int = 8, seed: int = 0,
) -> torch.Tensor:
    """The attacker's ``delta`` ((N, C) float32 for its ``share``'s valid tokens in id order),
    learnt on ``frames`` to make its windows' next-segment input predict window ``target``'s mean
    colour, with ``|delta| <= bound x`` the largest honest token magnitude there."""
    grid = WindowGrid.for_encoder(preset.img_size, preset.patch_size, preset.window_size)
    runner = SegmentRunner(sam, preset)
    block = sam.image_encoder.blocks[preset.global_attn_indexes[0]]
    windows = [grid.window(w) for w in share]
    simulated = [_first_outputs(sam, preset, grid, runner, f) for f in frames]
    grids = torch.stack([g for g, _ in simulated])  # (F, H, W, C)
    colours = torch.stack([c[target] for _, c in simulated])  # (F, 3)
    colours = (colours - colours.mean(0)) / colours.std(0).clamp_min(1e-6)
    index = torch.cat([torch.as_tensor(_token_ids(w, grids.shape[2])) for w in windows])
    honest = grids.flatten(1, 2)[:, index]  # (F, N, C)
    scale = bound * float(honest.abs().max())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        raw = torch.zeros(index.numel(), grids.shape[-1], requires_grad=True)
        readout = torch.nn.Linear(len(windows) * grids.shape[-1], 3)
        optimiser = torch.optim.Adam([raw, *readout.parameters()], lr=5e-2)
        sizes = [w.height * w.width for w in windows]
        for _ in range(steps):
            batch = torch.randperm(len(grids))[:batch_size]  # SAM's block holds every attention map: few frames a step
            optimiser.zero_grad()
            delta = scale * torch.tanh(raw)
            x = grids[batch].flatten(1, 2).index_add(1, index, delta.expand(len(batch), -1, -1)).view_as(grids[batch])
            received = block(x).flatten(1, 2)[:, index]  # (B, N, C): what comes back to the attacker
            pooled = torch.cat([part.mean(1) for part in received.split(sizes, 1)], 1)
            loss = torch.nn.functional.mse_loss(readout(pooled), colours[batch])
            loss.backward()  # type: ignore[no-untyped-call]
            optimiser.step()
    return (scale * torch.tanh(raw)).detach()


def _steering(delta: torch.Tensor) -> Callable[[str, SegmentExecutor], SegmentExecutor]:
    """``collect``'s ``wrap``: the attacker steers with ``delta``, the other workers are honest."""
    return lambda name, executor: SteeringExecutor(executor, delta) if name == ATTACKER else executor


def _token_ids(window: Any, width: int) -> np.ndarray:
    rows = (window.top + np.arange(window.height))[:, None] * width
    return np.asarray((rows + window.left + np.arange(window.width)[None, :]).reshape(-1))


def _read_back(recording: Any, target: int, first_only: bool, seed: int, folds: int) -> float:
    """R2 of window ``target``'s mean colour, predicted by ridge from the attacker's view."""
    keys = [FIRST] if first_only else recording.keys
    x = np.concatenate([recording.views[k][w] for k in keys for w in recording.shares[ATTACKER]], axis=1)
    truth = recording.facts[target][:, FACTS["mean colour"]].astype(np.float64)
    columns = {"mean colour": np.arange(3)}
    predicted, chance = cross_predict(ridge, x, truth, recording.groups, columns, folds=folds, seed=seed)
    return summarise([scores(truth, predicted, chance, columns)])["mean colour"]["r2"]


async def _frames_until_caught(
    sam: Sam, preset: ModelPreset, shares: dict[str, tuple[int, ...]], delta: torch.Tensor,
    frames: Sequence[np.ndarray], fraction: float, seed: int,
) -> int | None:
    """Frames the steering worker served before ``--verify fraction`` caught it (None: never)."""
    grid = WindowGrid.for_encoder(preset.img_size, preset.patch_size, preset.window_size)
    runner = SegmentRunner(sam, preset)
    picture = {w for ids in shares.values() for w in ids}
    with ThreadPoolExecutor(1) as pool:
        executors: dict[str, SegmentExecutor] = {EDGE: LocalExecutor(runner, pool)}
        for name in shares:
            honest = LocalExecutor(runner, pool, name)
            executors[name] = SteeringExecutor(honest, delta) if name == ATTACKER else honest
        watch = Watch(fraction, rng=random.Random(seed))
        encoder = SplitEncoder(sam, preset, executors, pool, watch=watch, order=sorted)
        for index, image in enumerate(frames):
            assignment = Assignment(frame_index=index, shares={
                EDGE: tuple(w for w in range(grid.num_windows) if w not in picture), **shares})
            await encoder.encode(index, prepare_image(sam, image).tensor, assignment)
            if ATTACKER in watch.caught:
                return index
    return None


def steer_report(
    sam: Sam, preset: ModelPreset, *, bounds: Sequence[float], seeds: Sequence[int], width: int = 512,
    height: int = 384, videos: int = 6, frames: int = 20, folds: int = 3, fraction: float = 0.05,
    sessions: int = 10, steps: int = 80, progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """The active worker on frames built to leak (:func:`~pedsam.stream.privacy.context.block_frames`):
    per bound and seed, R2 of the target's mean colour read back (honest worker, first segment
    only, and steering), the largest ``|delta|``, and frames served before ``--verify fraction``
    caught it (``sessions`` sessions of up to 40 frames, with the last seed's ``delta``)."""
    grid = WindowGrid.for_encoder(preset.img_size, preset.patch_size, preset.window_size)
    shares = _shares(preset, grid, width, height, 3)
    picture = sorted(w for ids in shares.values() for w in ids)
    target = next(w for w in picture if w not in shares[ATTACKER])
    train = [f for _, f in block_frames(range(5000, 5004), 16, width=width, height=height, preset=preset)]
    test = list(block_frames(range(6000, 6000 + videos), frames, width=width, height=height, preset=preset))
    honest = collect(sam, preset, test, pool=1)
    rows: list[dict[str, Any]] = []
    base = {"first": [_read_back(honest, target, True, s, folds) for s in seeds],
            "honest": [_read_back(honest, target, False, s, folds) for s in seeds]}
    for bound in bounds:
        steered: list[float] = []
        caught: list[int | None] = []
        sizes: list[float] = []
        for seed in seeds:
            delta = learn_delta(sam, preset, train, shares[ATTACKER], target, bound, steps=steps, seed=seed)
            recording = collect(sam, preset, test, pool=1, wrap=_steering(delta))
            steered.append(_read_back(recording, target, False, seed, folds))
            sizes.append(float(delta.abs().max()))
            progress(f"bound {bound:g}, seed {seed}: target R2 {steered[-1]:.3f} (honest {base['honest'][0]:.3f})")
        for session in range(sessions):  # the last seed's delta
            caught.append(asyncio.run(_frames_until_caught(
                sam, preset, shares, delta, [f for _, f in test[:40]], fraction, session)))
        rows.append({"bound": bound, "delta_max": sizes, "steered": steered, "caught_after": caught})
        progress(f"bound {bound:g}: frames served before --verify {fraction:g} caught it: {caught}")
    return {"attacker": ATTACKER, "share": list(shares[ATTACKER]), "target": target, "verify": fraction,
            **base, "rows": rows}
