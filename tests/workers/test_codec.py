"""Wire codecs: fp32 exact, fp16 and int8 within their stated error."""

from __future__ import annotations

import pytest
import torch

from pedsam.protos import pedsam_pb2 as pb
from pedsam.workers import codec as wire
from pedsam.workers.errors import PayloadError


@pytest.mark.parametrize(("name", "bound", "ratio"), [("fp32", 0.0, 1.0), ("fp16", 1e-3, 0.5), ("int8", 1e-2, 0.25)])
def test_codec_round_trip(name: str, bound: float, ratio: float) -> None:
    tokens = torch.randn(250, 64, generator=torch.Generator().manual_seed(1)) * 5
    tensor = wire.encode(tokens, wire.codec_id(name))
    back = wire.decode(tensor)
    assert back.dtype == torch.float32 and back.shape == tokens.shape
    error = float((back - tokens).abs().max() / tokens.abs().max())
    assert error <= bound
    raw = tokens.numel() * 4
    payload = len(tensor.data) + len(tensor.scales)
    assert payload == wire.payload_bytes(tensor.codec, 250, 64)
    assert payload <= raw * ratio + 4 * 250


def test_int8_handles_all_zero_rows() -> None:
    tokens = torch.zeros(3, 8)
    back = wire.decode(wire.encode(tokens, pb.CODEC_INT8))
    assert torch.equal(back, tokens)


def test_unknown_codec_name() -> None:
    with pytest.raises(ValueError, match="choose one of"):
        wire.codec_id("bf16")


def test_fp32_decode_is_exact_and_warns_nothing() -> None:
    """fp32 tensors decode as views of read-only message bytes; torch must not warn about it."""
    import warnings

    tokens = torch.randn(196, 64, generator=torch.Generator().manual_seed(2))
    tensor = wire.encode(tokens, pb.CODEC_FP32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = wire.decode(tensor)
        again = back + 0  # using it is fine too
    assert torch.equal(back, tokens) and torch.equal(again, tokens)


def test_decode_result_adds_residuals_back_and_checks_their_shape() -> None:
    sent = torch.randn(20, 8, generator=torch.Generator().manual_seed(3))
    delta = torch.randn(20, 8, generator=torch.Generator().manual_seed(4)) * 0.1
    for codec in (pb.CODEC_FP32, pb.CODEC_INT8):
        tensor = wire.encode(delta, codec)
        plain = wire.decode_result(tensor, False, sent)
        torch.testing.assert_close(plain, wire.decode(tensor))
        torch.testing.assert_close(wire.decode_result(tensor, True, sent), sent + wire.decode(tensor))
    for residual in (True, False):  # a result of another shape is refused either way
        with pytest.raises(PayloadError, match=r"shape \(5, 8\), expected \(20, 8\)"):
            wire.decode_result(wire.encode(delta[:5], pb.CODEC_INT8), residual, sent)


def awkward_tokens() -> torch.Tensor:
    """Values that stress rounding: ties of int8's round half to even, fp16's largest values and
    its subnormals, an all-zero row."""
    tokens = torch.randn(40, 32, generator=torch.Generator().manual_seed(5)) * 3
    tokens[0] = 0.0
    tokens[1, :4] = torch.tensor([127.0, 0.5, -0.5, 1.5])  # scale 1: exact halves
    tokens[2, :3] = torch.tensor([6.5e4, -6.0e4, 1e-7])  # near fp16's largest, and below its normals
    return tokens


@pytest.mark.parametrize("name", ["fp32", "fp16", "int8"])
def test_encoding_where_the_tokens_are_gives_the_host_bytes(name: str) -> None:
    """A GPU encodes on the device (torch) and a CPU on the host (numpy): the same bytes. The
    device path runs here on the CPU, which is all that differs on a GPU."""
    tokens = awkward_tokens()
    host = wire.encode(tokens, wire.codec_id(name))
    device = wire.encode_on_device(tokens, wire.codec_id(name))
    assert (device.data, device.scales, list(device.shape)) == (host.data, host.scales, list(host.shape))


@pytest.mark.parametrize("name", ["fp32", "fp16", "int8"])
def test_decoding_onto_a_device_moves_the_wire_bytes_and_widens_them_there(name: str) -> None:
    tokens = awkward_tokens()
    tensor = wire.encode(tokens, wire.codec_id(name))
    moved: list[torch.dtype] = []

    def upload(values: torch.Tensor) -> torch.Tensor:  # stands in for a GPU's Uploader
        moved.append(values.dtype)
        return values.clone()

    back = wire.decode(tensor, upload=upload)
    assert torch.equal(back, wire.decode(tensor)) and back.dtype == torch.float32
    assert moved == {"fp32": [torch.float32], "fp16": [torch.float16], "int8": [torch.int8, torch.float32]}[name]
