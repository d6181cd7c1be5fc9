"""Frame sources: one interface over a video file, a camera and a WebRTC track.

A source is an async iterator of :class:`SourceFrame` (a decoded frame plus the moment the
edge captured it), used as an async context manager so that it is closed on every exit path::

    async with CameraSource("0") as source:
        async for item in source:          # item.frame.image: HxWx3 uint8 RGB
            ...

Two kinds of freshness:

- **file** (:class:`FileSource`): decoding runs on a thread, one frame per request; nothing is
  ever dropped, a slow consumer just makes the file play slower.
- **live** (:class:`CameraSource`, :class:`WebRTCSource`): frames arrive at the sender's pace
  into a one-frame :class:`LatestSlot`. When the consumer asks for a frame it gets the newest
  one; every frame overwritten before anyone took it is counted in :attr:`FrameSource.dropped`.

Frame indices count every frame the source captured, taken or dropped, so a gap between two
consecutive indices is the number of frames dropped between them.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import fractions
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import av
import cv2
import numpy as np

from pedsam.stream.errors import MediaError
from pedsam.stream.media.video import Frame, probe_video, read_frames

__all__ = [
    "CameraSource",
    "FileSource",
    "FrameSource",
    "LatestSlot",
    "LimitedSource",
    "PlaybackSource",
    "RecordingSource",
    "SourceFrame",
    "WebRTCSource",
    "WrappedSource",
    "parse_camera",
]

log = logging.getLogger(__name__)

# OpenCV's FFmpeg backend prints stream errors ("Stream ends prematurely") to stderr; a camera
# stream that ends is reported here as the end of the source instead. -8 is AV_LOG_QUIET.
# Read once, when OpenCV first opens a stream; a value the user set is kept.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class SourceFrame:
    """A frame and when the edge captured it.

    ``captured`` is ``time.monotonic()`` seconds at the moment the frame was decoded (file),
    read from the camera, or received from the peer (WebRTC): the start of its
    capture-to-mask latency.
    """

    frame: Frame
    captured: float


class LatestSlot(Generic[T]):
    """A mailbox for one item: :meth:`put` replaces what is there, :meth:`get` waits for one.

    Every item replaced before it was taken counts as dropped. Used from the event loop only;
    producer threads hand items over with ``loop.call_soon_threadsafe(slot.put, item)``.
    """

    def __init__(self) -> None:
        self._item: T | None = None
        self._full = False
        self._ended = False
        self._error: BaseException | None = None
        self._changed = asyncio.Event()
        self.put_count = 0
        self.dropped = 0

    def put(self, item: T) -> None:
        if self._ended:
            return
        if self._full:
            self.dropped += 1
        self._item, self._full = item, True
        self.put_count += 1
        self._changed.set()

    def end(self, error: BaseException | None = None) -> None:
        """No more items; a waiting :meth:`get` returns what is left, then None (or raises)."""
        self._ended = True
        self._error = self._error or error
        self._changed.set()

    async def get(self) -> T | None:
        """The newest item, waiting for one; None once the slot has ended and is empty."""
        while not self._full:
            if self._ended:
                if self._error is not None:
                    raise self._error
                return None
            self._changed.clear()
            await self._changed.wait()
        item, self._item, self._full = self._item, None, False
        return item


class FrameSource(abc.ABC):
    """An async iterator of :class:`SourceFrame` that must be closed (use ``async with``)."""

    kind: str = "source"
    live: bool = False
    _entered: bool = False

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """What the source reads, for logs and the run summary."""

    @property
    def dropped(self) -> int:
        """Frames captured but never handed out (always 0 for a file)."""
        return 0

    @property
    def rate(self) -> fractions.Fraction | None:
        """Nominal frames per second, when the source says."""
        return None

    async def open(self) -> None:
        """Start reading; raises :class:`MediaError` if the source cannot be opened."""

    @abc.abstractmethod
    async def next(self) -> SourceFrame | None:
        """The next frame (the newest one, for a live source), or None at the end."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop reading and release the device or file. Idempotent."""

    async def __aenter__(self) -> FrameSource:
        """Open the source; entering an already open source again keeps it as it is (the run
        that opened it first, before starting workers, and the frame engine both enter it)."""
        if self._entered:
            return self
        try:
            await self.open()
        except BaseException:
            await self.close()
            raise
        self._entered = True
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._entered = False
        await self.close()

    def __aiter__(self) -> AsyncIterator[SourceFrame]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[SourceFrame]:
        while (item := await self.next()) is not None:
            yield item


