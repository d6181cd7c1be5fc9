"""Watched workers (``--verify F``): the edge recomputes a secret sample of every worker's windows.

A worker's result becomes queries of the edge's next global block, so a worker that lies changes
the frame's embedding. For each share a worker computes, :class:`Watch` picks each of its windows
independently with probability ``F`` (``random.SystemRandom``: the operating system's randomness,
which no worker can predict or see; the request it receives is the same either way), and while
the worker computes, the edge computes the picked windows with its own segment runner (the
runner every worker runs). When the result arrives:

1. every window is checked for impossible values: not finite, or beyond the largest magnitude an
   honest computation can produce (:mod:`pedsam.stream.core.bounds`, given by the caller with a
   margin of :data:`LIMIT_MARGIN`);
2. each picked window is compared with the edge's: its largest absolute difference over its
   largest absolute value (per tensor of the result) must be within the worker's tolerance
   (:func:`tolerance`: the codec's and compute precision's).

Check 1 costs one pass over the result and runs whatever ``F`` is (``--verify 0`` recomputes
nothing and still refuses impossible values). A share that fails either raises
:class:`~pedsam.stream.errors.TamperingError`, which the share runner treats as it treats a worker
that died (its windows go to the edge, it is marked down) except that the worker stays down for
the rest of the session.

With ``w`` windows per share and ``s`` segments per frame, a worker that tampers with every window
it computes is caught within a frame with probability ``1 - (1 - F)^(w s)``; one that tampers
with ``m`` windows a frame, ``1 - (1 - F)^m``. The edge's extra work is ``F`` of the windowed
segments' work on average (each window independently: the expectation ``F w`` is not rounded,
a share may get more or fewer checks than that, or none).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch

from pedsam.partitioner.geometry import Window
from pedsam.stream.errors import TamperingError

__all__ = [
    "CODEC_TOLERANCE", "COMPUTE_TOLERANCE", "DEFAULT_VERIFY", "INLINE_VALUES", "LIMIT_MARGIN", "Watch",
    "differing_windows", "impossible_windows", "result_tensors", "tolerance",
]

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_VERIFY = 0.05
"""``--verify`` with no flag: see the README's "Watched workers" for the measured edge cost."""

CODEC_TOLERANCE: dict[str, float] = {"fp32": 1e-4, "fp16": 5e-3, "int8": 5e-2}
"""Largest relative difference of a recomputed window an honest worker may show, per wire codec
(the worker computes from tokens the codec rounded, and its result crosses in the codec): fp32's
is the exactness bound; fp16's and int8's are about 8 and 4 times the largest measured (a window
of an offload stage, whose qkv crosses the codec with no residual), see the README's "Watched
workers"."""

COMPUTE_TOLERANCE: dict[str, float] = {"fp32": 1e-4, "bf16": 2e-2, "fp16": 2e-3}
"""The same per compute precision (of the worker, or of the edge recomputing): the embedding
bounds of :data:`pedsam.workers.device.ERROR_BOUNDS`, which a single segment stays within."""

INLINE_VALUES = 128 * 1024
"""Results of up to this many values are checked on the event loop: handing them to a thread
costs more than the check (the tiny preset's shares are about 40 000 values; a ViT-B share is
about 1.5 million, checked on a thread so the loop never stalls)."""

LIMIT_MARGIN = 1.1
"""Room over the proved magnitude bound for the codecs' rounding (int8: 1/254 of a row's
largest value, fp16: 2^-11 relative) and reduced-precision products (bf16: about 2^-8)."""


def tolerance(codec: str, compute_dtypes: Iterable[str]) -> float:
    """The relative tolerance of a worker whose results cross in ``codec``, computed (by the
    worker, and by the edge recomputing) in ``compute_dtypes`` (``""``: fp32): the codec's plus
    the coarsest precision's, as both errors are in the difference.

    Raises:
        ValueError: an unknown codec or compute precision.
    """
    try:
        return CODEC_TOLERANCE[codec] + max(COMPUTE_TOLERANCE[d or "fp32"] for d in (*compute_dtypes, "fp32"))
    except KeyError as exc:
        raise ValueError(f"no verification tolerance for {exc.args[0]!r}") from None


def result_tensors(result: object) -> list[torch.Tensor]:
    """The (N, *) tensors of an executor's result, one row per token: a segment's tokens, or an
    offload stage's tokens and, when it started a block, its qkv."""
    if isinstance(result, torch.Tensor):
        return [result]
    if isinstance(result, tuple):
        return [t for t in result if isinstance(t, torch.Tensor)]
    raise TypeError(f"not an executor's result: {type(result).__name__}")


async def _off_loop(tensors: Sequence[torch.Tensor], fn: Callable[..., R], *args: Any) -> R:
    """``fn(*args)``, on a thread when ``tensors`` hold more than :data:`INLINE_VALUES` values."""
    if sum(t.numel() for t in tensors) <= INLINE_VALUES:
        return fn(*args)
    return await asyncio.to_thread(fn, *args)


def _row_spans(windows: Sequence[Window]) -> list[tuple[int, int]]:
    """Per window, its rows (start, stop) in a share's (N, *) tensors (valid tokens, row-major,
    one window after another, as :func:`pedsam.stream.core.shares.gather_windows` lays them)."""
    spans, start = [], 0
    for w in windows:
        spans.append((start, start + w.height * w.width))
        start += w.height * w.width
    return spans


