"""The split image encoder: SAM's ViT with its windowed segments computed elsewhere.

Per frame, under the default plan::

    edge:     patch_embed + pos_embed                          (1, H, W, C) tokens
    for each step of the model plan:
      segment: cut the grid into windows, send each executor its share of windows
               (valid tokens only), gather the results, write them back into the grid;
               a segment past ``remote_segments`` is computed whole on the edge
      global:  one global-attention block on the edge
    edge:     neck                                             (1, out_chans, H, W)

Torch work on the edge runs on one dedicated thread (:class:`EdgeThread`), on the edge's device
(its :class:`~pedsam.workers.device.Placement`): the token grid stays there from the prologue to
the neck; shares leave it only to be encoded for the wire. Sending shares out
and failing over is :class:`~pedsam.stream.core.shares.ShareRunner`'s; the offload plan's loop
is :mod:`pedsam.stream.core.offload`.

Windows of pure padding (the square input's zero rows or columns below or beside a frame that is
not square) never leave the edge. Their tokens before the first segment are the patch embedding's
bias plus the position embedding on every frame, and a windowed block looks at nothing outside
its window, so their first segment's result is the same on every frame: the default plan
computes it once per window and reuses it. Later segments follow global blocks, which mix every
token of the frame in, so those are computed each frame.

Watched workers (``--verify``, :mod:`pedsam.stream.core.verify`): each share's result is checked
as it arrives, against the most its blocks can produce (:mod:`pedsam.stream.core.bounds`) and, for
a secret sample of its windows, against the edge's own computation. A worker caught is replaced
by the edge for the rest of that segment; and since unchecked windows it computed earlier (in this
frame, or in a frame still under way) may be tampered too, and a global block has since mixed
them into every token, a frame that used any of its windows without checking all of them is
computed again without it before it is returned (its audit then has a second ``attempt``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import Executor

import torch
from pedsam.workers.sam import Sam

from pedsam.partitioner.assignment import EDGE, Assignment, check_assignment
from pedsam.partitioner.geometry import Window, WindowGrid
from pedsam.partitioner.offload import PLANS
from pedsam.partitioner.plan import GlobalStep, ModelPlan, SegmentStep, model_plan
from pedsam.stream.core import offload
from pedsam.stream.core.bounds import BlockBounds
from pedsam.stream.core.executors import SegmentExecutor
from pedsam.stream.core.shares import (
    EdgeThread, FrameAudit, SegmentAudit, ShareRunner, gather_windows, scatter_windows, secret_order,
)
from pedsam.stream.core.verify import LIMIT_MARGIN, Watch
from pedsam.stream.errors import WorkerError
from pedsam.stream.fleet.health import NeverDown, WorkerHealth
from pedsam.workers import kernels
from pedsam.workers.device import CPU, Placement
from pedsam.workers.presets import ModelPreset

__all__ = ["FrameAudit", "SegmentAudit", "SplitEncoder"]

log = logging.getLogger(__name__)


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
        remote_segments: int | None = None,
        placement: Placement = CPU,
        watch: Watch | None = None,
        bounds: BlockBounds | None = None,
        order: Callable[[Sequence[int]], list[int]] = secret_order,
    ) -> None:
        """``execution``: ``"default"`` runs global blocks whole on the edge; ``"offload"`` runs
        their per-token parts on the executors too (see :mod:`pedsam.stream.core.offload`).
        ``remote_segments``: only segments ``0..N-1`` go to the executors of the assignment, the
        edge computes the rest (None: all); in the offload plan a segment's stage goes with it
        (the per-token parts of the global blocks beside it). ``placement``: where ``sam`` is
        (the caller moved it) and the blocks' precision. ``watch``: check workers' results
        (``--verify``; see the module docstring), against ``bounds`` (``sam``'s, computed here
        when not given). ``order``: the order a share's windows go out in (see
        :class:`~pedsam.stream.core.shares.ShareRunner`; secret unless a measurement says otherwise).

        Raises:
            PartitionError: ``remote_segments`` outside ``1..`` the model's segment count.
        """
        if execution not in PLANS:
            raise ValueError(f"unknown plan {execution!r}; choose one of {', '.join(PLANS)}")
        self.execution = execution
        self.placement = placement
        self.sam = sam
        self.preset = preset
        self.plan: ModelPlan = model_plan(preset.depth, preset.global_attn_indexes)
        self.grid = WindowGrid.for_encoder(preset.img_size, preset.patch_size, preset.window_size)
        self.edge = EdgeThread(edge_pool)
        self.remote_segments = len(self.plan.remote_segments(remote_segments))
        remote = None if remote_segments is None else range(self.remote_segments)
        self.shares = ShareRunner(self.grid, executors, health or NeverDown(), on_failure, remote, watch, order)
        self.bounds = (bounds or BlockBounds(sam)) if watch is not None else None
        if tuple(s.blocks for s in self.plan.segments) != preset.segments():
            raise AssertionError("partitioner plan and worker segments disagree")
        self._padding: dict[int, torch.Tensor] = {}  # window id -> its first segment's result, pure padding

    @property
    def executors(self) -> dict[str, SegmentExecutor]:
        return self.shares.executors

    async def encode(
        self, frame_index: int, image: torch.Tensor, assignment: Assignment
    ) -> tuple[torch.Tensor, FrameAudit]:
        """One preprocessed image -> (its embedding, the frame's audit record).

        Args:
            frame_index: the frame's sequence number in this session (tags requests).
            image: (1, 3, S, S) float32, as ``Sam.preprocess`` returns it (S = img_size); on
                any device (it is moved to the edge's).
            assignment: which executor computes which windows of this frame (the session's
                scheduler decides it, within its caps; every window exactly once).

        Returns:
            (1, out_chans, S/16, S/16) float32, equal to ``sam.image_encoder(image)`` up to float
            rounding, on the edge's device, and the :class:`FrameAudit`.
        """
        # Coverage only: the per-frame cap counts picture, which the scheduler checked.
        check_assignment(assignment, self.grid.num_windows, cap=1.0)
        unknown = set(assignment.shares) - set(self.executors)
        if unknown:
            raise WorkerError(f"assignment names executors that are not connected: {sorted(unknown)}")
        audit = FrameAudit(frame=frame_index, assignment=assignment)
        prologue = await self.edge.run(self._prologue, image)
        padding = self._pure_padding(image, assignment) if self.execution != "offload" else ()
        while True:
            x = await self._blocks(frame_index, prologue, assignment, audit, padding)
            tainted = self._tainted(audit)
            if not tainted:
                break
            audit.attempt += 1
            log.warning("frame %d: computing it again without %s, caught tampering while the frame was under way",
                        frame_index, ", ".join(sorted(tainted)))
        embedding = await self.edge.run(self._neck, x)
        return embedding, audit

    async def _blocks(
        self, frame_index: int, x: torch.Tensor, assignment: Assignment, audit: FrameAudit, padding: tuple[int, ...]
    ) -> torch.Tensor:
        """Every block of the encoder on the prologue's (1, H, W, C) tokens, under the plan."""
        if self.execution == "offload":
            return await offload.encode(self.sam, self.plan, self.shares, self.edge, frame_index, x, assignment,
                                        audit, self.placement, self.bounds)
        for step in self.plan.steps:
            if isinstance(step, GlobalStep):
                x = await self.edge.run(self._global_block, step.block, x)
            else:
                x = await self._segment(frame_index, step, x, assignment, audit, padding if step.index == 0 else ())
        return x

    def _tainted(self, audit: FrameAudit) -> set[str]:
        """Workers caught by now whose results this attempt at the frame used without checking
        every window of them (with ``--verify 1`` every window was checked: none)."""
        watch = self.shares.watch
        if watch is None or watch.fraction >= 1.0 or not watch.caught:
            return set()
        used = {name for s in audit.segments if s.attempt == audit.attempt for name, ids in s.shares.items() if ids}
        return used & set(watch.caught)

    @torch.inference_mode()
    def _prologue(self, image: torch.Tensor) -> torch.Tensor:
        encoder = self.sam.image_encoder
        x: torch.Tensor = encoder.patch_embed(image.to(self.placement.device))  # (1, H, W, C)
        if encoder.pos_embed is not None:
            x = x + encoder.pos_embed
        return x

    @torch.inference_mode()
    def _global_block(self, index: int, x: torch.Tensor) -> torch.Tensor:
        with self.placement.autocast():
            return kernels.global_block(self.sam.image_encoder.blocks[index], x)

    @torch.inference_mode()
    def _neck(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.sam.image_encoder.neck(x.permute(0, 3, 1, 2))
        return out

    def _pure_padding(self, image: torch.Tensor, assignment: Assignment) -> tuple[int, ...]:
        """The edge's windows whose pixels are all SAM's zero padding in ``image`` (1, 3, S, S).

        Normalised pixels of a real frame are never exactly 0 (SAM's channel means are not whole
        numbers), so an all-zero window holds no picture."""
        patch = self.preset.patch_size
        found = []
        for wid in assignment.shares.get(EDGE, ()):
            w = self.grid.window(wid)
            region = image[0, :, w.top * patch : (w.top + w.height) * patch, w.left * patch : (w.left + w.width) * patch]
            if not torch.any(region):
                found.append(wid)
        return tuple(found)

    async def _segment(
        self, frame_index: int, step: SegmentStep, x: torch.Tensor, assignment: Assignment, audit: FrameAudit,
        padding: tuple[int, ...] = (),
    ) -> torch.Tensor:
        """One windowed segment on every share: (1, H, W, C) -> (1, H, W, C).

        ``padding``: windows of the edge's share that are pure padding (first segment only):
        their result is reused from an earlier frame when there is one."""
        grid_tokens = x[0]  # (H, W, C)
        out = torch.empty_like(grid_tokens)
        reused = [wid for wid in padding if wid in self._padding]
        for wid in reused:
            scatter_windows(out, [self.grid.window(wid)], self._padding[wid])
        if reused:
            kept = {name: tuple(w for w in ids if w not in reused) for name, ids in assignment.shares.items()}
            assignment = Assignment(frame_index=assignment.frame_index, shares=kept)

        def prepare(windows: list[Window]) -> Callable[[SegmentExecutor], Awaitable[torch.Tensor]]:
            tokens = gather_windows(grid_tokens, windows)
            extents = [(w.height, w.width) for w in windows]
            return lambda executor: executor.run(frame_index, step.index, tokens, extents)

        def store(windows: list[Window], result: torch.Tensor) -> None:
            scatter_windows(out, windows, result)

        limits: tuple[float, ...] = ()
        if self.bounds is not None:  # the largest magnitude honest results can have
            limits = (self.bounds.tokens(float(grid_tokens.abs().max()), step.blocks) * LIMIT_MARGIN,)
        await self.shares.each_share(step.index, assignment, audit, prepare, store, limits)
        for wid in padding:
            if wid not in self._padding:
                self._padding[wid] = gather_windows(out, [self.grid.window(wid)]).clone()
        if reused:  # computed on the edge, once: the audit says so, every window once
            computed = audit.segments[-1].shares
            computed[EDGE] = sorted([*computed.get(EDGE, []), *reused])
        return out.unsqueeze(0)
