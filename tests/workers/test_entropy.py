"""The lossless stage after the codec: exact round trips, and decompression bounded by the shape."""

from __future__ import annotations

import pytest
import torch
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from pedsam.protos import pedsam_pb2 as pb
from pedsam.workers import codec as wire
from pedsam.workers import entropy
from pedsam.workers.errors import PayloadError

ZSTD = pb.COMPRESSION_ZSTD_PLANES


def tokens(rows: int = 196 + 56, cols: int = 64, seed: int = 0) -> torch.Tensor:
    """Token-like values: a few channels much larger than the rest, as in a ViT's residual stream."""
    gen = torch.Generator().manual_seed(seed)
    out = torch.randn(rows, cols, generator=gen)
    out[:, :3] *= 40
    return out


@pytest.mark.parametrize("codec", [pb.CODEC_FP32, pb.CODEC_FP16, pb.CODEC_INT8], ids=["fp32", "fp16", "int8"])
def test_compressed_tensors_decode_to_exactly_the_uncompressed_ones(codec: int) -> None:
    x = tokens()
    plain = wire.encode(x, codec)
    packed = wire.encode(x, codec, ZSTD)
    assert packed.compression == ZSTD and plain.compression == pb.COMPRESSION_NONE
    assert packed.scales == plain.scales  # int8 scales are never compressed
    assert len(packed.data) < len(plain.data)  # token bytes do compress
    assert wire.wire_bytes(packed) == len(packed.data) + len(packed.scales) < wire.wire_bytes(plain)
    assert torch.equal(wire.decode(packed), wire.decode(plain))
    assert torch.equal(wire.decode(packed, (x.shape[0], x.shape[1])), wire.decode(plain))
    if codec == pb.CODEC_FP32:
        assert torch.equal(wire.decode(packed), x)


@given(values=st.binary(max_size=64).map(lambda b: b[: len(b) // 4 * 4]), item=st.sampled_from([1, 2, 4]))
def test_byte_planes_are_a_permutation_undone_exactly(values: bytes, item: int) -> None:
    planes = entropy.to_planes(values, item)
    assert sorted(planes) == sorted(values)
    assert entropy.from_planes(planes, item) == values
    if item == 4 and len(values) >= 8:  # plane 0 holds byte 0 of every value
        assert planes[: len(values) // 4] == values[0::4]


def packed(x: torch.Tensor, codec: int = pb.CODEC_FP32) -> pb.Tensor:
    return wire.encode(x, codec, ZSTD)


def test_a_frame_declaring_more_than_the_shape_is_refused_before_decompressing() -> None:
    """A decompression bomb: a few hundred bytes that would inflate to 64 MB. The header says so,
    and that alone refuses it; nothing is decompressed (zstandard would otherwise allocate what
    the header declares, whatever the limit passed to it)."""
    x = tokens()
    bomb = packed(x)
    bomb.data = zstandard.ZstdCompressor(level=1).compress(bytes(64 << 20))
    assert len(bomb.data) < 4096
    with pytest.raises(PayloadError, match=r"declare 67108864 bytes in their zstd frame, expected 64512"):
        wire.decode(bomb)
    with pytest.raises(PayloadError, match="declare"):
        wire.check(bomb, x.shape[0], x.shape[1])


@pytest.mark.parametrize(
    ("spoil", "words"),
    [
        (lambda d: d[:-7], "do not decompress"),  # the right header, a truncated frame
        (lambda d: d + d, "do not decompress"),  # a second frame after the first
        (lambda d: b"\x00" * 8 + d, "not a zstd frame"),
        (lambda d: zstandard.ZstdCompressor(write_content_size=False).compress(bytes(64512)), "declare no size"),
        (lambda d: d[:16] + bytes(len(d) - 16), "do not decompress"),  # a valid header, zeros after it
    ],
    ids=["truncated", "two-frames", "no-magic", "no-content-size", "zeroed"],
)
def test_corrupt_compressed_data_is_a_payload_error(spoil, words: str) -> None:
    tensor = packed(tokens())
    tensor.data = spoil(tensor.data)
    with pytest.raises(PayloadError, match=words):
        wire.decode(tensor)


def test_uncompressed_byte_counts_and_int8_scales_are_checked_too() -> None:
    x = tokens(rows=14 * 14)
    tensor = wire.encode(x, pb.CODEC_INT8, ZSTD)
    tensor.scales = tensor.scales[:-4]
    with pytest.raises(PayloadError, match="scale"):
        wire.decode(tensor)
    plain = wire.encode(x, pb.CODEC_FP16)
    plain.data = plain.data[:-2]
    with pytest.raises(PayloadError, match="carry 25086 bytes, expected 25088"):
        wire.decode(plain)
    with pytest.raises(ValueError, match="compression 7"):
        wire.check(pb.Tensor(codec=pb.CODEC_FP32, shape=[1, 1], data=bytes(4), compression=7), 1, 1)  # type: ignore[arg-type]
