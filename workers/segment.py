"""Running one segment of SAM's windowed blocks on a batch of windows.

This is the whole of a worker's computation, and also what the edge runs when it computes
windows itself. A window arrives as its valid tokens only; the blocks' per-token parts run on
those tokens alone, and the attention mixing rebuilds SAM's padding the way SAM's
``Block.forward`` builds it: zeros inserted *after* ``norm1``, attended to by the real tokens,
never masked out of attention (see :mod:`pedsam.workers.kernels`). Padding before the block would not
be the same.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pedsam.workers.sam import Sam
from pedsam.workers.sam import Block

from pedsam.workers.kernels import Extent, WindowBatch, post_attention, pre_attention, windowed_block
from pedsam.workers.models import ModelPreset

__all__ = ["Extent", "SegmentRunner"]


class SegmentRunner:
    """Holds the windowed blocks of one model and runs a named segment on windows.

    It also holds the global blocks, whose per-token parts (before and after their attention
    mixing) it runs for the offload plan (see :mod:`pedsam.partitioner.offload`).
    """

    def __init__(self, sam: Sam, preset: ModelPreset) -> None:
        self.preset = preset
        self.window_size = preset.window_size
        self.embed_dim = preset.embed_dim
        blocks = sam.image_encoder.blocks
        self.segments: tuple[tuple[Block, ...], ...] = tuple(
            tuple(blocks[i] for i in run) for run in preset.segments()
        )
        self.global_blocks: dict[int, Block] = {i: blocks[i] for i in preset.global_attn_indexes}

    @property
    def num_segments(self) -> int:
        return len(self.segments)

    @torch.inference_mode()
    def run(self, segment: int, tokens: torch.Tensor, extents: Sequence[Extent]) -> torch.Tensor:
        """Run ``segment`` on windows given as their valid tokens.

        Args:
            segment: segment index, ``0 <= segment < num_segments``.
            tokens: (N, C) float32, the valid tokens of each window in row-major order,
                windows one after another; ``N == sum(h * w for h, w in extents)``. Read
                only: it may be a view of a received message.
            extents: per window, its valid (height, width) in tokens.

        Returns:
            (N, C) float32 in the same layout, after the segment's blocks.
        """
        batch = WindowBatch.of(extents, self.window_size)
        for block in self.segments[segment]:
            tokens = windowed_block(block, tokens, batch)
        return tokens

    @torch.inference_mode()
    def run_stage(
        self,
        segment: int | None,
        tokens: torch.Tensor,
        extents: Sequence[Extent],
        *,
        finish: int | None = None,
        mixed: torch.Tensor | None = None,
        start: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One offload-plan request: finish a global block, run a segment, start a global block.

        Args:
            segment: segment index, or None to run no windowed blocks.
            tokens: (N, C) float32 valid tokens as for :meth:`run`; with ``finish``, the
                input (residual) of global block ``finish`` at these tokens. Read only.
            extents: per window, its valid (height, width) in tokens.
            finish: a global block number whose post part runs first, or None.
            mixed: (N, C) float32, with ``finish``: that block's attention output at these
                tokens (heads merged, before its output projection).
            start: a global block number whose pre part runs last, or None.

        Returns:
            (N, C) float32 tokens after all of it, and with ``start`` the (N, 3C) float32
            ``qkv(norm1(x))`` of those tokens (else None).
        """
        if finish is not None:
            if mixed is None:
                raise ValueError("finishing a global block needs its attention output")
            tokens = post_attention(self.global_blocks[finish], tokens, mixed)
        if segment is not None:
            tokens = self.run(segment, tokens, extents)
        qkv = pre_attention(self.global_blocks[start], tokens) if start is not None else None
        return tokens, qkv
