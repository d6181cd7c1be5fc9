"""Tensor codecs for the wire: (N, C) float32 token matrices to and from ``pb.Tensor``.

``fp32`` is exact; ``fp16`` halves the bytes; ``int8`` quarters them with one float32 scale
per token (row). Decoding copies at most once: an fp32 payload is not copied at all (the
tensor is a read-only view of the message's bytes; nothing in pedsam writes into a decoded
tensor), fp16 and int8 are widened to float32 in one step.

On a GPU the bytes cross once, as they are on the wire: :func:`decode` with ``upload`` moves
the raw fp32, fp16 or int8 values (and int8's scales) to the device and widens them there, and
:func:`encode` of a device tensor narrows it there and brings only the encoded bytes back to the
host. Both give the same values as the host path, bit for bit.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import torch

from pedsam.protos import pedsam_pb2 as pb

CODECS: dict[str, pb.Codec] = {"fp32": pb.CODEC_FP32, "fp16": pb.CODEC_FP16, "int8": pb.CODEC_INT8}
CODEC_NAMES: dict[int, str] = {v: k for k, v in CODECS.items()}
_ITEM_BYTES: dict[int, int] = {pb.CODEC_FP32: 4, pb.CODEC_FP16: 2, pb.CODEC_INT8: 1}


LOSSY: frozenset[int] = frozenset({pb.CODEC_FP16, pb.CODEC_INT8})
"""Codecs whose results the edge asks for as residuals (``SegmentRequest.residual_result``):
the residual stream's identity path then never passes through the codec, which halves fp16's
embedding error and brings int8's from about 2e-2 to under 1e-2 on ViT-B."""


def codec_id(name: str) -> pb.Codec:
    try:
        return CODECS[name]
    except KeyError:
        raise ValueError(f"unknown codec {name!r}; choose one of {', '.join(CODECS)}") from None


def payload_bytes(codec: int, rows: int, cols: int) -> int:
    """Bytes of ``data`` (plus ``scales``) a (rows, cols) tensor takes in ``codec``."""
    scales = 4 * rows if codec == pb.CODEC_INT8 else 0
    return _ITEM_BYTES[codec] * rows * cols + scales


def encode(tokens: torch.Tensor, codec: pb.Codec) -> pb.Tensor:
    """(N, C) float32 on any device -> ``pb.Tensor`` in ``codec`` (its bytes on the host)."""
    if tokens.device.type != "cpu":
        return encode_on_device(tokens, codec)
    array = tokens.detach().contiguous().numpy()
    if array.dtype != np.float32:
        array = array.astype(np.float32)
    shape = list(array.shape)
    if codec == pb.CODEC_FP32:
        return pb.Tensor(codec=codec, shape=shape, data=array.tobytes())
    if codec == pb.CODEC_FP16:
        return pb.Tensor(codec=codec, shape=shape, data=array.astype(np.float16).tobytes())
    if codec == pb.CODEC_INT8:
        scale = np.abs(array).max(axis=1, keepdims=True) / 127.0
        scale[scale == 0] = 1.0
        quantised = np.clip(np.rint(array / scale), -127, 127).astype(np.int8)
        return pb.Tensor(
            codec=codec,
            shape=shape,
            data=quantised.tobytes(),
            scales=scale.astype(np.float32).tobytes(),
        )
    raise ValueError(f"unsupported codec {codec}")


