"""What a curious worker can keep: every first-segment request, as it arrived.

``pedsam worker --capture FILE`` appends each request of the first windowed segment (the one
whose tokens are the frame's patch and position embeddings, which token inversion turns back
into pixels) to ``FILE``, exactly as the edge sent it, with the worker's wall-clock arrival time.
It changes nothing the edge can see. It exists for audits: a provider could keep the same record
without telling anyone, and ``pedsam attack-capture`` measures what such a record gives away
(:mod:`pedsam.stream.privacy.captured`).

The file is a sequence of records, each a 12-byte header, little-endian: the arrival time
(float64, seconds since the epoch) and the length of the request (uint32), followed by the
serialized ``SegmentRequest``. A record is written whole before the next one starts; a worker
that is killed mid-write leaves at most one truncated record at the end, which
:func:`read_capture` ignores.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import BinaryIO

from pedsam.protos import pedsam_pb2 as pb

__all__ = ["CaptureWriter", "CapturedRequest", "read_capture"]

_HEADER = struct.Struct("<dI")
CAPTURED_SEGMENT = 0  # the segment whose input is the prologue: patch embedding + position embedding


@dataclass(frozen=True, slots=True)
class CapturedRequest:
    """One request as the worker received it: ``arrived`` in seconds since the epoch."""

    arrived: float
    request: pb.SegmentRequest


class CaptureWriter:
    """Appends first-segment requests to a file; safe to call from several threads.

    Raises:
        OSError: the file cannot be opened for appending.
    """

    def __init__(self, path: str | PathLike[str]) -> None:
        self.path = Path(path)
        self._file: BinaryIO = open(self.path, "ab")  # noqa: SIM115 - closed by close()
        self._lock = threading.Lock()
        self.records = 0

    def record(self, request: pb.SegmentRequest, arrived: float) -> None:
        """Keep ``request`` if it is of the captured segment and computes it (not an offload
        request that only finishes a global block)."""
        if request.segment != CAPTURED_SEGMENT or request.skip_segment or request.HasField("finish_block"):
            return
        data = request.SerializeToString()
        with self._lock:
            self._file.write(_HEADER.pack(arrived, len(data)) + data)
            self._file.flush()
            self.records += 1

    def close(self) -> None:
        with self._lock:
            self._file.close()


def read_capture(path: str | PathLike[str]) -> Iterator[CapturedRequest]:
    """The records of a capture file in the order they were written (a truncated last one is
    skipped).

    Raises:
        OSError: the file cannot be read.
        ValueError: a record is not a ``SegmentRequest`` (not a capture file).
    """
    with open(path, "rb") as handle:
        while len(header := handle.read(_HEADER.size)) == _HEADER.size:
            arrived, length = _HEADER.unpack(header)
            data = handle.read(length)
            if len(data) < length:
                return
            request = pb.SegmentRequest()
            try:
                request.ParseFromString(data)
            except Exception as exc:  # protobuf's DecodeError
                raise ValueError(f"{path}: not a pedsam capture file ({exc})") from None
            yield CapturedRequest(arrived, request)
