"""Choosing a device: spelling, what ``auto`` picks and why, clear errors for what is not there,
reduced precision refused on the CPU, TF32 off; on machines described by a ``Hardware`` value."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from pedsam.workers.device import (
    CPU,
    CudaDevice,
    Hardware,
    Placement,
    Uploader,
    check_request,
    cpu_has_bf16,
    select,
)
from pedsam.workers.errors import DeviceError, WorkerSideError

NO_GPU = Hardware(no_cuda="torch.cuda.is_available() is False, no NVIDIA driver or GPU found", no_mps="not built")
NO_GPU_BF16_CPU = replace(NO_GPU, cpu_bf16=True)
ONE_GPU = Hardware(cuda=(CudaDevice(name="Fake A10G", memory_bytes=24 << 30, bf16=True),), no_mps="not built")
OLD_GPUS = Hardware(cuda=(CudaDevice(name="Fake T4", memory_bytes=16 << 30, bf16=False),) * 2, no_mps="not built")
MAC = Hardware(no_cuda="torch 2.14.1 is built without CUDA", mps=True)


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:7", "mps"])
def test_every_documented_spelling_is_accepted(device: str) -> None:
    check_request(device)


@pytest.mark.parametrize("device", ["gpu", "cuda:", "cuda:x", "cpu:0", "mps:1", "CUDA", "cuda:-1", ""])
def test_a_misspelt_device_is_one_line_naming_the_choices(device: str) -> None:
    with pytest.raises(DeviceError) as caught:
        check_request(device)
    message = str(caught.value)
    assert "\n" not in message and f"--device {device!r}" in message and "cuda:N" in message
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, WorkerSideError)


def test_auto_takes_the_first_gpu_and_says_so() -> None:
    placement = select("auto", hardware=ONE_GPU)
    assert (placement.device, placement.name, placement.compute_dtype) == ("cuda:0", "Fake A10G", "fp32")
    assert placement.reason == "auto: first of 1 CUDA device (cuda:0 Fake A10G)"
    assert placement.memory_bytes == 24 << 30
    assert placement.describe() == "cuda:0 (Fake A10G), fp32"
    assert select("auto", hardware=MAC).device == "mps"


def test_auto_falls_back_to_the_cpu_with_the_reason() -> None:
    placement = select("auto", hardware=NO_GPU)
    assert placement.device == "cpu" and placement.kind == "cpu"
    assert "no GPU" in placement.reason and "torch.cuda.is_available() is False" in placement.reason
    assert placement.describe() == "cpu, fp32"


def test_auto_on_this_machine_says_what_it_found() -> None:
    placement = select("auto")
    if torch.cuda.is_available():
        assert placement.kind == "cuda" and placement.reason.startswith("auto: first of")
    else:
        assert placement.device == "cpu" and "torch" in placement.reason


@pytest.mark.parametrize(
    ("device", "hardware", "words"),
    [
        ("cuda", NO_GPU, ["--device cuda: no CUDA device here", "is_available() is False", "--device auto or cpu"]),
        ("cuda:0", MAC, ["--device cuda:0: no CUDA device here", "built without CUDA"]),
        ("cuda:1", ONE_GPU, ["--device cuda:1: out of range", "1 CUDA device (cuda:0 Fake A10G)"]),
        ("cuda:2", OLD_GPUS, ["out of range", "2 CUDA devices (cuda:0 Fake T4, cuda:1 Fake T4)"]),
        ("mps", ONE_GPU, ["--device mps: no MPS device here (not built)"]),
    ],
)
def test_a_device_that_is_not_there_is_one_clear_line(device: str, hardware: Hardware, words: list[str]) -> None:
    with pytest.raises(DeviceError) as caught:
        select(device, hardware=hardware)
    message = str(caught.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message


def test_an_explicit_device_that_is_there_is_taken_as_asked() -> None:
    placement = select("cuda:1", "fp16", hardware=OLD_GPUS)
    assert (placement.device, placement.compute_dtype, placement.reason) == ("cuda:1", "fp16", "asked for")
    assert placement.autocast_dtype == torch.float16
    assert select("cuda", hardware=ONE_GPU).device == "cuda:0"


@pytest.mark.parametrize("device", ["cpu", "auto"])
def test_fp16_is_refused_on_any_cpu(device: str) -> None:
    if device == "cpu":
        with pytest.raises(DeviceError) as caught:
            check_request("cpu", "fp16")  # refused without looking at the machine
        assert "--compute-dtype fp16 needs a GPU, and --device cpu: CPU fp16 is slower than fp32" in str(caught.value)
    with pytest.raises(DeviceError) as caught:
        select(device, "fp16", hardware=NO_GPU_BF16_CPU)
    message = str(caught.value)
    assert "\n" not in message and "use --compute-dtype fp32" in message
    if device == "auto":  # having looked at the machine, it knows bf16 would do here
        assert "--device auto chose the CPU (auto: no GPU" in message and ", or bf16 on this CPU" in message
    assert select(device if device == "auto" else "cuda", "fp16", hardware=ONE_GPU).compute_dtype == "fp16"


@pytest.mark.parametrize("device", ["cpu", "auto"])
def test_bf16_on_a_cpu_needs_native_bf16_and_then_says_it_is_not_exact(device: str) -> None:
    with pytest.raises(DeviceError) as caught:
        select(device, "bf16", hardware=NO_GPU)
    message = str(caught.value)
    assert "--compute-dtype bf16 needs a GPU or a CPU with native bf16 (AVX512-BF16, AMX or Arm BF16)" in message
    assert "far slower than fp32" in message and "use --compute-dtype fp32" in message
    placement = select(device, "bf16", hardware=NO_GPU_BF16_CPU)
    assert (placement.device, placement.compute_dtype) == ("cpu", "bf16")
    assert placement.note == ("bf16 (this CPU's native bf16) is not exact: embedding error target 2e-2 "
                              "relative (fp32: 1e-4)")
    assert select(device, hardware=NO_GPU_BF16_CPU).note == ""  # fp32 needs no note


def test_this_machines_cpu_is_read_from_proc_cpuinfo() -> None:
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        assert not cpu_has_bf16()
        return
    assert cpu_has_bf16() == any(f" {flag}" in flags for flag in ("avx512_bf16", "amx_bf16", " bf16"))


def test_bf16_needs_a_gpu_that_has_it() -> None:
    with pytest.raises(DeviceError, match=r"cuda:0 \(Fake T4\) has no native bf16"):
        select("cuda", "bf16", hardware=OLD_GPUS)
    with pytest.raises(DeviceError, match="--compute-dtype 'fp8'"):
        select("cuda", "fp8", hardware=ONE_GPU)


def test_selecting_switches_tf32_off_process_wide() -> None:
    flags = torch.backends.cuda.matmul
    flags.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    flags.allow_fp16_reduced_precision_reduction = flags.allow_bf16_reduced_precision_reduction = True
    torch.set_float32_matmul_precision("medium")
    select("cpu")
    assert not flags.allow_tf32 and not torch.backends.cudnn.allow_tf32
    assert not flags.allow_fp16_reduced_precision_reduction and not flags.allow_bf16_reduced_precision_reduction
    assert torch.get_float32_matmul_precision() == "highest"


def test_fp32_computes_without_autocast_and_reduced_precision_with_it() -> None:
    with CPU.autocast():
        assert not torch.is_autocast_enabled("cpu")
    bf16 = Placement(device="cpu", name="cpu", compute_dtype="bf16")  # built directly: select refuses it here
    with bf16.autocast():
        assert torch.is_autocast_enabled("cpu")
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


def test_the_uploader_leaves_host_tensors_alone_on_the_cpu() -> None:
    tokens = torch.frombuffer(bytearray(64), dtype=torch.float32).view(4, 4)
    assert Uploader("cpu")(tokens) is tokens  # no copy of a received message on a CPU worker
