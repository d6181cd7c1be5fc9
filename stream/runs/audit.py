"""The per-frame audit log: which executor got which window ids, per frame and segment.

One JSON line per (frame, segment). Each line carries what a reader needs to check the privacy
invariants from this file alone: ``num_windows``, ``picture`` (per window id, the tokens of it
that cover the frame; 0 for a window of pure padding, which stays on the edge) and ``cap``, the
per-frame cap as a share of the picture: for every server, the sum of ``picture`` over its
windows, divided by the sum of ``picture``, is at most ``cap``, and no server holds every window
with picture. The first line of each frame also carries ``exposure``: the scheduler's record for
the frame (rotation policy and mode, every cap in force under ``limits``, camera offset in
tokens, padding windows, windows a budget moved to the edge and why, and per server, and per
coalition, its frame share, scene share over the horizon and since the stream started, scene
frames and run; see :mod:`pedsam.partitioner.exposure`), so invariant 3 (budgets are never
exceeded silently) can be checked from the file too.

``shares`` says who computed which windows (each window exactly once). When a worker failed,
``failover`` names it with the windows the edge computed in its place, ``sent`` (whether the
worker had received them before failing: they count as seen) and the reason. A segment past
``--remote-segments`` has every window under ``edge`` and ``"edge_only": "remote_segments"``:
no worker received any of it.

A worker caught returning tampered tokens (``--verify``) has its failover record's ``caught``:
the ``windows`` that gave it away and the ``check`` (``recomputed``: they differ from the edge's
own computation; ``impossible``: values no honest computation gives). A frame computed again
without it (see :mod:`pedsam.stream.core.encoder`) has a second set of lines for the frame, each
with ``"attempt": 2``: what the workers received the second time.
"""

from __future__ import annotations

import os
from typing import Any

from pedsam.partitioner.assignment import EDGE
from pedsam.stream.core.encoder import FrameAudit
from pedsam.stream.media.masks_io import MaskRecordWriter


class AuditWriter:
    """Writes :class:`FrameAudit` records as JSON Lines, one line per frame and segment.

    ``max_windows`` and ``max_share``: the most windows, and the largest share of a frame's
    picture, that any server computed in any segment so far.
    """

    def __init__(self, path: str | os.PathLike[str], *, num_windows: int) -> None:
        self._writer = MaskRecordWriter(path)
        self.num_windows = num_windows
        self.max_windows = 0
        self.max_share = 0.0

    def write(self, audit: FrameAudit) -> None:
        exposure = audit.exposure or {}
        picture: list[int] = exposure.get("picture") or []
        cap = exposure.get("limits", {}).get("frame")
        total = sum(picture)
        for index, segment in enumerate(audit.segments):
            for name, ids in segment.shares.items():
                if name == EDGE:
                    continue
                self.max_windows = max(self.max_windows, len(ids))
                if total:
                    self.max_share = max(self.max_share, sum(picture[w] for w in ids) / total)
            record: dict[str, Any] = {
                "frame": audit.frame,
                "segment": segment.segment,
                "num_windows": self.num_windows,
                "picture": picture or None,
                "cap": cap,
                "shares": segment.shares,
            }
            if segment.failover:
                record["failover"] = segment.failover
            if segment.edge_only:
                record["edge_only"] = segment.edge_only
            if segment.attempt > 1:
                record["attempt"] = segment.attempt
            if index == 0 and audit.exposure is not None:
                record["exposure"] = audit.exposure
            self._writer.write(record)

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> AuditWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
