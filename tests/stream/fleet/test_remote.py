"""The edge's worker client on real loopback workers: compression agreed from ModelInfo, both ways,
plain bytes with a worker that predates it, and wire bytes counted as they cross."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import torch

from pedsam.partitioner.offload import OffloadStage
from pedsam.protos import pedsam_pb2 as pb
from pedsam.stream.core.session import EdgeConfig, EdgeSession
from pedsam.stream.fleet.links import LinkSpec
from pedsam.stream.fleet.remote import RemoteWorker
from pedsam.workers import codec as wire
from pedsam.workers.server import WindowWorkerService, WorkerLimits, WorkerModel, WorkerServer
from tests.support import TINY, scene

ZSTD = pb.COMPRESSION_ZSTD_PLANES
EXTENTS = [(14, 14), (4, 14)]


def on_the_wire(server: WorkerServer) -> list[tuple[int, int, int, int]]:
    """Per request the worker computes: its tokens' and mixed's compression, the result
    compression asked for, and the compression of the result it sent."""
    seen: list[tuple[int, int, int, int]] = []
    service = server._service
    compute = service._compute

    def recording(request: pb.SegmentRequest) -> pb.SegmentResult:
        result = compute(request)
        seen.append((request.tokens.compression, request.mixed.compression, request.result_compression,
                     result.tokens.compression))
        return result

    service._compute = recording  # type: ignore[method-assign]
    return seen


@pytest.fixture
async def worker(tiny_worker_model: WorkerModel) -> AsyncIterator[tuple[str, WorkerServer]]:
    server = WorkerServer(tiny_worker_model, WorkerLimits())
    try:
        yield await server.start("127.0.0.1", 0), server
    finally:
        await server.stop(0)


@pytest.fixture
def old_worker_describe(monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers made after this answer Describe as a worker from before compression: no
    ``compressions`` (the field is unknown to it, so it reads as empty)."""
    describe = WindowWorkerService.Describe

    async def old(self: WindowWorkerService, request: pb.DescribeRequest, context: Any) -> pb.ModelInfo:
        info = await describe(self, request, context)
        info.ClearField("compressions")
        return info

    monkeypatch.setattr(WindowWorkerService, "Describe", old)


async def run_both(client: RemoteWorker, model: WorkerModel) -> None:
    """A segment request and an offload stage through ``client``; both must equal the runner's."""
    gen = torch.Generator().manual_seed(3)
    tokens = torch.randn(14 * 14 + 4 * 14, 64, generator=gen) * 3
    mixed = torch.randn(14 * 14 + 4 * 14, 64, generator=gen)
    got = await client.run(0, 1, tokens, EXTENTS)
    assert torch.equal(got, model.runner.run(1, tokens, EXTENTS))
    stage = OffloadStage(segment=1, finish=2, start=5)
    out, qkv = await client.run_stage(0, stage, tokens, mixed, EXTENTS)
    want, want_qkv = model.runner.run_stage(1, tokens, EXTENTS, finish=2, mixed=mixed, start=5)
    assert torch.equal(out, want) and qkv is not None and want_qkv is not None and torch.equal(qkv, want_qkv)


async def test_compression_both_ways_with_a_worker_that_lists_it(
    worker: tuple[str, WorkerServer], tiny_worker_model: WorkerModel
) -> None:
    address, server = worker
    seen = on_the_wire(server)
    client = RemoteWorker(address, fingerprint=tiny_worker_model.fingerprint, compression="zstd", probe_interval=None)
    await client.connect()
    try:
        assert client.compression == "zstd"
        await run_both(client, tiny_worker_model)
    finally:
        await client.close()
    assert seen == [(ZSTD, 0, ZSTD, ZSTD), (ZSTD, ZSTD, ZSTD, ZSTD)]
    stats = client.stats
    # Counted as they crossed: fewer bytes than the tensors hold, which are counted too.
    rows = 14 * 14 + 4 * 14
    assert stats.raw_sent == wire.payload_bytes(pb.CODEC_FP32, rows, 64) * 3  # tokens; tokens and mixed
    assert stats.raw_received == wire.payload_bytes(pb.CODEC_FP32, rows, 64) * (1 + 1 + 3)  # tokens; tokens, qkv
    assert 0 < stats.payload_sent < stats.raw_sent and 0 < stats.payload_received < stats.raw_received
    assert stats.payload_sent < stats.message_sent < stats.payload_sent + 1024


async def test_a_worker_from_before_compression_gets_plain_bytes_and_is_asked_for_none(
    old_worker_describe: None, worker: tuple[str, WorkerServer], tiny_worker_model: WorkerModel
) -> None:
    address, server = worker
    seen = on_the_wire(server)
    client = RemoteWorker(address, fingerprint=tiny_worker_model.fingerprint, compression="zstd", probe_interval=None)
    assert list((await client.connect()).compressions) == []
    try:
        assert client.compression == "off"
        await run_both(client, tiny_worker_model)
    finally:
        await client.close()
    assert seen == [(0, 0, 0, 0)] * 2
    assert client.stats.payload_sent == client.stats.raw_sent and client.stats.payload_received == client.stats.raw_received


async def test_a_result_that_would_inflate_past_its_shape_fails_the_worker(
    worker: tuple[str, WorkerServer], tiny_worker_model: WorkerModel
) -> None:
    """The edge bounds decompression by the shape it sent, as the worker does: a result whose frame
    declares more bytes is refused before anything is decompressed, and the worker counts as failed."""
    import zstandard

    from pedsam.stream.errors import WorkerError

    address, server = worker
    service = server._service
    compute = service._compute

    def bomb(request: pb.SegmentRequest) -> pb.SegmentResult:
        result = compute(request)
        result.tokens.data = zstandard.ZstdCompressor().compress(bytes(64 << 20))
        return result

    service._compute = bomb  # type: ignore[method-assign]
    client = RemoteWorker(address, fingerprint=tiny_worker_model.fingerprint, compression="zstd", probe_interval=None)
    await client.connect()
    try:
        with pytest.raises(WorkerError, match="malformed result: tokens declare 67108864 bytes"):
            await client.run(0, 0, torch.zeros(14 * 14, 64), [(14, 14)])
        assert client.failed is not None
    finally:
        await client.close()


async def test_auto_compresses_across_links_not_on_loopback(tiny_workers: list[str]) -> None:
    """``auto``: plain bytes to loopback workers, zstd behind an emulated link, and either way the
    same exact embedding; ``zstd`` and ``off`` as said. Wire bytes are counted after compression."""
    image = scene(240, 320, seed=2)
    fast = LinkSpec.parse("2gbit:0ms")
    summaries = {}
    embeddings = {}
    for name, compression, links in [("loopback", "auto", ()), ("link", "auto", (fast,)),
                                     ("zstd", "zstd", ()), ("off", "off", (fast,))]:
        config = EdgeConfig(model=TINY, workers=tuple(tiny_workers), compression=compression, links=links)
        async with EdgeSession(config) as session:
            embeddings[name] = (await session.embed(image)).tensor
            summaries[name] = session.wire_summary()
    for name, wanted in [("loopback", "off"), ("link", "zstd"), ("zstd", "zstd"), ("off", "off")]:
        assert {w["compression"] for w in summaries[name].values()} == {wanted}, name
        for w in summaries[name].values():
            assert w["raw_sent"] > 0 and w["raw_received"] > 0
            squeezed = wanted == "zstd"
            assert (w["payload_sent"] < w["raw_sent"]) == squeezed and (w["payload_received"] < w["raw_received"]) == squeezed
        assert torch.equal(embeddings[name], embeddings["loopback"]), name