def impossible_windows(
    windows: Sequence[Window], tensors: Sequence[torch.Tensor], limits: Sequence[float]
) -> tuple[list[int], str]:
    """The ids of ``windows`` with a value that is not finite, or (where ``limits`` gives one per
    tensor) larger in magnitude than the limit; and what was wrong, in words (ids and counts only)."""
    bad: set[int] = set()
    why: list[str] = []
    spans = _row_spans(windows)
    for index, tensor in enumerate(tensors):
        finite = torch.isfinite(tensor).all(dim=1)
        rows = ~finite
        if index < len(limits):
            rows |= tensor.abs().amax(dim=1) > limits[index]
        if not bool(rows.any()):
            continue
        bad |= {w.id for w, (a, b) in zip(windows, spans) if bool(rows[a:b].any())}
        what = "values beyond what the blocks can produce" if bool(finite.all()) else "values that are not finite"
        why.append(f"{what} in {int(rows.sum())} tokens")
    return sorted(bad), "; ".join(why)


def differing_windows(
    windows: Sequence[Window], picked: Sequence[int], got: Sequence[torch.Tensor],
    want: Sequence[torch.Tensor], tolerance: float,
) -> tuple[list[int], float]:
    """Compare a worker's result (``got``, for all of ``windows``) with the edge's (``want``, for
    ``windows[i]`` for i in ``picked``, in that order); the ids of picked windows that differ by
    more than ``tolerance`` relative, and the largest relative difference seen."""
    spans = _row_spans(windows)
    mine = _row_spans([windows[i] for i in picked])
    bad, worst = [], 0.0
    for position, (i, (a, b)) in enumerate(zip(picked, (spans[i] for i in picked))):
        c, d = mine[position]
        for worker, edge in zip(got, want):
            reference = edge[c:d]
            scale = float(reference.abs().max()) if reference.numel() else 0.0
            difference = float((worker[a:b] - reference).abs().max()) if reference.numel() else 0.0
            relative = difference / scale if scale > 0 else (0.0 if difference == 0 else float("inf"))
            if not relative == relative:  # NaN: a worker's NaN against a finite reference
                relative = float("inf")
            worst = max(worst, relative)
            if relative > tolerance:
                bad.append(windows[i].id)
                break
    return bad, worst


@dataclass
class Watch:
    """``--verify``: which windows the edge recomputes, how closely results must agree, and what
    it found (see the module docstring).

    Attributes:
        fraction: the chance each window of a worker's share is recomputed, in [0, 1].
        tolerances: worker name -> its relative tolerance (:func:`tolerance`); others get ``default``.
        default: the tolerance of a worker not in ``tolerances``.
        rng: the secret random source (``random.SystemRandom`` unless a test gives a seeded one).
        windows_verified: windows recomputed and compared so far.
        largest_difference: the largest relative difference of a window that passed, so far (how
            close honest workers come to their tolerance).
        caught: worker -> what caught it (frame, segment, windows, check), in the order caught.
    """

    fraction: float
    tolerances: Mapping[str, float] = field(default_factory=dict)
    default: float = CODEC_TOLERANCE["fp32"] + COMPUTE_TOLERANCE["fp32"]
    rng: random.Random = field(default_factory=random.SystemRandom)
    windows_verified: int = 0
    largest_difference: float = 0.0
    caught: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.fraction, bool) or not 0.0 <= self.fraction <= 1.0:
            raise ValueError(f"--verify {self.fraction!r}: give a fraction of windows in [0, 1]")

    def pick(self, count: int) -> list[int]:
        """Positions among ``count`` windows to recompute: each with probability ``fraction``."""
        if self.fraction <= 0.0:
            return []
        return [i for i in range(count) if self.rng.random() < self.fraction]

    async def checked(
        self,
        name: str,
        frame: int,
        segment: int,
        windows: Sequence[Window],
        pending: Awaitable[T],
        recompute: Callable[[list[Window]], Awaitable[T]],
        limits: Sequence[float] = (),
    ) -> T:
        """``pending`` (worker ``name``'s result for ``windows``), checked: the picked windows are
        recomputed by ``recompute`` while it is awaited.

        Raises:
            TamperingError: impossible values, or a recomputed window that differs.
        """
        picked = self.pick(len(windows))
        reference = asyncio.ensure_future(recompute([windows[i] for i in picked])) if picked else None
        try:
            result = await pending
        except BaseException:
            if reference is not None:
                reference.cancel()
            raise
        got = result_tensors(result)
        bad, why = await _off_loop(got, impossible_windows, windows, got, limits)
        if bad:
            if reference is not None:
                reference.cancel()
            raise self._caught(name, frame, segment, bad, "impossible", why)
        if reference is None:
            return result
        want = result_tensors(await reference)
        allowed = self.tolerances.get(name, self.default)
        self.windows_verified += len(picked)
        bad, worst = await _off_loop(want, differing_windows, windows, picked, got, want, allowed)
        if bad:
            raise self._caught(name, frame, segment, bad, "recomputed",
                               f"largest relative difference {worst:.1e}, tolerance {allowed:.1e}")
        self.largest_difference = max(self.largest_difference, worst)
        return result

    def _caught(self, name: str, frame: int, segment: int, windows: list[int], check: str, why: str) -> TamperingError:
        what = "impossible values in" if check == "impossible" else "the edge's recomputation differs in"
        message = f"worker {name} returned tampered tokens: frame {frame} segment {segment}, {what} windows {windows} ({why})"
        if name not in self.caught:  # one line per worker; requests already under way may be caught too
            log.warning("%s; it is out of service for the rest of this session", message)
            self.caught[name] = {"frame": frame, "segment": segment, "windows": windows, "check": check}
        return TamperingError(message, windows=tuple(windows), check=check)

    def summary(self) -> dict[str, Any]:
        """JSON-ready: the fraction, windows recomputed, the largest difference that passed, and the
        workers caught with what caught them."""
        return {"verify": self.fraction, "windows_verified": self.windows_verified,
                "largest_difference": float(f"{self.largest_difference:.3g}"),
                "workers_caught": len(self.caught), "caught": dict(self.caught)}