class WrappedSource(FrameSource):
    """A source that hands out ``inner``'s frames: name, rate, drops, opening and closing are
    ``inner``'s; subclasses change what :meth:`next` does."""

    def __init__(self, inner: FrameSource) -> None:
        self.inner = inner
        self.kind, self.live = inner.kind, inner.live

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def dropped(self) -> int:
        return self.inner.dropped

    @property
    def rate(self) -> fractions.Fraction | None:
        return self.inner.rate

    async def open(self) -> None:
        await self.inner.__aenter__()

    async def next(self) -> SourceFrame | None:
        return await self.inner.next()

    async def close(self) -> None:
        await self.inner.__aexit__(None, None, None)


class LimitedSource(WrappedSource):
    """At most ``limit`` frames of ``inner``, then the end: frames past a run's ``--max-frames``
    are never read, so none of them is embedded (sent to workers) and thrown away, as frames
    read ahead for the pipeline would be."""

    def __init__(self, inner: FrameSource, limit: int) -> None:
        super().__init__(inner)
        self.limit = limit
        self._taken = 0

    async def next(self) -> SourceFrame | None:
        if self._taken >= self.limit:
            return None
        item = await self.inner.next()
        if item is not None:
            self._taken += 1
        return item


class RecordingSource(WrappedSource):
    """``inner``, with every frame it hands out also written, losslessly, to ``path`` (FFV1 in
    Matroska, RGB): the exact frames the edge segmented, e.g. a browser call's for an audit of
    what the workers kept (``pedsam serve --record-calls``, ``pedsam attack-capture``). Frames
    of another size than the first are not recorded (one line in the log says so).

    Writing and finishing run on worker threads and take turns: a call that ends while a frame
    is being written (a browser hanging up) finishes the file after that frame, and a frame that
    comes after the end is not written (FFmpeg aborts the process when one container is encoded
    from two threads at once; a write after the end would start the file over)."""

    def __init__(self, inner: FrameSource, path: str | os.PathLike[str]) -> None:
        super().__init__(inner)
        self.path = os.fspath(path)
        self._container: Any = None
        self._stream: Any = None
        self._warned = False
        self._turn = threading.Lock()
        self._finished = False
        self.recorded = 0

    async def next(self) -> SourceFrame | None:
        item = await self.inner.next()
        if item is not None and item.frame.error is None:
            await asyncio.to_thread(self._write, item.frame.image)
        return item

    def _write(self, image: np.ndarray) -> None:
        with self._turn:
            if not self._finished:
                self._write_one(image)

    def _write_one(self, image: np.ndarray) -> None:
        height, width = image.shape[:2]
        if self._container is None:
            try:
                self._container = av.open(self.path, "w")
            except (OSError, av.error.FFmpegError) as exc:
                raise MediaError(f"cannot record into {self.path!r}: {exc.strerror or exc}") from None
            self._stream = self._container.add_stream("ffv1", rate=25)
            self._stream.width, self._stream.height, self._stream.pix_fmt = width, height, "bgr0"
        elif (self._stream.height, self._stream.width) != (height, width):
            if not self._warned:
                self._warned = True
                log.warning("%s: a %dx%d frame is not recorded (the recording is %dx%d)", self.path, width, height,
                            self._stream.width, self._stream.height)
            return
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24").reformat(format="bgr0")
        try:
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        except (OSError, av.error.FFmpegError) as exc:
            raise MediaError(f"cannot record into {self.path!r}: {exc}") from None
        self.recorded += 1

    def _finish(self) -> None:
        with self._turn:
            self._finished = True
            container, self._container = self._container, None
            if container is not None:
                for packet in self._stream.encode():
                    container.mux(packet)
                container.close()

    async def close(self) -> None:
        try:
            await super().close()
        finally:
            await asyncio.to_thread(self._finish)


class FileSource(FrameSource):
    """Every frame of a video file (PyAV), decoded on a thread when asked for; never drops.

    ``skip_corrupt``: a packet that does not decode gives a frame with ``error`` set in its
    place and reading goes on (a batch run keeps one record per frame of a damaged file).
    """

    kind = "file"
    live = False

    def __init__(self, path: str | os.PathLike[str], *, skip_corrupt: bool = False) -> None:
        self.path = os.fspath(path)
        self.skip_corrupt = skip_corrupt
        self._frames: Iterator[Frame] | None = None
        self._busy: asyncio.Future[Frame | None] | None = None
        self._rate: fractions.Fraction | None = None

    @property
    def name(self) -> str:
        return self.path

    @property
    def rate(self) -> fractions.Fraction | None:
        return self._rate

    async def open(self) -> None:
        info = await asyncio.to_thread(probe_video, self.path)
        self._rate = info.rate
        self._frames = read_frames(self.path, skip_corrupt=self.skip_corrupt)

    async def next(self) -> SourceFrame | None:
        if self._frames is None:
            raise MediaError(f"{self.path}: source is not open")
        self._busy = asyncio.ensure_future(asyncio.to_thread(next, self._frames, None))
        frame = await self._busy
        self._busy = None
        return None if frame is None else SourceFrame(frame=frame, captured=time.monotonic())

    async def close(self) -> None:
        frames, self._frames = self._frames, None
        if self._busy is not None:  # a decode still running on its thread: let it finish first
            with contextlib.suppress(BaseException):
                await asyncio.shield(self._busy)
            self._busy = None
        if frames is not None and hasattr(frames, "close"):
            frames.close()  # closes the container


