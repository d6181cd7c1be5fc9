"""The lossless stage after the wire codec: a tensor's bytes regrouped by byte plane, then zstd.

A codec (:mod:`pedsam.workers.codec`) turns (N, C) float32 tokens into bytes; this stage may
compress those bytes for the wire, and only where both ends list the compression
(``ModelInfo.compressions``; the edge asks for compressed results with
``SegmentRequest.result_compression``). ``pb.COMPRESSION_ZSTD_PLANES``:

- **byte planes**: an fp32 payload's bytes are reordered as byte 0 of every value, then byte 1
  of every value, and so on (4 planes; fp16 has 2, int8 1, which leaves it unchanged). The
  sign-and-exponent bytes of floats are far from random; side by side they compress, while in
  their natural order zstd's per-block statistics mix them with mantissa bytes that are noise.
- **zstd** at :data:`LEVEL`, one frame whose header carries the content size.

Why these and not others is a measurement, ``pedsam bench-entropy`` (SAM's tokens of real
footage, ViT-B shape with seeded weights, and the tiny preset): on ViT-B tokens of ``vtest.avi``
and ``tree.avi``, plain zstd-1 takes 8 % off fp32 and fp16, byte planes make that 19-21 % (a
ratio of 1.23-1.24; fp16 residual results 1.27), level 3 gains at most 2 % more at about 0.6 times
the speed, and lz4 on byte planes reaches 1.15 on fp32 but 1.01-1.06 on fp16 and int8. int8
tokens compress by 1.08-1.12 whatever the method. One core compresses and decompresses a MB
in about 2 ms, so the stage pays on links slower than about 700 Mbit/s for fp32 and fp16 and
about 400 Mbit/s for int8, and not on loopback (see ``EdgeConfig.compression``).

Decompression is bounded by what the tensor's shape promises: the frame must declare exactly
that many bytes in its header (checked before anything is allocated), be one whole frame with
nothing after it, and decompress to exactly that size. Anything else is a
:class:`~pedsam.workers.errors.PayloadError`, so a decompression bomb costs its receiver no more
memory than an honest tensor of the same shape.
"""

from __future__ import annotations

import numpy as np
import zstandard

from pedsam.protos import pedsam_pb2 as pb
from pedsam.workers.errors import PayloadError

__all__ = [
    "COMPRESSIONS", "COMPRESSION_NAMES", "LEVEL", "compress", "decompress", "from_planes", "to_planes",
    "check_declared",
]

COMPRESSIONS: dict[str, pb.Compression] = {"zstd": pb.COMPRESSION_ZSTD_PLANES}
"""The compressions this build can produce and read, by the name the command line uses."""

COMPRESSION_NAMES: dict[int, str] = {v: k for k, v in COMPRESSIONS.items()}

LEVEL = 1
"""zstd's level: level 3 gains at most 2 % more on tokens and costs about twice the time
(``pedsam bench-entropy``); on links where bytes cost, the time is better spent elsewhere."""


def to_planes(data: bytes, item_bytes: int) -> bytes:
    """``data`` (values of ``item_bytes`` bytes each) regrouped by byte plane: byte 0 of every
    value, then byte 1 of every value, ...; unchanged for 1-byte values."""
    if item_bytes == 1:
        return data
    return np.frombuffer(data, dtype=np.uint8).reshape(-1, item_bytes).T.tobytes()


def from_planes(data: bytes, item_bytes: int) -> bytes:
    """The inverse of :func:`to_planes`."""
    if item_bytes == 1:
        return data
    planes = np.frombuffer(data, dtype=np.uint8).reshape(item_bytes, -1)
    values = np.empty((planes.shape[1], item_bytes), dtype=np.uint8)
    for j in range(item_bytes):  # plane by plane: 2-4x the speed of one transposed copy here
        values[:, j] = planes[j]
    return values.tobytes()


def compress(data: bytes, item_bytes: int, compression: int, *, level: int = LEVEL) -> bytes:
    """``data`` (values of ``item_bytes`` bytes) compressed as ``compression`` says.

    Raises:
        ValueError: a compression this build does not know.
    """
    if compression == pb.COMPRESSION_NONE:
        return data
    if compression != pb.COMPRESSION_ZSTD_PLANES:
        raise ValueError(f"unsupported compression {compression}")
    # A compressor per call: contexts are not shared between threads, and one costs microseconds
    # against the milliseconds of a payload.
    return zstandard.ZstdCompressor(level=level, write_content_size=True).compress(to_planes(data, item_bytes))


def check_declared(data: bytes, size: int, compression: int) -> None:
    """Check, from the frame header alone, that compressed ``data`` declares ``size`` bytes.

    Cheap (no decompression): the worker runs it while validating a request on its event loop.

    Raises:
        PayloadError: an unknown compression, an unreadable header, no declared size, or another.
    """
    if compression == pb.COMPRESSION_NONE:
        if len(data) != size:
            raise PayloadError(f"carry {len(data)} bytes, expected {size}")
        return
    if compression != pb.COMPRESSION_ZSTD_PLANES:
        raise PayloadError(f"unsupported compression {compression}")
    try:
        declared = zstandard.frame_content_size(data)
    except zstandard.ZstdError:
        raise PayloadError("are not a zstd frame") from None
    if declared != size:
        said = "no size" if declared < 0 else f"{declared} bytes"
        raise PayloadError(f"declare {said} in their zstd frame, expected {size}")


def decompress(data: bytes, item_bytes: int, size: int, compression: int) -> bytes:
    """Compressed ``data`` back to the codec's ``size`` bytes (values of ``item_bytes`` bytes).

    Never allocates more than ``size`` bytes of output, whatever ``data`` claims.

    Raises:
        PayloadError: see :func:`check_declared`; also a corrupt frame, bytes after the frame,
            or output of another size.
    """
    check_declared(data, size, compression)
    if compression == pb.COMPRESSION_NONE:
        return data
    try:
        raw = zstandard.ZstdDecompressor().decompress(data, max_output_size=size, allow_extra_data=False)
    except zstandard.ZstdError as exc:
        raise PayloadError(f"do not decompress: {exc}") from None
    if len(raw) != size:
        raise PayloadError(f"decompress to {len(raw)} bytes, expected {size}")
    return from_planes(raw, item_bytes)