def encode_on_device(tokens: torch.Tensor, codec: pb.Codec) -> pb.Tensor:
    """:func:`encode` computed where ``tokens`` are (a GPU): narrowed or quantised there, only
    the encoded bytes copied to the host. Same bytes as the host path (round half to even,
    IEEE division); it runs on the CPU too, which is how the tests compare the two."""
    tokens = tokens.detach().float()
    shape = list(tokens.shape)
    if codec == pb.CODEC_FP32:
        return pb.Tensor(codec=codec, shape=shape, data=_host_bytes(tokens))
    if codec == pb.CODEC_FP16:
        return pb.Tensor(codec=codec, shape=shape, data=_host_bytes(tokens.to(torch.float16)))
    if codec == pb.CODEC_INT8:
        scale = tokens.abs().amax(dim=1, keepdim=True) / 127.0
        scale = torch.where(scale == 0, torch.ones_like(scale), scale)
        quantised = torch.clamp(torch.round(tokens / scale), -127, 127).to(torch.int8)
        return pb.Tensor(codec=codec, shape=shape, data=_host_bytes(quantised), scales=_host_bytes(scale))
    raise ValueError(f"unsupported codec {codec}")


def _host_bytes(tensor: torch.Tensor) -> bytes:
    """A tensor's values as little-endian bytes: one copy to the host, one into ``bytes``."""
    return tensor.contiguous().cpu().numpy().tobytes()


def decode_result(tensor: pb.Tensor, residual: bool, sent: torch.Tensor) -> torch.Tensor:
    """A result's tokens on ``sent``'s device: decoded, plus ``sent`` (the edge's exact tokens)
    when ``residual``."""
    out = decode(tensor).to(sent.device)
    if not residual:
        return out
    if out.shape != sent.shape:
        raise ValueError(f"residual of shape {tuple(out.shape)} for tokens of shape {tuple(sent.shape)}")
    return out.add_(sent) if tensor.codec != pb.CODEC_FP32 else out + sent


Upload = Callable[[torch.Tensor], torch.Tensor]


def decode(tensor: pb.Tensor, upload: Upload | None = None) -> torch.Tensor:
    """``pb.Tensor`` -> (N, C) float32. The caller has validated shape and byte counts.

    ``upload`` (a device's :class:`~pedsam.workers.device.Uploader`): the raw values go to that
    device as they are on the wire and are widened there; the result lives on the device.
    """
    if upload is not None:
        return _decode_moved(tensor, upload)
    shape = tuple(int(s) for s in tensor.shape)
    if tensor.codec == pb.CODEC_FP32:
        # A read-only view of the message's bytes: nothing in pedsam writes into it.
        return torch.frombuffer(tensor.data, dtype=torch.float32).view(shape)
    if tensor.codec == pb.CODEC_FP16:
        array = np.frombuffer(tensor.data, dtype="<f2").reshape(shape).astype(np.float32)
    elif tensor.codec == pb.CODEC_INT8:
        scales = np.frombuffer(tensor.scales, dtype="<f4").reshape(shape[0], 1)
        array = np.frombuffer(tensor.data, dtype=np.int8).reshape(shape).astype(np.float32)
        array *= scales
    else:
        raise ValueError(f"unsupported codec {tensor.codec}")
    return torch.from_numpy(array)


def _decode_moved(tensor: pb.Tensor, upload: Upload) -> torch.Tensor:
    shape = tuple(int(s) for s in tensor.shape)
    if tensor.codec == pb.CODEC_FP32:
        return upload(torch.frombuffer(tensor.data, dtype=torch.float32).view(shape))
    if tensor.codec == pb.CODEC_FP16:
        return upload(torch.frombuffer(tensor.data, dtype=torch.float16).view(shape)).float()
    if tensor.codec == pb.CODEC_INT8:
        values = upload(torch.frombuffer(tensor.data, dtype=torch.int8).view(shape))
        scales = upload(torch.frombuffer(tensor.scales, dtype=torch.float32).view(shape[0], 1))
        return values.float().mul_(scales)
    raise ValueError(f"unsupported codec {tensor.codec}")


def _spend_readonly_warning() -> None:
    """torch warns once per process when a tensor views read-only memory. Decoded fp32 tensors
    do that on purpose, so the one warning is spent here, at import, where it is silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        torch.frombuffer(bytes(4), dtype=torch.float32)


_spend_readonly_warning()
