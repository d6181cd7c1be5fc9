"""The frame engine: frames of a source through the split, several in flight, masks in order.

One machine for every run, with a drop policy:

- ``"never"`` (batch, ``pedsam run``): every frame the source yields gets a
  :class:`FrameResult`. A frame that did not decode, or that a worker failure left without an
  embedding, gets a result with an ``error``; after a failure that failover could not absorb,
  every later frame is still read and gets an error result, so no frame is lost.
- ``"latest"`` (live, ``pedsam stream`` and ``serve``): the source keeps only its newest frame
  and counts what it overwrote (:class:`~pedsam.stream.media.sources.LatestSlot`); the engine
  takes a frame only when one of its ``in_flight`` slots is free, so a pipeline slower than
  the camera works on fresh frames and its latency stays bounded. A failure stops the run
  (raised), because a live frame has no record to fill in.

And a keyframe policy (:mod:`pedsam.stream.runs.keyframes`):

- ``all``: every frame goes through SAM. Embeddings do not depend on prompts, so up to
  ``in_flight`` frames are encoded concurrently (while the edge runs a global block of one, the
  workers run segments of others); masks depend on the previous frame's (objects are followed),
  so they are decoded strictly in frame order.
- ``every:N`` and ``adaptive``: only keyframes go through SAM, prompted from each object's
  propagated mask; every other frame's masks are propagated on the edge
  (:class:`~pedsam.stream.core.propagation.MaskPropagator`) and the frame never leaves it. With
  ``"never"`` a keyframe's result waits for SAM. With ``"latest"`` the run does not wait: while
  a keyframe is in flight every frame gets propagated masks, and when SAM's masks come back they
  are propagated forward through the frames that passed meanwhile, so a late keyframe is never
  shown stale.

While the board has no object, frames pass through and nothing leaves the edge. An object
given by its mask is that mask on the first frame, without SAM.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from pedsam.stream.core.prompts import ObjectPrompt
from pedsam.stream.core.scheduling import EdgeScheduler
from pedsam.stream.core.session import EdgeSession, Embedding
from pedsam.stream.core.tracker import ObjectTrack
from pedsam.stream.errors import ExposureBudgetError, MediaError, WorkerError, first_error
from pedsam.stream.media.sources import FrameSource, SourceFrame
from pedsam.stream.media.video import Frame
from pedsam.stream.runs.board import ObjectBoard
from pedsam.stream.runs.keyframed import KeyframedRun
from pedsam.stream.runs.keyframes import KeyframePolicy
from pedsam.stream.runs.tasks import cancel_and_wait
from pedsam.stream.runs.results import FrameResult, ObjectResult
from pedsam.stream.runs.stats import RunStats

__all__ = ["DROP_POLICIES", "DropPolicy", "run_frames"]

DropPolicy = Literal["never", "latest"]
DROP_POLICIES: tuple[DropPolicy, ...] = ("never", "latest")


EVERY_FRAME = KeyframePolicy()


@dataclass(slots=True)
class _Entry:
    item: SourceFrame | MediaError  # the frame, or the decoding failure in its place
    task: asyncio.Task[Embedding] | None  # None: passed through (no objects, an error, given masks)
    given: bool = False  # the first frame of objects given by their masks: shown as given


async def run_frames(
    session: EdgeSession,
    source: FrameSource,
    objects: ObjectBoard | Sequence[ObjectPrompt],
    *,
    drops: DropPolicy = "never",
    in_flight: int = 2,
    stats: RunStats | None = None,
    scheduler: EdgeScheduler | None = None,
    keyframes: KeyframePolicy = EVERY_FRAME,
) -> AsyncGenerator[FrameResult, None]:
    """Segment and follow ``objects`` through ``source``; one :class:`FrameResult` per frame
    taken, in order.

    Args:
        session: an open :class:`EdgeSession`.
        source: where frames come from; opened here if it is not open yet, and closed when the
            run ends (for a :class:`~pedsam.stream.media.sources.FileSource`, give it
            ``skip_corrupt=True`` to keep one result per frame of a damaged file).
        objects: prompts (pixels of the first frame), or an :class:`ObjectBoard` that may
            change while the run goes on.
        drops: ``"never"`` or ``"latest"``, see the module docstring.
        in_flight: frames embedded at once, at least 1.
        stats: updated before each result is yielded.
        scheduler: the stream's own when several streams share ``session``
            (:meth:`EdgeSession.new_scheduler`); default the session's.
        keyframes: which frames go through SAM (see the module docstring); default every one.

    Raises:
        ValueError: ``in_flight`` < 1 or an unknown ``drops``.
        PedsamError: with ``drops="latest"``, the failure that stopped the run.
    """
    if in_flight < 1:
        raise ValueError("in_flight must be at least 1")
    if drops not in DROP_POLICIES:
        raise ValueError(f"drops must be one of {DROP_POLICIES}, not {drops!r}")
    board = objects if isinstance(objects, ObjectBoard) else ObjectBoard(objects)
    if not keyframes.every_frame:
        run = KeyframedRun(session, source, board, drops=drops, policy=keyframes, stats=stats, scheduler=scheduler)
        async with contextlib.aclosing(run.results()) as results:
            async for result in results:
                yield result
        return
    order: asyncio.Queue[_Entry | None] = asyncio.Queue(maxsize=in_flight)
    slots = asyncio.Semaphore(in_flight)
    embedding: set[asyncio.Task[Embedding]] = set()  # every frame still being embedded
    failure: list[str] = []  # "never": the failure every later frame is marked with
    counted_drops = 0  # of the source's drops, those already added to the session's figures

    async def embed(item: SourceFrame) -> Embedding:
        try:
            return await session.embed(item.frame.image, scheduler=scheduler)
        finally:
            slots.release()

    async def produce() -> None:
        first = True
        async with source:
            while True:
                # A slot first, then the frame: a live source is read at its newest frame.
                await slots.acquire()
                try:
                    item: SourceFrame | MediaError | None = await source.next()
                except MediaError as exc:
                    if drops == "latest":
                        raise
                    item = exc  # "never": recorded in the frame's place, then the end
                if item is None:
                    slots.release()
                    break
                if isinstance(item, MediaError) or item.frame.error is not None or failure or not len(board):
                    slots.release()
                    await order.put(_Entry(item, None))
                    if isinstance(item, MediaError):
                        break
                    continue
                height, width = item.frame.image.shape[:2]
                board.check_frame(width, height)
                if first and all(track.initial.mask_only for track in board.tracks()):
                    first = False  # objects given by their masks are shown as given: nothing to send
                    slots.release()
                    await order.put(_Entry(item, None, given=True))
                    continue
                first = False
                task = asyncio.create_task(embed(item))
                embedding.add(task)
                task.add_done_callback(_settled(embedding))
                await order.put(_Entry(item, task))
        await order.put(None)

    producer = asyncio.create_task(produce(), name=f"read {source.name}")
    get: asyncio.Task[_Entry | None] | None = None
    next_index = 0
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
            result = await _result(session, board, entry, next_index, failure, drops)
            next_index = result.frame.index + 1
            session.stats.dropped += source.dropped - counted_drops
            counted_drops = source.dropped
            if stats is not None:
                stats.dropped = source.dropped
                stats.add(result)
            yield result
    finally:
        # Frames still in flight stop here, before the caller can close the session under
        # them; their errors are collected, and our own cancellation is never swallowed.
        queued = [entry.task for entry in _drain(order) if entry.task is not None]
        await cancel_and_wait(get, producer, *embedding, *queued)


async def _result(
    session: EdgeSession,
    board: ObjectBoard,
    entry: _Entry,
    next_index: int,
    failure: list[str],
    drops: DropPolicy,
) -> FrameResult:
    """The masks (or the error) of one frame, decoded after every earlier frame's."""
    item = entry.item
    if isinstance(item, MediaError):  # the frame that failed to decode has no image
        empty = Frame(index=next_index, pts=None, time=0.0, image=np.zeros((0, 0, 3), np.uint8))
        return FrameResult(frame=empty, objects=(), error=str(item), audit=None, latency=0.0)
    frame = item.frame
    if entry.given:
        given = [_given(board, track) for track in board.tracks()]
        return FrameResult(frame=frame, objects=tuple(r for r in given if r is not None), error=None, audit=None,
                           latency=time.monotonic() - item.captured, segmented=True, keyframe=True)
    if entry.task is None:
        error = frame.error if frame.error is not None else failure[0] if failure else None
        return FrameResult(frame=frame, objects=(), error=error, audit=None,
                           latency=time.monotonic() - item.captured)
    try:
        try:
            embedding = await entry.task
        except BaseExceptionGroup as group:
            raise first_error(group) from group
        results: list[ObjectResult] = []
        decoded: list[ObjectTrack] = []
        tracks = board.tracks()
        for track in tracks:
            if not track.history and track.initial.mask_only:  # its first frame: as given
                shown = _given(board, track)
                if shown is not None:
                    results.append(shown)
            else:
                decoded.append(track)
        predictions = await session.decode_objects(embedding, {track.id: track.next_prompt() for track in decoded})
        for track in decoded:
            if track.id not in board:  # removed while its mask was being decoded
                continue
            prediction = predictions[track.id]
            box = track.update(prediction)
            result = ObjectResult(id=track.id, mask=prediction.mask, score=prediction.score, box=box)
            board.record(result)
            results.append(result)
        position = {track.id: k for k, track in enumerate(tracks)}
        results.sort(key=lambda r: position[r.id])  # in the board's order, given ones among them
    except (WorkerError, ExposureBudgetError) as exc:
        if drops == "latest":
            raise
        failure.append(str(exc))
        return FrameResult(frame=frame, objects=(), error=str(exc), audit=None, latency=0.0)
    return FrameResult(frame=frame, objects=tuple(results), error=None, audit=embedding.audit,
                       latency=time.monotonic() - item.captured, segmented=True, keyframe=True)


def _given(board: ObjectBoard, track: ObjectTrack) -> ObjectResult | None:
    """An object given by its mask, on its first frame: the mask itself."""
    mask = track.initial.mask
    assert mask is not None
    box = track.take_mask(mask)
    result = ObjectResult(id=track.id, mask=mask, score=1.0, box=box)
    board.record(result)
    return result


def _settled(running: set[asyncio.Task[Embedding]]) -> Callable[[asyncio.Task[Embedding]], None]:
    """A done-callback: forget the task, and mark its error as seen (the frame's result still
    raises it in order; a run stopped before reaching that frame does not leave it unretrieved)."""

    def settled(task: asyncio.Task[Embedding]) -> None:
        running.discard(task)
        if not task.cancelled():
            task.exception()

    return settled


def _drain(queue: asyncio.Queue[_Entry | None]) -> list[_Entry]:
    entries = []
    while not queue.empty():
        entry = queue.get_nowait()
        if entry is not None:
            entries.append(entry)
    return entries
