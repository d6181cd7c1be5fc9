"""The per-frame audit log: which executor got which window ids, per frame and segment.

One JSON line per (frame, segment). Each line carries what a reader needs to check the privacy
invariants from this file alone: the number of windows in a frame and the per-frame cap on the
windows any one server may receive. The first line of each frame also carries ``exposure``: the
scheduler's record for the frame (rotation policy, budget caps, camera offset in tokens, windows
a budget moved to the edge, and per server its windows, frame share, distinct windows, scene
share, scene frames and run; see :mod:`pedsam.partitioner.exposure`), so invariant 3 (budgets are never
exceeded silently) can be checked from the file too.

``shares`` says who computed which windows (each window exactly once). When a worker failed,
``failover`` names it with the windows the edge computed in its place, ``sent`` (whether the
worker had received them before failing: they count as seen) and the reason. A segment past
``--remote-segments`` has every window under ``edge`` and ``"edge_only": "remote_segments"``:
no worker received any of it.
"""

from __future__ import annotations

import os
from typing import Any

from pedsam.partitioner.assignment import EDGE
from pedsam.stream.core.encoder import FrameAudit
from pedsam.stream.media.masks_io import MaskRecordWriter


class AuditWriter:
    """Writes :class:`FrameAudit` records as JSON Lines, one line per frame and segment."""

    def __init__(self, path: str | os.PathLike[str], *, num_windows: int, cap: int) -> None:
        self._writer = MaskRecordWriter(path)
        self.num_windows = num_windows
        self.cap = cap
        self.max_share = 0

    def write(self, audit: FrameAudit) -> None:
        for index, segment in enumerate(audit.segments):
            remote = [len(ids) for name, ids in segment.shares.items() if name != EDGE]
            self.max_share = max([self.max_share, *remote])
            record: dict[str, Any] = {
                "frame": audit.frame,
                "segment": segment.segment,
                "num_windows": self.num_windows,
                "cap": self.cap,
                "shares": segment.shares,
            }
            if segment.failover:
                record["failover"] = segment.failover
            if segment.edge_only:
                record["edge_only"] = segment.edge_only
            if index == 0 and audit.exposure is not None:
                record["exposure"] = audit.exposure
            self._writer.write(record)

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> AuditWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
