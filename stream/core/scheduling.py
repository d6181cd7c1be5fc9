"""The edge's per-frame scheduler: camera motion in, the frame's assignment and exposure out.

:class:`EdgeScheduler` wraps :class:`pedsam.partitioner.scheduler.Scheduler` (rotation policy, exposure
ledger, budgets) with what only the edge has: the frame itself. For each frame, in the order
frames are sent, it estimates the camera offset (:mod:`pedsam.stream.core.motion`), converts it and the
frame's size to tokens of the encoder's grid, and schedules the frame. The session calls it
synchronously, before the frame's first ``await``, so frames are scheduled in the order their
embeddings are requested even when several are in flight.

:class:`RotationSettings` is the user's choice of policy and budget, a field of
:class:`pedsam.stream.core.session.EdgeConfig`; every command that runs frames takes it from ``--rotation``
and the budget flags (see :func:`pedsam.stream.cli.main`'s ``_add_workers``).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pedsam.partitioner.errors import BudgetError, FailoverError, PartitionerError
from pedsam.partitioner.geometry import WindowGrid
from pedsam.partitioner.rotation import make_rotation
from pedsam.partitioner.scheduler import Budget, ScheduledFrame, Scheduler
from pedsam.stream.core.motion import MotionEstimator, content_tokens, token_offset
from pedsam.stream.errors import ConfigError, ExposureBudgetError, WorkerError
from pedsam.stream.fleet.health import WorkerHealth
from pedsam.workers.models import ModelPreset

__all__ = ["EdgeScheduler", "RotationSettings"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True, slots=True)
class RotationSettings:
    """How shares rotate over frames, and the exposure budgets (see :mod:`pedsam.partitioner.scheduler`).

    Attributes:
        policy: a rotation policy of :data:`pedsam.partitioner.rotation.ROTATIONS`.
        slots: shares per frame (``pooled``, ``keyed-random``); None for the policy's default.
        budget: per-frame and horizon caps, horizon ``T``, and what to do when one is hit.
        motion: estimate camera motion (needed by ``scene-anchored``; makes the ledger's scene
            coordinates motion-compensated).
    """

    policy: str = "fixed"
    slots: int | None = None
    budget: Budget = Budget()
    motion: bool = True

    def check(self, servers: int) -> None:
        """Refuse settings that cannot work with ``servers`` workers, before any worker starts.

        Raises:
            ConfigError: unknown policy, or a slot count the policy cannot use.
        """
        from pedsam.partitioner.rotation import ROTATIONS

        if self.policy not in ROTATIONS:
            raise ConfigError(f"unknown rotation policy {self.policy!r}; use one of: {', '.join(ROTATIONS)}")
        if self.slots is None:
            return
        if self.policy not in ("pooled", "keyed-random"):
            raise ConfigError(f"{self.policy} uses one share per worker; --slots applies to pooled and keyed-random only")
        if not 1 <= self.slots <= servers:
            raise ConfigError(f"--slots {self.slots}: {self.policy} needs 1 <= slots <= workers ({servers})")

    def to_json(self) -> dict[str, Any]:
        return {"rotation": self.policy, "slots": self.slots, "motion": self.motion, **self.budget.to_json()}


@dataclass
class EdgeScheduler:
    """Schedules a session's frames; owns the motion estimate and the exposure ledger."""

    scheduler: Scheduler
    preset: ModelPreset
    motion: MotionEstimator | None
    health: WorkerHealth | None = None
    last: ScheduledFrame | None = field(default=None, init=False)
    _frame_size: tuple[int, int] | None = field(default=None, init=False)

    @classmethod
    def build(
        cls,
        settings: RotationSettings,
        preset: ModelPreset,
        servers: Sequence[str],
        *,
        scheme: str,
        secret: bytes | None,
        allow_single: bool,
        standby: Sequence[str] = (),
        failover: str = "edge",
        health: WorkerHealth | None = None,
    ) -> EdgeScheduler:
        """A scheduler for ``servers``; a fresh secret is drawn when the policy needs one and none is given.

        ``standby``, ``failover``: see :class:`pedsam.partitioner.scheduler.Scheduler`; ``health`` says
        which workers are down when a frame is scheduled."""
        grid = WindowGrid.for_encoder(preset.img_size, preset.patch_size, preset.window_size)
        if secret is None and (settings.policy == "keyed-random" or scheme == "random"):
            secret = secrets.token_bytes(32)
        try:
            policy = make_rotation(
                settings.policy, grid, servers, scheme=scheme, secret=secret, slots=settings.slots,
                allow_single=allow_single,
            )
        except PartitionerError as exc:
            raise ConfigError(str(exc)) from None
        motion = MotionEstimator() if settings.motion else None
        try:
            scheduler = Scheduler(policy, grid, settings.budget, standby=standby, failover=failover)
        except PartitionerError as exc:
            raise ConfigError(str(exc)) from None
        return cls(scheduler=scheduler, preset=preset, motion=motion, health=health)

    @property
    def window_cap(self) -> int:
        """Most windows any server gets in one frame."""
        return self.scheduler.window_cap

    def schedule(self, frame_index: int, image: np.ndarray | None, frame_size: tuple[int, int]) -> ScheduledFrame:
        """Schedule the next frame sent.

        Args:
            frame_index: the frame's index in the session.
            image: the HxWx3 uint8 RGB frame, for motion; None when only its tensor is at hand
                (the camera offset then stays where it was).
            frame_size: the frame's ``(H, W)`` in pixels.

        Raises:
            ExposureBudgetError: a budget would be exceeded and the settings say stop.
        """
        preset = self.preset
        offset_px = (0.0, 0.0)
        if self.motion is not None:
            if image is not None:
                if self._frame_size is not None and self._frame_size != frame_size:
                    self.motion = MotionEstimator()  # a different video or image: a new scene
                offset_px = self.motion.update(image)
            else:
                offset_px = self.motion.offset
        self._frame_size = frame_size
        offset = token_offset(offset_px, frame_size, preset.img_size, preset.patch_size)
        content = content_tokens(frame_size, preset.img_size, preset.patch_size)
        try:
            down = [name for name in self.scheduler.ledger.servers if self.health is not None and self.health.is_down(name)]
            scheduled = self.scheduler.schedule(frame_index, offset=offset, content=content, down=down)
        except BudgetError as exc:
            raise ExposureBudgetError(str(exc)) from None
        except FailoverError as exc:
            raise WorkerError(str(exc)) from None
        if scheduled.to_edge:
            log.info("frame %d: budget moved %d windows to the edge", frame_index,
                     len(scheduled.assignment.shares.get("edge", ())))
        self.last = scheduled
        return scheduled

    def record(self, scheduled: ScheduledFrame) -> dict[str, Any]:
        """A frame's exposure record for the audit log: the schedule, the policy and its caps."""
        budget = self.scheduler.budget
        return {
            "rotation": self.scheduler.policy.name,
            "window_cap": self.window_cap,
            "frame_cap": budget.frame_cap,
            "scene_cap": budget.scene_cap,
            "horizon": budget.horizon,
            **scheduled.to_json(),
        }

    def summary(self) -> dict[str, Any]:
        """The run's exposure summary (JSON-ready), with the motion estimator's cut count."""
        out = self.scheduler.summary()
        if self.motion is not None:
            out["motion_cuts"] = self.motion.cuts
        return out
