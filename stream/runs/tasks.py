"""Ending tasks the structured way: cancel them, then wait until each has really ended."""

from __future__ import annotations

import asyncio

__all__ = ["cancel_and_wait"]


async def cancel_and_wait(*tasks: asyncio.Task[object] | None) -> None:
    """Cancel ``tasks`` and wait until each has ended, retrieving their outcomes.

    A cancellation of the caller while it waits propagates (``asyncio.wait`` does not swallow
    it); the tasks' own errors and cancellations are collected, not raised.
    """
    pending = {task for task in tasks if task is not None}
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending)
    for task in pending:
        if not task.cancelled():
            task.exception()
