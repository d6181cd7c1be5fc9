"""The largest values SAM's encoder blocks can produce, from their weights alone.

A worker's result that no honest computation could give is refused without recomputing anything
(:mod:`pedsam.stream.core.verify`). The bound is proved, not measured, so it holds for any
weights and any frame; it is loose (measured on the presets' seeded weights: honest results stay
within a few percent of it at most, see the tests), which is the point: a value beyond it is
impossible, not unlikely.

Per token and channel, a block of SAM's ViT (``x + proj(attn(norm1 x))``, then ``+ mlp(norm2 .)``)
changes the residual stream by at most:

- a layer fed by a LayerNorm: the norm's output is ``n = gamma * z + beta`` with ``z`` of zero mean
  and unit variance over the C channels, so ``|z|_2 <= sqrt(C)`` (``eps`` only shrinks it), and
  by Cauchy-Schwarz output channel ``j`` of ``W n + b`` is at most
  ``|W[j] * gamma|_2 sqrt(C) + |W[j] . beta + b[j]|``. SAM's zero padding after ``norm1`` has
  ``n = 0``, inside the same bound.
- attention: each head's output is a convex combination (softmax weights, relative-position bias
  or not) of value rows ``W_v n + b_v``, so it keeps their per-channel bound ``v[j]``; then
  ``proj``: ``sum_j |W_p[i, j]| v[j] + |b_p[i]|``.
- MLP: ``lin1`` as above; GELU keeps ``|gelu(z)| <= max(|z|, 0.17)``; then ``lin2`` as ``proj``.

A segment's output token is then at most its input's largest magnitude plus the sum of its blocks'
changes; a global block's ``qkv(norm1 x)`` (the offload plan's start) is bounded from its weights
alone. The arithmetic is float32 on the weights, once per session (ViT-B: a few tenths of a
second): its rounding, under 1e-3 relative for sums of a few thousand terms, is well inside the
margin the checks add (:data:`pedsam.stream.core.verify.LIMIT_MARGIN`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from pedsam.workers.sam import Block, Sam

__all__ = ["GELU_FLOOR", "BlockBounds"]

GELU_FLOOR = 0.17
"""``-min gelu(z)`` rounded up: GELU's least value is about -0.16997 (at z = -0.7518)."""


def _after_norm(norm: torch.nn.LayerNorm, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """(out,) float32: per output channel, the largest ``|W n + b|`` over every output ``n`` of
    the LayerNorm ``norm`` (of C channels), by Cauchy-Schwarz."""
    gamma, beta, w = norm.weight.float(), norm.bias.float(), weight.float()
    shift = w @ beta + (bias.float() if bias is not None else 0.0)
    out: torch.Tensor = (w * gamma).norm(dim=1) * math.sqrt(gamma.numel()) + shift.abs()
    return out


def _linear(weight: torch.Tensor, bias: torch.Tensor | None, inputs: torch.Tensor) -> torch.Tensor:
    """(out,) float32: per output channel, the largest ``|W x + b|`` for inputs bounded channel-wise
    by ``inputs`` (in,)."""
    out = weight.float().abs() @ inputs
    return out + bias.float().abs() if bias is not None else out


class _Block:
    """One block's bounds, per output channel (float32): its attention branch's ``proj`` (row
    sums of ``|W_p|`` and ``|b_p|``), the value rows it mixes, and its MLP branch."""

    def __init__(self, block: Block) -> None:
        channels = block.norm1.weight.numel()
        qkv = block.attn.qkv
        v_bias = qkv.bias[2 * channels :] if qkv.bias is not None else None
        self.values = _after_norm(block.norm1, qkv.weight[2 * channels :], v_bias)
        proj = block.attn.proj
        self.proj_rows = proj.weight.float().abs().sum(dim=1)
        self.proj_bias = proj.bias.float().abs() if proj.bias is not None else torch.zeros_like(self.proj_rows)
        hidden = _after_norm(block.norm2, block.mlp.lin1.weight, block.mlp.lin1.bias).clamp(min=GELU_FLOOR)
        self.mlp = _linear(block.mlp.lin2.weight, block.mlp.lin2.bias, hidden)
        self.change = float((_linear(proj.weight, proj.bias, self.values) + self.mlp).max())
        self.qkv = float(_after_norm(block.norm1, qkv.weight, qkv.bias).max())

    def finish(self, largest_mixed: float) -> float:
        """The most the block's ``proj`` and MLP can change a token given attention outputs
        no larger than ``largest_mixed``."""
        return float((self.proj_rows * largest_mixed + self.proj_bias + self.mlp).max())


class BlockBounds:
    """Per block of ``sam.image_encoder``: the most it can change a token, and the largest qkv it
    can start with; see the module docstring.

    Attributes:
        change: per block, the most it can change any entry of a token.
        qkv: per block, the largest entry ``qkv(norm1 x)`` can have, for any x.
    """

    def __init__(self, sam: Sam) -> None:
        with torch.no_grad():
            self._blocks = tuple(_Block(b) for b in sam.image_encoder.blocks)
        self.change: tuple[float, ...] = tuple(b.change for b in self._blocks)
        self.qkv: tuple[float, ...] = tuple(b.qkv for b in self._blocks)

    def tokens(self, largest_input: float, blocks: Sequence[int]) -> float:
        """The largest magnitude tokens can have after ``blocks`` (block numbers), given the
        largest magnitude among their inputs."""
        return largest_input + sum(self.change[b] for b in blocks)

    def finished(self, largest_input: float, block: int, largest_mixed: float) -> float:
        """The largest magnitude tokens can have after the offload plan finishes global ``block``
        (``proj``, MLP) on them, given the largest magnitude of their inputs and of the attention
        output the edge mixed (from qkv any worker returned, so not assumed honest)."""
        return largest_input + self._blocks[block].finish(largest_mixed)
