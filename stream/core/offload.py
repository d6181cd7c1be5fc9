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

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from pedsam.partitioner.assignment import Assignment
from pedsam.partitioner.offload import OffloadStage, offload_stages
from pedsam.partitioner.plan import GlobalStep
from pedsam.workers import kernels

if TYPE_CHECKING:
    from pedsam.stream.core.encoder import FrameAudit, SplitEncoder
    from pedsam.stream.core.executors import SegmentExecutor


@torch.inference_mode()
def _mix(encoder: SplitEncoder, block: int, qkv: torch.Tensor) -> torch.Tensor:
    """(H, W, 3C) qkv of the whole grid -> (H, W, C) attention output of global ``block``."""
    height, width, three_c = qkv.shape
    attn = encoder.sam.image_encoder.blocks[block].attn
    mixed = kernels.mix(attn, qkv.reshape(1, height * width, three_c), (height, width))
    return mixed.view(height, width, three_c // 3)


@torch.inference_mode()
def _start(encoder: SplitEncoder, block: int, tokens: torch.Tensor) -> torch.Tensor:
    """(H, W, C) -> (H, W, 3C): global ``block``'s qkv, computed on the edge."""
    height, width, channels = tokens.shape
    qkv = kernels.pre_attention(encoder.sam.image_encoder.blocks[block], tokens.reshape(-1, channels))
    return qkv.view(height, width, 3 * channels)


@torch.inference_mode()
def _finish(encoder: SplitEncoder, block: int, tokens: torch.Tensor, mixed: torch.Tensor) -> torch.Tensor:
    """(H, W, C) block input and attention output -> (H, W, C) output of global ``block``."""
    height, width, channels = tokens.shape
    out = kernels.post_attention(
        encoder.sam.image_encoder.blocks[block], tokens.reshape(-1, channels), mixed.reshape(-1, channels)
    )
    return out.view(height, width, channels)


async def encode_offload(
    encoder: SplitEncoder,
    frame_index: int,
    x: torch.Tensor,
    assignment: Assignment,
    audit: FrameAudit,
) -> torch.Tensor:
    """Run every block of the encoder on ``x`` under the offload plan.

    Args:
        encoder: the split encoder (its model, grid, executors and edge thread).
        x: (1, H, W, C) float32 tokens after patch and position embedding.
        assignment: the frame's (checked) assignment; every stage uses it.
        audit: the frame's audit record; one entry per segment is appended.

    Returns:
        (1, H, W, C) float32 tokens after the last block, before the neck.
    """
    stages = {stage.segment: stage for stage in offload_stages(encoder.plan)}
    tokens = x[0]  # (H, W, C)
    qkv: torch.Tensor | None = None  # (H, W, 3C) of the next global block, when workers made it
    mixed: torch.Tensor | None = None  # (H, W, C) attention output of the block to finish
    waiting: int | None = None  # that block
    for step in encoder.plan.steps:
        if isinstance(step, GlobalStep):
            if waiting is not None:  # two global blocks in a row: the first finishes here
                tokens = await encoder._on_edge(_finish, encoder, waiting, tokens, mixed)
            if qkv is None:
                qkv = await encoder._on_edge(_start, encoder, step.block, tokens)
            mixed = await encoder._on_edge(_mix, encoder, step.block, qkv)
            waiting, qkv = step.block, None
            continue
        stage = stages[step.index]
        if stage.finish != waiting:
            raise AssertionError(f"offload stage {stage} does not follow block {waiting}")
        tokens, qkv = await _run_stage(encoder, frame_index, stage, tokens, mixed, assignment, audit)
        waiting = mixed = None
    if waiting is not None:
        tokens = await encoder._on_edge(_finish, encoder, waiting, tokens, mixed)
    return tokens.unsqueeze(0)


async def _run_stage(
    encoder: SplitEncoder,
    frame_index: int,
    stage: OffloadStage,
    tokens: torch.Tensor,
    mixed: torch.Tensor | None,
    assignment: Assignment,
    audit: FrameAudit,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One stage on every executor's share; returns the (H, W, C) tokens and (H, W, 3C) qkv."""
    from pedsam.stream.core.encoder import SegmentAudit, computed_shares, gather_windows, run_all, scatter_windows

    started = time.perf_counter()
    height, width, channels = tokens.shape
    out = torch.empty_like(tokens)
    qkv = torch.empty(height, width, 3 * channels) if stage.start is not None else None

    failover: dict[str, dict[str, Any]] = {}

    async def one(name: str, window_ids: Sequence[int]) -> None:
        windows = [encoder.grid.window(wid) for wid in window_ids]
        share = gather_windows(tokens, windows)
        share_mixed = gather_windows(mixed, windows) if mixed is not None else None
        extents = [(w.height, w.width) for w in windows]

        async def call(executor: SegmentExecutor) -> tuple[torch.Tensor, torch.Tensor | None]:
            return await executor.run_stage(frame_index, stage, share, share_mixed, extents)

        result, result_qkv = await encoder.run_share(name, window_ids, call, failover)
        scatter_windows(out, windows, result)
        if qkv is not None and result_qkv is not None:
            scatter_windows(qkv, windows, result_qkv)

    shares = {name: ids for name, ids in assignment.shares.items() if ids}
    await run_all(one(name, ids) for name, ids in shares.items())
    audit.segments.append(
        SegmentAudit(
            segment=stage.segment,
            shares=computed_shares(shares, failover),
            seconds=time.perf_counter() - started,
            failover=failover,
        )
    )
    return out, qkv
