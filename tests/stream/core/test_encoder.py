"""Exactness: the split encoder equals segment_anything's monolithic image encoder."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor

from pedsam.partitioner.assignment import EDGE
from pedsam.partitioner.schemes import SCHEMES
from pedsam.stream.core.prompts import ObjectPrompt
from pedsam.stream.core.session import EdgeConfig, EdgeSession
from pedsam.workers.models import ModelPreset, ModelSource
from pedsam.workers.server import WorkerServer
from tests.support import TINY, record_requests, scene


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).abs().max() / want.abs().max())


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_tiny_split_embedding_equals_monolithic(tiny_workers: list[str], scheme: str) -> None:
    image = scene(300, 400)
    config = EdgeConfig(model=TINY, workers=tuple(tiny_workers), scheme=scheme, secret=b"k")
    async with EdgeSession(config) as session:
        embedding = await session.embed(image)
        with torch.inference_mode():
            reference = session.sam.image_encoder(embedding.prepared.tensor)
    assert embedding.tensor.shape == reference.shape == (1, 64, 32, 32)
    assert relative_error(embedding.tensor, reference) <= 1e-4
    # Every window of every segment went to exactly one executor, all three workers took part,
    # and the bottom row of windows, pure padding for a 4:3 frame, stayed on the edge.
    for segment in embedding.audit.segments:
        seen = sorted(w for ids in segment.shares.values() for w in ids)
        assert seen == list(range(9))
        assert len([name for name in segment.shares if name != EDGE]) == 3
        assert segment.shares[EDGE] == [6, 7, 8]


@pytest.mark.parametrize("plan", ["default", "offload"])
@pytest.mark.parametrize(("codec", "bound"), [("fp16", 3.5e-4), ("int8", 1e-2)])
async def test_lossy_codecs_stay_within_their_error_bound(
    tiny_servers: dict[str, WorkerServer], codec: str, bound: float, plan: str
) -> None:
    """fp16 and int8 on the wire keep the embedding within their stated error of SAM's own,
    because the edge asks for residual results and the workers send them.

    The bounds hold only with residuals: on this image fp16 measures 2.5e-4 (default plan) and
    2.7e-4 (offload) with residuals, 5.0e-4 and 4.5e-4 without (``workers.codec.LOSSY`` emptied);
    int8 7.9e-3 and 8.9e-3 with, 1.6e-2 without: the residual stream's identity path then passes
    through the codec."""
    received = [record_requests(server) for server in tiny_servers.values()]
    image = scene(300, 400)
    config = EdgeConfig(model=TINY, workers=tuple(tiny_servers), codec=codec, plan=plan)
    async with EdgeSession(config) as session:
        embedding = await session.embed(image)
        with torch.inference_mode():
            reference = session.sam.image_encoder(embedding.prepared.tensor)
    error = relative_error(embedding.tensor, reference)
    assert 0 < error <= bound, f"{codec} ({plan} plan): relative error {error:.2e}"
    requests = [r for seen in received for r in seen]
    assert requests and all(r.residual_asked and r.residual_sent for r in requests)


async def test_masks_identical_to_sam_predictor(tiny_workers: list[str]) -> None:
    image = scene(240, 320, seed=3)
    prompts = [
        ObjectPrompt(points=((128.0, 108.0),), labels=(1,)),
        ObjectPrompt(box=(200.0, 140.0, 290.0, 210.0)),
        ObjectPrompt(points=((128.0, 108.0), (20.0, 20.0)), labels=(1, 0), box=(60.0, 40.0, 200.0, 180.0)),
    ]
    config = EdgeConfig(model=TINY, workers=tuple(tiny_workers))
    async with EdgeSession(config) as session:
        results = await session.segment(image, prompts)
        predictor = SamPredictor(session.sam)
        predictor.set_image(image)
    for prompt, result in zip(prompts, results):
        points, labels, box = prompt.arrays()
        masks, scores, _ = predictor.predict(
            point_coords=points, point_labels=labels, box=box, multimask_output=prompt.ambiguous
        )
        best = int(np.argmax(scores))
        assert result.mask.shape == (240, 320)
        np.testing.assert_array_equal(result.mask, masks[best])
        assert result.score == pytest.approx(float(scores[best]), rel=1e-4)


async def test_vit_b_split_embedding_equals_monolithic(vit_b_shape: ModelPreset) -> None:
    """ViT-B shape (1024 px, 64x64 tokens padded to 70x70, 25 windows, 4 segments), one 4:3 frame
    through 2 workers: exact, with the masks SAM gives; and with only the first of the segments
    sent (every N is checked on tiny, and on ViT-B's plan in tests/partitioner/test_plan.py), exact
    with a quarter of the frame's bytes, less its padding: the bottom 8 of 64 token rows."""
    from concurrent.futures import ThreadPoolExecutor

    from pedsam.partitioner.assignment import Assignment
    from pedsam.stream.core.encoder import SplitEncoder
    from pedsam.stream.fleet.remote import RemoteWorker
    from pedsam.workers.server import WorkerLimits, WorkerModel, WorkerServer

    source = ModelSource(preset=vit_b_shape.name, seed=1)
    model = WorkerModel(source)
    servers = [WorkerServer(model, WorkerLimits()) for _ in range(2)]
    addresses = [await s.start("127.0.0.1", 0) for s in servers]
    remote: dict[int, tuple[float, int, list[str | None]]] = {}  # N -> (error, tensor bytes, edge_only)
    try:
        config = EdgeConfig(model=source, workers=tuple(addresses), scheme="interleaved")
        async with EdgeSession(config) as session:
            embedding = await session.embed(scene(480, 640, seed=5))
            with torch.inference_mode():
                reference = session.sam.image_encoder(embedding.prepared.tensor)
            prompts = [
                ObjectPrompt(points=((250.0, 215.0),), labels=(1,)),
                ObjectPrompt(box=(420.0, 290.0, 570.0, 400.0)),
            ]
            split_masks = [await session.decode(embedding, p) for p in prompts]
            monolithic = replace(embedding, tensor=reference)
            reference_masks = [await session.decode(monolithic, p) for p in prompts]
            workers = [e for e in session.encoder.executors.values() if isinstance(e, RemoteWorker)]
            image, shares = embedding.prepared.tensor, embedding.audit.assignment.shares
            with ThreadPoolExecutor(1) as pool:
                for n in (1,):  # each N costs a whole ViT-B pass
                    encoder = SplitEncoder(session.sam, session.preset, session.encoder.executors, pool,
                                           remote_segments=n)
                    before = sum(w.stats.raw_sent + w.stats.raw_received for w in workers)
                    tensor, audit = await encoder.encode(n, image, Assignment(frame_index=n, shares=shares))
                    moved = sum(w.stats.raw_sent + w.stats.raw_received for w in workers) - before
                    remote[n] = (relative_error(tensor, reference), moved, [s.edge_only for s in audit.segments])
    finally:
        for s in servers:
            await s.stop(0)
    assert embedding.tensor.shape == (1, vit_b_shape.prompt_embed_dim, 64, 64)
    assert relative_error(embedding.tensor, reference) <= 1e-4
    assert len(embedding.audit.segments) == 4
    for got, want in zip(split_masks, reference_masks):
        assert got.mask.shape == (480, 640)
        np.testing.assert_array_equal(got.mask, want.mask)
        assert got.score == pytest.approx(want.score, rel=1e-4)
    for n, (error, moved, edge_only) in remote.items():
        assert error <= 1e-4, n
        assert moved == n * 2 * 56 * 64 * vit_b_shape.embed_dim * 4, n
        assert edge_only == [None] * n + ["remote_segments"] * (4 - n)


async def test_padding_windows_first_segment_is_computed_once(tiny_workers: list[str]) -> None:
    # A 4:3 frame at the tiny model: windows 6, 7, 8 are pure padding and stay on the edge. Their
    # first segment sees the same tokens on every frame, so the edge computes it once. (No
    # --verify: the windows the edge would recompute to check workers would be counted too.)
    config = EdgeConfig(model=TINY, workers=tuple(tiny_workers), verify=0.0)
    frames = [scene(240, 320, seed=s) for s in (1, 2, 3)]
    async with EdgeSession(config) as session:
        edge = session.encoder.executors[EDGE]
        asked: list[tuple[int, int, int]] = []  # (frame, segment, windows)
        run = edge.run

        async def counting(frame_id: int, segment: int, tokens: torch.Tensor, extents: Any) -> torch.Tensor:
            asked.append((frame_id, segment, len(extents)))
            return await run(frame_id, segment, tokens, extents)

        edge.run = counting  # type: ignore[method-assign]
        embeddings = [await session.embed(image) for image in frames]
        with torch.inference_mode():
            references = [session.sam.image_encoder(e.prepared.tensor) for e in embeddings]
    for embedding, reference in zip(embeddings, references):
        assert relative_error(embedding.tensor, reference) <= 1e-4
        for segment in embedding.audit.segments:  # the audit names them every frame, every segment
            assert segment.shares[EDGE] == [6, 7, 8]
    assert asked == [(0, 0, 3), (0, 1, 3), (1, 1, 3), (2, 1, 3)]
