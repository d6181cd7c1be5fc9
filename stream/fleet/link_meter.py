"""The edge's measure of its link to one worker, from its own traffic: round trip, bytes per second
each way.

**Round trip** comes from a probe: a tiny ``Ping`` on the worker's own channel (the same HTTP/2
connection as the segment requests) every second or so (see
:class:`pedsam.stream.fleet.remote.RemoteWorker`). Request timing minus the worker's
``compute_seconds`` would not do: a request's time also holds the transfer of megabytes each way
and the wait in the worker's queue, which cannot be told apart from the round trip without already
knowing the bandwidth. A probe holds only the round trip, or, when it queues behind a large
transfer, the round trip plus that queueing. So the **base round trip** is the least of the probes
of the last :data:`RTT_WINDOW` seconds (the min-RTT filter of TCP and BBR), and the last probe is
kept too, as the round trip under load.

**Throughput** cannot be timed from the edge's writes and reads alone: gRPC hands a message to the
kernel long before it has crossed a slow link (a write of a few MB returns at once), and a result
is seen only once it has wholly arrived. So the worker reports its clock when each request had
wholly arrived and when each result left (``SegmentResult.received_seconds``, ``sent_seconds``).
The fastest recent probe puts those on the edge's clock: the worker read its clock, for that
``Ping``, halfway through the round trip (NTP's estimate, good to half the probe's asymmetry).
Each direction of the connection is first in, first out, so a message's transfer starts when it was
sent or when the message before it had finished, whichever is later, and ends half a round trip
before it arrived. Bytes per second *while transferring* is then bytes over those busy seconds:
exponentially smoothed over messages (weight :data:`SMOOTHING`), and as totals for the run.

Requests and results only: probes, headers and HTTP/2 framing are left out (well under 1 %). A
request the worker read late because its stream was full (it reports 0) times no up sample.
Every request is counted (messages, bytes) once its result came back, every result as it is
read, timed or not: the counts are what crossed, the rates only what could be timed.
All times are ``time.perf_counter()`` seconds on the edge; sizes are whole messages, in bytes.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Direction", "LinkMeter", "RTT_WINDOW", "SMOOTHING"]

RTT_WINDOW = 30.0
"""Seconds of probes the base round trip (and the clock offset) is taken from."""

SMOOTHING = 0.2
"""Weight of the newest message in the smoothed rates (about the last 5 messages count)."""


@dataclass
class Direction:
    """Messages in one direction: all of them, and those whose transfer could be timed (totals and a
    smoothed rate).

    A message is left untimed when its transfer cannot be told from the clocks: the worker did not
    say when a request arrived, or on a fast link the transfer took less than the clock estimate's
    error (half the fastest probe's asymmetry)."""

    bytes: int = 0  # every message's bytes
    messages: int = 0
    timed_bytes: int = 0  # bytes of the messages timed
    seconds: float = 0.0  # their transfer (busy) time
    timed: int = 0  # messages timed
    _bytes: float = 0.0  # smoothed
    _seconds: float = 0.0

    def count(self, size: int) -> None:
        """A message of ``size`` bytes crossed (timed or not)."""
        self.bytes += size
        self.messages += 1

    def add(self, size: int, seconds: float) -> None:
        """A message of ``size`` bytes took ``seconds`` to transfer."""
        self.timed_bytes += size
        self.seconds += seconds
        self.timed += 1
        self._bytes += SMOOTHING * (size - self._bytes) if self.timed > 1 else size
        self._seconds += SMOOTHING * (seconds - self._seconds) if self.timed > 1 else seconds

    @property
    def rate(self) -> float | None:
        """Smoothed bytes per second while transferring; None before the first timed message."""
        return self._bytes / self._seconds if self.timed and self._seconds > 0 else None

    @property
    def mean_rate(self) -> float | None:
        """Bytes per second while transferring, over every message timed."""
        return self.timed_bytes / self.seconds if self.seconds > 0 else None


@dataclass
class _Sent:
    size: int
    at: float  # edge clock when the write began
    arrived: float | None = None  # edge clock when the worker had it all; nan: not known
    answered: bool = False


@dataclass
class _Probe:
    at: float  # edge clock when it came back
    rtt: float
    offset: float  # worker clock minus edge clock


@dataclass
class LinkMeter:
    """Measures one worker's link; fed by :class:`~pedsam.stream.fleet.remote.RemoteWorker`."""

    up: Direction = field(default_factory=Direction)  # edge -> worker
    down: Direction = field(default_factory=Direction)  # worker -> edge
    probes: int = 0
    last_rtt: float | None = None
    _probes: deque[_Probe] = field(default_factory=deque)
    _best: _Probe | None = None  # the fastest of _probes (kept, so a scrape from another thread only reads it)
    _sent: dict[int, _Sent] = field(default_factory=dict)  # by request id, in write order
    _up_free: float = -math.inf  # edge clock when the up direction finished its last message
    _down_free: float = -math.inf

    # -- round trip and clocks ---------------------------------------------------------------

    def probed(self, sent: float, clock: float, answered: float) -> None:
        """A ``Ping`` sent at ``sent`` came back at ``answered``; the worker's clock read ``clock``."""
        rtt = answered - sent
        self.probes += 1
        self.last_rtt = rtt
        self._probes.append(_Probe(at=answered, rtt=rtt, offset=clock - (sent + answered) / 2))
        while len(self._probes) > 1 and self._probes[0].at < answered - RTT_WINDOW:
            self._probes.popleft()
        self._best = min(self._probes, key=lambda p: p.rtt)

    @property
    def rtt(self) -> float | None:
        """Base round trip, seconds: the fastest probe of the last :data:`RTT_WINDOW` seconds."""
        best = self._best
        return best.rtt if best is not None else None

    # -- transfers ---------------------------------------------------------------------------

    def sent(self, request_id: int, at: float, size: int) -> None:
        """Request ``request_id`` (``size`` bytes) is being written now, at ``at``; call these in
        the order of the writes."""
        self._sent[request_id] = _Sent(size=size, at=at)

    def timing(self, request_id: int) -> bool:
        """Whether ``request_id`` is a request still waiting here to be timed (sent, and not yet
        timed or forgotten)."""
        return request_id in self._sent

    def answered(self, request_id: int, *, size: int, at: float, received: float, left: float) -> None:
        """The result of ``request_id`` (``size`` bytes) was read at ``at``; call these in the
        order results are read. ``received`` and ``left``: the worker's clock when the request had
        arrived and when the result left (0: not reported)."""
        best = self._best
        one_way = best.rtt / 2 if best is not None else 0.0
        self.down.count(size)
        if (sent := self._sent.get(request_id)) is not None:
            self.up.count(sent.size)  # counted once it is known to have crossed
            sent.answered = True
            sent.arrived = received - best.offset if best is not None and received > 0 else math.nan
            self._time_up(one_way)
        if best is not None and left > 0:
            self._down_free = self._add(self.down, size, left - best.offset, self._down_free, at - one_way)
        else:
            self._down_free = at - one_way

    def _time_up(self, one_way: float) -> None:
        """Time the requests at the head of the write order whose arrival is known."""
        while self._sent:
            request_id, head = next(iter(self._sent.items()))
            if not head.answered:
                return
            del self._sent[request_id]
            assert head.arrived is not None
            if math.isnan(head.arrived):
                self._up_free = math.nan  # when the up direction was free again is not known
            else:
                self._up_free = self._add(self.up, head.size, head.at, self._up_free, head.arrived - one_way)

    @staticmethod
    def _add(direction: Direction, size: int, ready: float, free: float, end: float) -> float:
        """Time a message that could leave at ``ready`` and was through at ``end``, on a direction
        that was free from ``free`` on (nan: not known, then nothing is timed); returns ``end``."""
        if not math.isnan(free) and end > (start := max(ready, free)):
            direction.add(size, end - start)
        return end

    def forget(self) -> None:
        """The connection was dropped: requests in flight will never be answered."""
        self._sent.clear()
        self._up_free = self._down_free = -math.inf

    # -- reporting ---------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """JSON-ready: round trips in ms, rates in bytes per second (None: not measured yet)."""

        def ms(seconds: float | None) -> float | None:
            return None if seconds is None else round(seconds * 1e3, 3)

        def rate(value: float | None) -> float | None:
            return None if value is None else round(value, 1)

        return {
            "rtt_ms": ms(self.rtt),
            "rtt_last_ms": ms(self.last_rtt),
            "probes": self.probes,
            **{
                f"{name}_{key}": value
                for name, direction in (("up", self.up), ("down", self.down))
                for key, value in (
                    ("bytes_per_second", rate(direction.rate)),
                    ("mean_bytes_per_second", rate(direction.mean_rate)),
                    ("bytes", direction.bytes),
                    ("messages", direction.messages),
                    ("timed_bytes", direction.timed_bytes),
                    ("seconds", round(direction.seconds, 4)),
                    ("timed_messages", direction.timed),
                )
            },
        }
