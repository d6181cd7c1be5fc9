"""The edge's view of its workers' health: which are down, and bringing them back.

A worker is *down* from the moment one of its requests fails (the stream broke, it refused, it
missed its deadline) until the edge has reconnected to it: a background task retries every
``reconnect_interval`` seconds (Describe, fingerprint check, a fresh session stream) and marks it
up again on success. While it is down the scheduler gives it nothing and the encoder computes
any of its windows still in flight on the edge (see :mod:`pedsam.stream.core.encoder`).

A worker caught returning tampered tokens (``--verify``, :mod:`pedsam.stream.core.verify`) is
marked down the same way but never brought back: that it answers again says nothing about
whether it computes honestly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import Any, Protocol

from pedsam.stream.errors import WorkerError

__all__ = ["Fleet", "NeverDown", "Reconnectable", "WorkerHealth"]

log = logging.getLogger(__name__)


class WorkerHealth(Protocol):
    """Which workers are down; told when one fails."""

    def is_down(self, name: str) -> bool: ...

    def mark_down(self, name: str, reason: str, *, revive: bool = True) -> None: ...


class NeverDown:
    """Health for executors that are never taken out of service (tests, single frames)."""

    def is_down(self, name: str) -> bool:
        return False

    def mark_down(self, name: str, reason: str, *, revive: bool = True) -> None:
        return None


class Reconnectable(Protocol):
    async def reconnect(self) -> Any: ...


class Fleet:
    """Down/up state of named workers, with a reconnect loop per down worker."""

    def __init__(self, workers: Mapping[str, Reconnectable], *, reconnect_interval: float = 5.0) -> None:
        if reconnect_interval <= 0:
            raise ValueError("reconnect_interval must be positive")
        self._workers = dict(workers)
        self.reconnect_interval = reconnect_interval
        self.down: set[str] = set()
        self.events: list[dict[str, Any]] = []
        self._revivers: dict[str, asyncio.Task[None]] = {}
        self._started = time.monotonic()

    def is_down(self, name: str) -> bool:
        return name in self.down

    def mark_down(self, name: str, reason: str, *, revive: bool = True) -> None:
        """Take ``name`` out of service (idempotent) and start trying to bring it back; with
        ``revive`` False (caught tampering) keep it out for good, and stop any attempt under way."""
        if name not in self._workers:
            return
        if not revive:
            reviver = self._revivers.pop(name, None)
            if reviver is not None:
                reviver.cancel()
        if name in self.down:
            return
        self.down.add(name)
        self._event(name, "down", reason)
        if not revive:  # the caller has said why, in its own line
            log.info("worker %s is down for the rest of this session", name)
            return
        log.warning("worker %s is down (%s); failing over, reconnecting every %g s", name, reason,
                    self.reconnect_interval)
        self._revivers[name] = asyncio.get_running_loop().create_task(self._revive(name), name=f"revive {name}")

    async def _revive(self, name: str) -> None:
        worker = self._workers[name]
        attempts = 0
        while True:
            await asyncio.sleep(self.reconnect_interval)
            attempts += 1
            try:
                await worker.reconnect()
            except WorkerError as exc:
                log.info("worker %s still down after %d attempts: %s", name, attempts, exc)
                continue
            self.down.discard(name)
            self._revivers.pop(name, None)
            self._event(name, "up", f"reconnected after {attempts} attempts")
            log.warning("worker %s is back", name)
            return

    def _event(self, name: str, event: str, reason: str) -> None:
        self.events.append({
            "seconds": round(time.monotonic() - self._started, 3), "worker": name, "event": event, "reason": reason,
        })

    def summary(self) -> dict[str, Any]:
        """JSON-ready: workers down now and every down/up event of the run."""
        return {"down": sorted(self.down), "events": list(self.events)}

    async def close(self) -> None:
        """Stop every reconnect loop (waits for them to finish cancelling)."""
        tasks, self._revivers = list(self._revivers.values()), {}
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
