"""Tensor codecs for the wire: (N, C) float32 token matrices to and from ``pb.Tensor``.

``fp32`` is exact; ``fp16`` halves the bytes; ``int8`` quarters them with one float32 scale
per token (row). Decoding copies at most once: an fp32 payload is not copied at all (the
tensor is a read-only view of the message's bytes; nothing in pedsam writes into a decoded
tensor), fp16 and int8 are widened to float32 in one step.

After the codec, ``data`` may be compressed losslessly (:mod:`pedsam.workers.entropy`; the
tensor's ``compression`` says how); decoding then first decompresses, bounded by the shape, and
the codec's copy rules apply to the decompressed bytes.

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
from pedsam.workers import entropy
from pedsam.workers.errors import PayloadError

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
    """Bytes of ``data`` (plus ``scales``) a (rows, cols) tensor takes in ``codec``, uncompressed."""
    scales = 4 * rows if codec == pb.CODEC_INT8 else 0
    return data_bytes(codec, rows, cols) + scales


def data_bytes(codec: int, rows: int, cols: int) -> int:
    """Bytes of ``data`` alone a (rows, cols) tensor takes in ``codec``, uncompressed."""
    return _ITEM_BYTES[codec] * rows * cols


def item_bytes(codec: int) -> int:
    """Bytes of one value in ``codec`` (4, 2 or 1)."""
    return _ITEM_BYTES[codec]


def wire_bytes(tensor: pb.Tensor) -> int:
    """Bytes a tensor's values take on the wire as it stands: ``data`` (compressed or not) and
    ``scales``."""
    return len(tensor.data) + len(tensor.scales)


def encode(tokens: torch.Tensor, codec: pb.Codec, compression: pb.Compression = pb.COMPRESSION_NONE) -> pb.Tensor:
    """(N, C) float32 on any device -> ``pb.Tensor`` in ``codec`` (its bytes on the host), its
    ``data`` compressed as ``compression`` says."""
    if tokens.device.type != "cpu":
        encoded = encode_on_device(tokens, codec)
        if compression != pb.COMPRESSION_NONE:
            encoded.data = entropy.compress(encoded.data, _ITEM_BYTES[codec], compression)
            encoded.compression = compression
        return encoded
    array = tokens.detach().contiguous().numpy()
    if array.dtype != np.float32:
        array = array.astype(np.float32)
    shape = list(array.shape)
    scales = b""
    if codec == pb.CODEC_FP32:
        data = array.tobytes()
    elif codec == pb.CODEC_FP16:
        data = array.astype(np.float16).tobytes()
    elif codec == pb.CODEC_INT8:
        scale = np.abs(array).max(axis=1, keepdims=True) / 127.0
        scale[scale == 0] = 1.0
        data = np.clip(np.rint(array / scale), -127, 127).astype(np.int8).tobytes()
        scales = scale.astype(np.float32).tobytes()
    else:
        raise ValueError(f"unsupported codec {codec}")
    if compression != pb.COMPRESSION_NONE:
        data = entropy.compress(data, _ITEM_BYTES[codec], compression)
    return pb.Tensor(codec=codec, shape=shape, data=data, scales=scales, compression=compression)


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
    """A result's tokens on ``sent``'s device, which must have ``sent``'s shape: decoded, plus
    ``sent`` (the edge's exact tokens) when ``residual``.

    Raises:
        PayloadError: a result of another shape, or bytes that do not decode to it.
    """
    rows, cols = sent.shape
    out = decode(tensor, (rows, cols)).to(sent.device)
    if not residual:
        return out
    # fp32 decodes to a read-only view of received bytes; fp16 and int8 to an array of its own.
    return out.add_(sent) if tensor.codec != pb.CODEC_FP32 else out + sent


Upload = Callable[[torch.Tensor], torch.Tensor]


def decode(tensor: pb.Tensor, shape: tuple[int, int] | None = None, upload: Upload | None = None) -> torch.Tensor:
    """``pb.Tensor`` -> (N, C) float32.

    ``shape``: the (N, C) the receiver expects; a tensor of another shape is refused before any
    decompression (an edge reading a worker's result passes it; a worker has already checked its
    requests' shapes with :func:`check`). ``upload`` (a device's
    :class:`~pedsam.workers.device.Uploader`): the raw values go to that device as they are on
    the wire and are widened there; the result lives on the device.

    Raises:
        PayloadError: another shape, or ``data``/``scales`` that do not decode to the shape.
        ValueError: an unknown codec.
    """
    dims = tuple(int(s) for s in tensor.shape)
    if len(dims) != 2 or min(dims) < 0 or (shape is not None and dims != shape):
        raise PayloadError(f"shape {dims}, expected {shape if shape is not None else '(rows, cols)'}")
    if tensor.codec not in _ITEM_BYTES:
        raise ValueError(f"unsupported codec {tensor.codec}")
    rows, cols = dims
    data = entropy.decompress(tensor.data, _ITEM_BYTES[tensor.codec], data_bytes(tensor.codec, rows, cols),
                              tensor.compression)
    if upload is not None:
        return _decode_moved(tensor, data, dims, upload)
    if tensor.codec == pb.CODEC_FP32:
        # A read-only view of the message's (or the decompressed) bytes: nothing in pedsam writes into it.
        return torch.frombuffer(data, dtype=torch.float32).view(dims) if rows * cols else torch.empty(dims)
    if tensor.codec == pb.CODEC_FP16:
        array = np.frombuffer(data, dtype="<f2").reshape(dims).astype(np.float32)
    else:
        if len(tensor.scales) != 4 * rows:
            raise PayloadError(f"carry {len(tensor.scales)} bytes of int8 scales, expected {4 * rows}")
        scales = np.frombuffer(tensor.scales, dtype="<f4").reshape(rows, 1)
        array = np.frombuffer(data, dtype=np.int8).reshape(dims).astype(np.float32)
        array *= scales
    return torch.from_numpy(array)


def _decode_moved(tensor: pb.Tensor, data: bytes, shape: tuple[int, ...], upload: Upload) -> torch.Tensor:
    if tensor.codec == pb.CODEC_FP32:
        return upload(torch.frombuffer(data, dtype=torch.float32).view(shape))
    if tensor.codec == pb.CODEC_FP16:
        return upload(torch.frombuffer(data, dtype=torch.float16).view(shape)).float()
    if tensor.codec == pb.CODEC_INT8:
        if len(tensor.scales) != 4 * shape[0]:
            raise PayloadError(f"carry {len(tensor.scales)} bytes of int8 scales, expected {4 * shape[0]}")
        values = upload(torch.frombuffer(data, dtype=torch.int8).view(shape))
        scales = upload(torch.frombuffer(tensor.scales, dtype=torch.float32).view(shape[0], 1))
        return values.float().mul_(scales)
    raise ValueError(f"unsupported codec {tensor.codec}")


def check(tensor: pb.Tensor, rows: int, cols: int) -> None:
    """Check a tensor's codec, shape and byte counts before decoding it: cheap, no decompression
    (a compressed ``data`` must declare the codec's byte count in its frame header).

    Raises:
        PayloadError: the shape is not (rows, cols), or the byte counts do not match it.
        ValueError: an unknown codec or compression.
    """
    if tensor.codec not in _ITEM_BYTES:
        raise ValueError(f"unsupported codec {tensor.codec}")
    if tensor.compression != pb.COMPRESSION_NONE and tensor.compression not in entropy.COMPRESSION_NAMES:
        raise ValueError(f"unsupported compression {tensor.compression}")
    dims = tuple(tensor.shape)
    if dims != (rows, cols):
        raise PayloadError(f"have shape {dims}, expected ({rows}, {cols}) for these extents")
    scales = 4 * rows if tensor.codec == pb.CODEC_INT8 else 0
    if len(tensor.scales) != scales:
        if tensor.codec == pb.CODEC_INT8:
            raise PayloadError("need one float32 int8 scale per token")
        raise PayloadError(f"carry {len(tensor.scales)} bytes of scales, expected none for this codec")
    entropy.check_declared(tensor.data, data_bytes(tensor.codec, rows, cols), tensor.compression)


def _spend_readonly_warning() -> None:
    """torch warns once per process when a tensor views read-only memory. Decoded fp32 tensors
    do that on purpose, so the one warning is spent here, at import, where it is silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        torch.frombuffer(bytes(4), dtype=torch.float32)


_spend_readonly_warning()
