"""Shared fixtures: tiny models, in-process loopback workers, generated media."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import numpy as np
import pytest
import torch

from pedsam.workers.models import ModelSource
from pedsam.workers.server import WorkerLimits, WorkerModel, WorkerServer

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

TINY = ModelSource(preset="tiny", seed=0)


def scene(height: int, width: int, seed: int = 0) -> np.ndarray:
    """An HxWx3 uint8 RGB test image with structure (gradients, shapes) and some noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack(
        [
            (x * 255 // max(1, width - 1)),
            (y * 255 // max(1, height - 1)),
            ((x + y) * 127 // max(1, width + height - 2)),
        ],
        axis=-1,
    ).astype(np.int32)
    cy, cx, r = height * 0.45, width * 0.4, min(height, width) * 0.2
    image[(y - cy) ** 2 + (x - cx) ** 2 < r**2] = (230, 40, 40)
    image[int(height * 0.6) : int(height * 0.85), int(width * 0.65) : int(width * 0.9)] = (30, 200, 60)
    image += rng.integers(-12, 13, size=image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


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
