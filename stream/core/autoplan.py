"""``--plan auto``: the codec and the remote segments a keyframe is quickest with, from measurement.

One calibration frame (black: it shows nothing) goes through the split with the exact settings
(fp32, every segment on the workers). From it the session measures, per worker, the link's round
trip and rates in each direction (:class:`~pedsam.stream.fleet.link_meter.LinkMeter`), the bytes
one segment moves, the worker's compute per segment, and the edge's own time for the global
blocks. :func:`choose` then predicts a keyframe's time for every codec and number of remote
segments ``N``::

    edge_globals + N * (round trip + up bytes / up rate + down bytes / down rate + worker compute)
                 + (S - N) * edge compute of one whole segment

with the bytes scaled by the codec (fp16 half, int8 a quarter plus a scale per token) and a
segment computed on the edge costing what all workers' shares of it cost together (the edge's
cores are taken as fast as a worker's). It picks the quickest, but prefers exactness (fp32)
unless a lossy codec saves at least ``LOSSY_GAIN`` of the time, and more remote segments (less
edge CPU) unless fewer save at least ``EDGE_GAIN``. Adaptive keyframes are then spaced at least
the predicted keyframe time apart (the keyframe interval the links allow).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["EDGE_GAIN", "LOSSY_GAIN", "Measured", "PlanChoice", "choose"]

LOSSY_GAIN = 0.25  # a lossy codec must save a quarter of a keyframe's time to be chosen over fp32
EDGE_GAIN = 0.10  # fewer remote segments must save a tenth to be chosen (the edge's CPU is dearer)
BYTES = {"fp32": 1.0, "fp16": 0.5, "int8": 0.25}  # of fp32's tensor bytes (int8's scales are added)


@dataclass(frozen=True, kw_only=True, slots=True)
class Measured:
    """What the calibration frame showed. Seconds and bytes per second; the worst worker's figure
    where workers differ (a keyframe waits for the slowest share).

    Attributes:
        segments: windowed segments of the model (ViT-B 4).
        rtt: round trip of the links.
        up_rate, down_rate: bytes per second each way; None when not measurable (loopback: far
            faster than anything else here).
        up_bytes, down_bytes: fp32 tensor bytes one segment moves each way, per worker.
        scale_bytes: int8's per-token scales one segment adds each way, per worker.
        worker_seconds: a worker's compute for one segment of its share.
        workers: how many workers share a segment.
        edge_seconds: the edge's own work on a frame (prologue, global blocks, neck).
    """

    segments: int
    rtt: float
    up_rate: float | None
    down_rate: float | None
    up_bytes: float
    down_bytes: float
    scale_bytes: float
    worker_seconds: float
    workers: int
    edge_seconds: float


@dataclass(frozen=True, slots=True)
class PlanChoice:
    """What :func:`choose` chose and why: ``predicted`` keyframe seconds of every candidate."""

    codec: str
    remote_segments: int
    seconds: float
    predicted: dict[str, float] = field(default_factory=dict)  # "fp32/4" -> seconds
    measured: Measured | None = None

    def line(self) -> str:
        """One line: what was chosen and why."""
        text = (f"plan auto: codec {self.codec}, {self.remote_segments} remote segments: a keyframe in about "
                f"{self.seconds:.1f} s")
        m = self.measured
        if m is None:
            return text
        exact = self.predicted.get(f"fp32/{m.segments}")
        if exact is not None and (self.codec, self.remote_segments) != ("fp32", m.segments):
            text += f" (fp32 with every segment sent: {exact:.1f} s)"

        def mbit(rate: float | None) -> str:
            return "unlimited" if rate is None else f"{8 * rate / 1e6:.0f} Mbit/s"

        return text + f"; measured links {mbit(m.up_rate)} up, {mbit(m.down_rate)} down, {m.rtt * 1e3:.0f} ms round trip"

    def to_json(self) -> dict[str, object]:
        return {"codec": self.codec, "remote_segments": self.remote_segments, "keyframe_seconds": round(self.seconds, 3),
                "predicted": {k: round(v, 3) for k, v in self.predicted.items()}}


def predict(m: Measured, codec: str, remote: int) -> float:
    """A keyframe's seconds with ``codec`` and ``remote`` segments on the workers."""
    factor = BYTES[codec]
    scales = m.scale_bytes if codec == "int8" else 0.0
    up = 0.0 if m.up_rate is None else (m.up_bytes * factor + scales) / m.up_rate
    down = 0.0 if m.down_rate is None else (m.down_bytes * factor + scales) / m.down_rate
    sent = remote * (m.rtt + up + down + m.worker_seconds)
    kept = (m.segments - remote) * m.worker_seconds * m.workers
    return m.edge_seconds + sent + kept


def choose(m: Measured, codecs: Sequence[str] = ("fp32", "fp16", "int8")) -> PlanChoice:
    """The quickest keyframe, preferring exactness and remote segments (see the module docstring)."""
    predicted = {f"{c}/{n}": predict(m, c, n) for c in codecs for n in range(1, m.segments + 1)}

    def best(candidates: Sequence[tuple[str, int]]) -> tuple[str, int]:
        ranked = sorted(candidates, key=lambda cn: predicted[f"{cn[0]}/{cn[1]}"])
        quickest = predicted[f"{ranked[0][0]}/{ranked[0][1]}"]
        # among those within EDGE_GAIN of the quickest, the most remote segments
        near = [cn for cn in ranked if predicted[f"{cn[0]}/{cn[1]}"] <= quickest / (1 - EDGE_GAIN)]
        return max(near, key=lambda cn: cn[1])

    exact = best([("fp32", n) for n in range(1, m.segments + 1)]) if "fp32" in codecs else None
    anything = best([(c, n) for c in codecs for n in range(1, m.segments + 1)])
    pick = anything
    if exact is not None and predicted[f"{exact[0]}/{exact[1]}"] * (1 - LOSSY_GAIN) <= predicted[f"{anything[0]}/{anything[1]}"]:
        pick = exact
    codec, remote = pick
    return PlanChoice(codec=codec, remote_segments=remote, seconds=predicted[f"{codec}/{remote}"], predicted=predicted,
                      measured=m)
