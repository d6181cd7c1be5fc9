"""An edge on a CUDA GPU: the embedding is segment_anything's on the CPU within 1e-4, the masks are
SamPredictor's, with workers on the GPU or on the CPU; bf16 and fp16 within their stated bounds.
Skipped, with the reason, where torch sees no CUDA device."""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor

from pedsam.stream.core.prompts import ObjectPrompt
from pedsam.stream.core.session import EdgeConfig, EdgeSession
from pedsam.workers.device import select
from pedsam.workers.server import WorkerLimits, WorkerModel, WorkerServer
from tests.stream.core.test_precision import BOUNDS
from tests.support import TINY, assert_same_mask, needs_cuda, scene

pytestmark = needs_cuda


@pytest.fixture
async def cuda_workers() -> AsyncIterator[list[str]]:
    """Three in-process tiny workers computing on the GPU."""
    model = WorkerModel(TINY, select("cuda"))
    servers = [WorkerServer(model, WorkerLimits()) for _ in range(3)]
    try:
        yield [await server.start("127.0.0.1", 0) for server in servers]
    finally:
        for server in servers:
            await server.stop(0)


def reference(image: np.ndarray) -> tuple[SamPredictor, torch.Tensor]:
    """SamPredictor on the CPU, fp32: its embedding of ``image``."""
    predictor = SamPredictor(TINY.build())
    predictor.set_image(image)
    return predictor, predictor.get_image_embedding()


@pytest.mark.parametrize("where", ["cuda", "cpu"])
async def test_a_cuda_edge_embeds_and_segments_as_sam_does_on_the_cpu(
    where: str, cuda_workers: list[str], tiny_workers: list[str]
) -> None:
    image = scene(240, 320, seed=3)
    prompts = [ObjectPrompt(points=((128.0, 108.0),), labels=(1,)), ObjectPrompt(box=(200.0, 140.0, 290.0, 210.0))]
    workers = cuda_workers if where == "cuda" else tiny_workers
    config = EdgeConfig(model=TINY, workers=tuple(workers), device="cuda")
    async with EdgeSession(config) as session:
        assert session.placement is not None and session.placement.device == "cuda:0"
        embedding = await session.embed(image)
        masks = [await session.decode(embedding, prompt) for prompt in prompts]
        devices = session.devices_summary()
    assert embedding.tensor.device.type == "cuda"
    worker_devices = {w["device"] for w in devices["workers"].values()}  # type: ignore[union-attr]
    assert worker_devices == {"cuda:0" if where == "cuda" else "cpu"}
    predictor, want = reference(image)
    got = torch.from_numpy(embedding.numpy())
    assert float((got - want).abs().max() / want.abs().max()) <= 1e-4
    for prompt, mask in zip(prompts, masks):
        points, labels, box = prompt.arrays()
        logits, scores, _ = predictor.predict(point_coords=points, point_labels=labels, box=box,
                                              multimask_output=prompt.ambiguous, return_logits=True)
        best = int(np.argmax(scores))
        assert_same_mask(mask.mask, logits[best])


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
async def test_reduced_precision_on_cuda_stays_within_its_stated_bound(dtype: str) -> None:
    if dtype == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no native bf16")
    image = scene(300, 400)
    model = WorkerModel(TINY, select("cuda", dtype))
    servers = [WorkerServer(model, WorkerLimits()) for _ in range(2)]
    addresses = [await server.start("127.0.0.1", 0) for server in servers]
    try:
        config = EdgeConfig(model=TINY, workers=tuple(addresses), device="cuda", compute_dtype=dtype)
        async with EdgeSession(config) as session:
            embedding = await session.embed(image)
            workers = session.devices_summary()["workers"].values()  # type: ignore[union-attr]
            assert {w["compute_dtype"] for w in workers} == {dtype}
    finally:
        for server in servers:
            await server.stop(0)
    _, want = reference(image)
    error = float((torch.from_numpy(embedding.numpy()) - want).abs().max() / want.abs().max())
    print(f"\ntiny {dtype} on {torch.cuda.get_device_name(0)}: relative error {error:.2e}")
    assert 0 < error <= BOUNDS[dtype]
