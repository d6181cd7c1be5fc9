"""Errors at the command line's boundary: one readable line, and the exit status.

Every error pedsam raises on purpose belongs to one of three families, one per package:
:class:`~pedsam.stream.errors.PedsamError` (the edge), :class:`~pedsam.workers.errors.WorkerSideError`
(a worker) and :class:`~pedsam.partitioner.errors.PartitionerError` (the pure logic). They are
translated here, once: ``pedsam: error: <the error's own line>`` and exit status 2.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from pedsam.partitioner.errors import PartitionerError
from pedsam.stream.errors import ConfigError, PedsamError
from pedsam.workers.errors import WorkerSideError

__all__ = ["FAMILIES", "guard", "require"]

FAMILIES = (PedsamError, WorkerSideError, PartitionerError)


def require(module: str, extra: str, command: str) -> None:
    """Raise a one-line ConfigError when ``module``, which only ``command`` needs, is not installed."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"pedsam {command} needs {module}, which is not installed: pip install 'pedsam[{extra}]'")


def guard(action: Callable[[], int]) -> int:
    """Run a command; a user-facing error becomes one line on stderr and exit status 2."""
    try:
        return action()
    except FAMILIES as exc:
        print(f"pedsam: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pedsam: interrupted", file=sys.stderr)
        return 130
