"""Exposure budgets: what one server, or one coalition, may receive of a video.

A :class:`Budget` is the user's choice of caps (see :mod:`pedsam.partitioner.scheduler` for how
each is checked and enforced); :class:`Limits` are one frame's caps, resolved from the budget,
the frame's picture and the number of shares. ``"auto"`` caps follow the partition schemes'
per-frame guarantee, ``1 / k`` of the picture plus its largest window
(:func:`~pedsam.partitioner.balance.share_bound`), so they fit every aspect ratio and worker count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pedsam.partitioner.balance import share_bound
from pedsam.partitioner.errors import PartitionError

__all__ = ["AUTO", "ON_EXCEED", "Budget", "Limits"]

ON_EXCEED: tuple[str, ...] = ("edge", "stop")
AUTO = "auto"
"""A cap set from the frame's picture and ``k``: the partition schemes' per-frame guarantee."""


def _share(name: str, value: object, *, auto: bool) -> None:
    if value is None or (auto and value == AUTO):
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) <= 1.0:
        words = " or 'auto'" if auto else ""
        raise PartitionError(f"{name} is a share of the frame or scene: give a number in (0, 1]{words}, got {value!r}")


@dataclass(frozen=True, kw_only=True, slots=True)
class Budget:
    """Exposure caps per server and coalition; ``None`` means no cap (see the module docstring).

    Attributes:
        frame_cap: share of one frame's picture, in ``(0, 1]``; None: the schemes' guarantee
            (a per-frame cap is always in force).
        scene_cap: share of the stream's scene since it started, in ``(0, 1]``, or ``"auto"``.
        horizon_cap: frames' worth of scene over the horizon, across streams, in ``(0, 1]``.
        run_cap: consecutive frames on one piece of scene, ``>= 1``.
        coalition: track every set of up to this many servers as one party.
        coalition_cap: whole-run scene share of each coalition, in ``(0, 1]``, or ``"auto"``.
        horizon: ``T``, the sliding window of frames of the ledger and ``horizon_cap``.
        on_exceed: ``"edge"`` (compute over-budget windows on the edge) or ``"stop"``.
    """

    frame_cap: float | None = None
    scene_cap: float | str | None = None
    horizon_cap: float | None = None
    run_cap: int | None = None
    coalition: int = 1
    coalition_cap: float | str | None = None
    horizon: int = 50
    on_exceed: str = "edge"

    def __post_init__(self) -> None:
        _share("frame_cap", self.frame_cap, auto=False)
        _share("scene_cap", self.scene_cap, auto=True)
        _share("horizon_cap", self.horizon_cap, auto=False)
        _share("coalition_cap", self.coalition_cap, auto=True)
        if self.run_cap is not None and (isinstance(self.run_cap, bool) or not isinstance(self.run_cap, int)
                                         or self.run_cap < 1):
            raise PartitionError(f"run_cap is a number of frames: give a whole number >= 1, got {self.run_cap!r}")
        if isinstance(self.coalition, bool) or not isinstance(self.coalition, int) or self.coalition < 1:
            raise PartitionError(f"the coalition size must be a whole number >= 1, got {self.coalition!r}")
        if isinstance(self.horizon, bool) or not isinstance(self.horizon, int) or self.horizon < 1:
            raise PartitionError(f"the horizon must be a whole number of frames >= 1, got {self.horizon!r}")
        if self.on_exceed not in ON_EXCEED:
            raise PartitionError(f"on_exceed must be one of {', '.join(ON_EXCEED)}, got {self.on_exceed!r}")

    def limits(self, picture: Sequence[int], slots: int) -> Limits:
        """The caps of a frame whose windows hold ``picture`` tokens each, cut into ``slots`` shares."""
        weights = [w for w in picture if w]
        guarantee = share_bound(weights, slots) if weights else 1.0
        frame = guarantee if self.frame_cap is None else float(self.frame_cap)
        scene = guarantee if self.scene_cap == AUTO else self.scene_cap
        coalition: float | str | None = None
        if self.coalition > 1:
            auto = min(1.0, min(self.coalition, slots) * guarantee)
            coalition = auto if self.coalition_cap == AUTO else self.coalition_cap
        return Limits(frame=min(1.0, frame), scene=None if scene is None else min(1.0, float(scene)),
                      horizon=self.horizon_cap, run=self.run_cap,
                      coalition=None if coalition is None else float(coalition))

    def to_json(self) -> dict[str, Any]:
        return {
            "frame_cap": self.frame_cap if self.frame_cap is not None else AUTO,
            "scene_cap": self.scene_cap,
            "horizon_cap": self.horizon_cap,
            "run_cap": self.run_cap,
            "coalition": self.coalition,
            "coalition_cap": self.coalition_cap if self.coalition > 1 else None,
            "horizon": self.horizon,
            "on_exceed": self.on_exceed,
        }


@dataclass(frozen=True, slots=True)
class Limits:
    """One frame's caps, resolved: shares of the picture or scene, or None for no cap."""

    frame: float
    scene: float | None
    horizon: float | None
    run: int | None
    coalition: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "frame": round(self.frame, 6),
            "scene": None if self.scene is None else round(self.scene, 6),
            "horizon": self.horizon,
            "run": self.run,
            "coalition": None if self.coalition is None else round(self.coalition, 6),
        }
