"""The live pipeline: frames from a :mod:`pedsam.stream.media.sources` source, several in flight, masks in order.

:func:`run_live` takes a frame from the source only when one of its ``in_flight`` slots is
free, so a live source that produces faster than the pipeline consumes is always read at its
newest frame (the source counts what it overwrote) and latency stays bounded instead of
growing; a file source is read frame by frame and loses nothing. Embeddings of the frames in
flight are computed concurrently (while the edge runs a global block of one frame, the
workers run segments of others); masks are decoded strictly in frame order, because each
object is prompted from its mask in the previous frame.

The objects followed live on an :class:`ObjectBoard` that may change at any time (a click
adds one, the page removes one). While the board is empty, frames pass straight through and
nothing leaves the edge.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import statistics
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pedsam.stream.core.prompts import ObjectPrompt
from pedsam.stream.core.scheduling import EdgeScheduler
from pedsam.stream.core.session import EdgeSession, Embedding
from pedsam.stream.core.tracker import ObjectTrack
from pedsam.stream.errors import PedsamError
from pedsam.stream.media.overlay import PALETTE
from pedsam.stream.media.sources import FrameSource, SourceFrame
from pedsam.stream.runs.pipeline import FrameResult, ObjectResult

__all__ = ["LiveStats", "ObjectBoard", "run_live"]


@dataclass
class _Entry:
    item: SourceFrame
    task: asyncio.Task[Embedding] | None  # None: nothing to segment, the frame passes through


class ObjectBoard:
    """The objects a live run follows, in the order they were added; ids are never reused.

    Object ``i`` of :meth:`tracks` (its position, not its id) is drawn in
    ``PALETTE[i % len(PALETTE)]``, as :func:`pedsam.stream.media.overlay.draw_overlay` does.
    """

    def __init__(self, prompts: Sequence[ObjectPrompt] = ()) -> None:
        self._tracks: dict[int, ObjectTrack] = {}
        self._last: dict[int, ObjectResult] = {}
        self._next_id = 0
        self._unchecked: set[int] = set()  # given before any frame was seen: checked on the first
        self.version = 0  # bumped on every add or remove, so a listener can tell it changed
        for prompt in prompts:
            self.add(prompt)

    def __len__(self) -> int:
        return len(self._tracks)

    def add(self, prompt: ObjectPrompt, *, frame_size: tuple[int, int] | None = None) -> int:
        """Follow a new object from ``prompt`` (pixels of the next frame); returns its id.

        ``frame_size`` is (W, H); when given, a prompt outside it raises PromptError.
        """
        object_id = self._next_id
        if frame_size is not None:
            prompt.check_inside(*frame_size)
        else:
            self._unchecked.add(object_id)
        self._next_id += 1
        self._tracks[object_id] = ObjectTrack(id=object_id, initial=prompt)
        self.version += 1
        return object_id

    def check_frame(self, width: int, height: int) -> None:
        """Raise PromptError if a prompt given without a frame size lies outside a WxH frame."""
        for object_id in sorted(self._unchecked):
            track = self._tracks.get(object_id)
            if track is not None:
                track.initial.check_inside(width, height)
        self._unchecked.clear()

    def remove(self, object_id: int) -> bool:
        """Stop following an object; False if there is no such object."""
        if self._tracks.pop(object_id, None) is None:
            return False
        self._last.pop(object_id, None)
        self.version += 1
        return True

    def clear(self) -> None:
        if self._tracks:
            self._tracks.clear()
            self._last.clear()
            self.version += 1

    def tracks(self) -> list[ObjectTrack]:
        return list(self._tracks.values())

    def __contains__(self, object_id: int) -> bool:
        return object_id in self._tracks

    def record(self, result: ObjectResult) -> None:
        if result.id in self._tracks:
            self._last[result.id] = result

    def describe(self) -> list[dict[str, Any]]:
        """JSON-ready list: id, colour (``#rrggbb``), last score, mask area (pixels), box."""
        out = []
        for position, (object_id, track) in enumerate(self._tracks.items()):
            r, g, b = PALETTE[position % len(PALETTE)]
            last = self._last.get(object_id)
            out.append(
                {
                    "id": object_id,
                    "colour": f"#{r:02x}{g:02x}{b:02x}",
                    "score": round(last.score, 4) if last else None,
                    "area": int(last.mask.sum()) if last else None,
                    "box": [round(v, 1) for v in last.box] if last and last.box else None,
                    "frames_lost": track.frames_lost,
                }
            )
        return out


class LiveStats:
    """Running figures of a live run: frames processed and dropped, fps, latency p50/p95.

    Latency is capture-to-mask: from :attr:`SourceFrame.captured` to the frame's masks being
    decoded, in seconds. ``fps`` is over the whole run; ``recent_fps`` over the last
    ``window`` seconds, for a live display.
    """

    def __init__(self, *, window: float = 3.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.started = clock()
        self.processed = 0
        self.segmented = 0  # processed frames that had objects to segment
        self.dropped = 0
        self.latencies: list[float] = []
        self._recent: deque[float] = deque()
        self._window = window

    def add(self, latency: float, *, segmented: bool) -> None:
        now = self._clock()
        self.processed += 1
        if segmented:
            self.segmented += 1
            self.latencies.append(latency)
        self._recent.append(now)
        while self._recent and self._recent[0] < now - self._window:
            self._recent.popleft()

    @property
    def seconds(self) -> float:
        return self._clock() - self.started

    @property
    def fps(self) -> float:
        seconds = self.seconds
        return self.processed / seconds if seconds > 0 else 0.0

    @property
    def recent_fps(self) -> float:
        if len(self._recent) < 2:
            return 0.0
        span = self._recent[-1] - self._recent[0]
        return (len(self._recent) - 1) / span if span > 0 else 0.0

    def percentile(self, q: float, last: int | None = None) -> float | None:
        """The q-th percentile (0..100, nearest rank) of segmented frames' latency, seconds."""
        values = sorted(self.latencies[-last:] if last else self.latencies)
        if not values:
            return None
        rank = max(0, min(len(values) - 1, math.ceil(q / 100 * len(values)) - 1))
        return values[rank]

    def to_json(self, *, last: int | None = None) -> dict[str, Any]:
        """The run's figures; with ``last``, latency over the last ``last`` segmented frames
        (what a live display shows, and cheap however long the run)."""
        p50, p95 = self.percentile(50, last), self.percentile(95, last)
        latencies = self.latencies[-last:] if last else self.latencies
        return {
            "frames_processed": self.processed,
            "frames_segmented": self.segmented,
            "frames_dropped": self.dropped,
            "seconds": round(self.seconds, 3),
            "fps": round(self.fps, 3),
            "latency_p50_s": round(p50, 4) if p50 is not None else None,
            "latency_p95_s": round(p95, 4) if p95 is not None else None,
            "latency_mean_s": round(statistics.fmean(latencies), 4) if latencies else None,
        }

    def line(self) -> str:
        """One status line, e.g. ``123 frames, 4 dropped, 7.9 fps, latency p50 0.21 s p95 0.30 s``."""
        p50, p95 = self.percentile(50, last=100), self.percentile(95, last=100)
        latency = f"latency p50 {p50:.3f} s p95 {p95:.3f} s" if p50 is not None and p95 is not None else "latency -"
        return f"{self.processed} frames, {self.dropped} dropped, {self.recent_fps:.1f} fps, {latency}"


def _first_pedsam_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first PedsamError inside a (nested) exception group, else the group itself."""
    for exc in group.exceptions:
        if isinstance(exc, PedsamError):
            return exc
        if isinstance(exc, BaseExceptionGroup):
            found = _first_pedsam_error(exc)
            if found is not exc:
                return found
    return group


async def run_live(
    session: EdgeSession,
    source: FrameSource,
    board: ObjectBoard,
    *,
    in_flight: int = 2,
    stats: LiveStats | None = None,
    scheduler: EdgeScheduler | None = None,
) -> AsyncGenerator[FrameResult, None]:
    """Segment the objects on ``board`` in every frame ``source`` hands out, in frame order.

    ``source`` must be open (the caller closes it). Yields one :class:`FrameResult` per frame
    taken from the source, with ``latency`` from capture to masks; frames taken while the
    board was empty carry no objects and were not sent to any worker. ``stats``, when given,
    is updated before each result is yielded. ``scheduler`` is the stream's own when several
    streams share ``session`` (:meth:`EdgeSession.new_scheduler`). A worker or source failure
    raises (a live run stops; there is no frame record to fill in).
    """
    if in_flight < 1:
        raise ValueError("in_flight must be at least 1")
    order: asyncio.Queue[_Entry | None] = asyncio.Queue(maxsize=in_flight)
    slots = asyncio.Semaphore(in_flight)
    embedding: set[asyncio.Task[Embedding]] = set()  # every frame still being embedded
    counted_drops = 0  # of the source's drops, those already added to the session's figures

    async def embed(item: SourceFrame) -> Embedding:
        try:
            return await session.embed(item.frame.image, scheduler=scheduler)
        finally:
            slots.release()

    async def produce() -> None:
        while True:
            # A slot first, then the frame: a live source is read at its newest frame.
            await slots.acquire()
            item = await source.next()
            if item is None:
                slots.release()
                break
            if len(board):
                height, width = item.frame.image.shape[:2]
                board.check_frame(width, height)
                task = asyncio.create_task(embed(item))
                embedding.add(task)
                task.add_done_callback(embedding.discard)
                await order.put(_Entry(item, task))
            else:
                slots.release()
                await order.put(_Entry(item, None))
        await order.put(None)

    producer = asyncio.create_task(produce(), name=f"read {source.name}")
    get: asyncio.Task[_Entry | None] | None = None
    try:
        while True:
            get = asyncio.create_task(order.get())
            await asyncio.wait({get, producer}, return_when=asyncio.FIRST_COMPLETED)
            if not get.done():
                get.cancel()
                producer.result()  # the producer failed: raise its error
                continue
            entry = get.result()
            if entry is None:
                break
            item = entry.item
            results: list[ObjectResult] = []
            audit = None
            if entry.task is not None:
                try:
                    frame_embedding = await entry.task
                except BaseExceptionGroup as group:  # the encoder's task group: say what failed
                    raise _first_pedsam_error(group) from group
                audit = frame_embedding.audit
                for track in board.tracks():
                    prompt, mask_input = track.next_prompt()
                    prediction = await session.decode(frame_embedding, prompt, mask_input=mask_input)
                    if track.id not in board:  # removed while its mask was being decoded
                        continue
                    box = track.update(prediction)
                    result = ObjectResult(id=track.id, mask=prediction.mask, score=prediction.score, box=box)
                    board.record(result)
                    results.append(result)
            latency = time.monotonic() - item.captured
            session.stats.dropped += source.dropped - counted_drops
            counted_drops = source.dropped
            if stats is not None:
                stats.dropped = source.dropped
                stats.add(latency, segmented=entry.task is not None)
            yield FrameResult(
                frame=item.frame, objects=tuple(results), error=None, audit=audit, latency=latency
            )
    finally:
        if get is not None:
            get.cancel()
        producer.cancel()
        with contextlib.suppress(asyncio.CancelledError, PedsamError):
            await producer
        # Frames still in flight (queued, or made by a producer stopped before queueing them)
        # stop here, before the caller can close the session under them; queued frames that
        # already failed have their errors collected, so none is left unretrieved.
        queued = []
        while not order.empty():
            entry = order.get_nowait()
            if entry is not None and entry.task is not None:
                queued.append(entry.task)
        for task in {*embedding, *queued}:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
