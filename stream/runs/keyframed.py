"""The frame engine with keyframes: SAM on keyframes, masks propagated on the edge in between.

Used by :func:`pedsam.stream.runs.engine.run_frames` for ``every:N`` and ``adaptive`` keyframe
policies (see its module docstring). Per frame taken from the source, in order:

1. a keyframe that came back since the last frame is *landed*: SAM's masks on the keyframe are
   propagated forward through the frames that passed while it was in flight (kept as small
   grey images), so the masks shown next are SAM's, carried to now;
2. every followed object's mask is propagated to this frame;
3. the :class:`~pedsam.stream.runs.keyframes.KeyframeChooser` says whether this frame is a
   keyframe; if it is, it is embedded through the split and each object decoded from a prompt
   made of its propagated mask (box, a point inside, the mask as logits), its last good prompt
   if propagation lost it, or its own prompt if it has no mask yet;
4. the frame's result: SAM's masks on a keyframe when the run waits for them (``"never"``),
   else the propagated ones with their confidence and age. A live run never waits, not even
   for the first keyframe: the video plays on without masks until they land.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field

import numpy as np

from pedsam.stream.core.edges import refine_mask
from pedsam.stream.core.predictor import MaskPrediction
from pedsam.stream.core.propagation import MaskPropagator, Propagated, Working
from pedsam.stream.core.prompts import ObjectPrompt
from pedsam.stream.core.scheduling import EdgeScheduler
from pedsam.stream.core.session import EdgeSession
from pedsam.stream.core.tracker import ObjectTrack
from pedsam.stream.core.shares import FrameAudit
from pedsam.stream.errors import ExposureBudgetError, MediaError, WorkerError, first_error
from pedsam.stream.media.sources import FrameSource, SourceFrame
from pedsam.stream.media.video import Frame
from pedsam.stream.runs.board import ObjectBoard
from pedsam.stream.runs.keyframes import KeyframeChooser, KeyframePolicy
from pedsam.stream.runs.results import FrameResult, ObjectResult
from pedsam.stream.runs.stats import RunStats
from pedsam.stream.runs.tasks import cancel_and_wait

__all__ = ["KeyframedRun"]

Sam = tuple[FrameAudit, dict[int, MaskPrediction]]
KEPT = 32  # frames kept of those taken while a keyframe is in flight, at most (see _Flight.add)
STEP_SECONDS = 0.03  # a propagation step's duration until the run has timed its own
Prompt = tuple[ObjectPrompt, np.ndarray | None]  # a prompt and its mask input (low-resolution logits)


@dataclass(slots=True)
class _Flight:
    """A keyframe in flight: its frame, and the frames taken since (to propagate SAM's masks through)."""

    index: int
    time: float  # its media time
    image: np.ndarray
    task: asyncio.Task[Sam]
    kept: list[tuple[int, Working]] = field(default_factory=list)  # (n-th frame since, frame)
    stride: int = 1
    latest: tuple[int, Working] | None = None

    def add(self, working: Working) -> None:
        """Keep a frame taken while in flight: of more than :data:`KEPT` frames, every
        ``stride``-th (the stride doubling as needed) and always the newest."""
        n = self.taken + 1
        self.latest = (n, working)
        if n % self.stride == 0:
            self.kept.append(self.latest)
        while len(self.kept) > KEPT:
            self.stride *= 2
            self.kept = [k for k in self.kept if k[0] % self.stride == 0]

    @property
    def taken(self) -> int:
        return self.latest[0] if self.latest else 0

    def steps(self, count: int) -> list[Working]:
        """``count`` of the frames kept (at least 1, all of them at most; none when no frame was
        taken since), evenly spaced, the newest last: the frames to carry SAM's masks through."""
        frames = [w for _, w in self.kept]
        if self.latest is not None and (not self.kept or self.kept[-1][0] != self.latest[0]):
            frames.append(self.latest[1])
        if not frames:
            return []
        count = max(1, min(count, len(frames)))
        return [frames[round((j + 1) * len(frames) / count) - 1] for j in range(count)]


def carry_steps(seconds: float, step_seconds: float) -> int:
    """Propagation steps to carry a landing keyframe's masks over the ``seconds`` of video that
    passed while it was in flight, when a step takes ``step_seconds``.

    The stream waits while they run, and the source drops what comes meanwhile, so the frame
    after landing lies ``steps * step_seconds`` seconds on, while each step spans ``seconds /
    steps``: both are propagation jumps, and the larger one is where an object is lost. Their
    product is fixed, so the larger is least at the balance ``sqrt(seconds / step_seconds)`` (a
    0.8 s keyframe, 32 ms a step: 5 steps of 0.16 s; ViT-B's 6 s: 14 of 0.43 s). At least 1;
    :meth:`_Flight.steps` takes no more than the frames it kept."""
    return max(1, round(math.sqrt(max(seconds, 0.0) / max(step_seconds, 1e-3))))


class KeyframedRun:
    """One run of the keyframed engine over ``source``; :meth:`results` yields every frame's result."""

    def __init__(
        self,
        session: EdgeSession,
        source: FrameSource,
        board: ObjectBoard,
        *,
        drops: str,
        policy: KeyframePolicy,
        stats: RunStats | None,
        scheduler: EdgeScheduler | None,
    ) -> None:
        self.session, self.source, self.board = session, source, board
        self.wait = drops == "never"  # a keyframe's own result waits for SAM
        self.stats, self.scheduler = stats, scheduler
        if session.plan_choice is not None and policy.kind == "adaptive":  # --plan auto: as often as links allow
            policy = dataclasses.replace(policy, min_interval=max(policy.min_interval, session.plan_choice.seconds))
        self.chooser = KeyframeChooser(policy)
        self.propagator = MaskPropagator()
        self.current: dict[int, ObjectResult] = {}  # each object's mask on the last frame
        self.keyframe_index: int | None = None  # source index of the keyframe those masks come from
        self.flight: _Flight | None = None
        self.step_seconds: float | None = None  # a propagation step's duration, as timed in this run
        self.size: tuple[int, int] | None = None
        self.failure: str | None = None  # "never": the failure every later frame is marked with

    async def results(self) -> AsyncGenerator[FrameResult, None]:
        counted = 0
        try:
            async with self.source:
                while True:
                    try:
                        item = await self.source.next()
                    except MediaError as exc:
                        if not self.wait:
                            raise
                        empty = Frame(index=-1, pts=None, time=0.0, image=np.zeros((0, 0, 3), np.uint8))
                        yield self._count(FrameResult(frame=empty, objects=(), error=str(exc), audit=None, latency=0.0))
                        break
                    if item is None:
                        break
                    result = await self._frame(item)
                    self.session.stats.dropped += self.source.dropped - counted
                    counted = self.source.dropped
                    yield self._count(result)
        finally:
            if self.flight is not None:
                await cancel_and_wait(self.flight.task)

    def _count(self, result: FrameResult) -> FrameResult:
        if self.stats is not None:
            self.stats.dropped = self.source.dropped
            self.stats.add(result)
        return result

    async def _frame(self, item: SourceFrame) -> FrameResult:
        frame = item.frame
        if frame.error is not None or self.failure is not None:
            return FrameResult(frame=frame, objects=(), error=frame.error or self.failure, audit=None, latency=0.0)
        if not len(self.board):
            self._forget()
            self._observe(frame.image)
            return FrameResult(frame=frame, objects=(), error=None, audit=None,
                               latency=time.monotonic() - item.captured)
        height, width = frame.image.shape[:2]
        self.board.check_frame(width, height)
        if self.size != (height, width):  # a new picture size (a browser's camera changed): start over
            self._forget()
            self.size = (height, width)
        audit = await self._land(frame.time) if self.flight is not None and self.flight.task.done() else None
        working = self._propagate(frame.image)
        given = self._take_given(frame)
        if self.flight is not None:
            self.flight.add(working)
        tracks = self.board.tracks()
        unmasked = [t for t in tracks if t.id not in self.current]
        confidence = min((r.confidence for r in self.current.values()), default=None)
        reason = self.chooser.reason(frame.index, frame.time, unmasked=bool(unmasked), confidence=confidence,
                                     busy=self.flight is not None)
        if given and not unmasked:
            reason = None  # a frame of given masks shows them as given
        if reason is not None:
            prompts: dict[int, Prompt] = {t.id: (t.initial, None) for t in unmasked}
            if not given:  # masks given on this frame stay as given; SAM decodes the others
                prompts |= {t.id: self._prompt(t) for t in tracks if t.id in self.current}
            task = asyncio.create_task(self._sam(frame.image, prompts))
            task.add_done_callback(_seen)
            self.chooser.started(frame.time)
            if self.wait:  # a frame's own result waits for SAM
                try:
                    audit, predictions = await task
                except (WorkerError, ExposureBudgetError) as exc:
                    if not self.wait:
                        raise
                    self.failure = str(exc)
                    return FrameResult(frame=frame, objects=(), error=str(exc), audit=None, latency=0.0)
                self._apply(frame.index, frame.image, predictions)
                return self._result(item, audit, keyframe=True)
            self.flight = _Flight(frame.index, frame.time, frame.image, task)
        else:
            self._observe(frame.image)
        return self._result(item, audit, keyframe=given and not unmasked)

    def _observe(self, image: np.ndarray) -> None:
        """A frame that is not sent: its sensitive regions still count (``--keep-local``'s hold)."""
        (self.scheduler or self.session.scheduler).observe(image)

    def _result(self, item: SourceFrame, audit: FrameAudit | None, *, keyframe: bool) -> FrameResult:
        objects = tuple(self.current[t.id] for t in self.board.tracks() if t.id in self.current)
        for result in objects:
            self.board.record(result)
        age = 0 if keyframe or self.keyframe_index is None else item.frame.index - self.keyframe_index
        return FrameResult(frame=item.frame, objects=objects, error=None, audit=audit,
                           latency=time.monotonic() - item.captured, segmented=bool(objects),
                           keyframe=keyframe, keyframe_age=age)

    def _forget(self) -> None:
        self.current.clear()
        self.propagator = MaskPropagator(self.propagator.config)
        self.keyframe_index = None
        for track in self.board.tracks():  # followed afresh: prompted as the user gave them
            track.box = track.logits = track.mask = None

    def _propagate(self, image: np.ndarray) -> Working:
        """Carry every object with a mask to this frame; drop objects no longer on the board."""
        working = self.propagator.prepare(image)
        on_board = {t.id for t in self.board.tracks()}
        for gone in set(self.current) - on_board:
            self.current.pop(gone)
            self.propagator.remove(gone)
        if self.propagator.ids:
            began = time.monotonic()
            moved_all = self.propagator.step(working)
            self._timed_step(time.monotonic() - began)
            fit = self._fit(image)
            for moved in moved_all:
                if moved.id in self.current:
                    self.current[moved.id] = _carried(self.current[moved.id], moved, fit)
        return working

    def _fit(self, image: np.ndarray) -> Callable[[np.ndarray], np.ndarray] | None:
        """For a preset whose decoder fits outlines to the frame (pedsam-mini), the same fit for a
        propagated mask on ``image``; None for the others (official checkpoints' masks are warped
        as SAM gave them)."""
        preset = self.session.preset
        if not preset.refine_edges:
            return None
        cell = max(image.shape[:2]) / (preset.img_size / 4)  # frame pixels per cell of the decoder's logits
        return lambda mask: refine_mask(mask, image, cell)

    def _timed_step(self, seconds: float) -> None:
        """A propagation step's duration, into the running estimate a landing keyframe plans with."""
        self.step_seconds = seconds if self.step_seconds is None else 0.8 * self.step_seconds + 0.2 * seconds

    def _take_given(self, frame: Frame) -> bool:
        """Objects given by their masks, on their first frame: their masks as given (the frame
        counts as their keyframe). Whether there were any."""
        taken = False
        for track in self.board.tracks():
            if track.id in self.current or not track.initial.mask_only or track.history:
                continue
            mask = track.initial.mask
            assert mask is not None
            box = track.take_mask(mask)
            self.current[track.id] = ObjectResult(id=track.id, mask=mask, score=1.0, box=box)
            if self.propagator.ids:  # stepped to this frame already
                self.propagator.add(track.id, mask)
            else:
                self.propagator.reset(frame.image, {track.id: mask})
            if self.keyframe_index is None:
                self.keyframe_index = frame.index
            taken = True
        if taken:
            self.chooser.started(frame.time)
        return taken

    def _prompt(self, track: ObjectTrack) -> Prompt:
        """A followed object's keyframe prompt: its propagated mask (box, a point inside, the mask
        as logits); when propagation lost it (an empty mask), its last good prompt, SAM's box and
        logits of the last keyframe, so a lost object is looked for again, not given up."""
        mask = self.current[track.id].mask
        return (ObjectPrompt(mask=mask), None) if mask.any() else track.next_prompt()

    async def _sam(self, image: np.ndarray, prompts: dict[int, Prompt]) -> Sam:
        """The keyframe through the split, and each object decoded from its prompt."""
        try:
            embedding = await self.session.embed(image, scheduler=self.scheduler)
        except BaseExceptionGroup as group:
            raise first_error(group) from group
        predictions = await self.session.decode_objects(embedding, prompts)
        return embedding.audit, predictions

    def _apply(self, index: int, image: np.ndarray, predictions: dict[int, MaskPrediction]) -> None:
        """SAM's masks on keyframe ``index``: the objects' masks now, and the propagation's start."""
        masks: dict[int, np.ndarray] = {}
        for track in self.board.tracks():
            prediction = predictions.get(track.id)
            if prediction is None:
                continue
            box = track.update(prediction)
            self.current[track.id] = ObjectResult(id=track.id, mask=prediction.mask, score=prediction.score, box=box)
            masks[track.id] = prediction.mask
        kept = {i: r.mask for i, r in self.current.items() if i not in masks}  # given since, not decoded
        self.propagator.reset(image, {**kept, **masks})
        self.keyframe_index = index

    async def _land(self, now: float) -> FrameAudit:
        """The keyframe in flight came back (media time ``now``): its masks, carried through the
        frames since in as many steps as :func:`carry_steps` balances."""
        flight, self.flight = self.flight, None
        assert flight is not None
        audit, predictions = flight.task.result()  # raises the keyframe's failure: a live run stops
        steps = flight.steps(carry_steps(now - flight.time, self.step_seconds or STEP_SECONDS))

        def carry() -> tuple[MaskPropagator, dict[int, Propagated]]:
            propagator = MaskPropagator(self.propagator.config)
            propagator.reset(flight.image, {i: p.mask for i, p in predictions.items()})
            last: dict[int, Propagated] = {}
            for working in steps:
                began = time.monotonic()
                last = {moved.id: moved for moved in propagator.step(working)}
                self._timed_step(time.monotonic() - began)
            return propagator, last

        propagator, carried = await asyncio.to_thread(carry)
        for track in self.board.tracks():
            prediction = predictions.get(track.id)
            if prediction is None:
                continue
            box = track.update(prediction)
            result = ObjectResult(id=track.id, mask=prediction.mask, score=prediction.score, box=box)
            moved = carried.get(track.id)
            self.current[track.id] = _carried(result, moved) if moved is not None else result
        for object_id in set(self.current) - set(predictions):  # objects that came while it was in flight
            self.current.pop(object_id)
        self.propagator = propagator
        self.keyframe_index = flight.index
        return audit


def _carried(previous: ObjectResult, moved: Propagated,
             fit: Callable[[np.ndarray], np.ndarray] | None = None) -> ObjectResult:
    """``previous``'s object with its propagated mask (through ``fit``, when given, unless that
    would empty it)."""
    mask = moved.mask
    if fit is not None and mask.any():
        fitted = fit(mask)
        mask = fitted if fitted.any() else mask
    ys, xs = np.nonzero(mask)
    box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)) if xs.size else None
    return ObjectResult(id=previous.id, mask=mask, score=previous.score, box=box, confidence=moved.confidence)


def _seen(task: asyncio.Task[Sam]) -> None:
    """Mark a keyframe's failure as retrieved: it is raised where the keyframe lands or is awaited."""
    if not task.cancelled():
        task.exception()
