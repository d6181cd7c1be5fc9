"""One step every plan shares: a frame's windows sent out by share, results gathered back.

For each executor's share of a segment, :class:`ShareRunner` gathers the windows' valid tokens
from the token grid, calls the executor (or the edge, for a worker that is down or fails now),
and scatters the results back; the frame's audit gets one :class:`SegmentAudit`. The default
plan (:mod:`pedsam.stream.core.encoder`) and the offload plan (:mod:`pedsam.stream.core.offload`)
are two loops over the model's steps built on it.

Window order: a share's windows are gathered in an order drawn afresh for every share of every
segment from the operating system's randomness (:func:`secret_order`), and the results scattered
back by the same windows, so the order undoes itself and the embedding is unchanged. A worker so
learns nothing from where a window sits in its request (row-major order would tell it where its
windows lie relative to each other). The tokens themselves still tell it: see the README's
privacy model. The audit lists window ids sorted.

Remote segments: with ``--remote-segments N`` only segments ``0..N-1`` are sent out; every window
of a later segment is computed on the edge, in one batch, by the same segment runner (exact), and
its audit entry says so (``edge_only``). Nothing of those segments reaches any worker.

Failover: when a worker's request fails (broken stream, refusal, missed deadline) the worker is
reported down (:class:`~pedsam.stream.fleet.health.WorkerHealth`) and, unless the settings say
stop, its windows of this segment are computed on the edge, as are its windows of every later
segment while it stays down. The edge is trusted, so this never widens what any server sees;
the result stays exact (the same segment runner). The audit records each case under
``failover``.

Watched workers (``--verify``): with a :class:`~pedsam.stream.core.verify.Watch`, each worker's
result is checked as it arrives (impossible values; a secret sample of its windows recomputed on
the edge meanwhile). A worker caught fails over as one that failed, and its failover record says
``caught`` (the windows, and which check); it stays down for the rest of the session.
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch

from pedsam.partitioner.assignment import EDGE, Assignment
from pedsam.partitioner.geometry import Window, WindowGrid
from pedsam.stream.core.executors import SegmentExecutor
from pedsam.stream.core.verify import Watch
from pedsam.stream.errors import TamperingError, WorkerError, first_error
from pedsam.stream.fleet.health import WorkerHealth

__all__ = [
    "KEPT_BY_REMOTE_SEGMENTS", "EdgeThread", "FrameAudit", "SegmentAudit", "ShareRunner", "computed_shares", "gather_windows",
    "run_all", "scatter_windows", "secret_order", "window_token_index",
]

T = TypeVar("T")

KEPT_BY_REMOTE_SEGMENTS = "remote_segments"
"""``SegmentAudit.edge_only`` of a segment past ``--remote-segments``: the edge computed all of it."""


@dataclass
class SegmentAudit:
    """One segment of one frame: ``shares`` is who computed which windows (each window once);
    ``failover`` names workers whose windows the edge computed instead, with ``sent`` telling
    whether the worker had received them before it failed, and why (and ``caught`` when
    ``--verify`` caught it: ``windows``, ``check``); ``edge_only`` says why the edge computed the
    whole segment without sending any of it (:data:`KEPT_BY_REMOTE_SEGMENTS`), or is None;
    ``attempt`` counts the frame's computations (2 and up: recomputed without a worker caught
    while the frame was under way, see :class:`~pedsam.stream.core.encoder.SplitEncoder`)."""

    segment: int
    shares: dict[str, list[int]]
    seconds: float
    failover: dict[str, dict[str, Any]] = field(default_factory=dict)
    edge_only: str | None = None
    attempt: int = 1


@dataclass
class FrameAudit:
    """What left the edge for one frame: per segment, which executor got which window ids."""

    frame: int
    assignment: Assignment
    segments: list[SegmentAudit] = field(default_factory=list)
    exposure: dict[str, Any] | None = None  # the scheduler's per-server exposure record, if any
    attempt: int = 1  # the computation of the frame under way (see SegmentAudit.attempt)

    def to_json(self) -> dict[str, Any]:
        return {
            "frame": self.frame,
            "segments": [
                {"segment": s.segment, "shares": s.shares, "seconds": round(s.seconds, 4),
                 **({"failover": s.failover} if s.failover else {}),
                 **({"edge_only": s.edge_only} if s.edge_only else {}),
                 **({"attempt": s.attempt} if s.attempt > 1 else {})}
                for s in self.segments
            ],
        }


def secret_order(window_ids: Sequence[int]) -> list[int]:
    """``window_ids`` in a uniformly random order drawn from the operating system's randomness
    (``random.SystemRandom``), which nothing outside the edge can predict or replay."""
    return random.SystemRandom().sample(list(window_ids), len(window_ids))


def window_token_index(
    windows: Sequence[Window], grid_width: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """(N,) int64 on ``device``: for the valid tokens of ``windows`` (row-major within a window,
    windows one after another in the order given), their row-major positions in an
    (H, ``grid_width``) token grid."""
    if not windows:
        raise ValueError("no windows to index")
    return torch.cat([_token_index(w, grid_width, str(device)) for w in windows])


@functools.lru_cache(maxsize=512)
def _token_index(window: Window, grid_width: int, device: str) -> torch.Tensor:
    # Cached per window: every frame cuts the same windows, and only the order of a share changes.
    rows = (window.top + torch.arange(window.height)) * grid_width
    return (rows.view(-1, 1) + (window.left + torch.arange(window.width))).reshape(-1).to(device)


def gather_windows(grid_tokens: torch.Tensor, windows: Sequence[Window]) -> torch.Tensor:
    """(H, W, C) token grid -> (N, C) valid tokens of ``windows``, row-major, one after another
    (on the grid's device)."""
    height, width, channels = grid_tokens.shape
    index = window_token_index(windows, width, grid_tokens.device)
    return grid_tokens.reshape(height * width, channels).index_select(0, index)


def scatter_windows(grid_tokens: torch.Tensor, windows: Sequence[Window], tokens: torch.Tensor) -> None:
    """Write (N, C) tokens laid out as :func:`gather_windows` makes them back into the (H, W, C)
    grid, which must be contiguous; ``tokens`` may be on another device (they are moved)."""
    height, width, channels = grid_tokens.shape
    index = window_token_index(windows, width, grid_tokens.device)
    grid_tokens.view(height * width, channels).index_copy_(0, index, tokens.to(grid_tokens.device))


class EdgeThread:
    """The edge's one compute thread: torch work of a frame runs there, so while the edge runs a
    global block of one frame the event loop keeps other frames' segments moving."""

    def __init__(self, pool: Executor) -> None:
        self._pool = pool

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, fn, *args)


