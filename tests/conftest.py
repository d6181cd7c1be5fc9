"""Shared fixtures: tiny models, in-process loopback workers, generated media."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
import torch

from pedsam.workers.server import WorkerLimits, WorkerModel, WorkerServer

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

from tests.support import TINY


@pytest.fixture(scope="session")
def tiny_worker_model() -> WorkerModel:
    return WorkerModel(TINY)


@pytest.fixture
async def tiny_workers(tiny_worker_model: WorkerModel) -> AsyncIterator[list[str]]:
    """Three in-process tiny workers on loopback; yields their addresses."""
    servers = [WorkerServer(tiny_worker_model, WorkerLimits()) for _ in range(3)]
    addresses = [await server.start("127.0.0.1", 0) for server in servers]
    try:
        yield addresses
    finally:
        for server in servers:
            await server.stop(0)
