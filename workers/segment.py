"""Running one segment of SAM's windowed blocks on a batch of windows.

This is the whole of a worker's computation, and also what the edge runs when it computes
windows itself. A window arrives as its valid tokens only; the blocks' per-token parts run on
those tokens alone, and the attention mixing rebuilds SAM's padding the way SAM's
``Block.forward`` builds it: zeros inserted *after* ``norm1``, attended to by the real tokens,
never masked out of attention (see :mod:`pedsam.workers.kernels`). Padding before the block would not
be the same.

The runner computes on its :class:`~pedsam.workers.device.Placement`'s device, in its precision:
tokens given on the host are moved there once per call (:class:`~pedsam.workers.device.Uploader`),
tokens already there are used as they are, and results stay there.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pedsam.workers.sam import Sam
from pedsam.workers.sam import Block

from pedsam.workers.device import CPU, Placement, Uploader
from pedsam.workers.kernels import (
    MASK_BUDGET_BYTES,
    Extent,
    WindowBatch,
    post_attention,
    pre_attention,
    windowed_block,
)
from pedsam.workers.models import ModelPreset

__all__ = ["Extent", "SegmentRunner"]


class SegmentRunner:
    """Holds the windowed blocks of one model and runs a named segment on windows.

    It also holds the global blocks, whose per-token parts (before and after their attention
    mixing) it runs for the offload plan (see :mod:`pedsam.partitioner.offload`).
    """

    def __init__(self, sam: Sam, preset: ModelPreset, placement: Placement = CPU) -> None:
        """Holds ``sam``'s encoder blocks and moves them to ``placement.device`` (a model shared
        with others, as on the edge, should be there already: moving it moves it for them too)."""
        self.preset = preset
        self.placement = placement
        self.window_size = preset.window_size
        self.embed_dim = preset.embed_dim
        blocks = sam.image_encoder.blocks
        for index in (*preset.windowed_blocks, *preset.global_attn_indexes):
            blocks[index].to(placement.device)
        self.segments: tuple[tuple[Block, ...], ...] = tuple(
            tuple(blocks[i] for i in run) for run in preset.segments()
        )
        self.global_blocks: dict[int, Block] = {i: blocks[i] for i in preset.global_attn_indexes}
        self.upload = Uploader(placement.device)

    def request_bytes(self, windows: int, *, stage: bool = False) -> int:
        """An upper estimate of the device memory one request of ``windows`` windows holds while it
        computes, bytes: per padded token 16 float32 values per channel (input, qkv and its padded
        copy, attention output, MLP hidden, output), the relative-position tables, the attention
        mask chunk and as much again for the attention's own scratch; with ``stage`` (the offload
        plan) the attention input and the qkv result too. Weights are not counted."""
        length = self.window_size**2
        tokens = windows * length
        channels = self.embed_dim
        heads = self.preset.num_heads
        values = 16 + (4 if stage else 0)
        rel = 4 * windows * heads * length * 2 * self.window_size
        mask = min(MASK_BUDGET_BYTES, 4 * windows * heads * length * length)
        return 4 * tokens * channels * values + rel + 2 * mask

    def windows_that_fit(self, budget_bytes: int, *, stage: bool = True) -> int:
        """The most windows one request may hold within ``budget_bytes`` (:meth:`request_bytes`)."""
        low, high = 0, 1
        while self.request_bytes(high, stage=stage) <= budget_bytes and high < 1 << 20:
            low, high = high, high * 2
        while high - low > 1:
            middle = (low + high) // 2
            if self.request_bytes(middle, stage=stage) <= budget_bytes:
                low = middle
            else:
                high = middle
        return low

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
                only: it may be a view of a received message. On the host or on this
                runner's device.
            extents: per window, its valid (height, width) in tokens.

        Returns:
            (N, C) float32 in the same layout, after the segment's blocks, on this runner's device.
        """
        tokens = self.upload(tokens)
        batch = WindowBatch.of(extents, self.window_size, tokens.device)
        with self.placement.autocast():
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
            ``qkv(norm1(x))`` of those tokens (else None); on this runner's device.
        """
        tokens = self.upload(tokens)
        if finish is not None:
            if mixed is None:
                raise ValueError("finishing a global block needs its attention output")
            with self.placement.autocast():
                tokens = post_attention(self.global_blocks[finish], tokens, self.upload(mixed))
        if segment is not None:
            tokens = self.run(segment, tokens, extents)
        qkv = None
        if start is not None:
            with self.placement.autocast():
                qkv = pre_attention(self.global_blocks[start], tokens).float()
        return tokens, qkv
