"""The edge's running counts, and their Prometheus exposition (``--metrics-port`` on any edge command).

:class:`EdgeStats` is counted into by the session (frames embedded, embed time, failovers) and by
live runs (frames dropped); :class:`EdgeCollector` reads it, each worker's wire counters, each
worker's link as the edge measures it, and the scheduler's exposure ledger when Prometheus
scrapes. Counts, sizes and timings only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from pedsam.workers.metrics import Histogram

__all__ = ["EdgeCollector", "EdgeStats"]


@dataclass
class EdgeStats:
    """What an edge session has done since it opened."""

    frames: int = 0
    frame_seconds: Histogram = field(default_factory=Histogram)  # encode time per frame
    dropped: int = 0  # frames live sources dropped to stay current
    failovers: dict[str, int] = field(default_factory=dict)  # worker -> segments failed over


class _Wire(Protocol):
    requests: int
    payload_sent: int
    payload_received: int
    seconds: Histogram


class _Direction(Protocol):
    @property
    def timed_bytes(self) -> int: ...

    @property
    def seconds(self) -> float: ...

    @property
    def rate(self) -> float | None: ...


class _Link(Protocol):
    """What :class:`pedsam.stream.fleet.link_meter.LinkMeter` offers."""

    @property
    def up(self) -> _Direction: ...

    @property
    def down(self) -> _Direction: ...

    @property
    def last_rtt(self) -> float | None: ...

    @property
    def rtt(self) -> float | None: ...


class EdgeCollector:
    """Prometheus collector over a session's :class:`EdgeStats`, workers and exposure ledger.

    Args:
        stats: the session's counts.
        wires: worker name -> its wire counters (requests, payload bytes, request time).
        exposure: returns the scheduler's summary (``partitioner.scheduler.Scheduler.summary``).
        down: returns the names of workers down now.
        links: worker name -> its link as measured (round trip, bytes per second each way).
        devices: returns where everything computes
            (:meth:`pedsam.stream.core.session.EdgeSession.devices_summary`).
    """

    def __init__(
        self,
        stats: EdgeStats,
        wires: Mapping[str, _Wire],
        exposure: Callable[[], Mapping[str, Any]],
        down: Callable[[], set[str]],
        links: Mapping[str, _Link] | None = None,
        devices: Callable[[], Mapping[str, Any]] | None = None,
    ) -> None:
        self._stats, self._wires, self._exposure, self._down = stats, dict(wires), exposure, down
        self._links = dict(links or {})
        self._devices = devices

    def collect(self) -> Iterator[Any]:
        stats = self._stats
        frames = CounterMetricFamily("pedsam_edge_frames", "Frames embedded through the split encoder")
        frames.add_metric([], float(stats.frames))
        yield frames
        seconds = HistogramMetricFamily("pedsam_edge_frame_seconds", "Encode time per frame, edge and workers")
        seconds.add_metric([], stats.frame_seconds.cumulative(), stats.frame_seconds.total)
        yield seconds
        dropped = CounterMetricFamily("pedsam_edge_frames_dropped", "Frames live sources dropped to stay current")
        dropped.add_metric([], float(stats.dropped))
        yield dropped
        failovers = CounterMetricFamily(
            "pedsam_edge_failovers", "Segments of frames whose windows a worker failed to compute", labels=["worker"]
        )
        requests = CounterMetricFamily("pedsam_edge_worker_requests", "Segment requests sent", labels=["worker"])
        sent = CounterMetricFamily("pedsam_edge_sent_bytes", "Tensor payload bytes sent", labels=["worker"])
        received = CounterMetricFamily("pedsam_edge_received_bytes", "Tensor payload bytes received", labels=["worker"])
        latency = HistogramMetricFamily(
            "pedsam_edge_segment_seconds", "Round trip of one segment request", labels=["worker"]
        )
        up = GaugeMetricFamily("pedsam_edge_worker_up", "1 while the worker is in service", labels=["worker"])
        down = self._down()
        for name, wire in sorted(self._wires.items()):
            failovers.add_metric([name], float(stats.failovers.get(name, 0)))
            requests.add_metric([name], float(wire.requests))
            sent.add_metric([name], float(wire.payload_sent))
            received.add_metric([name], float(wire.payload_received))
            latency.add_metric([name], wire.seconds.cumulative(), wire.seconds.total)
            up.add_metric([name], 0.0 if name in down else 1.0)
        yield from (failovers, requests, sent, received, latency, up)
        yield from self._collect_links()
        yield from self._collect_devices()
        summary = self._exposure()
        share = GaugeMetricFamily(
            "pedsam_edge_exposure_max_frame_share", "Largest share of one frame a server received", labels=["server"]
        )
        scene = GaugeMetricFamily(
            "pedsam_edge_exposure_max_scene_frames",
            "Most scene a server saw within the horizon, in frames' worth", labels=["server"],
        )
        windows = CounterMetricFamily("pedsam_edge_exposure_windows", "Windows sent to a server", labels=["server"])
        for name, record in sorted(summary.get("exposure", {}).items()):
            share.add_metric([name], float(record["max_frame_share"]))
            scene.add_metric([name], float(record["max_scene_frames"]))
            windows.add_metric([name], float(record["windows"]))
        edge = CounterMetricFamily("pedsam_edge_windows_on_edge", "Windows the edge computed itself (budgets)")
        edge.add_metric([], float(summary.get("edge_windows", 0)))
        yield from (share, scene, windows, edge)

    def _collect_devices(self) -> Iterator[Any]:
        """Where the edge computes, and each worker as it described itself (info gauges, 1)."""
        if self._devices is None:
            return
        devices = self._devices()
        labels = ["device", "name", "compute_dtype"]
        edge = GaugeMetricFamily("pedsam_edge_device_info", "Where the edge computes", labels=labels)
        if devices.get("edge"):
            edge.add_metric([str(devices["edge"][k]) for k in labels], 1.0)
        yield edge
        workers = GaugeMetricFamily("pedsam_edge_worker_device_info", "Where each worker computes, as it says",
                                    labels=["worker", *labels])
        for name, device in sorted(devices.get("workers", {}).items()):
            workers.add_metric([name, *(str(device[k]) for k in labels)], 1.0)
        yield workers

    def _collect_links(self) -> Iterator[Any]:
        """Each worker's link: base and latest round trip, and per direction (up: edge -> worker)
        the smoothed rate while transferring, plus the bytes and busy seconds it is made of
        (``rate(bytes) / rate(seconds)`` is the rate over any range)."""
        rtt = GaugeMetricFamily(
            "pedsam_edge_link_rtt_seconds", "Base round trip to the worker: fastest recent probe", labels=["worker"]
        )
        last = GaugeMetricFamily(
            "pedsam_edge_link_rtt_last_seconds", "Round trip of the latest probe (under load)", labels=["worker"]
        )
        rate = GaugeMetricFamily(
            "pedsam_edge_link_bytes_per_second", "Smoothed bytes per second while transferring",
            labels=["worker", "direction"],
        )
        moved = CounterMetricFamily(
            "pedsam_edge_link_bytes", "Bytes of requests and results timed on the link", labels=["worker", "direction"]
        )
        busy = CounterMetricFamily(
            "pedsam_edge_link_transfer_seconds", "Seconds the link spent transferring them",
            labels=["worker", "direction"],
        )
        for name, link in sorted(self._links.items()):
            if link.rtt is not None:
                rtt.add_metric([name], link.rtt)
            if link.last_rtt is not None:
                last.add_metric([name], link.last_rtt)
            for direction, counts in (("up", link.up), ("down", link.down)):
                if counts.rate is not None:
                    rate.add_metric([name, direction], counts.rate)
                moved.add_metric([name, direction], float(counts.timed_bytes))
                busy.add_metric([name, direction], counts.seconds)
        yield from (rtt, last, rate, moved, busy)
