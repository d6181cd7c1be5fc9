"""Reading video files and still images into RGB frames.

The edge's file source. :func:`probe_video` describes a video without decoding it,
:func:`read_frames` decodes it frame by frame, :func:`read_image` loads one still image.
Every image handed out is ``HxWx3 uint8 RGB``, C-contiguous.

Failures come out as :class:`~pedsam.stream.errors.MediaError` with one line that names the file
and the problem; PyAV, FFmpeg, OS and PIL exceptions are translated here and chained as
``__cause__``. FFmpeg's own log output is switched off when this module is imported
(``av.logging.set_level(None)``) so that a damaged file does not fill stderr; code that
wants FFmpeg's messages can call ``av.logging.set_level`` again afterwards.
"""

from __future__ import annotations

import fractions
import os
from collections.abc import Iterator
from dataclasses import dataclass

import av
import av.logging
import numpy as np
import PIL.Image

from pedsam.stream.errors import MediaError

__all__ = ["Frame", "VideoInfo", "probe_video", "read_frames", "read_image"]

# None disables FFmpeg's log callback entirely. Any other level would forward messages to
# Python logging, whose last-resort handler prints warnings and errors to stderr.
av.logging.set_level(None)

_MediaPath = str | os.PathLike[str]


@dataclass(frozen=True, slots=True)
class VideoInfo:
    """What the container says about its first video stream.

    Attributes:
        path: the file, as given (``os.fspath``).
        width: frame width in pixels, as decoded.
        height: frame height in pixels, as decoded.
        rate: frames per second; the stream's average rate, else FFmpeg's guessed rate.
        frame_count: frames according to the container, or None where the container does
            not record a count (Matroska, MPEG-TS, ...). It is metadata, not a promise:
            :func:`read_frames` is the authority on how many frames actually decode.
        codec: FFmpeg's decoder name, e.g. ``"h264"``, ``"mjpeg"``.
    """

    path: str
    width: int
    height: int
    rate: fractions.Fraction
    frame_count: int | None
    codec: str


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded video frame.

    Attributes:
        index: 0-based position in presentation order (the decoder's output order, after
            B-frame reordering).
        pts: presentation timestamp in the stream's ``time_base`` units, or None if the
            file carries none.
        time: presentation time in seconds, ``pts * time_base``; ``index / rate`` when
            ``pts`` is missing.
        image: ``(H, W, 3)`` uint8 RGB, C-contiguous, owned by this frame; ``(0, 0, 3)`` when
            the frame could not be decoded.
        error: why the frame could not be decoded (``read_frames(..., skip_corrupt=True)``),
            or None for a good frame.
    """

    index: int
    pts: int | None
    time: float
    image: np.ndarray
    error: str | None = None


def probe_video(path: _MediaPath) -> VideoInfo:
    """Describe the first video stream of ``path`` without decoding any frame.

    Raises:
        MediaError: the file is missing, a directory, not a readable container, has no
            video stream, or the stream has no size or frame rate.
    """
    name = os.fspath(path)
    container = _open(name)
    try:
        stream = _video_stream(container, name)
        return _describe(stream, name)
    finally:
        container.close()


def read_frames(path: _MediaPath, *, skip_corrupt: bool = False) -> Iterator[Frame]:
    """Yield every frame of the first video stream of ``path``, in presentation order.

    A generator: the file is opened when iteration starts, so opening errors surface at
    the first ``next()``. The container is closed in every case: when the stream ends,
    when decoding fails, and when the consumer stops early (``break``, ``close()``, or
    the generator being garbage-collected).

    Frames that decode before a corrupt packet are yielded; at the corrupt packet the
    generator raises :class:`MediaError` whose message carries the index of the first
    frame that could not be decoded, so a caller can record an error for the rest. With
    ``skip_corrupt`` it instead yields a frame with an empty image and ``error`` set in place
    of the packet that failed, and goes on decoding the packets after it (so a batch run keeps
    one record per frame of the file).

    Raises:
        MediaError: as for :func:`probe_video`, or on a decoding failure mid-stream.
    """
    name = os.fspath(path)
    container = _open(name)
    try:
        stream = _video_stream(container, name)
        info = _describe(stream, name)
        time_base = stream.time_base
        index = 0
        packets = container.demux(stream)
        while True:
            # Only library calls sit in the try blocks: exceptions thrown into the generator
            # at ``yield`` (GeneratorExit) must pass through untouched.
            try:
                packet = next(packets)
            except StopIteration:
                return
            except (av.error.FFmpegError, OSError) as exc:  # the container itself is broken
                raise MediaError(f"{name}: reading failed at frame {index}: {_reason(exc)}") from exc
            try:
                av_frames = packet.decode()
            except (av.error.FFmpegError, OSError) as exc:
                message = f"{name}: decoding failed at frame {index}: {_reason(exc)}"
                if not skip_corrupt:
                    raise MediaError(message) from exc
                seconds = float(packet.pts * time_base) if packet.pts is not None and time_base else index / info.rate
                yield Frame(index=index, pts=packet.pts, time=float(seconds),
                            image=np.zeros((0, 0, 3), np.uint8), error=message)
                index += 1
                continue
            for av_frame in av_frames:
                pts = av_frame.pts
                if pts is not None and time_base is not None:
                    seconds = float(pts * time_base)
                else:
                    seconds = float(index / info.rate)
                image = np.ascontiguousarray(av_frame.to_ndarray(format="rgb24"))
                yield Frame(index=index, pts=pts, time=seconds, image=image)
                index += 1
    finally:
        container.close()


def read_image(path: _MediaPath) -> np.ndarray:
    """Load a still image as ``(H, W, 3)`` uint8 RGB, C-contiguous.

    Any format PIL reads; palette, greyscale, CMYK and alpha images are converted with
    ``convert("RGB")`` (alpha is dropped, not composited).

    Raises:
        MediaError: the file is missing, a directory, or not an image PIL can decode.
    """
    name = os.fspath(path)
    try:
        with PIL.Image.open(name) as img:
            rgb = img.convert("RGB")
    except FileNotFoundError as exc:
        raise MediaError(f"{name}: no such file") from exc
    except IsADirectoryError as exc:
        raise MediaError(f"{name}: is a directory, not an image") from exc
    except PIL.UnidentifiedImageError as exc:
        raise MediaError(f"{name}: not an image format PIL can read") from exc
    except PIL.Image.DecompressionBombError as exc:
        raise MediaError(f"{name}: image too large to decode safely: {_reason(exc)}") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        # PIL reports truncated or damaged data as OSError, and some plugins as
        # ValueError or SyntaxError.
        raise MediaError(f"{name}: unreadable image: {_reason(exc)}") from exc
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))


def _open(name: str) -> av.container.InputContainer:
    """Open ``name`` for reading, translating every failure into MediaError."""
    if os.path.isdir(name):
        # FFmpeg would report EISDIR too, but only after probing; say it plainly.
        raise MediaError(f"{name}: is a directory, not a video")
    try:
        return av.open(name, mode="r")
    except FileNotFoundError as exc:
        raise MediaError(f"{name}: no such file") from exc
    except PermissionError as exc:
        raise MediaError(f"{name}: permission denied") from exc
    except av.error.InvalidDataError as exc:
        raise MediaError(
            f"{name}: not a readable video (invalid data: wrong format or truncated)"
        ) from exc
    except (av.error.FFmpegError, OSError) as exc:
        raise MediaError(f"{name}: cannot open video: {_reason(exc)}") from exc


def _video_stream(
    container: av.container.InputContainer, name: str
) -> av.video.stream.VideoStream:
    """Return the first video stream, or raise MediaError if there is none."""
    if not container.streams:
        raise MediaError(f"{name}: not a readable video (no streams: wrong format or truncated)")
    if not container.streams.video:
        kinds = ", ".join(sorted({str(s.type) for s in container.streams}))
        raise MediaError(f"{name}: has no video stream (found {kinds} streams)")
    return container.streams.video[0]


def _describe(stream: av.video.stream.VideoStream, name: str) -> VideoInfo:
    """Build a VideoInfo from an opened stream; MediaError if size or rate is unknown."""
    width, height = stream.width, stream.height
    if width <= 0 or height <= 0:
        raise MediaError(f"{name}: video stream has no frame size")
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate:
        raise MediaError(f"{name}: video stream has no frame rate")
    frame_count = stream.frames if stream.frames > 0 else None
    codec = stream.codec_context.name
    return VideoInfo(
        path=name,
        width=width,
        height=height,
        rate=fractions.Fraction(rate),
        frame_count=frame_count,
        codec=codec,
    )


def _reason(exc: BaseException) -> str:
    """One line describing a library exception, without errno noise or newlines."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())