class ThreadFedSource(FrameSource):
    """A live source fed by a reader thread through a :class:`LatestSlot` (latest frame wins,
    drops counted). Subclasses start the thread in :meth:`open` with :meth:`_start`; the thread
    hands items to the loop with :func:`_call`; :meth:`close` asks it to stop and waits for it."""

    live = True

    def __init__(self, *, stop_timeout: float) -> None:
        self._stop_timeout = stop_timeout
        self._slot: LatestSlot[SourceFrame] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rate: fractions.Fraction | None = None

    @property
    def dropped(self) -> int:
        return self._slot.dropped if self._slot is not None else 0

    @property
    def rate(self) -> fractions.Fraction | None:
        return self._rate

    def _start(self, target: Callable[..., None], *args: Any) -> LatestSlot[SourceFrame]:
        loop = asyncio.get_running_loop()
        self._slot = slot = LatestSlot[SourceFrame]()
        self._thread = threading.Thread(target=target, args=(loop, slot, *args), name=self.name, daemon=True)
        self._thread.start()
        return slot

    async def next(self) -> SourceFrame | None:
        if self._slot is None:
            raise MediaError(f"{self.name}: source is not open")
        return await self._slot.get()

    async def close(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            await asyncio.to_thread(thread.join, self._stop_timeout)
            if thread.is_alive():  # stuck in a blocking read; it releases what it holds on return
                log.warning("%s: reader thread still blocked after %.1f s", self.name, self._stop_timeout)


def _call(loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], *args: Any) -> bool:
    """Run ``fn(*args)`` on the loop from a reader thread; False once the loop is closed."""
    try:
        loop.call_soon_threadsafe(fn, *args)
        return True
    except RuntimeError:  # the loop is closed: nobody is listening any more
        return False


class PlaybackSource(ThreadFedSource):
    """A video file played at its own frame rate, as a camera would deliver it (``--realtime``).

    A reader thread decodes the file and hands each frame to a :class:`LatestSlot` at its
    presentation time: a frame not taken before the next one is due is dropped and counted,
    exactly as with a camera. Playback starts when the first frame is asked for, so the time
    spent starting workers costs no frames. ``captured`` is the moment a frame was due.
    """

    kind = "file"

    def __init__(self, path: str | os.PathLike[str], *, stop_timeout: float = 5.0) -> None:
        super().__init__(stop_timeout=stop_timeout)
        self.path = os.fspath(path)
        self._go = threading.Event()

    @property
    def name(self) -> str:
        return f"{self.path} (real time)"

    async def open(self) -> None:
        info = await asyncio.to_thread(probe_video, self.path)
        self._rate = info.rate
        self._start(self._play)

    def _play(self, loop: asyncio.AbstractEventLoop, slot: LatestSlot[SourceFrame]) -> None:
        frames = read_frames(self.path)
        try:
            while not self._go.wait(0.1):
                if self._stop.is_set():
                    return
            start: float | None = None
            for frame in frames:
                if self._stop.is_set():
                    return
                now = time.monotonic()
                start = now - frame.time if start is None else start
                due = start + frame.time
                if due > now and self._stop.wait(due - now):
                    return
                if not _call(loop, slot.put, SourceFrame(frame=frame, captured=max(due, now))):
                    return
            _call(loop, slot.end)
        except MediaError as exc:
            _call(loop, slot.end, exc)
        finally:
            if hasattr(frames, "close"):
                frames.close()

    async def next(self) -> SourceFrame | None:
        self._go.set()
        return await super().next()


class Capture(Protocol):
    """What :class:`CameraSource` needs of ``cv2.VideoCapture`` (tests inject their own)."""

    def isOpened(self) -> bool: ...
    def read(self) -> tuple[bool, np.ndarray | None]: ...
    def get(self, prop: int) -> float: ...
    def release(self) -> None: ...


def parse_camera(spec: str) -> int | str:
    """``"0"`` -> camera index 0; anything else (``/dev/video2``, a URL) stays a string."""
    text = spec.strip()
    if not text:
        raise MediaError("empty camera: give an index (0), a device path or a URL")
    return int(text) if text.isdigit() else text


def _open_capture(device: int | str) -> Capture:
    capture: Capture = cv2.VideoCapture(device)
    return capture


