"""Drawing masks onto frames and writing the result as a video.

:func:`draw_overlay` is pure: it takes one ``HxWx3 uint8 RGB`` frame and its boolean masks
and returns a new frame with each mask tinted, outlined and optionally labelled, plus an
optional banner (for example ``"UNTRAINED WEIGHTS - masks are not meaningful"``).
:class:`OverlayWriter` encodes such frames into a video file with one output frame per
written frame at a constant rate, so the overlay lines up frame for frame with the input.

Text is drawn with OpenCV's Hershey font, which covers printable ASCII only; any other
character is shown as ``?``.
"""

from __future__ import annotations

import fractions
import os
from collections.abc import Sequence
from types import TracebackType

import av
import cv2
import numpy as np

from pedsam.stream.errors import ConfigError, MediaError
from pedsam.stream.media import video as _video  # noqa: F401  (imported for its side effect: FFmpeg log off)

__all__ = ["PALETTE", "OverlayWriter", "draw_overlay"]

PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75),  # red
    (60, 180, 75),  # green
    (0, 130, 200),  # blue
    (255, 225, 25),  # yellow
    (245, 130, 48),  # orange
    (145, 30, 180),  # purple
    (70, 240, 240),  # cyan
    (240, 50, 230),  # magenta
    (210, 245, 60),  # lime
    (0, 128, 128),  # teal
)
"""Distinct RGB colours; object ``i`` is drawn in ``PALETTE[i % len(PALETTE)]``."""

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_TEXT_RGB = (255, 255, 255)
_BOX_RGB = (0, 0, 0)
_BANNER_DARKEN = 0.25  # the banner strip keeps a quarter of the frame's brightness


def draw_overlay(
    image: np.ndarray,
    masks: Sequence[np.ndarray],
    *,
    labels: Sequence[str] | None = None,
    banner: str | None = None,
    alpha: float = 0.5,
) -> np.ndarray:
    """Return a copy of ``image`` with ``masks`` blended in, outlined and labelled.

    Args:
        image: ``(H, W, 3)`` uint8 RGB. Not modified.
        masks: each ``(H, W)`` bool; mask ``i`` is drawn in ``PALETTE[i % len(PALETTE)]``.
            Later masks are drawn over earlier ones where they overlap.
        labels: one string per mask, drawn in a small dark box at the mask's top-left
            corner (empty masks get no label). None draws no labels.
        banner: one line of text drawn on a darkened strip across the top of the frame,
            shrunk to fit the width. None draws no banner.
        alpha: opacity of the mask colour, 0 (invisible) to 1 (solid).

    Returns:
        A new ``(H, W, 3)`` uint8 RGB array, C-contiguous.

    Raises:
        ValueError: wrong shapes or dtypes, ``len(labels) != len(masks)``, or ``alpha``
            outside ``[0, 1]``.
    """
    _check_image(image)
    height, width = image.shape[:2]
    for i, mask in enumerate(masks):
        if mask.dtype != np.bool_ or mask.shape != (height, width):
            raise ValueError(
                f"mask {i} must be ({height}, {width}) bool, got {mask.shape} {mask.dtype}"
            )
    if labels is not None and len(labels) != len(masks):
        raise ValueError(f"got {len(labels)} labels for {len(masks)} masks")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")

    out = np.array(image, dtype=np.uint8, order="C", copy=True)
    thickness = max(1, round(min(height, width) / 240))
    for i, mask in enumerate(masks):
        colour = PALETTE[i % len(PALETTE)]
        tinted = out[mask].astype(np.float32) * (1.0 - alpha)
        tinted += np.asarray(colour, dtype=np.float32) * alpha
        out[mask] = np.clip(np.rint(tinted), 0, 255).astype(np.uint8)
        contours, _ = cv2.findContours(
            mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
        )
        cv2.drawContours(out, contours, -1, colour, thickness, cv2.LINE_AA)
    if labels is not None:
        for i, (mask, label) in enumerate(zip(masks, labels)):
            rows = np.flatnonzero(mask.any(axis=1))
            cols = np.flatnonzero(mask.any(axis=0))
            if rows.size and label:
                _draw_label(out, label, int(cols[0]), int(rows[0]), PALETTE[i % len(PALETTE)])
    if banner:
        _draw_banner(out, banner)
    return out


