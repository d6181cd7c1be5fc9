"""Where a model computes, and in what precision: ``--device`` and ``--compute-dtype``.

Workers and the edge choose their device the same way, once, before any work::

    request   auto | cpu | cuda | cuda:N | mps            (--device; default auto)
    precision fp32 | bf16 | fp16                         (--compute-dtype; default fp32)
      -> select(request, precision) -> Placement("cuda:0", "NVIDIA A10G", "fp32", reason)

``auto`` takes the first CUDA device when torch can use one, else MPS, else the CPU, and the
placement's ``reason`` says why. A device that is not there is a :class:`DeviceError` (one line:
what was asked, what this machine has).

Reduced precision where it makes no sense is refused, not warned about (a warning would let a
configuration meant for a GPU run slowly where there is none): ``fp16`` on any CPU (torch's CPU
fp16 kernels are slower than fp32), and ``bf16`` on a CPU without native bf16 arithmetic
(AVX512-BF16, AMX or Arm BF16; plain bf16 is far slower than fp32 there, DESIGN.md). On a CPU that
has it, ``bf16`` is allowed, with a note that it is not exact: under autocast it took about half
fp32's CPU time for ViT-B on this project's AVX512-BF16 machine (``tests/stream/core/test_precision.py``
prints both with ``-s``). Every reduced-precision placement carries such a note, which the worker's
serving line and the edge's start show.

Precision: whenever a placement is selected, TF32 is switched off for CUDA matrix multiplies and
cuDNN convolutions (``torch.backends.cuda.matmul.allow_tf32`` and
``torch.backends.cudnn.allow_tf32`` set to False, ``torch.set_float32_matmul_precision("highest")``),
and fp16/bf16 GEMMs accumulate in full fp32 (the reduced-precision-reduction flags set to False).
TF32 keeps 10 mantissa bits, about 1e-3 relative per product, which would break the fp32 bound of
1e-4 against ``segment_anything`` on the CPU. These are process-wide torch flags; a process that
runs pedsam runs with them.

``bf16``/``fp16`` run the ViT blocks (windowed and global) under ``torch.autocast``: matrix
multiplies and attention in the reduced type, layer norms and the residual stream in fp32, weights
kept in fp32. The patch embedding, the neck, the prompt encoder and the mask decoder stay fp32;
the wire carries fp32 (or the chosen codec) either way.

No torch at import: the command line reads the names here; torch is imported when a device is
probed or used.
"""

from __future__ import annotations

import contextlib
import re
import threading
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from pedsam.workers.errors import DeviceError

if TYPE_CHECKING:
    import torch

__all__ = [
    "COMPUTE_DTYPES", "CPU", "DEVICE_CHOICES", "ERROR_BOUNDS", "CudaDevice", "Hardware", "Placement",
    "Uploader", "check_request", "configure_precision", "cpu_has_bf16", "precision_note", "select",
]

DEVICE_CHOICES = "auto|cpu|cuda|cuda:N|mps"
COMPUTE_DTYPES: tuple[str, ...] = ("fp32", "bf16", "fp16")
REDUCED = frozenset({"bf16", "fp16"})
ERROR_BOUNDS: dict[str, float] = {"fp32": 1e-4, "bf16": 2e-2, "fp16": 2e-3}
"""Max abs error of an embedding over the max abs value of ``segment_anything``'s fp32 one on the
CPU. fp32's is the exactness bound, checked on the CPU and (where there is one) on a GPU; bf16's
and fp16's are targets, met by the CPU's autocast emulation and not measured on a GPU (README)."""
CPU_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})  # /proc/cpuinfo: x86 flags, Arm Features

_REQUEST = re.compile(r"^(auto|cpu|mps|cuda)(?::(\d+))?$")