class ShareRunner:
    """Sends each executor its share of a frame's windows; see the module docstring."""

    def __init__(
        self,
        grid: WindowGrid,
        executors: Mapping[str, SegmentExecutor],
        health: WorkerHealth,
        on_failure: str,
        remote: Iterable[int] | None = None,
        watch: Watch | None = None,
        order: Callable[[Sequence[int]], list[int]] = secret_order,
    ) -> None:
        """``remote``: the segments whose shares go to their executors (None: every segment); the
        edge computes every window of any other segment. ``watch``: check workers' results
        (``--verify``; None: take them as they come). ``order``: the order a share's windows go
        out in; :func:`secret_order` always, except where a measurement stands in for a worker
        that has placed its windows (the privacy model says tokens place them:
        :mod:`pedsam.stream.privacy.context`)."""
        self.grid = grid
        self.executors = dict(executors)
        self.health = health
        self.on_failure = on_failure  # "stop": a failed worker fails the frame
        self.remote = None if remote is None else frozenset(remote)
        self.watch = watch
        self.order = order

    @property
    def caught(self) -> frozenset[str]:
        """Workers the watch caught: out of service for good, whatever their health says."""
        return frozenset(self.watch.caught) if self.watch is not None else frozenset()

    async def each_share(
        self,
        segment: int,
        assignment: Assignment,
        audit: FrameAudit,
        prepare: Callable[[list[Window]], Callable[[SegmentExecutor], Awaitable[T]]],
        store: Callable[[list[Window], T], None],
        limits: Sequence[float] = (),
    ) -> None:
        """For every non-empty share: ``prepare(windows)`` makes the call (gathering its tokens
        once), the call runs on the share's executor (or the edge), ``store`` takes the result.
        ``windows`` come in the share's order (:func:`secret_order`); both callbacks get the same list.
        ``limits``: per tensor of a result, the largest magnitude an honest executor can return
        (for the watch; empty: none known)."""
        started = time.perf_counter()
        failover: dict[str, dict[str, Any]] = {}

        async def one(name: str, window_ids: Sequence[int]) -> None:
            windows = [self.grid.window(wid) for wid in self.order(window_ids)]
            call = prepare(windows)
            check = self._check(name, audit.frame, segment, windows, prepare, limits)
            store(windows, await self.run_share(name, window_ids, call, failover, check))

        shares = {name: ids for name, ids in assignment.shares.items() if ids}
        edge_only = None
        if self.remote is not None and segment not in self.remote:
            shares = {EDGE: tuple(sorted(w for ids in shares.values() for w in ids))}
            edge_only = KEPT_BY_REMOTE_SEGMENTS
        await run_all(one(name, ids) for name, ids in shares.items())
        audit.segments.append(
            SegmentAudit(
                segment=segment,
                shares=computed_shares(shares, failover),
                seconds=time.perf_counter() - started,
                failover=failover,
                edge_only=edge_only,
                attempt=audit.attempt,
            )
        )

    def _check(
        self,
        name: str,
        frame: int,
        segment: int,
        windows: list[Window],
        prepare: Callable[[list[Window]], Callable[[SegmentExecutor], Awaitable[T]]],
        limits: Sequence[float],
    ) -> Callable[[Awaitable[T]], Awaitable[T]] | None:
        """The watch's check of worker ``name``'s result for ``windows`` (None for the edge, or
        with no watch): recomputes its sample with the same ``prepare`` on the edge."""
        watch = self.watch
        if watch is None or name == EDGE:
            return None
        edge = self.executors[EDGE]

        def recompute(sample: list[Window]) -> Awaitable[T]:
            return prepare(sample)(edge)

        return lambda pending: watch.checked(name, frame, segment, windows, pending, recompute, limits)

    async def run_share(
        self,
        name: str,
        window_ids: Sequence[int],
        call: Callable[[SegmentExecutor], Awaitable[T]],
        failover: dict[str, dict[str, Any]],
        check: Callable[[Awaitable[T]], Awaitable[T]] | None = None,
    ) -> T:
        """``call`` on executor ``name``, or on the edge if ``name`` is a worker that is down or
        fails now (then recorded in ``failover``); a failure is re-raised when settings say stop.
        ``check``: the watch's step around a worker's result (:meth:`_check`); a worker it
        catches fails now, and for good."""
        edge = self.executors[EDGE]
        if name != EDGE and (self.health.is_down(name) or name in self.caught):
            if self.on_failure == "stop":
                raise WorkerError(f"worker {name} is down and the settings say stop (--on-failure stop)")
            reason = "caught" if name in self.caught else "down"
            failover[name] = {"edge": list(window_ids), "sent": False, "reason": reason}
            return await call(edge)
        try:
            pending = call(self.executors[name])
            return await (check(pending) if check is not None else pending)
        except WorkerError as exc:
            if name == EDGE:
                raise
            self.health.mark_down(name, str(exc), revive=not isinstance(exc, TamperingError))
            if self.on_failure == "stop":
                raise
            failover[name] = {"edge": list(window_ids), "sent": True, "reason": str(exc)}
            if isinstance(exc, TamperingError):
                failover[name]["caught"] = {"windows": list(exc.windows), "check": exc.check}
            return await call(edge)


async def run_all(coroutines: Iterable[Coroutine[Any, Any, None]]) -> None:
    """Run the shares of a segment concurrently; if any fails, cancel the rest and raise the
    first failure itself (a :class:`WorkerError` the caller can catch), not an exception group."""
    try:
        async with asyncio.TaskGroup() as group:
            for coroutine in coroutines:
                group.create_task(coroutine)
    except BaseExceptionGroup as failures:
        raise first_error(failures) from None


def computed_shares(shares: Mapping[str, Sequence[int]], failover: Mapping[str, Any]) -> dict[str, list[int]]:
    """Who computed which windows: ``shares`` with failed-over workers' windows under the edge."""
    computed: dict[str, list[int]] = {}
    for name, ids in shares.items():
        target = EDGE if name in failover else name
        computed.setdefault(target, []).extend(ids)
    return {name: sorted(ids) for name, ids in computed.items()}