def _check_image(image: np.ndarray) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")


def _printable(text: str) -> str:
    """Printable ASCII only; Hershey fonts have no other glyphs."""
    return "".join(c if " " <= c <= "~" else "?" for c in text)


def _draw_label(out: np.ndarray, text: str, x: int, y: int, colour: tuple[int, int, int]) -> None:
    """Draw ``text`` in ``colour`` on a dark box whose lower-left is near ``(x, y)``."""
    height, width = out.shape[:2]
    scale = max(0.35, min(1.0, min(height, width) / 600))
    text = _printable(text)
    (tw, th), base = cv2.getTextSize(text, _FONT, scale, 1)
    pad = 2
    # Above the mask if there is room, else just inside its top edge.
    top = y - th - base - 2 * pad if y - th - base - 2 * pad >= 0 else y
    left = min(max(0, x), max(0, width - tw - 2 * pad))
    bottom, right = top + th + base + 2 * pad, left + tw + 2 * pad
    cv2.rectangle(out, (left, top), (right, bottom), _BOX_RGB, cv2.FILLED)
    cv2.putText(out, text, (left + pad, bottom - base - pad), _FONT, scale, colour, 1, cv2.LINE_AA)


def _draw_banner(out: np.ndarray, text: str) -> None:
    """Darken a strip across the top of ``out`` and write ``text`` on it in white."""
    height, width = out.shape[:2]
    text = _printable(text)
    pad = max(2, height // 120)
    scale = max(0.4, min(1.0, width / 800))
    (tw, th), base = cv2.getTextSize(text, _FONT, scale, 1)
    if tw > width - 2 * pad:  # shrink to fit; below 0.25 Hershey text is unreadable anyway
        scale = max(0.25, scale * (width - 2 * pad) / tw)
        (tw, th), base = cv2.getTextSize(text, _FONT, scale, 1)
    strip = min(height, th + base + 2 * pad)
    out[:strip] = (out[:strip].astype(np.float32) * _BANNER_DARKEN).astype(np.uint8)
    cv2.putText(out, text, (pad, pad + th), _FONT, scale, _TEXT_RGB, 1, cv2.LINE_AA)


class OverlayWriter:
    """Encode ``HxWx3 uint8 RGB`` frames into a video file at a constant frame rate.

    Frame ``i`` (0-based, in write order) gets ``pts = i`` in a time base of ``1 / rate``,
    so a reader sees exactly :attr:`frames_written` frames at ``rate`` frames/s. The
    container follows the file extension (``.mp4``, ``.mkv``, ...); frames are stored as
    yuv420p, which players everywhere accept.

    Odd sizes: yuv420p needs an even width and height, so an odd dimension is padded by
    one pixel on the right or bottom, replicating the edge column or row. The file then
    decodes as :attr:`encoded_width` x :attr:`encoded_height` (e.g. 641x481 -> 642x482);
    the top-left ``width x height`` pixels are the written image.

    Use as a context manager, or call :meth:`close` to flush the encoder; without it the
    file is incomplete.

    Raises (from ``__init__``):
        ConfigError: unknown codec, non-positive size or rate, or an output path whose
            format cannot be guessed or whose directory does not exist.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        width: int,
        height: int,
        rate: fractions.Fraction,
        *,
        codec: str = "libx264",
    ) -> None:
        self.path = os.fspath(path)
        if width <= 0 or height <= 0:
            raise ConfigError(f"overlay size must be positive, got {width}x{height}")
        if rate <= 0:
            raise ConfigError(f"overlay frame rate must be positive, got {rate}")
        self.width, self.height = width, height
        self.encoded_width, self.encoded_height = width + width % 2, height + height % 2
        self.rate = fractions.Fraction(rate)
        self.frames_written = 0
        self._time_base = 1 / self.rate
        self._closed = False
        try:
            encoder = av.codec.Codec(codec, "w")
        except ValueError as exc:  # av.codec.codec.UnknownCodecError
            raise ConfigError(f"unknown video encoder {codec!r} for {self.path}") from exc
        if encoder.type != "video":
            raise ConfigError(f"{codec!r} is not a video encoder (for {self.path})")
        try:
            self._container = av.open(self.path, mode="w")
        except ValueError as exc:
            raise ConfigError(f"{self.path}: cannot tell the video format from the name") from exc
        except (av.error.FFmpegError, OSError) as exc:
            raise ConfigError(f"{self.path}: cannot create video: {_reason(exc)}") from exc
        try:
            x26x = codec in ("libx264", "libx265")
            options = {"preset": "ultrafast", "crf": "23"} if x26x else {}
            video_stream = self._container.add_stream(codec, rate=self.rate, options=options)
            if not isinstance(video_stream, av.video.stream.VideoStream):  # checked above
                raise ValueError(f"{codec!r} did not make a video stream")
            video_stream.width, video_stream.height = self.encoded_width, self.encoded_height
            video_stream.pix_fmt = "yuv420p"
            video_stream.codec_context.time_base = self._time_base
            self._stream = video_stream
            # Writes the header now, so a bad directory fails here, not at the first frame.
            self._container.start_encoding()
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            # E.g. a container that cannot hold the codec, or options the encoder rejects.
            self._closed = True
            try:
                self._container.close()
            except (av.error.FFmpegError, OSError):
                pass  # already failing; the first error is the one to report
            raise ConfigError(f"{self.path}: cannot create video: {_reason(exc)}") from exc

    def write(self, image: np.ndarray) -> None:
        """Encode one frame: ``(height, width, 3)`` uint8 RGB, as given to ``__init__``.

        Raises:
            ValueError: wrong shape or dtype, or the writer is closed.
            MediaError: the encoder or the file system failed.
        """
        if self._closed:
            raise ValueError(f"{self.path}: overlay writer is closed")
        _check_image(image)
        if image.shape[:2] != (self.height, self.width):
            raise ValueError(
                f"frame must be ({self.height}, {self.width}, 3), got {image.shape}"
            )
        if (self.encoded_height, self.encoded_width) != (self.height, self.width):
            pad_rows, pad_cols = self.encoded_height - self.height, self.encoded_width - self.width
            pad = ((0, pad_rows), (0, pad_cols), (0, 0))
            image = np.pad(image, pad, mode="edge")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        frame.pts = self.frames_written
        frame.time_base = self._time_base
        try:
            self._container.mux(self._stream.encode(frame))
        except (av.error.FFmpegError, OSError) as exc:
            raise MediaError(
                f"{self.path}: encoding failed at frame {self.frames_written}: {_reason(exc)}"
            ) from exc
        self.frames_written += 1

    def close(self) -> None:
        """Flush the encoder and close the file. Idempotent.

        Raises:
            MediaError: flushing or closing failed (the file is then incomplete).
        """
        if self._closed:
            return
        self._closed = True
        try:
            self._container.mux(self._stream.encode(None))
        except (av.error.FFmpegError, OSError) as exc:
            raise MediaError(f"{self.path}: flushing the encoder failed: {_reason(exc)}") from exc
        finally:
            try:
                self._container.close()
            except (av.error.FFmpegError, OSError) as exc:
                raise MediaError(f"{self.path}: closing failed: {_reason(exc)}") from exc

    def __enter__(self) -> OverlayWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _reason(exc: BaseException) -> str:
    """One line describing a library exception."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())
