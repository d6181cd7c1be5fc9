"""The edge's exception family.

Every error the edge raises on purpose derives from :class:`PedsamError`, and its
``str()`` is one readable line that the CLI prints as it is (no traceback, no library
noise). Errors caused by user input also derive from :class:`ValueError`, so code that
only knows "bad value" still catches them::

    Exception
    └── PedsamError
        ├── MediaError   (also ValueError)  video or image missing, unreadable, undecodable
        ├── PromptError  (also ValueError)  point or box malformed or outside the frame
        ├── ConfigError  (also ValueError)  bad command-line option or setting
        ├── SessionError                    an edge session used before it was opened
        ├── WorkerError                     worker unreachable, refusing, or failing
        │   └── TamperingError              a worker's result is not what its windows give
        │                                   (--verify: recomputed on the edge, or impossible)
        └── ExposureBudgetError             sending a frame would exceed an exposure budget
                                            (with --on-budget stop)

Library exceptions (``av.error.*``, ``OSError``, PIL's, gRPC's) are translated into this
family once, at the boundary where they occur, with the original chained as ``__cause__``.
"""

from __future__ import annotations

__all__ = [
    "ConfigError", "ExposureBudgetError", "MediaError", "PedsamError", "PromptError", "SessionError", "TamperingError",
    "WorkerError", "first_error",
]


class PedsamError(Exception):
    """Base of the edge's exceptions; ``str()`` is one readable line for the CLI."""


class MediaError(PedsamError, ValueError):
    """A video or image that is missing, unreadable or undecodable."""


class PromptError(PedsamError, ValueError):
    """A prompt that is malformed or outside the frame."""


class SessionError(PedsamError):
    """An :class:`~pedsam.stream.core.session.EdgeSession` used before it was opened (or after closing)."""


class WorkerError(PedsamError):
    """A worker that is unreachable, refuses, or fails."""


class TamperingError(WorkerError):
    """A worker returned a result its windows cannot give: windows the edge recomputed differ
    beyond the tolerance, or values are impossible (not finite, or beyond what the blocks can
    produce). ``windows``: the window ids concerned; ``check``: ``"recomputed"`` or
    ``"impossible"``."""

    def __init__(self, message: str, *, windows: tuple[int, ...], check: str) -> None:
        super().__init__(message)
        self.windows = windows
        self.check = check


class ConfigError(PedsamError, ValueError):
    """A bad command-line option or setting."""


class ExposureBudgetError(PedsamError):
    """A frame was not sent: a server would have exceeded its exposure budget (``--on-budget stop``)."""


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error to report for a task group's failure: its first :class:`PedsamError`, looking
    into nested groups, else its first exception of any kind."""
    found: BaseException | None = None
    for exc in group.exceptions:
        inner = first_error(exc) if isinstance(exc, BaseExceptionGroup) else exc
        if isinstance(inner, PedsamError):
            return inner
        found = found or inner
    return found if found is not None else group
