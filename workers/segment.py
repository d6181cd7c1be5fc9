"""Running one segment of SAM's windowed blocks on a batch of windows.

This is the whole of a worker's computation, and also what the edge runs when it computes
windows itself. A window arrives as its valid tokens only; padding is rebuilt here the way
SAM's ``Block.forward`` builds it: zeros inserted *after* ``norm1``, attended to by the real
tokens, and never masked out of attention. Padding before the block would not be the same.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from segment_anything.modeling import Sam
from segment_anything.modeling.image_encoder import Block

from .models import ModelPreset

Extent = tuple[int, int]  # (valid height, valid width) of a window, in tokens


class SegmentRunner:
    """Holds the windowed blocks of one model and runs a named segment on windows."""

    def __init__(self, sam: Sam, preset: ModelPreset) -> None:
        self.preset = preset
        self.window_size = preset.window_size
        self.embed_dim = preset.embed_dim
        blocks = sam.image_encoder.blocks
        self.segments: tuple[tuple[Block, ...], ...] = tuple(
            tuple(blocks[i] for i in run) for run in preset.segments()
        )

    @property
    def num_segments(self) -> int:
        return len(self.segments)

    @torch.inference_mode()
    def run(self, segment: int, tokens: torch.Tensor, extents: Sequence[Extent]) -> torch.Tensor:
        """Run ``segment`` on windows given as their valid tokens.

        Args:
            segment: segment index, ``0 <= segment < num_segments``.
            tokens: (N, C) float32, the valid tokens of each window in row-major order,
                windows one after another; ``N == sum(h * w for h, w in extents)``.
            extents: per window, its valid (height, width) in tokens.

        Returns:
            (N, C) float32 in the same layout, after the segment's blocks.
        """
        windows, valid = pad_windows(tokens, extents, self.window_size)
        for block in self.segments[segment]:
            windows = run_windowed_block(block, windows, valid)
        return unpad_windows(windows, extents)


def run_windowed_block(
    block: Block, x: torch.Tensor, valid: torch.Tensor | None
) -> torch.Tensor:
    """One windowed SAM block on a batch of whole windows.

    Args:
        x: (B, ws, ws, C) windows.
        valid: (B, ws, ws, 1) bool, False at padding tokens, or None when nothing is padding.
    """
    shortcut = x
    y = block.norm1(x)
    if valid is not None:
        y = y.masked_fill(~valid, 0.0)  # SAM pads the normalised tokens with zeros
    y = block.attn(y)
    x = shortcut + y
    out: torch.Tensor = x + block.mlp(block.norm2(x))
    return out


def pad_windows(
    tokens: torch.Tensor, extents: Sequence[Extent], window_size: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(N, C) valid tokens -> ((B, ws, ws, C) zero-padded windows, (B, ws, ws, 1) validity mask).

    The mask is None when every window is whole.
    """
    ws = window_size
    channels = tokens.shape[1]
    if all(h == ws and w == ws for h, w in extents):
        return tokens.reshape(len(extents), ws, ws, channels), None
    windows = tokens.new_zeros((len(extents), ws, ws, channels))
    valid = torch.zeros((len(extents), ws, ws, 1), dtype=torch.bool)
    offset = 0
    for i, (h, w) in enumerate(extents):
        windows[i, :h, :w] = tokens[offset : offset + h * w].view(h, w, channels)
        valid[i, :h, :w] = True
        offset += h * w
    return windows, valid


def unpad_windows(windows: torch.Tensor, extents: Sequence[Extent]) -> torch.Tensor:
    """(B, ws, ws, C) windows -> (N, C) valid tokens in the layout :func:`pad_windows` takes."""
    ws, channels = windows.shape[1], windows.shape[3]
    if all(h == ws and w == ws for h, w in extents):
        return windows.reshape(-1, channels)
    return torch.cat([windows[i, :h, :w].reshape(h * w, channels) for i, (h, w) in enumerate(extents)])
