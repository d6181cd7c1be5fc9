"""The per-frame scheduler: a rotation policy, checked against exposure budgets, recorded.

For each frame, in the order frames are sent::

    proposed = policy.propose(frame, offset, content)  who the policy wants to get what
    for each server: admit windows while within budget  the rest go to EDGE, or BudgetError
    ledger.record(final assignment)                     exposure as of this frame

A :class:`Budget` caps, per server, the share of a frame's content it may receive in that frame
(``frame_cap``) and how much of the scene it may have seen over the last ``horizon`` frames
(``scene_cap``), in frames' worth of scene area (the ledger's ``scene_frames``: 0.4 means
distinct scene cells amounting to 40% of one frame; scene coordinates are motion-compensated,
see :mod:`pedsam.partitioner.exposure`). That unit makes the cap hold on every later frame, not just
when windows are sent, and it also bounds the share of the scene shown over the horizon
(``scene_share <= scene_frames``).
When a proposal would exceed a cap the scheduler never hands the windows to another server:
with ``on_exceed="edge"`` it moves them to :data:`~pedsam.partitioner.assignment.EDGE` (the edge
computes them itself), with ``on_exceed="stop"`` it raises :class:`BudgetError` and nothing of
the frame is sent. Within one server's proposed windows, the ones that add the fewest new scene
cells are admitted first (windows showing nothing new are always admitted).

Failover: servers the caller reports *down* get nothing. What the policy proposed for them goes,
per ``failover``, to the edge (``"edge"``); to *standby* servers, which the policy never proposes,
each taking at most the per-frame window cap and only what its own budget admits, the rest to
the edge (``"standby"``); or nowhere, raising :class:`FailoverError` (``"stop"``). An active
server never takes a down server's windows: it would exceed the per-frame cap.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from pedsam.partitioner.assignment import EDGE, Assignment, check_assignment
from pedsam.partitioner.errors import BudgetError, FailoverError, PartitionError
from pedsam.partitioner.exposure import ExposureLedger, FrameCells, FrameExposure
from pedsam.partitioner.geometry import WindowGrid
from pedsam.partitioner.rotation import RotationPolicy, TokenOffset

__all__ = ["FAILOVER", "ON_EXCEED", "Budget", "ScheduledFrame", "Scheduler"]

ON_EXCEED: tuple[str, ...] = ("edge", "stop")
FAILOVER: tuple[str, ...] = ("edge", "standby", "stop")

_EPS = 1e-9


@dataclass(frozen=True, kw_only=True, slots=True)
class Budget:
    """Exposure caps per server; ``None`` means no cap.

    Attributes:
        frame_cap: most of one frame's content tokens a server may receive, as a fraction in
            ``(0, 1]``.
        scene_cap: most distinct scene area a server may have seen over the horizon, in
            frames' worth of area (fraction of one frame's content), in ``(0, 1]``.
        horizon: ``T``, the sliding window of frames for the scene cap and the ledger.
        on_exceed: ``"edge"`` (compute over-budget windows on the edge) or ``"stop"``.
    """

    frame_cap: float | None = None
    scene_cap: float | None = None
    horizon: int = 50
    on_exceed: str = "edge"

    def __post_init__(self) -> None:
        for name in ("frame_cap", "scene_cap"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not 0.0 < float(value) <= 1.0):
                raise PartitionError(f"{name} is a share of the frame or scene: give a number in (0, 1], got {value!r}")
        if isinstance(self.horizon, bool) or not isinstance(self.horizon, int) or self.horizon < 1:
            raise PartitionError(f"the horizon must be a whole number of frames >= 1, got {self.horizon!r}")
        if self.on_exceed not in ON_EXCEED:
            raise PartitionError(f"on_exceed must be one of {', '.join(ON_EXCEED)}, got {self.on_exceed!r}")

    def to_json(self) -> dict[str, Any]:
        return {
            "frame_cap": self.frame_cap,
            "scene_cap": self.scene_cap,
            "horizon": self.horizon,
            "on_exceed": self.on_exceed,
        }


@dataclass(frozen=True, slots=True)
class ScheduledFrame:
    """One frame's schedule.

    Attributes:
        assignment: what is sent: servers' windows plus :data:`EDGE`'s, if any.
        proposed: what the rotation policy asked for.
        to_edge: server -> its proposed windows that a budget moved to the edge.
        failover: down server -> {executor (a standby or :data:`EDGE`) -> its windows taken over}.
        exposure: every server's exposure once this frame is sent.
        offset: the camera offset used, tokens ``(dy, dx)``.
    """

    assignment: Assignment
    proposed: Assignment
    to_edge: Mapping[str, tuple[int, ...]]
    exposure: FrameExposure
    offset: TokenOffset
    failover: Mapping[str, Mapping[str, tuple[int, ...]]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The frame's exposure record for the audit log."""
        record = {
            **self.exposure.to_json(),
            "offset": [round(float(v), 3) for v in self.offset],
            "to_edge": {name: list(ids) for name, ids in self.to_edge.items()},
        }
        if self.failover:
            record["failover"] = {
                down: {target: list(ids) for target, ids in moved.items()} for down, moved in self.failover.items()
            }
        return record


