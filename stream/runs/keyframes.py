"""Which frames go through SAM: the keyframe policy, and the decision frame by frame.

``--keyframes all`` sends every frame through the split (what ``pedsam run`` does by default).
``every:N`` sends frame 0 and every N-th frame after it. ``adaptive`` (the default of ``pedsam
stream`` and ``serve``) sends a keyframe when it is needed and only as often as the links and
the workers can take:

- needed: an object has no mask yet (the first frame, a click), an object's propagation
  confidence fell below ``min_confidence`` (forward-backward disagreement, lost points, a
  change of appearance: a cut, an occluder, a turn), or ``max_interval`` seconds of media time
  passed since the last keyframe;
- affordable: at most one keyframe is in flight in a live run, so each keyframe's bytes cross
  a worker's link only after the previous keyframe's have: the keyframe rate never asks a link
  for more bytes per second than it carries. ``min_interval`` (seconds) spaces keyframes further
  (``pedsam stream --keyframes adaptive:0.5`` at most two per second).

Frames that are not keyframes never leave the edge: their masks are propagated
(:mod:`pedsam.stream.core.propagation`), and the audit log and exposure ledger see keyframes only.
"""

from __future__ import annotations

from dataclasses import dataclass

from pedsam.stream.errors import ConfigError

__all__ = ["KEYFRAMES", "KeyframeChooser", "KeyframePolicy"]

KEYFRAMES = ("all", "every:N", "adaptive")


@dataclass(frozen=True, kw_only=True, slots=True)
class KeyframePolicy:
    """How keyframes are chosen; :meth:`parse` reads ``all``, ``every:N``, ``adaptive[:MIN_S]``."""

    kind: str = "all"  # "all", "every", "adaptive"
    every: int = 1
    min_confidence: float = 0.5
    max_interval: float = 2.0  # seconds of media time between keyframes at most (adaptive)
    min_interval: float = 0.0  # seconds of media time between keyframes at least (adaptive)

    def __post_init__(self) -> None:
        if self.kind not in ("all", "every", "adaptive"):
            raise ConfigError(f"unknown keyframe policy {self.kind!r}; choose all, every:N or adaptive")
        if self.every < 1:
            raise ConfigError("--keyframes every:N needs N of at least 1")
        if not 0 <= self.min_interval <= self.max_interval:
            raise ConfigError("keyframe intervals must satisfy 0 <= min <= max")

    @classmethod
    def parse(cls, text: str) -> KeyframePolicy:
        """``all``, ``every:N`` (frame 0 and every N-th frame after it), ``adaptive`` or
        ``adaptive:MIN_SECONDS``; a :class:`ConfigError` saying the forms for anything else."""
        name, _, value = text.strip().partition(":")
        try:
            if name == "all" and not value:
                return cls(kind="all")
            if name == "every" and value:
                return cls(kind="every", every=int(value))
            if name == "adaptive":
                return cls(kind="adaptive", min_interval=float(value) if value else 0.0)
        except ValueError:
            pass
        raise ConfigError(f"--keyframes {text!r}: give all, every:N (N frames) or adaptive[:MIN_SECONDS]")

    @property
    def every_frame(self) -> bool:
        return self.kind == "all" or (self.kind == "every" and self.every == 1)

    def describe(self) -> str:
        if self.kind == "every":
            return f"every:{self.every}"
        if self.kind == "adaptive" and self.min_interval:
            return f"adaptive:{self.min_interval:g}"
        return self.kind


class KeyframeChooser:
    """Decides, frame by frame, whether a frame is a keyframe (see the module docstring)."""

    def __init__(self, policy: KeyframePolicy) -> None:
        self.policy = policy
        self._first: int | None = None  # index of the first frame seen
        self._last: float | None = None  # media time of the last keyframe started

    def reason(
        self, index: int, time: float, *, unmasked: bool, confidence: float | None, busy: bool
    ) -> str | None:
        """Why frame ``index`` (media time ``time`` s) should be a keyframe, or None.

        ``unmasked``: some object has no mask yet; ``confidence``: the lowest propagation
        confidence of the frame before (None when nothing was propagated); ``busy``: a keyframe
        is still in flight (a live run takes one at a time).
        """
        policy = self.policy
        if self._first is None:
            self._first = index
        if policy.kind == "all":
            return "every frame"
        if policy.kind == "every":
            return f"every {policy.every}" if (index - self._first) % policy.every == 0 and not busy else None
        if unmasked:
            wanted = "new object"
        elif confidence is not None and confidence < policy.min_confidence:
            wanted = f"confidence {confidence:.2f}"
        elif self._last is None or time - self._last >= policy.max_interval:
            wanted = "interval"
        else:
            return None
        if busy or (self._last is not None and not unmasked and time - self._last < policy.min_interval):
            return None
        return wanted

    def started(self, time: float) -> None:
        """A keyframe at media time ``time`` went out."""
        self._last = time
