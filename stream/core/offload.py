"""The offload plan on the edge: workers run the per-token parts of the global blocks too.

The plan itself (which request finishes and starts which global block) is
:func:`pedsam.partitioner.offload.offload_stages`. Per frame, for ViT-B::

    edge:     patch_embed + pos_embed                                 (H*W, C) tokens
    workers:  segment 0, then start block 2: qkv = qkv(norm1(x))      (N, C) in; (N, C) + (N, 3C) out
    edge:     mix block 2: attention over all tokens, before proj      (H*W, 3C) -> (H*W, C)
    workers:  finish block 2 (proj, residual, MLP), segment 1, start block 5
                                                                       (N, C) + (N, C) in; (N, C) + (N, 3C) out
    ...
    edge:     mix block 11, finish block 11, neck

Each request carries only the tokens of the executor's own windows, as in the default plan.
Workers keep no state between requests: the block input a worker needs to finish a global block
is sent back to it along with the attention output. Against the default plan the edge computes
only the attention mixing (and one block's per-token parts), and about three times the bytes
cross the wire (ViT-B: 23 instead of 8 (N, C) float32 matrices per frame).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import torch
from pedsam.workers.sam import Sam

from pedsam.partitioner.assignment import Assignment
from pedsam.partitioner.geometry import Window
from pedsam.partitioner.offload import OffloadStage, offload_stages
from pedsam.partitioner.plan import GlobalStep, ModelPlan
from pedsam.stream.core.bounds import BlockBounds
from pedsam.stream.core.executors import SegmentExecutor
from pedsam.stream.core.shares import EdgeThread, FrameAudit, ShareRunner, gather_windows, scatter_windows
from pedsam.stream.core.verify import LIMIT_MARGIN
from pedsam.workers import kernels
from pedsam.workers.device import CPU, Placement

__all__ = ["encode"]


@torch.inference_mode()
def _mix(sam: Sam, placement: Placement, block: int, qkv: torch.Tensor) -> torch.Tensor:
    """(H, W, 3C) qkv of the whole grid -> (H, W, C) float32 attention output of global ``block``."""
    height, width, three_c = qkv.shape
    attn = sam.image_encoder.blocks[block].attn
    with placement.autocast():
        mixed = kernels.mix(attn, qkv.reshape(1, height * width, three_c), (height, width))
    return mixed.view(height, width, three_c // 3).float()


@torch.inference_mode()
def _start(sam: Sam, placement: Placement, block: int, tokens: torch.Tensor) -> torch.Tensor:
    """(H, W, C) -> (H, W, 3C) float32: global ``block``'s qkv, computed on the edge."""
    height, width, channels = tokens.shape
    with placement.autocast():
        qkv = kernels.pre_attention(sam.image_encoder.blocks[block], tokens.reshape(-1, channels))
    return qkv.view(height, width, 3 * channels).float()


@torch.inference_mode()
def _finish(sam: Sam, placement: Placement, block: int, tokens: torch.Tensor, mixed: torch.Tensor) -> torch.Tensor:
    """(H, W, C) block input and attention output -> (H, W, C) output of global ``block``."""
    height, width, channels = tokens.shape
    with placement.autocast():
        out = kernels.post_attention(
            sam.image_encoder.blocks[block], tokens.reshape(-1, channels), mixed.reshape(-1, channels)
        )
    return out.view(height, width, channels)


