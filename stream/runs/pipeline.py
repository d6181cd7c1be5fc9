"""Moving frames through the split encoder with several in flight, results in frame order.

Embeddings do not depend on prompts, so up to ``in_flight`` frames are encoded concurrently
(while the edge runs a global block of one, the workers run segments of others). Mask decoding
does depend on the previous frame's masks (objects are followed from frame to frame), so it
runs strictly in frame order as embeddings complete. A batch run never drops a frame: every
frame yields a :class:`FrameResult`, with masks or with an explicit error.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from pedsam.stream.core.encoder import FrameAudit
from pedsam.stream.core.prompts import ObjectPrompt
from pedsam.stream.core.session import EdgeSession, Embedding
from pedsam.stream.core.tracker import ObjectTrack
from pedsam.stream.errors import ExposureBudgetError, MediaError, PedsamError, WorkerError
from pedsam.stream.media.video import Frame


@dataclass(frozen=True, slots=True)
class ObjectResult:
    """One object in one frame: (H, W) bool mask at frame size, SAM's score, XYXY box or None."""

    id: int
    mask: np.ndarray
    score: float
    box: tuple[float, float, float, float] | None


@dataclass(frozen=True, slots=True)
class FrameResult:
    """What a frame produced: objects (masks), or an error saying why it has none."""

    frame: Frame
    objects: tuple[ObjectResult, ...]
    error: str | None
    audit: FrameAudit | None
    latency: float  # seconds from the frame entering the pipeline to its masks


async def _frames_async(frames: Iterable[Frame]) -> AsyncIterator[Frame | MediaError]:
    """Decode on a thread; a MediaError mid-stream is yielded (then iteration stops)."""
    iterator: Iterator[Frame] = iter(frames)
    sentinel = object()
    while True:
        try:
            item = await asyncio.to_thread(next, iterator, sentinel)
        except MediaError as exc:
            yield exc
            return
        if item is sentinel:
            return
        assert isinstance(item, Frame)
        yield item


async def run_frames(
    session: EdgeSession,
    frames: Iterable[Frame],
    objects: Sequence[ObjectPrompt],
    *,
    in_flight: int = 2,
) -> AsyncGenerator[FrameResult, None]:
    """Segment and follow ``objects`` through ``frames`` (prompts refer to the first frame).

    Yields one :class:`FrameResult` per frame in frame order. A frame that could not be decoded
    (``Frame.error``, from ``read_frames(..., skip_corrupt=True)``) yields an error result and the
    run goes on; a decoding failure raised by ``frames`` yields an error result and ends the run;
    a worker failure that failover could not absorb yields error results for that frame and
    every later one (they are still decoded and passed through).
    """
    if in_flight < 1:
        raise ValueError("in_flight must be at least 1")
    tracks = [ObjectTrack(id=i, initial=prompt) for i, prompt in enumerate(objects)]
    # Items in frame order: (frame or the decode error in its place, start time, embedding task
    # or None when the frame is passed through with an error); None marks the end.
    pending: asyncio.Queue[tuple[Frame | MediaError, float, asyncio.Task[Embedding] | None] | None] = (
        asyncio.Queue(maxsize=in_flight)
    )
    slots = asyncio.Semaphore(in_flight)
    failure: list[str] = []

    async def embed(frame: Frame) -> Embedding:
        try:
            return await session.embed(frame.image, frame_index=frame.index)
        finally:
            slots.release()

    async def produce() -> None:
        first = True
        async for item in _frames_async(frames):
            started = time.perf_counter()
            if isinstance(item, MediaError) or item.error is not None or failure:
                await pending.put((item, started, None))
                continue
            if first:
                height, width = item.image.shape[:2]
                for prompt in objects:
                    prompt.check_inside(width, height)
                first = False
            await slots.acquire()
            task = asyncio.create_task(embed(item))
            try:
                await pending.put((item, started, task))
            except BaseException:  # cancelled while the queue was full: do not leave it running
                task.cancel()
                raise
        await pending.put(None)

    producer = asyncio.create_task(produce())
    next_index = 0
    try:
        while True:
            get = asyncio.create_task(pending.get())
            await asyncio.wait({get, producer}, return_when=asyncio.FIRST_COMPLETED)
            if not get.done():
                get.cancel()
                producer.result()  # the producer failed: raise its error
                continue
            entry = get.result()
            if entry is None:
                break
            item, started, task = entry
            if isinstance(item, MediaError):
                # The frame that failed to decode has no image; it takes the next index.
                empty = Frame(index=next_index, pts=None, time=0.0, image=np.zeros((0, 0, 3), np.uint8))
                yield FrameResult(frame=empty, objects=(), error=str(item), audit=None, latency=0.0)
                continue
            next_index = item.index + 1
            if task is None:
                error = item.error if item.error is not None else failure[0]
                yield FrameResult(frame=item, objects=(), error=error, audit=None, latency=0.0)
                continue
            try:
                embedding = await task
                results = []
                for track in tracks:
                    prompt, mask_input = track.next_prompt()
                    prediction = await session.decode(embedding, prompt, mask_input=mask_input)
                    box = track.update(prediction)
                    results.append(
                        ObjectResult(id=track.id, mask=prediction.mask, score=prediction.score, box=box)
                    )
            except (WorkerError, ExposureBudgetError) as exc:
                failure.append(str(exc))
                yield FrameResult(frame=item, objects=(), error=str(exc), audit=None, latency=0.0)
                continue
            yield FrameResult(
                frame=item,
                objects=tuple(results),
                error=None,
                audit=embedding.audit,
                latency=time.perf_counter() - started,
            )
    finally:
        producer.cancel()
        with contextlib.suppress(asyncio.CancelledError, PedsamError):
            await producer
        while not pending.empty():
            entry = pending.get_nowait()
            task = entry[2] if entry is not None else None
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
