"""Shared fixtures: tiny models, in-process loopback workers, generated media."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Iterator

import pytest
import torch

from pedsam.workers.models import PRESETS, ModelPreset
from pedsam.workers.server import WorkerLimits, WorkerModel, WorkerServer

# pytest-xdist runs one process per core (``-n auto``): each then computes on one thread, since
# two OpenMP pools per core only take turns spinning.
_PROCESSES = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, (os.cpu_count() or 1) // _PROCESSES)))

from tests.support import TINY, VIT_B_NARROW


@pytest.fixture(scope="session")
def tiny_worker_model() -> WorkerModel:
    return WorkerModel(TINY)


@pytest.fixture
async def tiny_servers(tiny_worker_model: WorkerModel) -> AsyncIterator[dict[str, WorkerServer]]:
    """Three in-process tiny workers on loopback, by address (as the edge and its audit name them)."""
    servers = [WorkerServer(tiny_worker_model, WorkerLimits()) for _ in range(3)]
    try:
        yield {await server.start("127.0.0.1", 0): server for server in servers}
    finally:
        for server in servers:
            await server.stop(0)


@pytest.fixture
def tiny_workers(tiny_servers: dict[str, WorkerServer]) -> list[str]:
    """The addresses of :func:`tiny_servers`."""
    return list(tiny_servers)


@pytest.fixture(params=[pytest.param(VIT_B_NARROW.name, id="narrow"),
                        pytest.param("vit_b", id="vit_b", marks=pytest.mark.vit_b)])
def vit_b_shape(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> ModelPreset:
    """ViT-B's shape: :data:`tests.support.VIT_B_NARROW` (in the default suite, registered as a
    preset for the test) and ViT-B itself (marked ``vit_b``: ``make test-vit-b``, minutes)."""
    monkeypatch.setitem(PRESETS, VIT_B_NARROW.name, VIT_B_NARROW)
    return PRESETS[request.param]


@pytest.fixture
def root_logger() -> Iterator[None]:
    """A command run in this process (``tests.support.command``) sets up the root logger for
    itself: give it back to pytest afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