class Scheduler:
    """Schedules frames with ``policy`` under ``budget``, keeping an :class:`ExposureLedger`."""

    def __init__(
        self,
        policy: RotationPolicy,
        grid: WindowGrid,
        budget: Budget | None = None,
        *,
        standby: Sequence[str] = (),
        failover: str = "edge",
    ) -> None:
        """``standby``: servers the policy never proposes, kept for failover (see the module
        docstring); ``failover``: one of :data:`FAILOVER`."""
        if failover not in FAILOVER:
            raise PartitionError(f"failover must be one of {', '.join(FAILOVER)}, got {failover!r}")
        clash = (set(standby) & set(policy.servers)) | ({EDGE} & set(standby))
        if clash or len(set(standby)) != len(standby):
            raise PartitionError(
                f"standby servers must be listed once, be none of the active servers and not {EDGE!r}: {sorted(clash)}"
            )
        self.policy = policy
        self.grid = grid
        self.budget = budget or Budget()
        self.standby = tuple(standby)
        self.failover = failover
        self.ledger = ExposureLedger(grid, (*policy.servers, *self.standby), self.budget.horizon)

    @property
    def window_cap(self) -> int:
        """Most windows a server gets in one frame: ``ceil(windows / slots)``."""
        return -(-self.grid.num_windows // self.policy.slots)

    def schedule(
        self,
        frame_index: int,
        *,
        offset: TokenOffset = (0.0, 0.0),
        content: tuple[int, int] | None = None,
        down: Collection[str] = (),
    ) -> ScheduledFrame:
        """Schedule the next frame to send.

        Args:
            frame_index: the frame's index (recorded; the policy's input).
            offset: camera offset ``(dy, dx)`` in tokens (scene position of the top-left token).
            content: ``(rows, cols)`` tokens covering the real image; default the whole grid.
            down: servers (active or standby) that cannot take work now.

        Raises:
            BudgetError: a budget would be exceeded and ``on_exceed == "stop"``; the ledger is
                unchanged and nothing of this frame may be sent.
            FailoverError: a proposed server is down and ``failover == "stop"``; likewise.
        """
        n = self.grid.num_windows
        proposed = self.policy.propose(frame_index, offset, content)
        check_assignment(proposed, n, self.window_cap)
        cells = self.ledger.frame_cells(offset, content)
        shares: dict[str, tuple[int, ...]] = {}
        to_edge: dict[str, tuple[int, ...]] = {}
        displaced: dict[str, tuple[int, ...]] = {}
        for server, ids in proposed.shares.items():
            if server in down:
                if ids and self.failover == "stop":
                    raise FailoverError(
                        f"frame {frame_index}: worker {server} is down and the settings say stop; "
                        "bring it back, or fail over to the edge or standby workers (--on-failure)"
                    )
                displaced[server] = tuple(ids)
                continue
            admitted, rejected, why = self._admit(server, ids, cells)
            if rejected and self.budget.on_exceed == "stop":
                raise BudgetError(
                    f"frame {frame_index}: {why} for server {server}; "
                    "raise the cap, add servers, or let the edge compute those windows (--on-budget edge)"
                )
            shares[server] = admitted
            if rejected:
                to_edge[server] = rejected
        failover = self._fail_over(displaced, shares, cells, down)
        edge = tuple(sorted(w for ids in to_edge.values() for w in ids))
        edge += tuple(w for moved in failover.values() for w in moved.get(EDGE, ()))
        if edge:
            shares[EDGE] = tuple(sorted(edge))
        assignment = Assignment(frame_index=frame_index, shares=shares)
        check_assignment(assignment, n, self.window_cap)
        exposure = self.ledger.record(frame_index, shares, cells)
        self._verify(exposure)
        return ScheduledFrame(
            assignment=assignment,
            proposed=proposed,
            to_edge=MappingProxyType(to_edge),
            exposure=exposure,
            offset=(float(offset[0]), float(offset[1])),
            failover=MappingProxyType({k: MappingProxyType(v) for k, v in failover.items()}),
        )

    def _fail_over(
        self,
        displaced: Mapping[str, tuple[int, ...]],
        shares: dict[str, tuple[int, ...]],
        cells: FrameCells,
        down: Collection[str],
    ) -> dict[str, dict[str, tuple[int, ...]]]:
        """Place down servers' windows on standbys (adding to ``shares``) or the edge."""
        moved: dict[str, dict[str, tuple[int, ...]]] = {server: {} for server, ids in displaced.items() if ids}
        owner = {w: server for server, ids in displaced.items() for w in ids}
        remaining = sorted(owner)
        if self.failover == "standby":
            for standby in self.standby:
                if not remaining:
                    break
                if standby in down or standby in shares:
                    continue
                admitted, _, _ = self._admit(standby, tuple(remaining), cells)
                taken = admitted[: self.window_cap]
                if not taken:
                    continue
                shares[standby] = taken
                for w in taken:
                    moved[owner[w]][standby] = (*moved[owner[w]].get(standby, ()), w)
                remaining = [w for w in remaining if w not in set(taken)]
        for w in remaining:
            moved[owner[w]][EDGE] = (*moved[owner[w]].get(EDGE, ()), w)
        return moved

    def summary(self) -> dict[str, Any]:
        """The run's exposure summary: policy, slots, budget and the ledger's per-server maxima."""
        return {
            "rotation": self.policy.name,
            "servers": list(self.policy.servers),
            "slots": self.policy.slots,
            "window_cap": self.window_cap,
            "budget": self.budget.to_json(),
            **{k: v for k, v in self.ledger.summary().items() if k != "servers"},
            "exposure": self.ledger.summary()["servers"],
        }

    def _admit(
        self, server: str, ids: tuple[int, ...], cells: FrameCells
    ) -> tuple[tuple[int, ...], tuple[int, ...], str]:
        budget = self.budget
        if budget.frame_cap is None and budget.scene_cap is None:
            return tuple(ids), (), ""
        seen = self.ledger.seen(server)
        frame_limit = None if budget.frame_cap is None else budget.frame_cap * cells.total + _EPS
        scene_limit = None if budget.scene_cap is None else budget.scene_cap * cells.total + _EPS
        new = {w: [c for c in cells.cells[w].tolist() if c not in seen] for w in ids}
        taken: set[int] = set()
        frame_used = 0
        admitted, rejected = [], []
        why = ""
        for w in sorted(ids, key=lambda w: (len(new[w]), w)):
            frame_after = frame_used + cells.cells[w].size
            scene_after = len(seen) + len(taken) + len(new[w])
            if frame_limit is not None and frame_after > frame_limit:
                rejected.append(w)
                why = f"the per-frame cap of {budget.frame_cap:g} of the frame would be exceeded"
            elif scene_limit is not None and scene_after > scene_limit:
                rejected.append(w)
                why = (
                    f"the cap of {budget.scene_cap:g} frames' worth of scene over {budget.horizon} frames "
                    f"would be exceeded ({scene_after} scene cells, a frame has {cells.total})"
                )
            else:
                admitted.append(w)
                frame_used = frame_after
                taken.update(new[w])
        return tuple(sorted(admitted)), tuple(sorted(rejected)), why

    def _verify(self, exposure: FrameExposure) -> None:
        """Re-check the recorded exposure against the caps: a budget is never exceeded silently."""
        budget = self.budget
        for name, e in exposure.servers.items():
            if budget.frame_cap is not None and e.frame_share > budget.frame_cap + _EPS:
                raise BudgetError(
                    f"frame {exposure.frame}: server {name} got {e.frame_share:.4f} of the frame, "
                    f"over the cap of {budget.frame_cap:g}"
                )
            if budget.scene_cap is not None and e.scene_frames > budget.scene_cap + _EPS:
                raise BudgetError(
                    f"frame {exposure.frame}: server {name} has seen {e.scene_frames:.4f} frames' worth "
                    f"of scene over the horizon, over the cap of {budget.scene_cap:g}"
                )
