"""The per-frame scheduler: a rotation policy, checked against exposure budgets, recorded.

For each frame of a stream, in the order its frames are sent::

    proposed = policy.propose(frame, offset, content)  who the policy wants to get what
    padding windows -> EDGE                             pure padding never leaves the edge
    kept windows -> EDGE                                sensitive regions stay home (keep)
    for each server: admit windows while within budget  the rest go to EDGE, or BudgetError
    ledger.record(final assignment)                     exposure as of this frame

A :class:`Budget` caps, per server (and per coalition), what it may receive; every cap is
checked when windows are sent and holds on every later frame:

- ``frame_cap``: share of one frame's picture in that frame. Default: the partition schemes'
  guarantee, ``1 / k`` plus the largest window's share (:func:`~pedsam.partitioner.balance.share_bound`).
- ``scene_cap``: share of the stream's scene seen since the stream started (the ledger's
  ``run_scene_share``), ``"auto"``: the same guarantee, so a server that keeps one share of a
  still scene is never held back and one that a moving camera or a rotation spreads is.
- ``horizon_cap``: frames' worth of scene seen over the horizon across every stream sharing the
  ledger (``scene_frames``: 0.4 means distinct scene cells amounting to 40% of one frame's
  picture). An absolute bound on what a server takes in, whatever the scene does.
- ``run_cap``: consecutive frames of a stream in which a server holds one piece of scene.
- ``coalition_cap``: with ``coalition = t``, the whole-run scene share of every set of up to
  ``t`` servers together; ``"auto"``: ``t`` times the frame guarantee.

Scene coordinates are motion-compensated (see :mod:`pedsam.partitioner.exposure`). When a
proposal would exceed a cap the scheduler never hands the windows to another server: with
``on_exceed="edge"`` it moves them to :data:`~pedsam.partitioner.assignment.EDGE` (the edge
computes them itself), with ``on_exceed="stop"`` it raises :class:`BudgetError` and nothing of
the frame is sent. Within one server's proposed windows, the ones that add the fewest new scene
cells are admitted first.

Kept windows: the caller may name windows the edge must compute itself whatever the policy says
(``keep``: the edge saw something sensitive there, see :mod:`pedsam.stream.core.sensitive`). They
go to the edge before any budget is checked, so no server receives them and the ledger never
counts them as seen; :attr:`ScheduledFrame.kept` lists those with picture.

Streams: several videos may share one ledger (:meth:`Scheduler.for_stream`): each has its own
policy (its own frame sequence and camera) and all are budgeted against what each server has
seen in all of them.

Failover: servers the caller reports *down* get nothing. What the policy proposed for them goes,
per ``failover``, to the edge (``"edge"``); to *standby* servers, which the policy never proposes,
each taking only what its own budget admits (the per-frame cap included), the rest to the edge
(``"standby"``); or nowhere, raising :class:`FailoverError` (``"stop"``). An active server never
takes a down server's windows: it would exceed the per-frame cap.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from pedsam.partitioner.assignment import EDGE, Assignment, check_assignment, check_disjoint
from pedsam.partitioner.budget import AUTO, ON_EXCEED, Budget, Limits
from pedsam.partitioner.errors import BudgetError, FailoverError, PartitionError
from pedsam.partitioner.exposure import ExposureLedger, FrameCells, FrameExposure, party_name
from pedsam.partitioner.geometry import TokenOffset, WindowGrid
from pedsam.partitioner.rotation import RotationPolicy

__all__ = ["AUTO", "FAILOVER", "ON_EXCEED", "Budget", "Limits", "ScheduledFrame", "Scheduler"]

FAILOVER: tuple[str, ...] = ("edge", "standby", "stop")

_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class ScheduledFrame:
    """One frame's schedule.

    Attributes:
        assignment: what is sent: servers' windows plus :data:`EDGE`'s, if any.
        proposed: what the rotation policy asked for.
        padding: windows of pure padding, kept on the edge (part of :data:`EDGE`'s share).
        kept: picture windows the caller kept on the edge (``keep``; part of :data:`EDGE`'s share).
        to_edge: server -> its proposed windows that a budget moved to the edge.
        reasons: server -> which cap moved them (one readable phrase).
        failover: down server -> {executor (a standby or :data:`EDGE`) -> its windows taken over}.
        exposure: every party's exposure once this frame is sent.
        offset: the camera offset used, tokens ``(dy, dx)``.
        picture: per window id, its picture tokens this frame.
        limits: the caps in force for this frame.
        mode: what the policy did (``adaptive``: still / travel-rows / travel-columns).
    """

    assignment: Assignment
    proposed: Assignment
    padding: tuple[int, ...]
    to_edge: Mapping[str, tuple[int, ...]]
    exposure: FrameExposure
    offset: TokenOffset
    picture: tuple[int, ...]
    limits: Limits
    mode: str
    reasons: Mapping[str, str] = field(default_factory=dict)
    failover: Mapping[str, Mapping[str, tuple[int, ...]]] = field(default_factory=dict)
    kept: tuple[int, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The frame's exposure record for the audit log."""
        record = {
            **self.exposure.to_json(),
            "mode": self.mode,
            "offset": [round(float(v), 3) for v in self.offset],
            "picture": list(self.picture),
            "limits": self.limits.to_json(),
            "padding": list(self.padding),
            "to_edge": {name: list(ids) for name, ids in self.to_edge.items()},
            "kept": list(self.kept),
        }
        if self.reasons:
            record["reasons"] = dict(self.reasons)
        if self.failover:
            record["failover"] = {
                down: {target: list(ids) for target, ids in moved.items()} for down, moved in self.failover.items()
            }
        return record


@dataclass
class _Frame:
    """What one frame's admissions have taken so far, for the checks of the next ones."""

    cells: FrameCells
    stream: str
    limits: Limits
    scene_after: int  # scene cells of the stream once this frame is shown
    taken: dict[tuple[str, ...], set[int]] = field(default_factory=dict)  # coalition -> new cells this frame


class Scheduler:
    """Schedules frames with ``policy`` under ``budget``, keeping an :class:`ExposureLedger`.

    Args:
        policy: the rotation policy of this stream.
        grid: the encoder's window grid.
        budget: the caps; default none beyond the per-frame guarantee.
        standby: servers the policy never proposes, kept for failover (see the module docstring).
        failover: one of :data:`FAILOVER`.
        ledger: a ledger shared with other streams (:meth:`for_stream`); default a new one.
        stream: this stream's name in the ledger.
    """

    def __init__(
        self,
        policy: RotationPolicy,
        grid: WindowGrid,
        budget: Budget | None = None,
        *,
        standby: Sequence[str] = (),
        failover: str = "edge",
        ledger: ExposureLedger | None = None,
        stream: str = "0",
    ) -> None:
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
        self.stream = stream
        if self.budget.coalition > 1 and self.budget.coalition >= len(policy.servers):
            raise PartitionError(
                f"a coalition of {self.budget.coalition} of {len(policy.servers)} workers would hold every share "
                "of every frame; track coalitions smaller than the number of workers"
            )
        servers = (*policy.servers, *self.standby)
        if ledger is None:
            ledger = ExposureLedger(grid, servers, self.budget.horizon, coalition=self.budget.coalition)
        elif not set(servers) <= set(ledger.servers) or ledger.coalition != self.budget.coalition \
                or ledger.horizon != self.budget.horizon:
            raise PartitionError("a shared ledger must track every server of the stream, with the budget's "
                                 "horizon and coalition size")
        self.ledger = ledger

    def for_stream(self, policy: RotationPolicy, stream: str) -> Scheduler:
        """A scheduler of another stream over the same servers and ledger: its own frames and
        policy, budgets over what each server has seen in every stream."""
        return Scheduler(policy, self.grid, self.budget, standby=self.standby, failover=self.failover,
                         ledger=self.ledger, stream=stream)

    def limits(self, picture: Sequence[int]) -> Limits:
        """The caps of a frame whose windows hold ``picture`` tokens each."""
        return self.budget.limits(picture, self.policy.slots)

    def schedule(
        self,
        frame_index: int,
        *,
        offset: TokenOffset = (0.0, 0.0),
        content: tuple[int, int] | None = None,
        down: Collection[str] = (),
        keep: Collection[int] = (),
    ) -> ScheduledFrame:
        """Schedule the next frame of this stream.

        Args:
            frame_index: the frame's index in the stream (the policy's input).
            offset: camera offset ``(dy, dx)`` in tokens (scene position of the top-left token).
            content: ``(rows, cols)`` tokens covering the real image; default the whole grid.
            down: servers (active or standby) that cannot take work now.
            keep: window ids the edge computes itself this frame, whatever the policy proposes.

        Raises:
            BudgetError: a budget would be exceeded and ``on_exceed == "stop"``; the ledger is
                unchanged and nothing of this frame may be sent.
            FailoverError: a proposed server is down and ``failover == "stop"``; likewise.
        """
        n = self.grid.num_windows
        proposed = self.policy.propose(frame_index, offset, content)
        check_disjoint(proposed, n)
        cells = self.ledger.frame_cells(offset, content)
        picture = cells.picture
        limits = self.limits(picture)
        scene_after = len(self.ledger.scene_ever(self.stream) | set(cells.union(range(n)).tolist()))
        frame = _Frame(cells=cells, stream=self.stream, limits=limits, scene_after=scene_after)
        padding = tuple(w for w in range(n) if not picture[w])
        if any(isinstance(w, bool) or not isinstance(w, int) or not 0 <= w < n for w in keep):
            raise PartitionError(f"frame {frame_index}: windows to keep must be ids 0..{n - 1}, got {sorted(keep)}")
        kept = tuple(sorted(w for w in set(keep) if picture[w]))
        shares: dict[str, tuple[int, ...]] = {}
        to_edge: dict[str, tuple[int, ...]] = {}
        reasons: dict[str, str] = {}
        displaced: dict[str, tuple[int, ...]] = {}
        for server, ids in proposed.shares.items():
            ids = tuple(w for w in ids if picture[w] and w not in kept)
            if server in down:
                if ids and self.failover == "stop":
                    raise FailoverError(
                        f"frame {frame_index}: worker {server} is down and the settings say stop; "
                        "bring it back, or fail over to the edge or standby workers (--on-failure)"
                    )
                displaced[server] = ids
                continue
            admitted, rejected, why = self._admit(server, ids, frame)
            if rejected and self.budget.on_exceed == "stop":
                raise BudgetError(
                    f"frame {frame_index}: {why} for server {server}; "
                    "raise the cap, add servers, or let the edge compute those windows (--on-budget edge)"
                )
            shares[server] = admitted
            if rejected:
                to_edge[server] = rejected
                reasons[server] = why
        failover = self._fail_over(displaced, shares, frame, down)
        edge = set(padding) | set(kept) | {w for ids in to_edge.values() for w in ids}
        edge |= {w for moved in failover.values() for w in moved.get(EDGE, ())}
        if edge:
            shares[EDGE] = tuple(sorted(edge))
        assignment = Assignment(frame_index=frame_index, shares=shares)
        check_assignment(assignment, picture, limits.frame)
        exposure = self.ledger.record(frame_index, shares, cells, stream=self.stream, kept=len(kept))
        self._verify(exposure, limits)
        return ScheduledFrame(
            assignment=assignment,
            proposed=proposed,
            padding=padding,
            to_edge=MappingProxyType(to_edge),
            reasons=MappingProxyType(reasons),
            exposure=exposure,
            offset=(float(offset[0]), float(offset[1])),
            picture=picture,
            limits=limits,
            mode=self.policy.mode,
            failover=MappingProxyType({k: MappingProxyType(v) for k, v in failover.items()}),
            kept=kept,
        )

    def _fail_over(
        self,
        displaced: Mapping[str, tuple[int, ...]],
        shares: dict[str, tuple[int, ...]],
        frame: _Frame,
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
                taken, _, _ = self._admit(standby, tuple(remaining), frame)
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
        """The run's exposure summary: policy, slots, budget and the ledger's per-party figures."""
        ledger = self.ledger.summary()
        out = {
            "rotation": self.policy.name,
            "servers": list(self.policy.servers),
            "slots": self.policy.slots,
            "budget": self.budget.to_json(),
            **{k: v for k, v in ledger.items() if k not in ("servers", "coalitions")},
            "exposure": ledger["servers"],
        }
        if "coalitions" in ledger:
            out["coalitions"] = ledger["coalitions"]
        return out

    def _admit(self, server: str, ids: tuple[int, ...], frame: _Frame) -> tuple[tuple[int, ...], tuple[int, ...], str]:
        """Which of ``ids`` ``server`` may take this frame; the rest and why."""
        cells, limits, ledger, stream = frame.cells, frame.limits, self.ledger, frame.stream
        track = ledger.track((server,), stream)
        ever, seen, runs = track.ever, track.seen, track.runs
        total = cells.total
        frame_limit = limits.frame * total + _EPS
        scene_limit = None if limits.scene is None else limits.scene * frame.scene_after + _EPS
        horizon_limit = None if limits.horizon is None else limits.horizon * total + _EPS
        horizon_base = ledger.horizon_elsewhere(server, stream) if limits.horizon is not None else 0
        coalitions = [p for p in ledger.coalitions if server in p] if limits.coalition is not None else []
        coalition_limit = None if limits.coalition is None else limits.coalition * frame.scene_after + _EPS
        window_cells = {w: cells.cells[w].tolist() for w in ids}
        fresh = {w: [c for c in window_cells[w] if c not in ever] for w in ids}
        taken_ever: set[int] = set()  # cells new to the server's whole-run record, this frame
        taken_seen: set[int] = set()  # cells new to its horizon record, this frame
        used = 0
        admitted, rejected = [], []
        why = ""
        for w in sorted(ids, key=lambda w: (len(fresh[w]), w)):
            mine = window_cells[w]
            new_ever = [c for c in fresh[w] if c not in taken_ever]
            reason = ""
            if used + len(mine) > frame_limit:
                reason = f"the per-frame cap of {limits.frame:.3g} of the picture would be exceeded"
            elif scene_limit is not None and len(ever) + len(taken_ever) + len(new_ever) > scene_limit:
                reason = (f"the scene cap of {limits.scene:.3g} of the scene since the stream started would be "
                          f"exceeded")
            elif limits.run is not None and any(runs.get(c, 0) >= limits.run for c in mine):
                reason = f"the run cap of {limits.run} consecutive frames on one piece of scene would be exceeded"
            elif horizon_limit is not None:
                new_seen = sum(1 for c in mine if c not in seen and c not in taken_seen)
                after = horizon_base + len(seen) + len(taken_seen) + new_seen
                if after > horizon_limit:
                    reason = (f"the cap of {limits.horizon:g} frames' worth of scene over {self.budget.horizon} "
                              f"frames would be exceeded ({after} scene cells, a frame has {total})")
            if not reason and coalition_limit is not None:
                for party in coalitions:
                    pooled = ledger.track(party, stream).ever
                    this_frame = frame.taken.setdefault(party, set())
                    extra = sum(1 for c in set(mine) if c not in pooled and c not in this_frame)
                    if len(pooled) + len(this_frame) + extra > coalition_limit:
                        reason = (f"the coalition cap of {limits.coalition:.3g} of the scene would be exceeded "
                                  f"by {party_name(party)}")
                        break
            if reason:
                rejected.append(w)
                why = why or reason
                continue
            admitted.append(w)
            used += len(mine)
            taken_ever.update(new_ever)
            if horizon_limit is not None:
                taken_seen.update(c for c in mine if c not in seen)
            for party in coalitions:
                pooled = ledger.track(party, stream).ever
                frame.taken.setdefault(party, set()).update(c for c in mine if c not in pooled)
        return tuple(sorted(admitted)), tuple(sorted(rejected)), why

    def _verify(self, exposure: FrameExposure, limits: Limits) -> None:
        """Re-check the recorded exposure against the caps: a budget is never exceeded silently."""
        for name, e in exposure.servers.items():
            if e.frame_share > limits.frame + _EPS:
                raise BudgetError(f"frame {exposure.frame}: server {name} got {e.frame_share:.4f} of the picture, "
                                  f"over the cap of {limits.frame:.4g}")
            if limits.scene is not None and e.run_scene_share > limits.scene + _EPS:
                raise BudgetError(f"frame {exposure.frame}: server {name} has seen {e.run_scene_share:.4f} of the "
                                  f"scene, over the cap of {limits.scene:.4g}")
            if limits.horizon is not None and e.scene_frames > limits.horizon + _EPS:
                raise BudgetError(f"frame {exposure.frame}: server {name} has seen {e.scene_frames:.4f} frames' worth "
                                  f"of scene over the horizon, over the cap of {limits.horizon:g}")
            if limits.run is not None and e.run > limits.run:
                raise BudgetError(f"frame {exposure.frame}: server {name} has held one piece of scene for {e.run} "
                                  f"frames, over the cap of {limits.run}")
        for name, c in exposure.coalitions.items():
            if limits.coalition is not None and c.run_scene_share > limits.coalition + _EPS:
                raise BudgetError(f"frame {exposure.frame}: coalition {name} has seen {c.run_scene_share:.4f} of the "
                                  f"scene, over the cap of {limits.coalition:.4g}")