def check_request(device: str, compute_dtype: str = "fp32") -> None:
    """The spelling of a device request and a precision, and the one combination refused without
    looking at the machine (fp16 on an explicit ``cpu``).

    Raises:
        DeviceError: one line naming the flag and what to give instead.
    """
    match = _REQUEST.match(device)
    if match is None or (match.group(2) is not None and match.group(1) != "cuda"):
        raise DeviceError(f"--device {device!r}: give one of {DEVICE_CHOICES.replace('|', ', ')}")
    if compute_dtype not in COMPUTE_DTYPES:
        raise DeviceError(f"--compute-dtype {compute_dtype!r}: give one of {', '.join(COMPUTE_DTYPES)}")
    if device == "cpu" and compute_dtype == "fp16":
        raise DeviceError(_cpu_refusal("fp16", "--device cpu", cpu_bf16=None))


def _cpu_refusal(compute_dtype: str, why: str, *, cpu_bf16: bool | None) -> str:
    """Why reduced precision is refused on this CPU, and what to give instead."""
    if compute_dtype == "fp16":
        instead = "use --compute-dtype fp32" + (", or bf16 on this CPU" if cpu_bf16 else "")
        return f"--compute-dtype fp16 needs a GPU, and {why}: CPU fp16 is slower than fp32 and inexact; {instead}"
    return (f"--compute-dtype bf16 needs a GPU or a CPU with native bf16 (AVX512-BF16, AMX or Arm BF16), and {why}"
            " without it: bf16 would be far slower than fp32 and inexact; use --compute-dtype fp32")


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively, from ``/proc/cpuinfo`` (x86 ``flags``, Arm
    ``Features``); False where that file is missing (not Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as file:
            lines = [line for line in file if line.startswith(("flags", "Features"))]
    except OSError:
        return False
    return any(CPU_BF16_FLAGS & set(line.partition(":")[2].split()) for line in lines)


def precision_note(compute_dtype: str, kind: str) -> str:
    """What a person is told about a reduced precision (empty for fp32)."""
    if compute_dtype not in REDUCED:
        return ""
    where = " (this CPU's native bf16)" if kind == "cpu" else ""
    bound = f"{ERROR_BOUNDS[compute_dtype]:.0e}".replace("e-0", "e-")
    return f"{compute_dtype}{where} is not exact: embedding error target {bound} relative (fp32: 1e-4)"


@dataclass(frozen=True, slots=True)
class CudaDevice:
    """One CUDA device as torch sees it."""

    name: str
    memory_bytes: int
    bf16: bool  # native bf16 arithmetic (compute capability 8.0 and later)


@dataclass(frozen=True, kw_only=True, slots=True)
class Hardware:
    """The devices torch can use in this process, and why the missing ones are missing.

    A plain value: :meth:`probe` reads it from torch; tests describe other machines with it.
    """

    cuda: tuple[CudaDevice, ...] = ()
    no_cuda: str = ""  # why there is no CUDA device ("" when there is one)
    mps: bool = False
    no_mps: str = ""
    cpu_bf16: bool = False  # the CPU has native bf16 arithmetic (cpu_has_bf16)

    @classmethod
    def probe(cls) -> Hardware:
        """What this process's torch can use (initialises CUDA when there is a device)."""
        import torch

        devices: tuple[CudaDevice, ...] = ()
        if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
            no_cuda = f"torch {torch.__version__} is built without CUDA"
        elif not torch.cuda.is_available():
            no_cuda = "torch.cuda.is_available() is False, no NVIDIA driver or GPU found"
        else:
            devices = tuple(
                CudaDevice(
                    name=torch.cuda.get_device_name(i),
                    memory_bytes=int(torch.cuda.get_device_properties(i).total_memory),
                    bf16=torch.cuda.get_device_capability(i) >= (8, 0),
                )
                for i in range(torch.cuda.device_count())
            )
            no_cuda = "" if devices else "torch.cuda.device_count() is 0"
        mps_backend = getattr(torch.backends, "mps", None)
        mps = bool(mps_backend is not None and mps_backend.is_available())
        if mps:
            no_mps = ""
        elif mps_backend is None or not mps_backend.is_built():
            no_mps = "this torch is built without MPS"
        else:
            no_mps = "torch.backends.mps.is_available() is False"
        return cls(cuda=devices, no_cuda=no_cuda, mps=mps, no_mps=no_mps, cpu_bf16=cpu_has_bf16())

    def cuda_list(self) -> str:
        """``1 CUDA device (cuda:0 NVIDIA A10G)``, for messages."""
        names = ", ".join(f"cuda:{i} {d.name}" for i, d in enumerate(self.cuda))
        return f"{len(self.cuda)} CUDA device{'s' if len(self.cuda) != 1 else ''} ({names})"


@dataclass(frozen=True, kw_only=True, slots=True)
class Placement:
    """Where a model computes and in what precision, as selected (see :func:`select`).

    Attributes:
        device: torch's device string: ``"cpu"``, ``"cuda:0"``, ``"mps"``.
        name: the device's own name (``"NVIDIA A10G"``), ``"cpu"`` or ``"Apple MPS"``.
        compute_dtype: ``"fp32"`` (exact), ``"bf16"`` or ``"fp16"``.
        reason: why this device: ``"asked for"``, or what ``auto`` found.
        memory_bytes: the device's total memory (CUDA), else None.
        note: what a person must know about the precision (:func:`precision_note`; empty for fp32).
    """

    device: str
    name: str
    compute_dtype: str = "fp32"
    reason: str = "asked for"
    memory_bytes: int | None = None
    note: str = ""

    @property
    def kind(self) -> str:
        """``"cpu"``, ``"cuda"`` or ``"mps"``."""
        return self.device.split(":")[0]

    @property
    def torch_device(self) -> torch.device:
        import torch

        return torch.device(self.device)

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The reduced type the blocks compute in, or None for fp32."""
        import torch

        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.compute_dtype)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """A context for the ViT blocks' arithmetic: nothing for fp32, else ``torch.autocast``."""
        dtype = self.autocast_dtype
        if dtype is None:
            return contextlib.nullcontext()
        import torch

        return torch.autocast(device_type=self.kind, dtype=dtype)

    def synchronize(self) -> None:
        """Wait for the device's queued work (for timing); nothing on the CPU."""
        import torch

        if self.kind == "cuda":
            torch.cuda.synchronize(self.device)
        elif self.kind == "mps":
            torch.mps.synchronize()

    def describe(self) -> str:
        """``cuda:0 (NVIDIA A10G), fp32`` or ``cpu, fp32``."""
        named = self.device if self.name == self.device else f"{self.device} ({self.name})"
        return f"{named}, {self.compute_dtype}"

    def to_json(self) -> dict[str, Any]:
        return {"device": self.device, "name": self.name, "compute_dtype": self.compute_dtype,
                "reason": self.reason, "memory_bytes": self.memory_bytes, "note": self.note}


CPU = Placement(device="cpu", name="cpu", reason="default")
"""The CPU in fp32: where everything computes unless a placement says otherwise."""


def select(device: str = "auto", compute_dtype: str = "fp32", *, hardware: Hardware | None = None) -> Placement:
    """The placement for a request, checked against this machine (``hardware``, probed when None),
    and the process's precision flags set (:func:`configure_precision`).

    Raises:
        DeviceError: a bad spelling, a device this machine does not have, or reduced precision
            where it makes no sense (fp16 on a CPU, bf16 on a CPU or CUDA device without it).
    """
    check_request(device, compute_dtype)
    configure_precision()
    if device == "cpu":  # no probe: it would initialise CUDA for nothing
        cpu_bf16 = compute_dtype == "bf16" and (hardware.cpu_bf16 if hardware is not None else cpu_has_bf16())
        return _checked(Placement(device="cpu", name="cpu", compute_dtype=compute_dtype), "--device cpu", cpu_bf16)
    found = hardware if hardware is not None else Hardware.probe()
    match = _REQUEST.match(device)
    assert match is not None
    kind, index = match.group(1), match.group(2)
    if kind == "auto":
        placement = _auto(found, compute_dtype)
    elif kind == "mps":
        if not found.mps:
            raise DeviceError(f"--device mps: no MPS device here ({found.no_mps}); use --device auto or cpu")
        placement = Placement(device="mps", name="Apple MPS", compute_dtype=compute_dtype)
    else:
        if not found.cuda:
            raise DeviceError(f"--device {device}: no CUDA device here ({found.no_cuda}); use --device auto or cpu")
        number = int(index) if index is not None else 0
        if number >= len(found.cuda):
            raise DeviceError(f"--device {device}: out of range, this machine has {found.cuda_list()}")
        placement = _cuda(found, number, compute_dtype, "asked for")
    if placement.kind == "cuda" and compute_dtype == "bf16":
        number = int(placement.device.split(":")[1])
        if not found.cuda[number].bf16:
            raise DeviceError(f"--compute-dtype bf16: {placement.device} ({found.cuda[number].name}) has no native "
                              "bf16 (it needs compute capability 8.0); use fp16 or fp32")
    return _checked(placement, f"--device auto chose the CPU ({placement.reason})", found.cpu_bf16)


def _checked(placement: Placement, why: str, cpu_bf16: bool) -> Placement:
    """``placement`` with its precision note, or the refusal of a precision the CPU cannot use well."""
    if placement.kind == "cpu" and (placement.compute_dtype == "fp16" or
                                    placement.compute_dtype == "bf16" and not cpu_bf16):
        raise DeviceError(_cpu_refusal(placement.compute_dtype, why, cpu_bf16=cpu_bf16))
    return replace(placement, note=precision_note(placement.compute_dtype, placement.kind))


def _cuda(found: Hardware, number: int, compute_dtype: str, reason: str) -> Placement:
    spec = found.cuda[number]
    return Placement(device=f"cuda:{number}", name=spec.name, compute_dtype=compute_dtype, reason=reason,
                     memory_bytes=spec.memory_bytes)


def _auto(found: Hardware, compute_dtype: str) -> Placement:
    if found.cuda:
        return _cuda(found, 0, compute_dtype, f"auto: first of {found.cuda_list()}")
    if found.mps:
        return Placement(device="mps", name="Apple MPS", compute_dtype=compute_dtype,
                         reason=f"auto: MPS; no CUDA ({found.no_cuda})")
    return Placement(device="cpu", name="cpu", compute_dtype=compute_dtype,
                     reason=f"auto: no GPU (CUDA: {found.no_cuda}; MPS: {found.no_mps})")


def configure_precision() -> None:
    """Switch TF32 and reduced-precision GEMM reductions off, process-wide (see the module
    docstring); called by every :func:`select`."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = False
    torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = False
    torch.set_float32_matmul_precision("highest")


class Uploader:
    """Moves host tensors to one device, once each.

    On CUDA through a pinned (page-locked) host buffer kept per thread and reused while it is
    large enough: the one host copy a transfer from pageable memory makes anyway goes into memory
    the GPU reads at full speed, and the copy to the device is queued without waiting. Before the
    buffer is written again, the previous transfer out of it is waited for. Elsewhere ``to``.
    """

    def __init__(self, device: str) -> None:
        self.device = device
        self._local = threading.local()

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        """A host tensor (any dtype; read-only memory is fine) -> the same values on the device."""
        if str(tensor.device) == self.device:
            return tensor
        if not self.device.startswith("cuda") or tensor.device.type != "cpu":
            return tensor.to(self.device)
        import torch

        nbytes = tensor.numel() * tensor.element_size()
        pending: Any = getattr(self._local, "pending", None)
        if pending is not None:
            pending.synchronize()  # the last transfer out of the buffer is done
        buffer: torch.Tensor | None = getattr(self._local, "buffer", None)
        if buffer is None or buffer.numel() < nbytes:
            self._local.buffer = None
            buffer = self._local.buffer = torch.empty(max(nbytes, 1), dtype=torch.uint8, pin_memory=True)
        staged = buffer[:nbytes].view(tensor.dtype).view(tensor.shape)
        staged.copy_(tensor)
        out = staged.to(self.device, non_blocking=True)
        event = torch.cuda.Event()  # type: ignore[no-untyped-call]
        event.record()
        self._local.pending = event
        return out

