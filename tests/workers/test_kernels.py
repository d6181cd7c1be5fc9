"""pedsam's block kernels equal segment_anything's own Block and Attention modules."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from segment_anything.modeling.image_encoder import Block

from pedsam.workers import kernels
from pedsam.workers.models import build_sam


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).abs().max() / want.abs().max())


def sam_block(dim: int, heads: int, *, window_size: int, grid: int, seed: int) -> Block:
    """A segment_anything Block in SAM's encoder configuration with every parameter random
    (relative-position tables included, so the bias terms matter)."""
    block = Block(
        dim=dim,
        num_heads=heads,
        mlp_ratio=4,
        qkv_bias=True,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        use_rel_pos=True,
        window_size=window_size,
        input_size=(grid, grid),
    ).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in block.named_parameters():
            if "rel_pos" in name:
                param.normal_(0.0, 0.5, generator=gen)
            elif param.dim() >= 2:
                bound = param.shape[1] ** -0.5
                param.uniform_(-bound, bound, generator=gen)
            elif name.endswith("weight"):
                param.normal_(1.0, 0.1, generator=gen)
            else:
                param.normal_(0.0, 0.1, generator=gen)
    return block


def valid_window_tokens(x: torch.Tensor, window_size: int) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """(1, H, W, C) grid -> (N, C) valid tokens of its windows (row-major windows) and extents."""
    _, height, width, channels = x.shape
    ws = window_size
    parts, extents = [], []
    for top in range(0, height, ws):
        for left in range(0, width, ws):
            h, w = min(ws, height - top), min(ws, width - left)
            parts.append(x[0, top : top + h, left : left + w].reshape(-1, channels))
            extents.append((h, w))
    return torch.cat(parts), extents


def check_block_pair(dim: int, heads: int, grid: int) -> None:
    x = torch.randn(1, grid, grid, dim, generator=torch.Generator().manual_seed(7))
    with torch.inference_mode():
        glob = sam_block(dim, heads, window_size=0, grid=grid, seed=1)
        assert relative_error(kernels.global_block(glob, x), glob(x)) <= 1e-4

        windowed = sam_block(dim, heads, window_size=14, grid=grid, seed=2)
        want, _ = valid_window_tokens(windowed(x), 14)  # SAM pads and crops inside forward
        tokens, extents = valid_window_tokens(x, 14)
        batch = kernels.WindowBatch.of(extents, 14)
        assert batch.index is not None and batch.valid_tokens == grid * grid
        got = kernels.windowed_block(windowed, tokens, batch)
    assert got.shape == want.shape
    assert relative_error(got, want) <= 1e-4


def test_tiny_shape_blocks_equal_segment_anything() -> None:
    """32x32 tokens: a 3x3 window grid whose last row and column are partly padding."""
    check_block_pair(64, 2, 32)


@pytest.mark.parametrize(("dim", "heads"), [
    pytest.param(96, 2, id="narrow"),
    pytest.param(768, 12, id="vit_b", marks=pytest.mark.vit_b),
])
def test_vit_b_shape_blocks_equal_segment_anything(dim: int, heads: int) -> None:
    """ViT-B's grid (64x64 tokens (global), 25 windows padded to 70x70) at 96 channels and 2
    heads, and ViT-B itself: 768 channels, 12 heads."""
    check_block_pair(dim, heads, 64)


@pytest.mark.parametrize(
    ("budget", "chunks"),
    [
        (10 * 4 * 32 * 32, (1, 10)),  # 10 queries of one head a call, the last chunk partial
        (4 * 1024 * 1024, (1, 1024)),  # every query of one head a call
        (8 * 1024 * 1024, (2, 1024)),  # both heads at once
    ],
)
def test_chunked_mask_is_exact_for_any_chunk(
    monkeypatch: pytest.MonkeyPatch, budget: int, chunks: tuple[int, int]
) -> None:
    """Attention runs in (heads, queries) chunks bounded by the mask budget; the result must not
    depend on where the chunks fall."""
    block = sam_block(64, 2, window_size=0, grid=32, seed=3)
    x = torch.randn(1, 32, 32, 64, generator=torch.Generator().manual_seed(4))
    monkeypatch.setattr(kernels, "MASK_BUDGET_BYTES", budget)
    assert kernels.mask_chunks(1, 2, 32 * 32) == chunks
    with torch.inference_mode():
        want = block(x)
        got = kernels.global_block(block, x)
    assert relative_error(got, want) <= 1e-4


def test_reused_mask_buffer_never_leaks_between_calls_of_other_shapes() -> None:
    """The mask buffer is kept per thread: a frame, then a small window batch, then the frame
    again, then other threads, each must come out as SAM computes it."""
    from concurrent.futures import ThreadPoolExecutor

    glob = sam_block(64, 2, window_size=0, grid=32, seed=5)
    windowed = sam_block(64, 2, window_size=14, grid=32, seed=6)
    x = torch.randn(1, 32, 32, 64, generator=torch.Generator().manual_seed(8))
    with torch.inference_mode():
        want_global = glob(x)
        want_windows, _ = valid_window_tokens(windowed(x), 14)
    tokens, extents = valid_window_tokens(x, 14)
    first = extents[0][0] * extents[0][1]

    def run() -> None:
        with torch.inference_mode():
            assert relative_error(kernels.global_block(glob, x), want_global) <= 1e-4
            one = kernels.windowed_block(windowed, tokens[:first], kernels.WindowBatch.of(extents[:1], 14))
            assert relative_error(one, want_windows[:first]) <= 1e-4
            assert relative_error(kernels.global_block(glob, x), want_global) <= 1e-4
            every = kernels.windowed_block(windowed, tokens, kernels.WindowBatch.of(extents, 14))
            assert relative_error(every, want_windows) <= 1e-4

    run()
    with ThreadPoolExecutor(3) as pool:
        for future in [pool.submit(run) for _ in range(6)]:
            future.result()


def test_vit_b_chunks_hold_one_head_of_a_frame_or_every_head_of_a_window_batch() -> None:
    assert kernels.mask_chunks(1, 12, 64 * 64) == (1, 4096)
    assert kernels.mask_chunks(25, 12, 14 * 14) == (12, 196)


def test_whole_windows_skip_padding_and_match_sam() -> None:
    """A 28x28 grid is exactly 2x2 windows: no padding, no index, same result as SAM."""
    block = sam_block(64, 2, window_size=14, grid=28, seed=5)
    x = torch.randn(1, 28, 28, 64, generator=torch.Generator().manual_seed(6))
    tokens, extents = valid_window_tokens(x, 14)
    batch = kernels.WindowBatch.of(extents, 14)
    assert batch.index is None
    with torch.inference_mode():
        want, _ = valid_window_tokens(block(x), 14)
        got = kernels.windowed_block(block, tokens, batch)
    assert relative_error(got, want) <= 1e-4


def test_inputs_are_not_modified() -> None:
    """Workers hand the kernels read-only views of received bytes; the kernels must not write."""
    sam = build_sam("tiny", seed=0)
    block = sam.image_encoder.blocks[0]
    tokens = torch.randn(4 * 14 * 14, 64, generator=torch.Generator().manual_seed(8))
    before = tokens.clone()
    with torch.inference_mode():
        kernels.windowed_block(block, tokens, kernels.WindowBatch.of([(14, 14)] * 4, 14))
    assert torch.equal(tokens, before)


def test_split_block_parts_compose_to_the_block() -> None:
    """pre -> mix -> post (the pieces the offload plan runs in different places) is the block."""
    sam = build_sam("tiny", seed=0)
    block = sam.image_encoder.blocks[2]  # a global block of the tiny preset
    x = torch.randn(1, 32, 32, 64, generator=torch.Generator().manual_seed(9))
    with torch.inference_mode():
        tokens = x.reshape(-1, 64)
        qkv = kernels.pre_attention(block, tokens)
        mixed = kernels.mix(block.attn, qkv.view(1, 32 * 32, -1), (32, 32)).view(-1, 64)
        got = kernels.post_attention(block, tokens, mixed).view(1, 32, 32, 64)
        want = block(x)
    assert relative_error(got, want) <= 1e-4
