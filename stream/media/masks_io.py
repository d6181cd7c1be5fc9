"""Masks as COCO run-length encodings, and per-frame mask records as JSON Lines.

A mask on disk is COCO's compressed RLE, ``{"size": [h, w], "counts": "<ascii>"}``, the
format ``pycocotools.mask`` reads and writes: runs are counted down the columns (Fortran
order), starting with a run of zeros. :func:`encode_rle` and :func:`decode_rle` convert
between that and an ``(H, W)`` bool array.

A run's masks go to a JSON Lines file, one record (one JSON object) per input frame, in
the order written. The record's fields are the caller's business (frame index, time, the
objects' RLEs and scores, or an error entry); this module only guarantees the framing:
each record is written as one complete line and flushed to the operating system before
:meth:`MaskRecordWriter.write` returns, so a crash of the process leaves whole lines.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from types import TracebackType
from typing import IO, Any

import numpy as np
import pycocotools.mask as coco_mask  # type: ignore[import-untyped,unused-ignore]

from pedsam.stream.errors import ConfigError, MediaError

__all__ = ["MaskRecordWriter", "decode_rle", "encode_rle", "read_mask", "read_records"]


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """Encode an ``(H, W)`` bool mask as COCO compressed RLE.

    Returns:
        ``{"size": [H, W], "counts": str}`` with plain ``int`` sizes and ASCII counts,
        ready for ``json.dumps``.

    Raises:
        ValueError: ``mask`` is not a 2-D bool array.
    """
    if mask.ndim != 2 or mask.dtype != np.bool_:
        raise ValueError(f"mask must be (H, W) bool, got {mask.shape} {mask.dtype}")
    encoded = coco_mask.encode(np.asfortranarray(mask, dtype=np.uint8))
    counts = encoded["counts"]
    return {
        "size": [int(mask.shape[0]), int(mask.shape[1])],
        "counts": counts.decode("ascii") if isinstance(counts, bytes) else str(counts),
    }


def decode_rle(rle: Mapping[str, Any]) -> np.ndarray:
    """Decode a COCO RLE into an ``(H, W)`` bool mask, C-contiguous.

    Accepts compressed RLE (``counts`` as str or bytes, what :func:`encode_rle` writes)
    and uncompressed RLE (``counts`` as a list of run lengths). Decoding is done here
    rather than by ``pycocotools.mask.decode``, which emits a DeprecationWarning on every
    call under NumPy 2 and does not check that the runs cover the mask exactly.

    Raises:
        ValueError: missing or malformed ``size``/``counts``, or runs that do not add up
            to ``H * W``.
    """
    size = rle.get("size")
    counts = rle.get("counts")
    if (
        not isinstance(size, (list, tuple))
        or len(size) != 2
        or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in size)
    ):
        raise ValueError(f"RLE 'size' must be [height, width] of non-negative ints, got {size!r}")
    height, width = int(size[0]), int(size[1])
    if isinstance(counts, list):
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in counts):
            raise ValueError("uncompressed RLE runs must be non-negative ints")
        runs = counts
    elif isinstance(counts, (str, bytes)):
        try:
            text = counts.encode("ascii") if isinstance(counts, str) else counts
        except UnicodeEncodeError:
            raise ValueError("RLE counts string must be ASCII") from None
        runs = _runs_from_string(text)
    else:
        kind = type(counts).__name__
        raise ValueError(f"RLE 'counts' must be a string or a list of ints, got {kind}")
    if sum(runs) != height * width:
        raise ValueError(f"RLE runs cover {sum(runs)} pixels, not {height}x{width}")
    # Runs alternate background, foreground, ... starting with background.
    values = np.arange(len(runs)) % 2 == 1
    flat = np.repeat(values, np.asarray(runs, dtype=np.int64))
    return np.ascontiguousarray(flat.reshape((height, width), order="F"))


def _runs_from_string(counts: bytes) -> list[int]:
    """Run lengths from COCO's compressed counts string (``rleFrString`` in maskApi.c).

    Each run is a little-endian sequence of 6-bit characters offset by 48: five value bits
    and a continuation bit (0x20); bit 0x10 of the last character is the sign. From the
    third run on, a run is stored as its difference from the run two places before.
    """
    runs: list[int] = []
    pos = 0
    while pos < len(counts):
        value, shift, more = 0, 0, True
        while more:
            if pos >= len(counts):
                raise ValueError("RLE counts string ends inside a run")
            c = counts[pos] - 48
            if not 0 <= c < 64:
                raise ValueError(f"RLE counts string has an invalid character at {pos}")
            value |= (c & 0x1F) << (5 * shift)
            more = bool(c & 0x20)
            pos += 1
            shift += 1
            if not more and c & 0x10:
                value |= -1 << (5 * shift)
        if len(runs) > 2:
            value += runs[-2]
        if value < 0:
            raise ValueError("RLE counts string holds a negative run")
        runs.append(value)
    return runs


def _to_json(value: object) -> object:
    """``json.dumps`` fallback: numpy scalars become Python numbers; arrays are refused."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        raise TypeError(
            f"cannot write a {value.shape} array into a record; encode masks with encode_rle"
        )
    raise TypeError(f"cannot write a {type(value).__name__} into a record")


