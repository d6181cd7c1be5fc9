"""pedsam's edge: the library API, in one place.

::

    import asyncio
    from pedsam.stream import EdgeConfig, EdgeSession, FileSource, ModelSource, ObjectPrompt, read_image, run_frames

    async def main() -> None:
        config = EdgeConfig(model=ModelSource(preset="tiny"), local_workers=3)
        async with EdgeSession(config) as session:
            embedding = await session.embed(read_image("photo.jpg"))
            async for result in run_frames(session, FileSource("clip.mp4"), [ObjectPrompt(box=(10, 10, 90, 60))]):
                print(result.frame.index, [o.score for o in result.objects], result.error)

    asyncio.run(main())

Subpackages, lower layers first (a module never imports a higher layer; see
``tests/test_layers.py``): :mod:`~pedsam.stream.errors`; :mod:`~pedsam.stream.media` (video,
images, sources, overlays, mask files); :mod:`~pedsam.stream.fleet` (workers: remote, local,
transport, health); :mod:`~pedsam.stream.core` (one frame to an embedding and masks: session,
split encoder, scheduling, decoding, prompts, tracking); :mod:`~pedsam.stream.runs` (the frame
engine, the recorder); :mod:`~pedsam.stream.web`, :mod:`~pedsam.stream.privacy`,
:mod:`~pedsam.stream.bench`; and :mod:`~pedsam.stream.cli` on top.

The names below are imported when first used, so importing a submodule (the command line, a
worker) does not pull in the whole edge.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pedsam.stream.core.predictor import MaskPrediction
    from pedsam.stream.core.prompts import ObjectPrompt
    from pedsam.stream.core.scheduling import RotationSettings
    from pedsam.stream.core.sensitive import KeepLocal
    from pedsam.stream.core.session import EdgeConfig, EdgeSession, Embedding
    from pedsam.stream.errors import (
        ConfigError,
        ExposureBudgetError,
        MediaError,
        PedsamError,
        PromptError,
        SessionError,
        WorkerError,
    )
    from pedsam.stream.fleet.transport import ClientSecurity
    from pedsam.stream.media.sources import CameraSource, FileSource, FrameSource, SourceFrame, WebRTCSource
    from pedsam.stream.media.video import Frame, probe_video, read_frames, read_image
    from pedsam.stream.runs.board import ObjectBoard
    from pedsam.stream.runs.engine import run_frames
    from pedsam.stream.runs.recorder import Recorder
    from pedsam.stream.runs.results import FrameResult, ObjectResult
    from pedsam.stream.runs.stats import RunStats
    from pedsam.workers.models import ModelSource

_WHERE = {
    "MaskPrediction": "pedsam.stream.core.predictor",
    "ObjectPrompt": "pedsam.stream.core.prompts",
    "RotationSettings": "pedsam.stream.core.scheduling",
    "KeepLocal": "pedsam.stream.core.sensitive",
    "EdgeConfig": "pedsam.stream.core.session",
    "EdgeSession": "pedsam.stream.core.session",
    "Embedding": "pedsam.stream.core.session",
    "ConfigError": "pedsam.stream.errors",
    "ExposureBudgetError": "pedsam.stream.errors",
    "MediaError": "pedsam.stream.errors",
    "PedsamError": "pedsam.stream.errors",
    "PromptError": "pedsam.stream.errors",
    "SessionError": "pedsam.stream.errors",
    "WorkerError": "pedsam.stream.errors",
    "ClientSecurity": "pedsam.stream.fleet.transport",
    "CameraSource": "pedsam.stream.media.sources",
    "FileSource": "pedsam.stream.media.sources",
    "FrameSource": "pedsam.stream.media.sources",
    "SourceFrame": "pedsam.stream.media.sources",
    "WebRTCSource": "pedsam.stream.media.sources",
    "Frame": "pedsam.stream.media.video",
    "probe_video": "pedsam.stream.media.video",
    "read_frames": "pedsam.stream.media.video",
    "read_image": "pedsam.stream.media.video",
    "ObjectBoard": "pedsam.stream.runs.board",
    "FrameResult": "pedsam.stream.runs.results",
    "ObjectResult": "pedsam.stream.runs.results",
    "run_frames": "pedsam.stream.runs.engine",
    "Recorder": "pedsam.stream.runs.recorder",
    "RunStats": "pedsam.stream.runs.stats",
    "ModelSource": "pedsam.workers.models",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'pedsam.stream' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
