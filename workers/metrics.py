"""A worker's running counts, and their Prometheus exposition (``pedsam worker --metrics-port``).

The service counts into a plain :class:`WorkerStats` (no global registry, no locks needed: it
is only touched on the event loop); :class:`WorkerCollector` turns a snapshot of it into metric
families when Prometheus scrapes. Only counts, sizes and timings: never tensor values.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

__all__ = ["SECONDS_BUCKETS", "Histogram", "WorkerCollector", "WorkerStats", "serve_metrics"]

SECONDS_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass
class Histogram:
    """Cumulative-on-export counts of observations in fixed buckets (upper bounds, seconds)."""

    buckets: tuple[float, ...] = SECONDS_BUCKETS
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.buckets) + 1)  # the last one is +Inf

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, float]]:
        """Cumulative ``(le, count)`` pairs, as :class:`HistogramMetricFamily` takes them."""
        running = 0
        pairs = []
        for bound, count in zip((*map(str, self.buckets), "+Inf"), self.counts):
            running += count
            pairs.append((bound, float(running)))
        return pairs


@dataclass
class WorkerStats:
    """What a worker has done since it started."""

    streams: int = 0
    requests: dict[tuple[str, str], int] = field(default_factory=dict)  # (segment, outcome) -> n
    windows: dict[int, int] = field(default_factory=dict)  # segment -> windows computed
    bytes_received: int = 0
    bytes_sent: int = 0
    seconds: dict[int, Histogram] = field(default_factory=dict)  # segment -> compute time

    def answered(self, segment: int, windows: int, received: int, sent: int, seconds: float) -> None:
        key = (str(segment), "ok")
        self.requests[key] = self.requests.get(key, 0) + 1
        self.windows[segment] = self.windows.get(segment, 0) + windows
        self.bytes_received += received
        self.bytes_sent += sent
        self.seconds.setdefault(segment, Histogram()).observe(seconds)

    def refused(self, code: str) -> None:
        """A request refused or failed with gRPC status ``code`` (its segment may be unknown)."""
        key = ("any", code.lower())
        self.requests[key] = self.requests.get(key, 0) + 1


class WorkerCollector:
    """Prometheus collector over a :class:`WorkerStats` and the worker's identity."""

    def __init__(
        self, stats: WorkerStats, info: dict[str, str], *, device: dict[str, str] | None = None,
        device_memory_bytes: int | None = None,
    ) -> None:
        """``info``: the model's identity, labels of ``pedsam_worker_info`` (preset, fingerprint);
        ``device``: where it computes, labels of ``pedsam_worker_device_info`` (device, name,
        compute_dtype); ``device_memory_bytes``: its limit of one request's device memory."""
        self._stats = stats
        self._info = info
        self._device = device
        self._device_memory = device_memory_bytes

    def collect(self) -> Iterator[Any]:
        stats = self._stats
        info = GaugeMetricFamily("pedsam_worker_info", "The model this worker serves", labels=sorted(self._info))
        info.add_metric([self._info[k] for k in sorted(self._info)], 1.0)
        yield info
        if self._device is not None:
            device = GaugeMetricFamily("pedsam_worker_device_info", "Where this worker computes",
                                       labels=sorted(self._device))
            device.add_metric([self._device[k] for k in sorted(self._device)], 1.0)
            yield device
        if self._device_memory is not None:
            memory = GaugeMetricFamily("pedsam_worker_device_memory_limit_bytes",
                                       "Device memory one segment request may use")
            memory.add_metric([], float(self._device_memory))
            yield memory
        streams = GaugeMetricFamily("pedsam_worker_streams", "Edge session streams open now")
        streams.add_metric([], float(stats.streams))
        yield streams
        requests = CounterMetricFamily(
            "pedsam_worker_requests", "Segment requests, by segment and outcome (ok or a gRPC status)",
            labels=["segment", "outcome"],
        )
        for (label, outcome), count in sorted(stats.requests.items()):
            requests.add_metric([label, outcome], float(count))
        yield requests
        windows = CounterMetricFamily("pedsam_worker_windows", "Windows computed, by segment", labels=["segment"])
        for segment, count in sorted(stats.windows.items()):
            windows.add_metric([str(segment)], float(count))
        yield windows
        received = CounterMetricFamily("pedsam_worker_received_bytes", "Tensor payload bytes received")
        received.add_metric([], float(stats.bytes_received))
        yield received
        sent = CounterMetricFamily("pedsam_worker_sent_bytes", "Tensor payload bytes sent")
        sent.add_metric([], float(stats.bytes_sent))
        yield sent
        seconds = HistogramMetricFamily(
            "pedsam_worker_segment_seconds", "Compute time per segment request", labels=["segment"]
        )
        for segment, histogram in sorted(stats.seconds.items()):
            seconds.add_metric([str(segment)], histogram.cumulative(), histogram.total)
        yield seconds


def serve_metrics(collector: Any, host: str, port: int) -> int:
    """Serve ``collector`` at ``http://host:port/metrics`` on a daemon thread; returns the port."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return int(server.server_address[1])
