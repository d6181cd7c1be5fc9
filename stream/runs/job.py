"""A whole run of one source: the frame engine into a recorder, a view and the run's figures.

``pedsam run``, ``pedsam demo`` and ``pedsam stream`` are this one loop with different
settings: the drop policy, whether the outputs are recorded, what is shown while it runs, and
when it stops (end of the source, ``max_frames``, ``duration``, or ``stop`` being set, e.g.
by Ctrl-C). Whichever way it stops, every frame the engine handed out is recorded and the
outputs are closed; ``summary.json`` is written when the run ended by itself or was asked to
stop, not when it failed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from pedsam.stream.core.prompts import ObjectPrompt
from pedsam.stream.core.session import EdgeSession
from pedsam.stream.media.sources import FrameSource, LimitedSource
from pedsam.stream.runs.board import ObjectBoard
from pedsam.stream.runs.engine import DropPolicy, run_frames
from pedsam.stream.runs.keyframes import KeyframePolicy
from pedsam.stream.runs.recorder import Recorder, render
from pedsam.stream.runs.results import FrameResult
from pedsam.stream.runs.stats import RunStats

__all__ = ["RunSettings", "View", "run_source"]


class View(Protocol):
    """What a run shows while it goes: a progress bar, a status line, a window."""

    wants_images: bool  # True: :meth:`update` gets each frame rendered with its masks

    def update(self, stats: RunStats, image: np.ndarray | None) -> bool:
        """Show the run's figures and, when rendered, the newest frame; False asks to stop."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True, kw_only=True, slots=True)
class RunSettings:
    """How a run goes; validated once, here."""

    drops: DropPolicy = "never"
    in_flight: int = 2
    max_frames: int | None = None
    duration: float | None = None
    keyframes: KeyframePolicy = KeyframePolicy()

    def __post_init__(self) -> None:
        from pedsam.stream.errors import ConfigError

        if self.in_flight < 1:
            raise ConfigError("--in-flight must be at least 1")
        if self.max_frames is not None and self.max_frames < 1:
            raise ConfigError("--max-frames must be at least 1")
        if self.duration is not None and self.duration <= 0:
            raise ConfigError("--duration must be positive")


async def run_source(
    session: EdgeSession,
    source: FrameSource,
    objects: ObjectBoard | Sequence[ObjectPrompt],
    settings: RunSettings,
    *,
    recorder: Recorder | None = None,
    views: Sequence[View] = (),
    banner: str | None = None,
    stop: asyncio.Event | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Run ``objects`` through ``source`` and return the run's summary (also written to
    ``recorder``'s ``summary.json`` unless the run failed).

    ``extra`` is merged into the summary (the command's own settings).
    """
    stats = RunStats()
    finished = False

    async def consume() -> None:
        frames = source if settings.max_frames is None else LimitedSource(source, settings.max_frames)
        results = run_frames(session, frames, objects, drops=settings.drops, in_flight=settings.in_flight,
                             stats=stats, keyframes=settings.keyframes)
        async with contextlib.aclosing(results):
            async for result in results:
                # A frame handed out is counted in the figures: it is recorded even if the run is
                # being stopped, so the outputs agree with the summary.
                sink = asyncio.ensure_future(_show(result))
                try:
                    keep_going = await asyncio.shield(sink)
                except asyncio.CancelledError:
                    await sink
                    raise
                if not keep_going or (settings.max_frames is not None and stats.frames >= settings.max_frames):
                    return

    async def _show(result: FrameResult) -> bool:
        image = None
        if recorder is not None:
            image = await asyncio.to_thread(recorder.write, result)
        elif any(view.wants_images for view in views):
            image = await asyncio.to_thread(render, result, banner=banner)
        return all([view.update(stats, image) for view in views])

    worker = asyncio.create_task(consume(), name=f"run {source.name}")
    waiter = asyncio.create_task((stop or asyncio.Event()).wait())
    try:
        try:
            await asyncio.wait({worker, waiter}, timeout=settings.duration, return_when=asyncio.FIRST_COMPLETED)
        finally:  # stopped, timed out, finished, failed, or cancelled from outside: end both
            worker.cancel()
            waiter.cancel()
            await asyncio.wait({worker, waiter})
        if not worker.cancelled():
            worker.result()  # the run's own error, if it failed
        finished = True
    finally:
        stats.stop()
        summary = summarize(session, source, stats, settings, extra)
        for view in views:
            view.close()
        if recorder is not None:
            summary["max_windows_per_server"] = recorder.audit.max_windows
            summary["max_picture_share_per_server"] = round(recorder.audit.max_share, 6)
            await asyncio.to_thread(recorder.close, summary if finished else None)
    return summary


def summarize(
    session: EdgeSession,
    source: FrameSource,
    stats: RunStats,
    settings: RunSettings,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``summary.json``: the figures, then what ran and how (``remote_segments`` of ``segments`` sent
    to workers; ``devices``: where the edge and each worker computed), then what each server saw,
    each worker's link as the edge measured it (``links``: round trips in ms, bytes per second),
    and its wire (``wire``: compression, tensor bytes as sent and uncompressed)."""
    config = session.config
    return {
        **stats.to_json(),
        "source": source.name,
        "source_kind": source.kind,
        "model": config.model.describe(),
        "random_weights": session.random_weights,
        "workers": session.executor_names,
        "scheme": config.scheme,
        "codec": session.plan_choice.codec if session.plan_choice is not None else config.codec,
        "plan": "auto" if config.auto_plan else config.plan,
        "plan_choice": session.plan_choice.to_json() if session.plan_choice is not None else None,
        "remote_segments": session.encoder.remote_segments,
        "keep_local": list(config.keep_local.kinds),
        "segments": session.encoder.plan.num_segments,
        "drops": settings.drops,
        "keyframe_policy": settings.keyframes.describe(),
        "in_flight": settings.in_flight,
        "windows_per_frame": session.encoder.grid.num_windows,
        "devices": session.devices_summary(),
        **(extra or {}),
        "exposure": session.exposure_summary(),
        "fleet": session.fleet_summary(),
        "links": session.links_summary(),
        "wire": session.wire_summary(),
    }