async def encode(
    sam: Sam,
    plan: ModelPlan,
    shares: ShareRunner,
    edge: EdgeThread,
    frame_index: int,
    x: torch.Tensor,
    assignment: Assignment,
    audit: FrameAudit,
    placement: Placement = CPU,
    bounds: BlockBounds | None = None,
) -> torch.Tensor:
    """Run every block of the encoder on ``x`` under the offload plan.

    Args:
        sam: the model (its global blocks' weights).
        plan: the model plan (which blocks are segments, which global).
        shares: sends each executor its share of a stage.
        edge: the edge's compute thread.
        x: (1, H, W, C) float32 tokens after patch and position embedding.
        assignment: the frame's (checked) assignment; every stage uses it.
        audit: the frame's audit record; one entry per segment is appended.
        placement: where ``sam`` and ``x`` are, and the blocks' precision.
        bounds: with ``--verify``, the blocks' bounds: workers' results beyond them are refused.

    Returns:
        (1, H, W, C) float32 tokens after the last block, before the neck.
    """
    stages = {stage.segment: stage for stage in offload_stages(plan)}
    tokens = x[0]  # (H, W, C)
    qkv: torch.Tensor | None = None  # (H, W, 3C) of the next global block, when workers made it
    mixed: torch.Tensor | None = None  # (H, W, C) attention output of the block to finish
    waiting: int | None = None  # that block
    for step in plan.steps:
        if isinstance(step, GlobalStep):
            if waiting is not None:  # two global blocks in a row: the first finishes here
                tokens = await edge.run(_finish, sam, placement, waiting, tokens, mixed)
            if qkv is None:
                qkv = await edge.run(_start, sam, placement, step.block, tokens)
            mixed = await edge.run(_mix, sam, placement, step.block, qkv)
            waiting, qkv = step.block, None
            continue
        stage = stages[step.index]
        if stage.finish != waiting:
            raise AssertionError(f"offload stage {stage} does not follow block {waiting}")
        limits = _limits(bounds, step.blocks, stage, tokens, mixed)
        tokens, qkv = await _run_stage(shares, frame_index, stage, tokens, mixed, assignment, audit, limits)
        waiting = mixed = None
    if waiting is not None:
        tokens = await edge.run(_finish, sam, placement, waiting, tokens, mixed)
    return tokens.unsqueeze(0)


Result = tuple[torch.Tensor, torch.Tensor | None]


def _limits(
    bounds: BlockBounds | None, blocks: tuple[int, ...], stage: OffloadStage, tokens: torch.Tensor,
    mixed: torch.Tensor | None,
) -> tuple[float, ...]:
    """The largest magnitudes an honest stage's (N, C) tokens and (N, 3C) qkv can have (none
    without ``bounds``): the stage finishes its global block (with the attention output ``mixed``)
    and runs the segment's ``blocks``."""
    if bounds is None:
        return ()
    largest = float(tokens.abs().max())
    if stage.finish is not None and mixed is not None:
        largest = bounds.finished(largest, stage.finish, float(mixed.abs().max()))
    largest = bounds.tokens(largest, blocks) * LIMIT_MARGIN
    if stage.start is None:
        return (largest,)
    return (largest, bounds.qkv[stage.start] * LIMIT_MARGIN)


async def _run_stage(
    shares: ShareRunner,
    frame_index: int,
    stage: OffloadStage,
    tokens: torch.Tensor,
    mixed: torch.Tensor | None,
    assignment: Assignment,
    audit: FrameAudit,
    limits: tuple[float, ...] = (),
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One stage on every executor's share; returns the (H, W, C) tokens and (H, W, 3C) qkv
    (``limits``: the largest magnitudes honest results can have, see :func:`_limits`)."""
    height, width, channels = tokens.shape
    out = torch.empty_like(tokens)
    qkv = torch.empty(height, width, 3 * channels, device=tokens.device) if stage.start is not None else None

    def prepare(windows: list[Window]) -> Callable[[SegmentExecutor], Awaitable[Result]]:
        share = gather_windows(tokens, windows)
        share_mixed = gather_windows(mixed, windows) if mixed is not None else None
        extents = [(w.height, w.width) for w in windows]
        return lambda executor: executor.run_stage(frame_index, stage, share, share_mixed, extents)

    def store(windows: list[Window], result: Result) -> None:
        result_tokens, result_qkv = result
        scatter_windows(out, windows, result_tokens)
        if qkv is not None and result_qkv is not None:
            scatter_windows(qkv, windows, result_qkv)

    await shares.each_share(stage.segment, assignment, audit, prepare, store, limits)
    return out, qkv
