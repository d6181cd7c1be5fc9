"""pedsam.stream.core.bounds: no input drives a block past its proved bound, and honest values sit well inside it."""

from __future__ import annotations

import pytest
import torch

from pedsam.stream.core.bounds import BlockBounds
from pedsam.workers.models import ModelSource
from pedsam.workers.sam import Block
from tests.support import TINY


def largest_change(block: Block, tokens: torch.Tensor) -> tuple[float, float]:
    """(largest |block(x) - x|, largest |qkv(norm1 x)|) over a (1, H, W, C) batch."""
    with torch.inference_mode():
        out = block(tokens)
        qkv = block.attn.qkv(block.norm1(tokens))
    return float((out - tokens).abs().max()), float(qkv.abs().max())


def test_no_input_takes_a_block_past_its_bound() -> None:
    """Random tokens of every scale, tokens with one huge channel, and inputs pushed by gradient
    ascent to make a block change them as much as it can: each stays within the bound."""
    sam = ModelSource(preset="tiny", seed=3).build()
    bounds = BlockBounds(sam)
    generator = torch.Generator().manual_seed(0)
    for index in (0, 2):  # a windowed block and a global one
        block = sam.image_encoder.blocks[index]
        channels = block.norm1.weight.numel()
        for scale in (1e-3, 1.0, 1e3, 1e6):
            tokens = torch.randn(1, 14, 14, channels, generator=generator) * scale
            tokens[0, 3, 4, 5] = 1e4 * scale
            change, qkv = largest_change(block, tokens)
            assert change <= bounds.change[index] and qkv <= bounds.qkv[index]
        attack = torch.randn(1, 14, 14, channels, generator=generator, requires_grad=True)
        optimiser = torch.optim.Adam([attack], lr=0.1)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # small backward passes: two threads spin against each other on a busy machine
        try:
            for _ in range(100):
                optimiser.zero_grad()
                loss = -(block(attack) - attack).abs().max() - block.attn.qkv(block.norm1(attack)).abs().max()
                loss.backward()
                optimiser.step()
        finally:
            torch.set_num_threads(threads)
        change, qkv = largest_change(block, attack.detach())
        assert change <= bounds.change[index] and qkv <= bounds.qkv[index]


def test_honest_tokens_stay_far_inside_the_bound() -> None:
    """The bound is a wall for lies, not a measure: a real frame's segment changes tokens by a few
    percent of it (so an honest worker never comes near)."""
    sam = TINY.build()
    bounds = BlockBounds(sam)
    tokens = torch.randn(1, 14, 14, sam.image_encoder.blocks[0].norm1.weight.numel())
    change, qkv = largest_change(sam.image_encoder.blocks[0], tokens)
    assert change < 0.1 * bounds.change[0]
    assert qkv < bounds.qkv[0]
    assert bounds.tokens(2.0, (0, 1)) == pytest.approx(2.0 + bounds.change[0] + bounds.change[1])
    assert bounds.finished(2.0, 2, 0.0) < 2.0 + bounds.change[2]
