"""Exceptions of the worker side.

::

    WorkerSideError
     +-- ModelError (ValueError)       unknown preset, bad seed
     |    +-- CheckpointError          a checkpoint file that is missing or does not fit the preset
     +-- DeviceError (ValueError)      a --device this machine does not have, or a --compute-dtype
     |                                 that makes no sense there (reduced precision on a CPU)
     +-- RequestError (ValueError)     a segment request that breaks the contract; carries the
     |                                 gRPC status code the worker answers with
     +-- PayloadError (ValueError)     a tensor's bytes that do not decode to its shape (a bad
                                       compressed frame, a wrong size); either side raises it
"""

from __future__ import annotations

import grpc


class WorkerSideError(Exception):
    """Base of the worker side's exceptions; ``str()`` is one readable line."""


class ModelError(WorkerSideError, ValueError):
    """A model that cannot be built as asked (unknown preset, bad option)."""


class CheckpointError(ModelError):
    """A checkpoint that is missing, unreadable, or does not match the preset's shapes."""


class DeviceError(WorkerSideError, ValueError):
    """A device that is not there, or a precision that does not fit the device (see
    :mod:`pedsam.workers.device`); raised before any work."""


class RequestError(WorkerSideError, ValueError):
    """A segment request the worker refuses; ``code`` is the gRPC status to answer with."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class PayloadError(WorkerSideError, ValueError):
    """A tensor payload that does not decode to what its shape and codec promise: a compressed
    frame that is corrupt, declares another size, or is not one whole frame; or a byte count
    that does not match. The worker answers INVALID_ARGUMENT; the edge fails the worker."""
