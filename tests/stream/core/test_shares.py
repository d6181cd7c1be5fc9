"""pedsam.stream.core.shares: the audit is what happened; workers computed exactly the windows it names."""

from __future__ import annotations

import torch

from pedsam.partitioner.assignment import EDGE
from pedsam.partitioner.scheduler import Budget
from pedsam.stream.core.scheduling import RotationSettings
from pedsam.stream.core.session import EdgeConfig, EdgeSession
from pedsam.workers.server import WorkerServer
from tests.support import TINY, Received, carried_windows, record_requests, scene


async def test_workers_compute_the_windows_the_audit_gives_them_and_no_others(
    tiny_servers: dict[str, WorkerServer],
) -> None:
    """Recorded at the workers: per frame and segment, each worker the audit names received one
    request with exactly its windows (the first segment's tokens are those windows' tokens), and
    the windows the audit keeps on the edge (a scene budget with rotation) reached no worker.
    Requests name no frame: a worker's requests of a frame are those it got while it was embedded."""
    received = {address: record_requests(server) for address, server in tiny_servers.items()}
    settings = RotationSettings(policy="round-robin", budget=Budget(scene_cap=0.6))
    config = EdgeConfig(model=TINY, workers=tuple(tiny_servers), rotation=settings)
    per_frame: list[dict[str, list[Received]]] = []
    async with EdgeSession(config) as session:
        embeddings = []
        for index in range(3):
            before = {address: len(seen) for address, seen in received.items()}
            embeddings.append(await session.embed(scene(240, 320, seed=index)))
            per_frame.append({address: seen[before[address]:] for address, seen in received.items()})
        encoder = session.sam.image_encoder
        grid = session.encoder.grid
        with torch.inference_mode():  # the first segment's input: SAM's patch and position embedding
            prologues = [(encoder.patch_embed(e.prepared.tensor) + encoder.pos_embed)[0] for e in embeddings]
    edge_windows = 0
    expected_requests = 0
    for embedding, prologue, got in zip(embeddings, prologues, per_frame):
        audit = embedding.audit
        assert [s.segment for s in audit.segments] == [0, 1] and not any(s.failover for s in audit.segments)
        for segment in audit.segments:
            edge_windows += len(segment.shares.get(EDGE, ()))
            for address, seen in got.items():
                requests = [r for r in seen if r.segment == segment.segment]
                ids = segment.shares.get(address, [])
                assert sum(r.windows for r in requests) == len(ids), (address, audit.frame, segment.segment)
                if not ids:
                    continue
                expected_requests += 1
                [request] = requests
                if segment.segment == 0:  # in the order the edge drew for the request
                    assert sorted(carried_windows(request, prologue, grid, ids)) == ids
    assert edge_windows > 0  # the budget did keep windows on the edge ...
    assert sum(len(seen) for seen in received.values()) == expected_requests  # ... and nothing else was sent
