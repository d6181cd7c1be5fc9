"""The split image encoder: SAM's ViT with its windowed segments computed elsewhere.

Per frame::

    edge:     patch_embed + pos_embed                          (1, H, W, C) tokens
    for each step of the model plan:
      segment: cut the grid into windows, send each executor its share of windows
               (valid tokens only), gather the results, write them back into the grid
      global:  one global-attention block on the edge
    edge:     neck                                             (1, out_chans, H, W)

Torch work on the edge runs on one dedicated thread, so while the edge runs a global block
of one frame the event loop keeps other frames' segments moving on the workers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import torch
from segment_anything.modeling import Sam

from partitioner.assignment import Assignment, check_assignment
from partitioner.geometry import Window, WindowGrid
from partitioner.offload import PLANS
from partitioner.plan import GlobalStep, ModelPlan, SegmentStep, model_plan
from workers import kernels
from workers.models import ModelPreset

from .errors import WorkerError
from .executors import SegmentExecutor

T = TypeVar("T")


class AssignmentPolicy(Protocol):
    """Chooses, per frame, which executor computes which windows."""

    def assign(self, frame_index: int) -> Assignment: ...


@dataclass
class SegmentAudit:
    segment: int
    shares: dict[str, list[int]]
    seconds: float


@dataclass
class FrameAudit:
    """What left the edge for one frame: per segment, which executor got which window ids."""

    frame: int
    assignment: Assignment
    segments: list[SegmentAudit] = field(default_factory=list)
    exposure: dict[str, Any] | None = None  # the scheduler's per-server exposure record, if any

    def to_json(self) -> dict[str, Any]:
        return {
            "frame": self.frame,
            "segments": [
                {"segment": s.segment, "shares": s.shares, "seconds": round(s.seconds, 4)}
                for s in self.segments
            ],
        }


def window_token_index(windows: Sequence[Window], grid_width: int) -> torch.Tensor:
    """(N,) int64: for the valid tokens of ``windows`` (row-major, one window after another),
    their row-major positions in an (H, ``grid_width``) token grid."""
    parts = [
        ((w.top + torch.arange(w.height)) * grid_width).view(-1, 1) + (w.left + torch.arange(w.width))
        for w in windows
    ]
    return torch.cat([p.reshape(-1) for p in parts])


def gather_windows(grid_tokens: torch.Tensor, windows: Sequence[Window]) -> torch.Tensor:
    """(H, W, C) token grid -> (N, C) valid tokens of ``windows``, row-major, one after another."""
    height, width, channels = grid_tokens.shape
    index = window_token_index(windows, width)
    return grid_tokens.reshape(height * width, channels).index_select(0, index)


def scatter_windows(grid_tokens: torch.Tensor, windows: Sequence[Window], tokens: torch.Tensor) -> None:
    """Write (N, C) tokens laid out as :func:`gather_windows` makes them back into the (H, W, C)
    grid, which must be contiguous."""
    height, width, channels = grid_tokens.shape
    index = window_token_index(windows, width)
    grid_tokens.view(height * width, channels).index_copy_(0, index, tokens)


class SplitEncoder:
    """Computes ``sam.image_encoder`` with its windowed segments on executors."""

    def __init__(
        self,
        sam: Sam,
        preset: ModelPreset,
        executors: Mapping[str, SegmentExecutor],
        policy: AssignmentPolicy,
        edge_pool: Executor,
        execution: str = "default",
    ) -> None:
        """``execution``: ``"default"`` runs global blocks whole on the edge; ``"offload"`` runs
        their per-token parts on the executors too (see :mod:`stream.offload`)."""
        if execution not in PLANS:
            raise ValueError(f"unknown plan {execution!r}; choose one of {', '.join(PLANS)}")
        self.execution = execution
        self.sam = sam
        self.preset = preset
        self.plan: ModelPlan = model_plan(preset.depth, preset.global_attn_indexes)
        self.grid = WindowGrid.for_encoder(preset.img_size, preset.patch_size, preset.window_size)
        self.executors = dict(executors)
        self.policy = policy
        self._pool = edge_pool
        if tuple(s.blocks for s in self.plan.segments) != preset.segments():
            raise AssertionError("partitioner plan and worker segments disagree")

    async def _on_edge(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, fn, *args)

    async def encode(
        self, frame_index: int, image: torch.Tensor, *, assignment: Assignment | None = None
    ) -> tuple[torch.Tensor, FrameAudit]:
        """One preprocessed image -> (its embedding, the frame's audit record).

        Args:
            frame_index: the frame's sequence number in this session (tags requests; drives
                the assignment policy).
            image: (1, 3, S, S) float32, as ``Sam.preprocess`` returns it (S = img_size).
            assignment: the frame's assignment when the caller scheduled it already (the
                session's scheduler); default ``policy.assign(frame_index)``.

        Returns:
            (1, out_chans, S/16, S/16) float32, equal to ``sam.image_encoder(image)`` up to float
            rounding, and the :class:`FrameAudit`.
        """
        if assignment is None:
            assignment = self.policy.assign(frame_index)
        check_assignment(assignment, self.grid.num_windows)
        unknown = set(assignment.shares) - set(self.executors)
        if unknown:
            raise WorkerError(f"assignment names executors that are not connected: {sorted(unknown)}")
        audit = FrameAudit(frame=frame_index, assignment=assignment)
        x = await self._on_edge(self._prologue, image)
        if self.execution == "offload":
            from .offload import encode_offload

            x = await encode_offload(self, frame_index, x, assignment, audit)
        for step in self.plan.steps if self.execution == "default" else ():
            if isinstance(step, GlobalStep):
                x = await self._on_edge(self._global_block, step.block, x)
            else:
                x = await self._segment(frame_index, step, x, assignment, audit)
        embedding = await self._on_edge(self._neck, x)
        return embedding, audit

    @torch.inference_mode()
    def _prologue(self, image: torch.Tensor) -> torch.Tensor:
        encoder = self.sam.image_encoder
        x: torch.Tensor = encoder.patch_embed(image)  # (1, H, W, C)
        if encoder.pos_embed is not None:
            x = x + encoder.pos_embed
        return x

    @torch.inference_mode()
    def _global_block(self, index: int, x: torch.Tensor) -> torch.Tensor:
        return kernels.global_block(self.sam.image_encoder.blocks[index], x)

    @torch.inference_mode()
    def _neck(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.sam.image_encoder.neck(x.permute(0, 3, 1, 2))
        return out

    async def _segment(
        self,
        frame_index: int,
        step: SegmentStep,
        x: torch.Tensor,
        assignment: Assignment,
        audit: FrameAudit,
    ) -> torch.Tensor:
        started = time.perf_counter()
        grid_tokens = x[0]  # (H, W, C)
        out = torch.empty_like(grid_tokens)

        async def one(name: str, window_ids: Sequence[int]) -> None:
            windows = [self.grid.window(wid) for wid in window_ids]
            tokens = gather_windows(grid_tokens, windows)
            extents = [(w.height, w.width) for w in windows]
            result = await self.executors[name].run(frame_index, step.index, tokens, extents)
            scatter_windows(out, windows, result)

        shares = {name: ids for name, ids in assignment.shares.items() if ids}
        async with asyncio.TaskGroup() as group:
            for name, ids in shares.items():
                group.create_task(one(name, ids))
        audit.segments.append(
            SegmentAudit(
                segment=step.index,
                shares={name: list(ids) for name, ids in shares.items()},
                seconds=time.perf_counter() - started,
            )
        )
        return out.unsqueeze(0)
