"""Exact, fast kernels for the blocks of SAM's image encoder, shared by workers and the edge.

SAM's ``Attention`` computes, per head, ``softmax(scale * q @ k.T + bias) @ v`` where the
decomposed relative-position bias is, for query token ``i`` at grid row/column ``(hi, wi)`` and
key token ``j`` at ``(hj, wj)``::

    bias[i, j] = q_i . Rh[hi, hj]  +  q_i . Rw[wi, wj]        (q unscaled)

Stock code materialises that (L, L) map per head three times over (ViT-B global block: 12 heads
x 4096 x 4096 float32 = 805 MB per copy). Here the two terms are small tables, ``rel_h``
(L, H) and ``rel_w`` (L, W); for one chunk of queries at a time they are broadcast-added into
an additive mask and handed to ``torch.nn.functional.scaled_dot_product_attention``, which runs
its flash kernel on CPU for float32 with a float mask. No full attention map is ever held, and
the result is SAM's up to float rounding (the tests compare against ``segment_anything``'s own
modules).

A block is cut into its per-token parts and its mixing part::

    pre:   qkv = attn.qkv(norm1(x))                              per token, (N, C) -> (N, 3C)
    mix:   o = softmax(scale q k^T + bias) v, heads merged        across tokens, before proj
    post:  x = x + attn.proj(o);  x = x + mlp(norm2(x))           per token

so a windowed block runs its per-token parts on the valid tokens of its windows only. SAM pads
the *normalised* tokens with zeros; the qkv projection of a zero token is exactly the qkv bias,
so padding enters the mixing as tokens whose q, k, v are the bias, attended to and never masked
out, as in SAM. The per-token parts of a global block can run anywhere that holds its weights
(the offload plan runs them on the workers).

The kernels run where their inputs are: every buffer they make is on the input's device and of
its dtype, so the same code serves the CPU and a GPU (:mod:`pedsam.workers.device`). On CUDA,
``scaled_dot_product_attention`` with a float mask picks its memory-efficient backend (any of
float32, float16 and bfloat16; the flash backend takes no mask) or falls back to the math one;
under ``torch.autocast`` the projections and the attention compute in the reduced type and the
residual stream stays float32 (:func:`post_attention`).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from pedsam.workers.sam import Attention, Block, get_rel_pos

Extent = tuple[int, int]  # (valid height, valid width) of a window, in tokens

# Largest additive mask built at once, bytes; bounds the kernel's scratch memory. 64 MiB is one
# head of a ViT-B global block (4096 x 4096 float32; all 12 heads would be 768 MiB), and all
# 12 heads of a batch of 25 windows (46 MB).
MASK_BUDGET_BYTES = 64 * 1024 * 1024


def pre_attention(block: Block, tokens: torch.Tensor) -> torch.Tensor:
    """(N, C) float32 block input -> (N, 3C) float32 ``attn.qkv(norm1(x))``."""
    out: torch.Tensor = block.attn.qkv(block.norm1(tokens))
    return out


def post_attention(block: Block, tokens: torch.Tensor, mixed: torch.Tensor) -> torch.Tensor:
    """Finish a block per token.

    Args:
        tokens: (N, C) float32, the block's input (the residual shortcut); not modified.
        mixed: (N, C) float32, the attention output of the same tokens, heads merged, before
            ``attn.proj``.

    Returns:
        (N, C) float32 block output ``x + proj(o)``, then ``+ mlp(norm2(.))``. The residual
        stream stays in ``tokens``' dtype when the projections compute in a reduced one
        (``torch.autocast``, :mod:`pedsam.workers.device`); in fp32 the cast is a no-op.
    """
    x: torch.Tensor = block.attn.proj(mixed).to(tokens.dtype)
    x += tokens
    x += block.mlp(block.norm2(x))
    return x


def mix(attn: Attention, qkv: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Multi-head attention with SAM's decomposed relative positions, before ``proj``.

    Args:
        attn: the block's ``Attention`` (its head count, scale and relative-position tables).
        qkv: (B, H*W, 3C) float32, the qkv projection of B token grids of ``size`` in
            row-major token order (a window batch, or one whole frame); any strides.
        size: (H, W) tokens of each grid.

    Returns:
        (B, H*W, C) float32, contiguous: per token, its heads' outputs concatenated.
    """
    batch, length, three_c = qkv.shape
    heads = attn.num_heads
    channels = three_c // 3
    head_dim = channels // heads
    height, width = size
    if height * width != length:
        raise ValueError(f"qkv holds {length} tokens per grid, not {height}x{width}")
    # (3, B, heads, L, d) views into qkv; SDPA takes the strides as they are.
    q, k, v = qkv.view(batch, length, 3, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    out = torch.empty(batch, length, heads, head_dim, dtype=qkv.dtype, device=qkv.device)
    if not attn.use_rel_pos:
        out.copy_(F.scaled_dot_product_attention(q, k, v, scale=attn.scale).transpose(1, 2))
        return out.view(batch, length, channels)
    rel_h, rel_w = _rel_pos_terms(attn, q, size)  # (B, heads, L, H), (B, heads, L, W)
    head_chunk, query_chunk = mask_chunks(batch, heads, length)
    scratch = _mask_scratch((batch, head_chunk, query_chunk, height, width), qkv.dtype, qkv.device)
    for h0 in range(0, heads, head_chunk):
        h1 = min(h0 + head_chunk, heads)
        for start in range(0, length, query_chunk):
            stop = min(start + query_chunk, length)
            mask = scratch[:, : h1 - h0, : stop - start]
            torch.add(rel_h[:, h0:h1, start:stop, :, None], rel_w[:, h0:h1, start:stop, None, :], out=mask)
            part = F.scaled_dot_product_attention(
                q[:, h0:h1, start:stop],
                k[:, h0:h1],
                v[:, h0:h1],
                attn_mask=mask.view(batch, h1 - h0, stop - start, length),
                scale=attn.scale,
            )  # (B, h, c, d)
            out[:, start:stop, h0:h1] = part.transpose(1, 2)
    return out.view(batch, length, channels)


_scratch = threading.local()


def _mask_scratch(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A buffer for attention-mask chunks on ``device``, kept per thread and reused while it is
    large enough (and of that dtype and device).

    A fresh one per call would cost more than the masking itself where large blocks come
    straight from ``mmap`` (the edge, :mod:`pedsam.stream.core.memory`): every call faults its megabytes of
    pages in anew. One buffer of at most :data:`MASK_BUDGET_BYTES` stays alive per thread.
    """
    numel = math.prod(shape)
    buffer: torch.Tensor | None = getattr(_scratch, "buffer", None)
    if buffer is None or buffer.dtype != dtype or buffer.device != device or buffer.numel() < numel:
        _scratch.buffer = None  # free the old one before allocating its successor
        buffer = _scratch.buffer = torch.empty(numel, dtype=dtype, device=device)
    return buffer[:numel].view(shape)


def mask_chunks(batch: int, heads: int, length: int) -> tuple[int, int]:
    """(heads, queries) per scaled_dot_product_attention call so that the float32 mask fits
    :data:`MASK_BUDGET_BYTES`: every query of as many heads as fit, else fewer queries of one head.

    Whole query lengths come first because the CPU flash kernel splits long query runs into
    larger blocks (ViT-B global block, one head of 4096 queries a call: 0.83 CPU s of mixing
    against 1.0 s for 341 queries of all 12 heads).
    """
    per_head = 4 * batch * length * length
    if per_head <= MASK_BUDGET_BYTES:
        return min(heads, MASK_BUDGET_BYTES // per_head), length
    return 1, max(1, MASK_BUDGET_BYTES // (4 * batch * length))


def _rel_pos_terms(
    attn: Attention, q: torch.Tensor, size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """SAM's two relative-position terms for (B, heads, H*W, d) unscaled queries.

    Returns ``rel_h`` (B, heads, H*W, H) and ``rel_w`` (B, heads, H*W, W) with
    ``rel_h[..., i, hj] = q_i . Rh[hi, hj]`` and ``rel_w[..., i, wj] = q_i . Rw[wi, wj]``.
    """
    batch, heads, length, head_dim = q.shape
    height, width = size
    table_h = get_rel_pos(height, height, attn.rel_pos_h)  # (H, H, d)
    table_w = get_rel_pos(width, width, attn.rel_pos_w)  # (W, W, d)
    grid_q = q.reshape(batch, heads, height, width, head_dim)
    rel_h = torch.einsum("bnhwc,hkc->bnhwk", grid_q, table_h).reshape(batch, heads, length, height)
    rel_w = torch.einsum("bnhwc,wkc->bnhwk", grid_q, table_w).reshape(batch, heads, length, width)
    return rel_h, rel_w


def global_block(block: Block, x: torch.Tensor) -> torch.Tensor:
    """A global-attention block: (B, H, W, C) float32 -> (B, H, W, C), equal to ``block(x)``."""
    batch, height, width, channels = x.shape
    tokens = x.reshape(batch * height * width, channels)
    qkv = pre_attention(block, tokens)
    mixed = mix(block.attn, qkv.view(batch, height * width, -1), (height, width))
    out = post_attention(block, tokens, mixed.view(-1, channels))
    return out.view(batch, height, width, channels)


@dataclass(frozen=True, slots=True)
class WindowBatch:
    """Where the valid tokens of a batch of windows sit among their zero-padded tokens.

    Attributes:
        count: number of windows B.
        window_size: ws; every window is ws x ws tokens once padded.
        valid_tokens: N, the number of valid tokens over all windows.
        index: (N,) int64, for each valid token (windows one after another, each row-major
            over its valid extent) its position among the B * ws * ws padded tokens; None when
            every window is whole (then the two layouts coincide).
    """

    count: int
    window_size: int
    valid_tokens: int
    index: torch.Tensor | None

    @classmethod
    def of(cls, extents: Sequence[Extent], window_size: int, device: torch.device | str = "cpu") -> WindowBatch:
        """The batch of windows with these valid (height, width) extents, padding bottom-right;
        ``index`` on ``device`` (where the tokens are)."""
        ws = window_size
        if all(h == ws and w == ws for h, w in extents):
            return cls(len(extents), ws, len(extents) * ws * ws, None)
        parts = []
        for i, (h, w) in enumerate(extents):
            rows = torch.arange(h).view(h, 1) * ws
            cols = torch.arange(w).view(1, w)
            parts.append((i * ws * ws + rows + cols).reshape(-1))
        index = torch.cat(parts)
        return cls(len(extents), ws, int(index.numel()), index.to(device))


def windowed_block(block: Block, tokens: torch.Tensor, batch: WindowBatch) -> torch.Tensor:
    """One windowed SAM block on a batch of windows given as their valid tokens.

    Args:
        block: a windowed ``Block`` (its attention's relative positions span ws x ws).
        tokens: (N, C) float32, the valid tokens of ``batch``'s windows; not modified.
        batch: the windows' layout.

    Returns:
        (N, C) float32, the block's output at the valid tokens, equal to what SAM's
        ``Block.forward`` computes there on the whole grid.
    """
    channels = tokens.shape[1]
    ws = batch.window_size
    length = ws * ws
    qkv = pre_attention(block, tokens)  # (N, 3C)
    if batch.index is None:
        padded = qkv.view(batch.count, length, 3 * channels)
    else:
        bias = block.attn.qkv.bias
        fill = bias.to(qkv.dtype) if bias is not None else qkv.new_zeros(3 * channels)
        # Padding is zero after norm1, and qkv(0) is exactly the bias (in qkv's dtype: under
        # autocast the projection's bias is rounded to it too).
        padded = fill.expand(batch.count * length, 3 * channels).clone()
        padded.index_copy_(0, batch.index, qkv)
        padded = padded.view(batch.count, length, 3 * channels)
    mixed = mix(block.attn, padded, (ws, ws)).view(batch.count * length, channels)
    if batch.index is not None:
        mixed = mixed.index_select(0, batch.index)
    return post_attention(block, tokens, mixed)
