"""The edge's per-frame scheduler: camera motion in, the frame's assignment and exposure out.

:class:`EdgeScheduler` wraps :class:`pedsam.partitioner.scheduler.Scheduler` (rotation policy, exposure
ledger, budgets) with what only the edge has: the frame itself. For each frame, in the order
frames are sent, it estimates the camera offset (:mod:`pedsam.stream.core.motion`), converts it and the
frame's size to tokens of the encoder's grid, and schedules the frame. The session calls it
synchronously, before the frame's first ``await``, so frames are scheduled in the order their
embeddings are requested even when several are in flight.

One :class:`EdgeScheduler` schedules one *stream* (a file, a camera, a browser call): its own
frame sequence (what the rotation policy counts), its own motion estimate and policy state. The
streams of one session share one exposure ledger (:meth:`EdgeScheduler.for_stream`), so every
budget bounds what a worker has seen across all of them.

With ``--keep-local`` each stream also holds its sensitive regions
(:mod:`pedsam.stream.core.sensitive`): the frame is searched before it is scheduled, and every
window touching a region kept on it goes to the edge. :meth:`EdgeScheduler.observe` feeds the
frames a keyframed run shows without sending, so the hold counts every frame of the camera.

:class:`RotationSettings` is the user's choice of policy and budget, a field of
:class:`pedsam.stream.core.session.EdgeConfig`; its defaults are the command line's
(:mod:`pedsam.stream.cli.options`), the most protective sensible ones.
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
from pedsam.partitioner.rotation import ROTATIONS, RotationPolicy, make_rotation
from pedsam.partitioner.budget import AUTO, Budget
from pedsam.partitioner.scheduler import ScheduledFrame, Scheduler
from pedsam.stream.core.motion import MotionEstimator, content_tokens, token_offset
from pedsam.stream.core.sensitive import KeepLocal, SensitiveRegions, windows_touching
from pedsam.stream.errors import ConfigError, ExposureBudgetError, WorkerError
from pedsam.stream.fleet.health import WorkerHealth
from pedsam.workers.models import ModelPreset

__all__ = ["DEFAULT_BUDGET", "DEFAULT_SCHEME", "EdgeScheduler", "PolicySpec", "RotationSettings"]

log = logging.getLogger(__name__)

DEFAULT_SCHEME = "interleaved"
"""The partition scheme with no flags: no worker gets two neighbouring windows (measured to reveal
least of a frame: see the README's privacy tables)."""

DEFAULT_BUDGET = Budget(scene_cap=AUTO, run_cap=100, coalition_cap=AUTO)
"""The budget with no flags: per frame ``1/k`` of the picture plus one window, the same share of
the scene since the stream started, at most 100 consecutive frames on one piece of scene (with
``--coalition t``: ``t`` times the per-frame share for a coalition), and over-budget windows
computed on the edge."""


@dataclass(frozen=True, kw_only=True, slots=True)
class RotationSettings:
    """How shares rotate over frames, and the exposure budgets (see :mod:`pedsam.partitioner.scheduler`).

    Attributes:
        policy: a rotation policy of :data:`pedsam.partitioner.rotation.ROTATIONS`.
        slots: shares per frame (``pooled``, ``keyed-random``); None for the policy's default.
        budget: the caps, the horizon ``T``, the coalition size, and what to do when one is hit.
        motion: estimate camera motion (needed by ``adaptive`` and ``scene-anchored``; makes the
            ledger's scene coordinates motion-compensated).
    """

    policy: str = "adaptive"
    slots: int | None = None
    budget: Budget = DEFAULT_BUDGET
    motion: bool = True

    def check(self, servers: int) -> None:
        """Refuse settings that cannot work with ``servers`` workers, before any worker starts.

        Raises:
            ConfigError: unknown policy, a slot count the policy cannot use, or coalitions as
                large as the fleet.
        """
        if self.policy not in ROTATIONS:
            raise ConfigError(f"unknown rotation policy {self.policy!r}; use one of: {', '.join(ROTATIONS)}")
        if self.budget.coalition > 1 and self.budget.coalition >= servers:
            raise ConfigError(f"--coalition {self.budget.coalition}: a coalition of every one of the {servers} "
                              "workers sees every frame whole; track coalitions smaller than the fleet")
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
    """Schedules one stream's frames; owns its motion estimate, its policy and its frame count."""

    scheduler: Scheduler
    preset: ModelPreset
    motion: MotionEstimator | None
    health: WorkerHealth | None = None
    sensitive: SensitiveRegions | None = None
    last: ScheduledFrame | None = field(default=None, init=False)
    frames: int = field(default=0, init=False)  # frames of this stream scheduled so far
    _frame_size: tuple[int, int] | None = field(default=None, init=False)
    spec: PolicySpec | None = field(default=None, repr=False)  # how to make another stream's policy

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
        keep_local: KeepLocal = KeepLocal(),
    ) -> EdgeScheduler:
        """The first stream's scheduler for ``servers``; a fresh secret is drawn when the policy
        needs one and none is given.

        ``standby``, ``failover``: see :class:`pedsam.partitioner.scheduler.Scheduler`; ``health`` says
        which workers are down when a frame is scheduled; ``keep_local``: what the edge keeps home."""
        grid = WindowGrid.for_encoder(preset.img_size, preset.patch_size, preset.window_size)
        if secret is None and (settings.policy == "keyed-random" or scheme == "random"):
            secret = secrets.token_bytes(32)
        spec = PolicySpec(settings=settings, grid=grid, servers=tuple(servers), scheme=scheme, secret=secret,
                          allow_single=allow_single, keep_local=keep_local)
        try:
            scheduler = Scheduler(spec.make(), grid, settings.budget, standby=standby, failover=failover, stream="0")
        except PartitionerError as exc:
            raise ConfigError(str(exc)) from None
        motion = MotionEstimator() if settings.motion else None
        return cls(scheduler=scheduler, preset=preset, motion=motion, health=health, spec=spec,
                   sensitive=spec.regions())

    def for_stream(self, stream: str) -> EdgeScheduler:
        """A scheduler for another stream of the same session: its own policy, frame count and
        motion, over the same servers and the same exposure ledger (budgets across streams)."""
        assert self.spec is not None
        scheduler = self.scheduler.for_stream(self.spec.make(), stream)
        motion = MotionEstimator() if self.spec.settings.motion else None
        return EdgeScheduler(scheduler=scheduler, preset=self.preset, motion=motion, health=self.health, spec=self.spec,
                             sensitive=self.spec.regions())

    @property
    def stream(self) -> str:
        return self.scheduler.stream

    def schedule(self, frame_index: int, image: np.ndarray | None, frame_size: tuple[int, int]) -> ScheduledFrame:
        """Schedule the next frame sent of this stream.

        Args:
            frame_index: the frame's index in the session (its id on the wire and in the audit);
                the rotation follows the stream's own count, :attr:`frames`.
            image: the HxWx3 uint8 RGB frame, for motion; None when only its tensor is at hand
                (the camera offset then stays where it was).
            frame_size: the frame's ``(H, W)`` in pixels.

        Raises:
            ExposureBudgetError: a budget would be exceeded and the settings say stop.
            ConfigError: ``--keep-local`` is on and there is no ``image`` to search.
        """
        preset = self.preset
        keep: tuple[int, ...] = ()
        if self.sensitive is not None:
            if image is None:
                raise ConfigError("--keep-local searches every frame it sends; this frame came without its pixels")
            boxes = self.sensitive.update(image)
            keep = windows_touching(boxes, frame_size, self.scheduler.grid, preset.img_size, preset.patch_size)
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
            scheduled = self.scheduler.schedule(self.frames, offset=offset, content=content, down=down, keep=keep)
        except BudgetError as exc:
            raise ExposureBudgetError(str(exc)) from None
        except FailoverError as exc:
            raise WorkerError(str(exc)) from None
        self.frames += 1
        if scheduled.to_edge:
            log.info("frame %d: budgets moved %d windows to the edge (%s)", frame_index,
                     sum(len(ids) for ids in scheduled.to_edge.values()), "; ".join(sorted(set(scheduled.reasons.values()))))
        if scheduled.kept:
            log.debug("frame %d: %d windows kept home as sensitive", frame_index, len(scheduled.kept))
        self.last = scheduled
        return scheduled

    def observe(self, image: np.ndarray) -> None:
        """A frame of the stream that is shown but not sent (HxWx3 uint8 RGB): with
        ``--keep-local``, counted by the regions' hold and searched every ``shown_every``-th
        (:meth:`SensitiveRegions.shown`); else nothing."""
        if self.sensitive is not None:
            self.sensitive.shown(image)

    def record(self, scheduled: ScheduledFrame) -> dict[str, Any]:
        """A frame's exposure record for the audit log: the schedule, the policy and its caps.

        ``limits.frame`` is the per-frame cap as a share of the picture and ``picture`` the
        picture tokens of every window: a server's share of the frame is the sum of its windows'
        ``picture`` over the sum of all."""
        budget = self.scheduler.budget
        return {
            "rotation": self.scheduler.policy.name,
            "horizon": budget.horizon,
            **scheduled.to_json(),
        }

    def summary(self) -> dict[str, Any]:
        """The exposure summary of every stream sharing this ledger (JSON-ready), with this
        stream's motion estimator's cut count."""
        out = self.scheduler.summary()
        out["stream"] = {"id": self.stream, "frames": self.frames, "mode": self.scheduler.policy.mode}
        if self.motion is not None:
            out["motion_cuts"] = self.motion.cuts
        if self.sensitive is not None:
            out["keep_local"] = self.sensitive.summary()
        return out



@dataclass(frozen=True, slots=True)
class PolicySpec:
    """What a stream's rotation policy is made of; each stream gets a fresh one (policies such as
    ``adaptive`` keep state)."""

    settings: RotationSettings
    grid: WindowGrid
    servers: tuple[str, ...]
    scheme: str
    secret: bytes | None
    allow_single: bool
    keep_local: KeepLocal = KeepLocal()

    def regions(self) -> SensitiveRegions | None:
        """A stream's own sensitive regions, or None when ``--keep-local`` is off."""
        return SensitiveRegions(self.keep_local) if self.keep_local.enabled else None

    def make(self) -> RotationPolicy:
        try:
            return make_rotation(self.settings.policy, self.grid, self.servers, scheme=self.scheme,
                                 secret=self.secret, slots=self.settings.slots, allow_single=self.allow_single)
        except PartitionerError as exc:
            raise ConfigError(str(exc)) from None
