"""Context leakage: what one worker receives about windows it was never sent.

A worker runs every windowed segment of its share. The first segment's input is the patch and
position embedding of its own windows; every later segment's input has been through a global
block on the edge, which mixed each token with the whole frame, and in the offload plan the
worker also receives that block's attention output (``mixed``) at its windows. So the tokens a
worker holds carry context of windows it never got. This module records exactly what crosses to
each worker, through the real split encoder (:class:`~pedsam.stream.core.encoder.SplitEncoder`
with in-process executors running the workers' own :class:`~pedsam.workers.segment.SegmentRunner`),
and turns it into what an attacker learns from (:mod:`pedsam.stream.privacy.attackers` does the
learning):

- a *view* per (tensor received, window): the window's tokens average-pooled to ``pool x pool``
  cells, ``(pool * pool * C,)`` float32; the tensors are keyed ``(segment, "tokens")`` and, in the
  offload plan, ``(segment, "mixed")``; with ``--remote-segments N`` only segments ``0..N-1``
  are sent out, so only those keys exist;
- *facts* per picture window, from the frame as the encoder saw it (resized, before
  normalisation, the window's picture part only): an 8x8 RGB thumbnail (192 values, 0-255), the
  mean colour (3, RGB 0-255) and the edge energy (1: mean Sobel gradient magnitude of the grey
  image, grey levels per pixel).

Window order: the split sends each share's windows in a secret random order; the README's
privacy model says a worker can still place them (the position embedding is in its tokens). This
measurement stands in for a worker that has done so: its encoder sends every share in window-id
order, so each received tensor is cut into windows without guessing. Everything else is the
product's path (gather, scatter, failover-free shares, the offload stages, remote segments).

Frames: :func:`random_scene` draws a generated clip (textured sprites of random shape, colour,
size and path over a textured background, :class:`~pedsam.stream.media.synthetic.Scene`);
:func:`block_frames` draws frames built to leak (one flat colour per window, independent), on
which the first segment alone is at chance, so any gain is context.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from pedsam.workers.sam import Sam

from pedsam.partitioner.assignment import EDGE, Assignment
from pedsam.partitioner.geometry import WindowGrid
from pedsam.partitioner.offload import OffloadStage
from pedsam.partitioner.schemes import partition
from pedsam.stream.core.encoder import SplitEncoder
from pedsam.stream.core.executors import LocalExecutor, SegmentExecutor
from pedsam.stream.core.predictor import prepare_image
from pedsam.stream.media.synthetic import SHAPES, Scene, Sprite
from pedsam.workers.presets import ModelPreset
from pedsam.workers.segment import Extent, SegmentRunner

__all__ = [
    "FACTS", "FIRST", "THUMB", "Key", "Recording", "Views", "block_frames", "collect", "random_scene", "scene_frames",
    "window_facts",
]

THUMB = 8
"""Thumbnail side, pixels: every window's picture resized to THUMB x THUMB RGB."""

FACTS: dict[str, slice] = {
    "thumbnail": slice(0, THUMB * THUMB * 3),
    "mean colour": slice(THUMB * THUMB * 3, THUMB * THUMB * 3 + 3),
    "edge energy": slice(THUMB * THUMB * 3 + 3, THUMB * THUMB * 3 + 4),
}
"""Where each fact lies in a window's fact vector."""

Key = tuple[int, str]
"""A tensor a worker receives: (segment, "tokens" | "mixed")."""

FIRST: Key = (0, "tokens")
"""The first segment's input: the patch and position embedding of the worker's own windows."""