class CameraSource(ThreadFedSource):
    """Frames from anything OpenCV's ``VideoCapture`` opens: a camera index, a device, a URL.

    A reader thread opens the device, reads frames as fast as they come, converts BGR to RGB
    and hands each to the event loop's :class:`LatestSlot` (latest frame wins, drops counted).
    The thread owns the capture and releases it when it stops; :meth:`close` asks it to stop
    and waits for it.
    """

    kind = "camera"
    live = True

    def __init__(
        self,
        spec: str | int,
        *,
        open_capture: Callable[[int | str], Capture] = _open_capture,
        stop_timeout: float = 5.0,
    ) -> None:
        super().__init__(stop_timeout=stop_timeout)
        self.device = parse_camera(spec) if isinstance(spec, str) else spec
        self._open_capture = open_capture

    @property
    def name(self) -> str:
        return f"camera {self.device}"

    async def open(self) -> None:
        opened: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._start(self._read_loop, opened)
        fps = await opened
        if 0 < fps <= 1000:
            self._rate = fractions.Fraction(fps).limit_denominator(1001)
        log.info("%s open (%.3g fps nominal)", self.name, fps)

    def _read_loop(
        self, loop: asyncio.AbstractEventLoop, slot: LatestSlot[SourceFrame], opened: asyncio.Future[float]
    ) -> None:
        def call(fn: Callable[..., Any], *args: Any) -> bool:
            return _call(loop, fn, *args)

        def settle(result: float | None, error: BaseException | None) -> None:
            if opened.done():
                return
            if error is not None:
                opened.set_exception(error)
            else:
                opened.set_result(result or 0.0)

        try:
            capture = self._open_capture(self.device)
        except Exception as exc:  # OpenCV raises cv2.error for some malformed specs
            call(settle, None, MediaError(f"cannot open camera {self.device}: {exc}"))
            return
        try:
            if not capture.isOpened():
                call(settle, None, MediaError(
                    f"cannot open camera {self.device}: no such device, or not a stream OpenCV can read"
                ))
                return
            call(settle, capture.get(cv2.CAP_PROP_FPS), None)
            index, first = 0, None
            while not self._stop.is_set():
                ok, bgr = capture.read()
                captured = time.monotonic()
                if not ok or bgr is None:
                    break  # device unplugged, or the stream ended
                first = captured if first is None else first
                rgb = np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
                frame = Frame(index=index, pts=None, time=captured - first, image=rgb)
                if not call(slot.put, SourceFrame(frame=frame, captured=captured)):
                    return
                index += 1
            log.info("%s: reader stopped after %d frames", self.name, index)
        except Exception as exc:
            call(slot.end, MediaError(f"camera {self.device} failed: {exc}"))
        finally:
            capture.release()
            call(slot.end)


class VideoTrack(Protocol):
    """What :class:`WebRTCSource` needs of an aiortc video track."""

    kind: str

    async def recv(self) -> Any: ...


class WebRTCSource(FrameSource):
    """Frames of a WebRTC video track (aiortc), newest first: latest frame wins, drops counted.

    A task drains the track as fast as frames arrive (aiortc decodes on its own thread) and
    keeps the newest ``av.VideoFrame``; the conversion to RGB runs on a thread when the frame
    is taken, so dropped frames cost nothing.
    """

    kind = "webrtc"
    live = True

    def __init__(self, track: VideoTrack, *, name: str = "webrtc") -> None:
        self._track = track
        self._name = name
        self._slot: LatestSlot[tuple[Any, int, float]] | None = None
        self._pump: asyncio.Task[None] | None = None
        self._first: float | None = None

    @property
    def name(self) -> str:
        return self._name

    @property
    def dropped(self) -> int:
        return self._slot.dropped if self._slot is not None else 0

    async def open(self) -> None:
        self._slot = LatestSlot()
        self._pump = asyncio.create_task(self._drain(self._slot), name=f"recv {self._name}")

    async def _drain(self, slot: LatestSlot[tuple[Any, int, float]]) -> None:
        from aiortc.mediastreams import MediaStreamError

        index = 0
        try:
            while True:
                av_frame = await self._track.recv()
                slot.put((av_frame, index, time.monotonic()))
                index += 1
        except MediaStreamError:
            slot.end()
        except asyncio.CancelledError:
            slot.end()
            raise
        except Exception as exc:
            slot.end(MediaError(f"{self._name}: receiving video failed: {exc}"))

    async def next(self) -> SourceFrame | None:
        if self._slot is None:
            raise MediaError(f"{self._name}: source is not open")
        item = await self._slot.get()
        if item is None:
            return None
        av_frame, index, captured = item
        image = await asyncio.to_thread(av_frame.to_ndarray, format="rgb24")
        self._first = captured if self._first is None else self._first
        frame = Frame(index=index, pts=av_frame.pts, time=captured - self._first, image=np.ascontiguousarray(image))
        return SourceFrame(frame=frame, captured=captured)

    async def close(self) -> None:
        pump, self._pump = self._pump, None
        if pump is not None:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
