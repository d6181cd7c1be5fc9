"""``--device`` and ``--compute-dtype`` through the real command line: a device that is not there
is one line and exit status 2, before any work, for the worker and for every edge command."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import PIL.Image
import pytest
import torch

from pedsam.stream.cli.main import main
from pedsam.stream.fleet.local import LocalWorkers
from pedsam.workers.device import CudaDevice, Hardware
from tests.support import assert_one_line_error, pedsam, scene

HAS_CUDA = torch.cuda.is_available()
HAS_MPS = torch.backends.mps.is_available()


@pytest.fixture
def photo(tmp_path: Path) -> str:
    path = tmp_path / "photo.png"
    PIL.Image.fromarray(scene(64, 96)).save(path)
    return str(path)


@pytest.mark.skipif(HAS_CUDA or HAS_MPS, reason="this machine has a GPU: asking for one is no error here")
async def test_asking_for_a_gpu_this_machine_lacks_is_one_line_for_worker_and_edge(
    photo: str, tmp_path: Path
) -> None:
    """Real processes: the worker command and edge commands, each asking for what is not here."""
    save = ("--save", str(tmp_path / "e.npy"))
    cases = [
        (("worker", "--model", "tiny", "--device", "cuda"), ["--device cuda: no CUDA device here", "is_available()"]),
        (("worker", "--model", "tiny", "--device", "mps"), ["--device mps: no MPS device here"]),
        (("worker", "--model", "tiny", "--compute-dtype", "fp16"),
         ["--compute-dtype fp16 needs a GPU", "--device auto chose the CPU", "use --compute-dtype fp32"]),
        (("embed", photo, *save, "--local-workers", "2", "--device", "cuda:1"),
         ["--device cuda:1: no CUDA device here"]),
        (("segment", photo, "--point", "5,5", "--out", str(tmp_path / "m.png"), "--local-workers", "2",
          "--device", "cpu", "--compute-dtype", "fp16"), ["--compute-dtype fp16 needs a GPU, and --device cpu"]),
        (("embed", photo, *save, "--local-workers", "2", "--device", "gpu"), ["--device 'gpu': give one of"]),
    ]
    results = await asyncio.gather(*(pedsam(*args, timeout=120) for args, _ in cases))
    for (args, words), done in zip(cases, results):
        assert_one_line_error(done, *words)
        assert "serving on" not in done.out and "embedding" not in done.out
    assert not (tmp_path / "e.npy").exists()


@pytest.fixture
def one_fake_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process's torch sees one CUDA device, and nothing may get as far as using it: no model
    is built and no worker started."""
    fake = Hardware(cuda=(CudaDevice(name="Fake A10G", memory_bytes=24 << 30, bf16=True),), no_mps="not built")
    monkeypatch.setattr(Hardware, "probe", classmethod(lambda cls: fake))

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("work started before the device was checked")

    monkeypatch.setattr(LocalWorkers, "start", forbidden)
    monkeypatch.setattr("pedsam.workers.models.ModelSource.build", forbidden)


@pytest.mark.parametrize(
    "command",
    [
        ["worker", "--model", "tiny", "--device", "cuda:1"],
        ["embed", "PHOTO", "--save", "E", "--local-workers", "2", "--device", "cuda:3"],
        ["bench", "--model", "tiny", "--device", "cuda:2", "--whole-process", "0"],
    ],
    ids=["worker", "embed", "bench"],
)
def test_a_cuda_index_out_of_range_is_one_line_before_any_work(
    one_fake_gpu: None, photo: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    """The CLI's own entry point in this process, on a machine described as having one GPU."""
    argv = [str(tmp_path / "e.npy") if a == "E" else photo if a == "PHOTO" else a for a in command]
    code = main(argv)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2
    assert len(err) == 1 and err[0].startswith("pedsam: error: --device cuda:"), err
    assert "out of range, this machine has 1 CUDA device (cuda:0 Fake A10G)" in err[0]


def test_the_device_options_come_from_the_config_file_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "edge.toml"
    config.write_text('local_workers = 2\n[compute]\ndevice = "cpu"\ndtype = "fp16"\n')
    assert main(["config", "check", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--compute-dtype fp16 needs a GPU, and --device cpu" in err[0]
    config.write_text('local_workers = 2\n[compute]\ndevice = "cuda:0"\n')
    assert main(["config", "check", str(config)]) == 0
    out = capsys.readouterr().out
    assert "device     cuda:0, fp32; here: " in out
    if not HAS_CUDA:
        assert "not available (--device cuda:0: no CUDA device here" in out
