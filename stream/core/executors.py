"""Where a segment's windows are computed: the protocol, and the edge itself as an executor.

An executor takes a batch of windows as their valid tokens, (N, C) float32 with per-window
extents, and returns the tokens after one segment. :class:`pedsam.stream.fleet.remote.RemoteWorker` sends
them to a gRPC worker; :class:`LocalExecutor` computes them on the edge with the very same
:class:`pedsam.workers.segment.SegmentRunner` a worker uses, so the two are interchangeable.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import Executor
from functools import partial
from typing import Protocol

import torch

from pedsam.partitioner.assignment import EDGE
from pedsam.partitioner.offload import OffloadStage
from pedsam.workers.segment import Extent, SegmentRunner


class SegmentExecutor(Protocol):
    """Runs segments on windows. ``name`` identifies it in the audit log."""

    @property
    def name(self) -> str: ...

    async def run(
        self, frame_id: int, segment: int, tokens: torch.Tensor, extents: Sequence[Extent]
    ) -> torch.Tensor:
        """(N, C) float32 valid tokens of a batch of windows -> the same after ``segment``."""
        ...

    async def run_stage(
        self,
        frame_id: int,
        stage: OffloadStage,
        tokens: torch.Tensor,
        mixed: torch.Tensor | None,
        extents: Sequence[Extent],
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The offload plan's work on a batch of windows (see :mod:`pedsam.partitioner.offload`).

        ``tokens`` (N, C) float32, and with ``stage.finish`` the block's attention output
        ``mixed`` (N, C) float32 -> (N, C) float32 tokens after the stage, and with
        ``stage.start`` the (N, 3C) float32 qkv of those tokens (else None).
        """
        ...

    async def close(self) -> None: ...


class LocalExecutor:
    """Computes windows on the edge, on the edge's compute thread."""

    def __init__(self, runner: SegmentRunner, pool: Executor, name: str = EDGE) -> None:
        self._runner = runner
        self._pool = pool
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    async def run(
        self, frame_id: int, segment: int, tokens: torch.Tensor, extents: Sequence[Extent]
    ) -> torch.Tensor:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._runner.run, segment, tokens, extents)

    async def run_stage(
        self,
        frame_id: int,
        stage: OffloadStage,
        tokens: torch.Tensor,
        mixed: torch.Tensor | None,
        extents: Sequence[Extent],
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        loop = asyncio.get_running_loop()
        run = partial(
            self._runner.run_stage, stage.segment, tokens, extents,
            finish=stage.finish, mixed=mixed, start=stage.start,
        )
        return await loop.run_in_executor(self._pool, run)

    async def close(self) -> None:
        return None
