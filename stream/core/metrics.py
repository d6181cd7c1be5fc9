"""The edge's running counts, and their Prometheus exposition (``--metrics-port`` on any edge command).

:class:`EdgeStats` is counted into by the session (frames embedded, embed time, failovers) and by
live runs (frames dropped); :class:`EdgeCollector` reads it, each worker's wire counters and the
scheduler's exposure ledger when Prometheus scrapes. Counts, sizes and timings only.
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


class EdgeCollector:
    """Prometheus collector over a session's :class:`EdgeStats`, workers and exposure ledger.

    Args:
        stats: the session's counts.
        wires: worker name -> its wire counters (requests, payload bytes, request time).
        exposure: returns the scheduler's summary (``partitioner.scheduler.Scheduler.summary``).
        down: returns the names of workers down now.
    """

    def __init__(
        self,
        stats: EdgeStats,
        wires: Mapping[str, _Wire],
        exposure: Callable[[], Mapping[str, Any]],
        down: Callable[[], set[str]],
    ) -> None:
        self._stats, self._wires, self._exposure, self._down = stats, dict(wires), exposure, down

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