class RecordingExecutor:
    """A worker as the measurement sees it: computes as a worker does (an in-process
    :class:`~pedsam.stream.core.executors.LocalExecutor`) and keeps, per frame, every tensor it
    was sent: ``(key, (N, C) float32 on the host, extents)``."""

    def __init__(self, inner: SegmentExecutor) -> None:
        self._inner = inner
        self.received: list[tuple[Key, torch.Tensor, list[Extent]]] = []

    @property
    def name(self) -> str:
        return self._inner.name

    async def run(self, frame_id: int, segment: int, tokens: torch.Tensor, extents: Sequence[Extent]) -> torch.Tensor:
        self.received.append(((segment, "tokens"), tokens.detach().float().cpu().clone(), list(extents)))
        return await self._inner.run(frame_id, segment, tokens, extents)

    async def run_stage(
        self, frame_id: int, stage: OffloadStage, tokens: torch.Tensor, mixed: torch.Tensor | None,
        extents: Sequence[Extent],
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        self.received.append(((stage.segment, "tokens"), tokens.detach().float().cpu().clone(), list(extents)))
        if mixed is not None:
            self.received.append(((stage.segment, "mixed"), mixed.detach().float().cpu().clone(), list(extents)))
        return await self._inner.run_stage(frame_id, stage, tokens, mixed, extents)

    async def close(self) -> None:
        await self._inner.close()


@dataclass
class Recording:
    """What every worker received over a set of frames, pooled, and the facts of every window.

    Attributes:
        shares: worker name -> its window ids (sorted; the same on every frame).
        picture: every window holding picture, sorted.
        views: key -> window id -> (frames, pool * pool * C) float32 pooled tokens of that window
            as its worker received them (only keys some worker received).
        facts: window id -> (frames, 196) float32 facts (see :data:`FACTS`).
        groups: (frames,) int, the video each frame came from.
        grid: (rows, cols) of the encoder's windows; window ``wid`` lies at ``divmod(wid, cols)``.
        pool: the side of each window's pooled cells.
    """

    shares: dict[str, tuple[int, ...]]
    picture: tuple[int, ...]
    grid: tuple[int, int] = (0, 0)
    pool: int = 1
    views: dict[Key, dict[int, np.ndarray]] = field(default_factory=dict)
    facts: dict[int, np.ndarray] = field(default_factory=dict)
    groups: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @property
    def keys(self) -> list[Key]:
        return sorted(self.views)


Views = dict[Key, dict[int, list[np.ndarray]]]


def _pool(tokens: torch.Tensor, extents: Sequence[Extent], windows: Sequence[int], pool: int) -> dict[int, np.ndarray]:
    """(N, C) tokens of ``windows`` (in that order, each ``extents[i]``) -> per window its tokens
    average-pooled to pool x pool cells, (pool * pool * C,) float32 (cells row-major, C last)."""
    out: dict[int, np.ndarray] = {}
    start = 0
    for wid, (h, w) in zip(windows, extents, strict=True):
        grid = tokens[start : start + h * w].reshape(h, w, -1).permute(2, 0, 1)  # (C, h, w)
        start += h * w
        cells = F.adaptive_avg_pool2d(grid[None], pool)[0]  # (C, pool, pool)
        out[wid] = cells.permute(1, 2, 0).reshape(-1).numpy().astype(np.float32)
    if start != tokens.shape[0]:
        raise AssertionError(f"extents cover {start} tokens, the tensor has {tokens.shape[0]}")
    return out


def window_facts(pixels: np.ndarray, grid: WindowGrid, patch: int, windows: Iterable[int]) -> dict[int, np.ndarray]:
    """HxWx3 uint8 RGB (the resized frame the encoder saw, unpadded) -> per window its facts,
    (196,) float32: thumbnail, mean colour, edge energy (see :data:`FACTS`), from the window's
    picture part."""
    grey = cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY).astype(np.float32)
    energy = cv2.magnitude(cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3))
    out = {}
    for wid in windows:
        w = grid.window(wid)
        y0, x0 = w.top * patch, w.left * patch
        y1, x1 = min((w.top + w.height) * patch, pixels.shape[0]), min((w.left + w.width) * patch, pixels.shape[1])
        region = pixels[y0:y1, x0:x1]
        thumb = cv2.resize(region, (THUMB, THUMB), interpolation=cv2.INTER_AREA).astype(np.float32)
        mean = region.reshape(-1, 3).astype(np.float32).mean(axis=0)
        out[wid] = np.concatenate([thumb.reshape(-1), mean, [float(energy[y0:y1, x0:x1].mean())]]).astype(np.float32)
    return out


