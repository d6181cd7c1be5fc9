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

Failover: when a worker's request fails (broken stream, refusal, missed deadline) the worker is
reported down (:class:`WorkerHealth`) and, unless the settings say stop, its windows of this
segment are computed on the edge, as are its windows of every later segment while it stays down.
The edge is trusted, so this never widens what any server sees; the result stays exact (the
same segment runner). The audit records each case under ``failover``.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from segment_anything.modeling import Sam

from pedsam.partitioner.assignment import EDGE, Assignment, check_assignment
from pedsam.partitioner.geometry import Window, WindowGrid
from pedsam.partitioner.offload import PLANS
from pedsam.partitioner.plan import GlobalStep, ModelPlan, SegmentStep, model_plan
from pedsam.stream.core.executors import SegmentExecutor
from pedsam.stream.errors import WorkerError
from pedsam.stream.fleet.health import NeverDown, WorkerHealth
from pedsam.workers import kernels
from pedsam.workers.models import ModelPreset

T = TypeVar("T")


@dataclass
class SegmentAudit:
    """One segment of one frame: ``shares`` is who computed which windows (each window once);
    ``failover`` names workers whose windows the edge computed instead, with ``sent`` telling
    whether the worker had received them before it failed, and why."""

    segment: int
    shares: dict[str, list[int]]
    seconds: float
    failover: dict[str, dict[str, Any]] = field(default_factory=dict)


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
                {"segment": s.segment, "shares": s.shares, "seconds": round(s.seconds, 4),
                 **({"failover": s.failover} if s.failover else {})}
                for s in self.segments
            ],
        }


def window_token_index(windows: Sequence[Window], grid_width: int) -> torch.Tensor:
    """(N,) int64: for the valid tokens of ``windows`` (row-major, one window after another),
    their row-major positions in an (H, ``grid_width``) token grid. Read only: it is shared."""
    return _token_index(tuple(windows), grid_width)


@functools.lru_cache(maxsize=512)
def _token_index(windows: tuple[Window, ...], grid_width: int) -> torch.Tensor:
    # Cached: a frame cuts the same shares in every segment, and shares recur across frames.
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
        edge_pool: Executor,
        execution: str = "default",
        *,
        health: WorkerHealth | None = None,
        on_failure: str = "edge",
    ) -> None:
        """``execution``: ``"default"`` runs global blocks whole on the edge; ``"offload"`` runs
        their per-token parts on the executors too (see :mod:`pedsam.stream.core.offload`)."""
        if execution not in PLANS:
            raise ValueError(f"unknown plan {execution!r}; choose one of {', '.join(PLANS)}")
        self.execution = execution
        self.sam = sam
        self.preset = preset
        self.plan: ModelPlan = model_plan(preset.depth, preset.global_attn_indexes)
        self.grid = WindowGrid.for_encoder(preset.img_size, preset.patch_size, preset.window_size)
        self.executors = dict(executors)
        self._pool = edge_pool
        self.health: WorkerHealth = health or NeverDown()
        self.on_failure = on_failure  # "stop": a failed worker fails the frame
        if tuple(s.blocks for s in self.plan.segments) != preset.segments():
            raise AssertionError("partitioner plan and worker segments disagree")

    async def _on_edge(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, fn, *args)

    async def encode(
        self, frame_index: int, image: torch.Tensor, assignment: Assignment
    ) -> tuple[torch.Tensor, FrameAudit]:
        """One preprocessed image -> (its embedding, the frame's audit record).

        Args:
            frame_index: the frame's sequence number in this session (tags requests).
            image: (1, 3, S, S) float32, as ``Sam.preprocess`` returns it (S = img_size).
            assignment: which executor computes which windows of this frame (the session's
                scheduler decides it; every window exactly once).

        Returns:
            (1, out_chans, S/16, S/16) float32, equal to ``sam.image_encoder(image)`` up to float
            rounding, and the :class:`FrameAudit`.
        """
        check_assignment(assignment, self.grid.num_windows)
        unknown = set(assignment.shares) - set(self.executors)
        if unknown:
            raise WorkerError(f"assignment names executors that are not connected: {sorted(unknown)}")
        audit = FrameAudit(frame=frame_index, assignment=assignment)
        x = await self._on_edge(self._prologue, image)
        if self.execution == "offload":
            from pedsam.stream.core.offload import encode_offload

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

        failover: dict[str, dict[str, Any]] = {}

        async def one(name: str, window_ids: Sequence[int]) -> None:
            windows = [self.grid.window(wid) for wid in window_ids]
            tokens = gather_windows(grid_tokens, windows)
            extents = [(w.height, w.width) for w in windows]

            async def call(executor: SegmentExecutor) -> torch.Tensor:
                return await executor.run(frame_index, step.index, tokens, extents)

            result = await self.run_share(name, window_ids, call, failover)
            scatter_windows(out, windows, result)

        shares = {name: ids for name, ids in assignment.shares.items() if ids}
        await run_all(one(name, ids) for name, ids in shares.items())
        audit.segments.append(
            SegmentAudit(
                segment=step.index,
                shares=computed_shares(shares, failover),
                seconds=time.perf_counter() - started,
                failover=failover,
            )
        )
        return out.unsqueeze(0)

    async def run_share(
        self,
        name: str,
        window_ids: Sequence[int],
        call: Callable[[SegmentExecutor], Awaitable[T]],
        failover: dict[str, dict[str, Any]],
    ) -> T:
        """``call`` on executor ``name``, or on the edge if ``name`` is a worker that is down or
        fails now (then recorded in ``failover``); a failure is re-raised when settings say stop."""
        edge = self.executors[EDGE]
        if name != EDGE and self.health.is_down(name):
            if self.on_failure == "stop":
                raise WorkerError(f"worker {name} is down and the settings say stop (--on-failure stop)")
            failover[name] = {"edge": list(window_ids), "sent": False, "reason": "down"}
            return await call(edge)
        try:
            return await call(self.executors[name])
        except WorkerError as exc:
            if name == EDGE:
                raise
            self.health.mark_down(name, str(exc))
            if self.on_failure == "stop":
                raise
            failover[name] = {"edge": list(window_ids), "sent": True, "reason": str(exc)}
            return await call(edge)


async def run_all(coroutines: Iterable[Coroutine[Any, Any, None]]) -> None:
    """Run the shares of a segment concurrently; if any fails, cancel the rest and raise the
    first failure itself (a :class:`WorkerError` the caller can catch), not an exception group."""
    try:
        async with asyncio.TaskGroup() as group:
            for coroutine in coroutines:
                group.create_task(coroutine)
    except BaseExceptionGroup as failures:
        first = failures.exceptions[0]
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None


def computed_shares(shares: Mapping[str, Sequence[int]], failover: Mapping[str, Any]) -> dict[str, list[int]]:
    """Who computed which windows: ``shares`` with failed-over workers' windows under the edge."""
    computed: dict[str, list[int]] = {}
    for name, ids in shares.items():
        target = EDGE if name in failover else name
        computed.setdefault(target, []).extend(ids)
    return {name: sorted(ids) for name, ids in computed.items()}