class MaskRecordWriter:
    """Append records to a JSON Lines file, one line per record, flushed per line.

    The file is created (or truncated) when the writer is constructed and written as
    UTF-8. Each record is serialised as strict JSON on one line (numpy scalars are
    converted to Python numbers; NaN and infinity are refused, as JSON has neither), then
    written and flushed in one go, so after a crash of the process the file holds whole
    lines only (``flush`` hands data to the OS; it does not ``fsync``, so a power cut can
    still lose the tail).

    Raises (from ``__init__``):
        ConfigError: the file cannot be created (missing directory, permissions, ...).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self.records_written = 0
        try:
            self._file: IO[str] | None = open(self.path, "w", encoding="utf-8", newline="\n")
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise ConfigError(f"{self.path}: cannot create mask file: {reason}") from exc

    def write(self, record: Mapping[str, Any]) -> None:
        """Write one record as one line and flush it.

        Raises:
            ValueError: the writer is closed, or the record holds NaN or infinity.
            TypeError: the record holds something JSON cannot represent (e.g. an array;
                masks must go through :func:`encode_rle` first).
            OSError: the file system refused the write (disk full, ...).
        """
        if self._file is None:
            raise ValueError(f"{self.path}: mask record writer is closed")
        # Serialise fully before writing anything, so a bad record leaves no partial line.
        line = json.dumps(
            dict(record), allow_nan=False, default=_to_json, ensure_ascii=False,
            separators=(",", ":"),
        )
        self._file.write(line + "\n")
        self._file.flush()
        self.records_written += 1

    def close(self) -> None:
        """Close the file. Idempotent."""
        if self._file is not None:
            file, self._file = self._file, None
            file.close()

    def __enter__(self) -> MaskRecordWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def read_records(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read every record of a JSON Lines mask file, in file order.

    Blank lines are skipped. A last line without its newline that is not valid JSON is
    the trace of a write torn by a crash and is skipped too; any other invalid line is an
    error.

    Raises:
        MediaError: the file is missing or unreadable.
        ValueError: a line (other than a torn last line) is not a JSON object.
    """
    name = os.fspath(path)
    try:
        with open(name, encoding="utf-8", newline="\n") as file:
            lines = file.read().split("\n")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise MediaError(f"{name}: cannot read mask records: {reason}") from exc
    # After split, the final element is "" when the file ends with a newline, and the
    # unterminated tail otherwise.
    records: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines):
                break  # torn last line
            raise ValueError(f"{name}:{number}: not valid JSON: {exc.msg}") from exc
        if not isinstance(record, dict):
            raise ValueError(f"{name}:{number}: record is a {type(record).__name__}, not an object")
        records.append(record)
    return records


def read_mask(path: str | os.PathLike[str]) -> np.ndarray:
    """An object's mask from an image file: its non-zero pixels, ``(H, W)`` bool.

    Any format PIL reads; colour images count a pixel when any channel is non-zero.

    Raises:
        MediaError: missing, unreadable, or with no non-zero pixel.
    """
    import PIL.Image

    name = os.fspath(path)
    try:
        with PIL.Image.open(name) as image:
            array = np.asarray(image)
    except (OSError, ValueError) as exc:
        raise MediaError(f"mask {name!r} cannot be read: {exc}") from None
    mask = array.any(axis=-1) if array.ndim == 3 else array != 0
    if not mask.any():
        raise MediaError(f"mask {name!r} marks no pixel: the object is its non-zero pixels")
    return np.ascontiguousarray(mask)
