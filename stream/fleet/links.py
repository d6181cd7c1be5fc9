"""Emulated links to workers on this machine: a :class:`LinkSpec` and the :class:`LinkRelay` that
enforces it.

Real deployments reach their workers over finite links; on one machine everything is loopback.
The kernel here has no ``netem``, so a link is emulated in user space: a TCP relay on
``127.0.0.1:0`` forwards each connection to a worker and shapes each direction itself. gRPC runs
over HTTP/2 over TCP, so a relay in front of a worker is invisible to both ends (TLS included:
the bytes pass through unread).

Each direction of a relayed connection is a pipe of two steps, like a real link:

* **serialization**: a token bucket at the direction's rate (bits per second of payload, TCP
  and IP headers not counted) lets bytes leave no faster than the rate;
* **propagation**: a delay line makes bytes available to the far side half the round trip
  after they left, independent of the rate.

So a small message takes about ``rtt`` there and back, and a large one ``size * 8 / rate`` more.
The relay reads a connection only as fast as its bucket allows, with small socket buffers, so
its pace (not the kernel's buffering) is what the ends see; what is in flight on the emulated
link is held by the relay (the delay line: about rate times half the round trip).

Text form, as ``--link`` takes it: ``RATE:RTT`` for both directions, ``UP/DOWN:RTT`` for two
(up is edge -> worker, down is worker -> edge), or a profile name (:data:`PROFILES`). Rates in
``bit``, ``kbit``, ``mbit`` or ``gbit`` (powers of 1000); round trips in ``us``, ``ms`` or ``s``::

    100mbit:10ms        20mbit/50mbit:50ms        lte
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
from dataclasses import dataclass

from pedsam.stream.errors import ConfigError

__all__ = ["PROFILES", "LinkRelay", "LinkSpec", "parse_links"]

log = logging.getLogger(__name__)

_RATE_UNITS = {"bit": 1.0, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9}
_TIME_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}
_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)"
_RATE = re.compile(_NUMBER + r"([a-z]+)")
_TIME = re.compile(_NUMBER + r"([a-z]+)")
MAX_RTT = 60.0  # seconds: anything longer is a typo, not a link


@dataclass(frozen=True, kw_only=True, slots=True)
class LinkSpec:
    """One emulated link between the edge and a worker.

    Attributes:
        up_bps: edge -> worker rate, bits of payload per second (> 0).
        down_bps: worker -> edge rate, bits of payload per second (> 0).
        rtt: round-trip delay, seconds (>= 0); each direction adds half of it.
    """

    up_bps: float
    down_bps: float
    rtt: float

    def __post_init__(self) -> None:
        if not (self.up_bps > 0 and self.down_bps > 0):
            raise ConfigError(f"link rates must be positive, got {self.up_bps:g} and {self.down_bps:g} bit/s")
        if not 0 <= self.rtt <= MAX_RTT:
            raise ConfigError(f"link round trip {self.rtt:g} s is outside 0..{MAX_RTT:g} s")

    @classmethod
    def parse(cls, text: str) -> LinkSpec:
        """``RATE:RTT``, ``UP/DOWN:RTT`` or a profile name (see the module docstring).

        Raises:
            ConfigError: one line saying what is wrong and what the form is.
        """
        spec = text.strip().lower()
        if spec in PROFILES:
            return PROFILES[spec]
        form = f"give RATE:RTT such as 100mbit:10ms, UP/DOWN:RTT such as 20mbit/50mbit:50ms, or one of " \
               f"{', '.join(PROFILES)}"
        if spec.count(":") != 1:
            raise ConfigError(f"link {text.strip()!r}: {form}")
        rates, delay = spec.split(":")
        parts = rates.split("/")
        if len(parts) > 2:
            raise ConfigError(f"link {text.strip()!r}: at most two rates (up/down); {form}")
        up, down = _rate(parts[0], text), _rate(parts[-1], text)
        return cls(up_bps=up, down_bps=down, rtt=_seconds(delay, text))

    @property
    def one_way(self) -> float:
        """Propagation delay of each direction, seconds: half the round trip."""
        return self.rtt / 2

    def __str__(self) -> str:
        rates = _show_rate(self.up_bps)
        if self.down_bps != self.up_bps:
            rates += "/" + _show_rate(self.down_bps)
        return f"{rates}:{self.rtt * 1e3:g}ms"

    def to_json(self) -> dict[str, float | str]:
        """The set values in the units the edge reports measured ones in
        (:meth:`pedsam.stream.fleet.link_meter.LinkMeter.summary`): round trip in ms, rates in
        bytes per second; and ``spec``, the text form."""
        return {
            "spec": str(self), "rtt_ms": self.rtt * 1e3,
            "up_bytes_per_second": self.up_bps / 8, "down_bytes_per_second": self.down_bps / 8,
        }


PROFILES: dict[str, LinkSpec] = {
    "lan": LinkSpec(up_bps=1e9, down_bps=1e9, rtt=0.001),
    "wifi": LinkSpec(up_bps=100e6, down_bps=100e6, rtt=0.010),
    "lte": LinkSpec(up_bps=20e6, down_bps=50e6, rtt=0.050),
}
"""Named links: a wired LAN, a good Wi-Fi, an LTE uplink (slower up than down)."""


def _rate(text: str, whole: str) -> float:
    match = _RATE.fullmatch(text.strip())
    if match is None or match.group(2) not in _RATE_UNITS:
        raise ConfigError(
            f"link {whole.strip()!r}: rate {text.strip()!r} is not a number with a unit "
            f"({', '.join(_RATE_UNITS)}), e.g. 100mbit"
        )
    value = float(match.group(1)) * _RATE_UNITS[match.group(2)]
    if value <= 0:
        raise ConfigError(f"link {whole.strip()!r}: rate {text.strip()!r} must be positive")
    return value


def _seconds(text: str, whole: str) -> float:
    match = _TIME.fullmatch(text.strip())
    if match is None or match.group(2) not in _TIME_UNITS:
        raise ConfigError(
            f"link {whole.strip()!r}: round trip {text.strip()!r} is not a number with a unit "
            f"({', '.join(_TIME_UNITS)}), e.g. 10ms"
        )
    return float(match.group(1)) * _TIME_UNITS[match.group(2)]


def _show_rate(bps: float) -> str:
    for unit, scale in reversed(_RATE_UNITS.items()):
        if bps >= scale and (bps / scale) == round(bps / scale, 3):
            return f"{bps / scale:g}{unit}"
    return f"{bps:g}bit"


def parse_links(text: str | None) -> tuple[LinkSpec, ...]:
    """``--link``: one spec or profile, or a comma-separated list of them (one per worker).

    The count is checked against the workers by :class:`pedsam.stream.core.session.EdgeConfig`.

    Raises:
        ConfigError: an empty item or a spec :meth:`LinkSpec.parse` refuses.
    """
    if text is None or not text.strip():
        return ()
    items = text.split(",")
    if any(not item.strip() for item in items):
        raise ConfigError(f"--link {text!r} has an empty item; give specs separated by single commas")
    return tuple(LinkSpec.parse(item) for item in items)


# ---- the relay --------------------------------------------------------------------------------

MAX_LAG = 0.1
"""Most a busy direction makes up for the event loop waking it late, seconds of its rate. While
a sender keeps bytes waiting, the bucket keeps filling at the rate even when the loop is slow to
come back (on a shared machine it may be tens of milliseconds late), so the long-run rate stays
the set one; an idle direction earns nothing, so a new burst starts at the rate."""

CHUNK_SECONDS = 0.001
"""Bytes are taken from a socket in chunks of about this much of the rate (at least 1500 bytes,
at most 256 KiB), so pacing and delivery are smooth to about a millisecond."""

MIN_CHUNK, MAX_CHUNK = 1500, 256 * 1024

TIMER_GRAIN = 0.001
"""Resolution of the event loop's timers, seconds: epoll rounds a timeout up to the next whole
millisecond, so a sleep ends 0 to 1 ms late. The delay line aims half a grain early, which makes
a delay of a grain or more right on average (within half a millisecond either way) instead of late
by half, on a machine that wakes a process on time; a busy virtual machine wakes it a further
0.3-0.9 ms late (measured on a shared 2-core one), which the relay does not try to predict. A
shorter wait still sleeps, so one-way delays under a millisecond (round trips under 2 ms, e.g.
the ``lan`` profile's) come out at about a millisecond each way."""

SOCKET_BUFFER = 64 * 1024
"""SO_SNDBUF and SO_RCVBUF of the relay's sockets, bytes (the kernel doubles it): small, so
that a sender waits on the relay's pace rather than filling megabytes of kernel buffers."""


def _chunk(rate_bps: float) -> int:
    return int(min(MAX_CHUNK, max(MIN_CHUNK, rate_bps / 8 * CHUNK_SECONDS)))


class _TokenBucket:
    """Serialization at ``rate_bps``: a token bucket that fills at the rate only while its sender
    has bytes waiting (see :data:`MAX_LAG`).

    :meth:`take` returns once ``n`` bytes have left, with the loop time at which their last bit
    ideally did; timer lateness therefore never adds up over chunks. It always yields to the
    loop, even for bytes that may leave at once (a sender catching up :data:`MAX_LAG` would
    otherwise hold the loop for every chunk of it).
    """

    def __init__(self, rate_bps: float) -> None:
        self._rate = rate_bps / 8  # bytes per second
        self._free = asyncio.get_running_loop().time()  # when the bytes taken so far have all left

    async def take(self, n: int, *, waiting: bool) -> float:
        """``waiting``: the bytes were already queued when the previous ones had left (the
        sender is backlogged), so they start where those ended rather than now."""
        now = asyncio.get_running_loop().time()
        start = max(self._free, now - MAX_LAG) if waiting else max(self._free, now)
        self._free = start + n / self._rate
        await asyncio.sleep(max(self._free - now, 0.0))
        return self._free


def _small_buffers(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)


def _split(address: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"worker address {address!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


class LinkRelay:
    """A TCP relay on ``127.0.0.1:port`` (0: a free one) to ``target`` that behaves like the link
    ``spec``.

    Every connection made to :attr:`address` is forwarded to ``target``; edge -> worker bytes
    (up) are shaped by ``spec.up_bps``, worker -> edge bytes (down) by ``spec.down_bps``, and
    each direction is delayed by ``spec.one_way``. A connection the target refuses is closed at
    once, as a dead worker's would be. ``carried_up`` and ``carried_down`` count bytes passed.

    Usage::

        async with LinkRelay("127.0.0.1:50051", LinkSpec.parse("lte")) as relay:
            channel = grpc.aio.insecure_channel(relay.address)
    """

    def __init__(self, target: str, spec: LinkSpec, *, port: int = 0) -> None:
        self.target = target
        self.spec = spec
        self.port = port
        self._host, self._port = _split(target)
        self._listener: socket.socket | None = None
        self._serving: asyncio.Task[None] | None = None
        self.carried_up = 0
        self.carried_down = 0

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT`` to connect to instead of :attr:`target` (after :meth:`start`)."""
        if self._listener is None:
            raise RuntimeError("the relay is not started")
        return "127.0.0.1:%d" % self._listener.getsockname()[1]

    async def start(self) -> str:
        """Listen on loopback; return :attr:`address`.

        Raises:
            OSError: the port is taken.
        """
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            _small_buffers(listener)  # before listen(): accepted sockets inherit it, window scale too
            listener.setblocking(False)
            listener.bind(("127.0.0.1", self.port))
            listener.listen(64)
        except BaseException:
            listener.close()
            raise
        self._listener = listener
        self._serving = asyncio.create_task(self._serve(listener), name=f"link to {self.target}")
        log.info("link %s to %s on %s", self.spec, self.target, self.address)
        return self.address

    async def _serve(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        async with asyncio.TaskGroup() as connections:
            while True:
                client, _ = await loop.sock_accept(listener)
                connections.create_task(self._relay(client))

    async def _relay(self, client: socket.socket) -> None:
        """Carry one connection both ways until both ends are done, then close both sockets."""
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        upstream: socket.socket | None = None
        try:
            upstream = await self._connect()
            async with asyncio.TaskGroup() as directions:
                directions.create_task(self._carry(client, upstream, self.spec.up_bps, up=True))
                directions.create_task(self._carry(upstream, client, self.spec.down_bps, up=False))
        except* OSError as group:  # refused, reset or closed under us: the connection just ends
            log.debug("link to %s: connection ended: %s", self.target, group.exceptions[0])
        finally:
            client.close()
            if upstream is not None:
                upstream.close()

    async def _connect(self) -> socket.socket:
        """A connection to the target: each of its addresses in turn (``localhost`` may be ::1
        first while the worker listens on 127.0.0.1 only)."""
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(self._host, self._port, type=socket.SOCK_STREAM)
        error: OSError = ConnectionRefusedError(f"no address for {self.target}")
        for family, kind, proto, _, where in infos:
            upstream = socket.socket(family, kind, proto)
            try:
                _small_buffers(upstream)  # before connect(): the window scale is agreed on the SYN
                upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                upstream.setblocking(False)
                await loop.sock_connect(upstream, where)
                return upstream
            except OSError as exc:
                upstream.close()
                error = exc
            except BaseException:
                upstream.close()
                raise
        raise error

    async def _carry(self, source: socket.socket, sink: socket.socket, rate_bps: float, *, up: bool) -> None:
        """One direction: read as the bucket allows, deliver each chunk ``one_way`` s after it left.

        End of stream travels the same way (it arrives after the bytes before it) and becomes a
        half close of ``sink``.
        """
        loop = asyncio.get_running_loop()
        bucket = _TokenBucket(rate_bps)
        chunk = _chunk(rate_bps)
        delay = self.spec.one_way
        # Bounded by what the link holds in flight (rate x delay) plus some slack: the reader
        # stops when the far end stops taking bytes.
        line: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(int(delay / CHUNK_SECONDS) + 64)

        async def send() -> None:
            while True:
                try:  # bytes already there: the sender is backlogged and the link never idled
                    data, waiting = source.recv(chunk), True
                except BlockingIOError:
                    data, waiting = await loop.sock_recv(source, chunk), False
                left = await bucket.take(len(data), waiting=waiting)
                await line.put((left + delay, data))
                if not data:
                    return

        async def deliver() -> None:
            while True:
                due, data = await line.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait - TIMER_GRAIN / 2 if wait >= TIMER_GRAIN else wait)
                if not data:
                    with contextlib.suppress(OSError):
                        sink.shutdown(socket.SHUT_WR)
                    return
                await loop.sock_sendall(sink, data)
                if up:
                    self.carried_up += len(data)
                else:
                    self.carried_down += len(data)

        async with asyncio.TaskGroup() as group:
            group.create_task(send())
            group.create_task(deliver())

    async def close(self) -> None:
        """Stop listening and cut every relayed connection (waits for them to close)."""
        if self._serving is not None:
            self._serving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._serving
            self._serving = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    async def __aenter__(self) -> LinkRelay:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