def collect(
    sam: Sam,
    preset: ModelPreset,
    frames: Iterable[tuple[int, np.ndarray]],
    *,
    plan: str = "default",
    remote_segments: int | None = None,
    workers: int = 3,
    scheme: str = "interleaved",
    pool: int = 2,
    wrap: Callable[[str, SegmentExecutor], SegmentExecutor] | None = None,
) -> Recording:
    """Run ``frames`` (``(video, HxWx3 uint8 RGB)``, all of one size) through the split encoder
    with ``workers`` in-process workers on a fixed ``scheme`` assignment, and record what each
    received (see the module docstring). ``wrap(name, executor)``: what worker ``name`` does
    instead of computing honestly (an active worker), if given.

    Raises:
        ValueError: frames of different sizes, or none.
    """
    return asyncio.run(_collect(sam, preset, frames, plan, remote_segments, workers, scheme, pool, wrap))


async def _collect(
    sam: Sam, preset: ModelPreset, frames: Iterable[tuple[int, np.ndarray]], plan: str,
    remote_segments: int | None, workers: int, scheme: str, pool: int,
    wrap: Callable[[str, SegmentExecutor], SegmentExecutor] | None,
) -> Recording:
    grid = WindowGrid.for_encoder(preset.img_size, preset.patch_size, preset.window_size)
    runner = SegmentRunner(sam, preset)
    views: Views = {}
    facts: dict[int, list[np.ndarray]] = {}
    groups: list[int] = []
    recording: Recording | None = None
    size: tuple[int, ...] | None = None
    with ThreadPoolExecutor(1, thread_name_prefix="leakage") as pool_thread:
        honest = {f"w{i}": LocalExecutor(runner, pool_thread, f"w{i}") for i in range(workers)}
        recorders = {name: RecordingExecutor(wrap(name, e) if wrap else e) for name, e in honest.items()}
        executors: dict[str, SegmentExecutor] = {EDGE: LocalExecutor(runner, pool_thread), **recorders}
        encoder = SplitEncoder(sam, preset, executors, pool_thread, plan, remote_segments=remote_segments,
                               order=sorted)
        for index, (video, image) in enumerate(frames):
            if size is None:
                size = image.shape
            elif image.shape != size:
                raise ValueError(f"frames must be of one size: {image.shape} after {size}")
            prepared = prepare_image(sam, image)
            if recording is None:
                h, w = prepared.input_size
                content = (-(-h // preset.patch_size), -(-w // preset.patch_size))
                shares = dict(zip(recorders, partition(grid, workers, scheme, content=content), strict=True))
                picture = tuple(sorted(wid for ids in shares.values() for wid in ids))
                recording = Recording(shares=shares, picture=picture, grid=(grid.rows, grid.cols), pool=pool)
            assignment = Assignment(frame_index=index, shares={
                EDGE: tuple(wid for wid in range(grid.num_windows) if wid not in recording.picture),
                **recording.shares,
            })
            for recorder in recorders.values():
                recorder.received.clear()
            await encoder.encode(index, prepared.tensor, assignment)
            for name, recorder in recorders.items():
                for key, tokens, extents in recorder.received:
                    for wid, vector in _pool(tokens, extents, recording.shares[name], pool).items():
                        views.setdefault(key, {}).setdefault(wid, []).append(vector)
            pixels = _pixels(sam, prepared.tensor, prepared.input_size)
            for wid, vector in window_facts(pixels, grid, preset.patch_size, recording.picture).items():
                facts.setdefault(wid, []).append(vector)
            groups.append(video)
    if recording is None:
        raise ValueError("no frames to measure")
    for key, per_window in views.items():
        recording.views[key] = {wid: np.stack(v) for wid, v in per_window.items()}
        if any(len(v) != len(groups) for v in per_window.values()):
            raise AssertionError(f"{key}: a window was not received on every frame")
    recording.facts = {wid: np.stack(v) for wid, v in facts.items()}
    recording.groups = np.asarray(groups, np.int64)
    return recording


def _pixels(sam: Sam, tensor: torch.Tensor, input_size: tuple[int, int]) -> np.ndarray:
    """The prepared (1, 3, S, S) tensor -> the resized frame, (h, w, 3) uint8 RGB, unpadded."""
    h, w = input_size
    rgb = tensor[0, :, :h, :w] * sam.pixel_std + sam.pixel_mean  # (3, h, w), 0-255
    return np.asarray(np.clip(np.rint(rgb.permute(1, 2, 0).cpu().numpy()), 0, 255), np.uint8)


def random_scene(seed: int, *, width: int = 640, height: int = 480, frames: int = 100) -> Scene:
    """A generated clip of 3 to 6 textured sprites of random shape, colour, size and path over a
    seeded textured background; the same seed gives the same clip."""
    rng = np.random.default_rng(seed)
    short = min(width, height)
    sprites = []
    for k in range(int(rng.integers(3, 7))):
        colour = tuple(int(c) for c in rng.integers(20, 256, size=3))
        sprites.append(Sprite(
            name=f"s{k}", shape=str(rng.choice(SHAPES)), colour=(colour[0], colour[1], colour[2]),
            centre=(float(rng.uniform(0, width)), float(rng.uniform(0, height))),
            half_size=(float(rng.uniform(0.06, 0.2) * short), float(rng.uniform(0.06, 0.2) * short)),
            depth=k, velocity=(float(rng.normal(0, 1.5)), float(rng.normal(0, 1.0))),
            sway=(float(rng.uniform(0, 0.3) * width), float(rng.uniform(0, 0.2) * height)),
            period=float(rng.uniform(60, 240)), phase=float(rng.uniform(0, 2 * math.pi)),
            angle=float(rng.uniform(0, 180)), spin=float(rng.normal(0, 1.0)), zoom=float(rng.uniform(0, 0.3)),
        ))
    return Scene(width, height, sprites, frames=frames, seed=seed)


def scene_frames(videos: Sequence[int], frames: int, step: int, *, width: int, height: int) -> Iterator[tuple[int, np.ndarray]]:
    """``(video index, frame)`` for ``frames`` frames, ``step`` apart, of each generated clip
    ``random_scene(seed)`` for ``seed`` in ``videos``."""
    for index, seed in enumerate(videos):
        scene = random_scene(seed, width=width, height=height, frames=frames * step)
        for i in range(frames):
            yield index, scene.frame(i * step).image


def block_frames(
    videos: Sequence[int], frames: int, *, width: int, height: int, preset: ModelPreset,
) -> Iterator[tuple[int, np.ndarray]]:
    """``(video index, frame)``: frames built to leak. Each is a grid of flat blocks of random
    colour, one block per encoder window (its size in the frame's pixels), drawn independently, so
    no window says anything about another: inpainting is at chance, and whatever an attacker
    predicts above chance came through context. Block edges get a fixed grey seam a few pixels
    wide, so that SAM's resize does not blend a block's colour into its neighbour's window
    (without it, a ridge attacker reads a neighbour's colour off the first segment at R2 0.75).
    Seeded by ``videos``."""
    side = preset.window_size * preset.patch_size * max(width, height) / preset.img_size  # a window, in frame px
    seam = math.ceil(2 * max(width, height) / preset.img_size) + 1  # beyond the resize's reach
    rows, cols = (np.arange(height) // side).astype(int), (np.arange(width) // side).astype(int)
    near = np.minimum(np.arange(max(width, height)) % side, side - np.arange(max(width, height)) % side) < seam
    grey = near[:height, None] | near[None, :width]
    for index, seed in enumerate(videos):
        rng = np.random.default_rng(seed)
        for _ in range(frames):
            colours = rng.integers(0, 256, size=(rows[-1] + 1, cols[-1] + 1, 3), dtype=np.uint8)
            frame = colours[rows][:, cols]
            frame[grey] = 128
            yield index, frame
