"""The edge's device: chosen before any work, reported with every worker's in the summary and the
metrics, and the same behaviour whatever a worker says about its own."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from pedsam.protos import pedsam_pb2 as pb
from pedsam.stream.core.session import EdgeConfig, EdgeSession
from pedsam.stream.errors import ConfigError
from pedsam.stream.fleet.local import LocalWorkers
from pedsam.stream.runs.job import RunSettings, summarize
from pedsam.stream.runs.stats import RunStats
from pedsam.workers.device import CudaDevice, Hardware
from pedsam.workers.server import WindowWorkerService, WorkerLimits, WorkerModel, WorkerServer
from tests.support import TINY, scene, scrape

NO_GPU = Hardware(no_cuda="torch.cuda.is_available() is False, no NVIDIA driver or GPU found", no_mps="not built")
ONE_GPU = Hardware(cuda=(CudaDevice(name="Fake A10G", memory_bytes=24 << 30, bf16=True),), no_mps="not built")


@pytest.fixture
def nothing_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if a session gets as far as starting workers or building its model."""
    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("work started before the device was checked")

    monkeypatch.setattr(LocalWorkers, "start", forbidden)
    monkeypatch.setattr("pedsam.workers.models.ModelSource.build", forbidden)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"device": "gpu"}, "--device 'gpu': give one of auto, cpu, cuda, cuda:N, mps"),
        ({"device": "cpu", "compute_dtype": "fp16"}, "--compute-dtype fp16 needs a GPU, and --device cpu"),
        ({"compute_dtype": "fp64"}, "--compute-dtype 'fp64'"),
    ],
)
def test_a_bad_device_setting_is_a_config_error_when_the_config_is_made(kwargs: dict[str, str], words: str) -> None:
    with pytest.raises(ConfigError, match="^" + words.replace("(", r"\(").replace(")", r"\)")):
        EdgeConfig(model=TINY, local_workers=2, **kwargs)


@pytest.mark.parametrize(
    ("hardware", "kwargs", "words"),
    [
        (ONE_GPU, {"device": "cuda:3"}, "--device cuda:3: out of range, this machine has 1 CUDA device"),
        (NO_GPU, {"device": "cuda"}, "--device cuda: no CUDA device here (torch.cuda.is_available() is False"),
        (NO_GPU, {"device": "mps"}, "--device mps: no MPS device here"),
        (NO_GPU, {"compute_dtype": "fp16"}, "--compute-dtype fp16 needs a GPU, and --device auto chose the CPU"),
        (NO_GPU, {"device": "cpu", "compute_dtype": "bf16"}, "--compute-dtype bf16 needs a GPU or a CPU with native"),
    ],
)
async def test_a_device_that_is_not_there_stops_the_session_before_any_work(
    monkeypatch: pytest.MonkeyPatch, nothing_starts: None, hardware: Hardware, kwargs: dict[str, str], words: str
) -> None:
    monkeypatch.setattr(Hardware, "probe", classmethod(lambda cls: hardware))
    monkeypatch.setattr("pedsam.workers.device.cpu_has_bf16", lambda: hardware.cpu_bf16)
    session = EdgeSession(EdgeConfig(model=TINY, local_workers=2, **kwargs))
    with pytest.raises(ConfigError) as caught:
        await session.open()
    assert str(caught.value).startswith(words), str(caught.value)
    await session.close()


class OldWorkerService(WindowWorkerService):
    """A worker from before the device fields: its Describe has none of them."""

    async def Describe(self, request: pb.DescribeRequest, context: Any) -> pb.ModelInfo:
        info = await super().Describe(request, context)
        for name in ("device", "device_name", "compute_dtype", "device_memory_bytes"):
            info.ClearField(name)
        return info


async def test_the_session_reports_where_the_edge_and_every_worker_compute(
    tiny_servers: dict[str, WorkerServer], tiny_worker_model: WorkerModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On this machine everything is on the CPU; a worker older than the device fields is reported
    as unknown and served as before."""
    with monkeypatch.context() as patch:
        patch.setattr("pedsam.workers.server.WindowWorkerService", OldWorkerService)
        stale = WorkerServer(tiny_worker_model, WorkerLimits())
    old = await stale.start("127.0.0.1", 0)
    new = list(tiny_servers)[:2]
    try:
        await check_devices(old, new, monkeypatch)
    finally:
        await stale.stop(0)


async def check_devices(old: str, new: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Hardware, "probe", classmethod(lambda cls: NO_GPU))
    config = EdgeConfig(model=TINY, workers=(old, *new), metrics_port=0)
    async with EdgeSession(config) as session:
        assert session.placement is not None and session.placement.device == "cpu"
        assert "auto: no GPU" in session.placement.reason
        embedding = await session.embed(scene(120, 160))
        assert embedding.tensor.device.type == "cpu"
        with torch.inference_mode():
            want = session.sam.image_encoder(embedding.prepared.tensor)
        assert float((embedding.tensor - want).abs().max() / want.abs().max()) <= 1e-4
        devices = session.devices_summary()
        metrics = await asyncio.to_thread(scrape, session.metrics_port)
        stats = RunStats()
        stats.stop()
        source = SimpleNamespace(name="photo", kind="image")
        summary = summarize(session, source, stats, RunSettings())  # type: ignore[arg-type]
    edge = {"device": "cpu", "name": "cpu", "compute_dtype": "fp32"}
    assert {k: devices["edge"][k] for k in edge} == edge  # type: ignore[index]
    assert devices["workers"] == {
        old: {"device": "unknown", "name": "unknown", "compute_dtype": "unknown"},
        **{name: edge for name in new},
    }
    assert summary["devices"] == devices
    assert metrics[("pedsam_edge_device_info", tuple(sorted(edge.items())))] == 1
    for name in new:
        labels = tuple(sorted({**edge, "worker": name}.items()))
        assert metrics[("pedsam_edge_worker_device_info", labels)] == 1
    unknown = tuple(sorted({"device": "unknown", "name": "unknown", "compute_dtype": "unknown", "worker": old}.items()))
    assert metrics[("pedsam_edge_worker_device_info", unknown)] == 1
