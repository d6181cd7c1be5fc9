"""The offload plan: which parts of the global blocks the workers run as well.

In the default plan the edge runs every global block whole. A global block is three parts::

    pre:   qkv = qkv(norm1(x))                          per token
    mix:   attention over every token of the frame      needs the whole frame
    post:  x = x + proj(o);  x = x + mlp(norm2(x))      per token

In the offload plan the per-token parts run on the workers, on the same window shares as the
segment next to them, and the edge keeps only the mixing. Each segment becomes one
:class:`OffloadStage`: the worker first finishes the global block right before the segment
(its post part), then runs the segment, then starts the global block right after it (its pre
part). A global block with no segment right after it is finished on the edge; one with no
segment right before it is started on the edge. For ViT-B,
``offload_stages(model_plan(12, (2, 5, 8, 11)))`` gives::

    Seg0 start 2 | mix 2 | finish 2 Seg1 start 5 | mix 5 | ... | finish 8 Seg3 start 11 | mix 11 | edge: finish 11

The tokens a worker receives and returns are those of its own windows only, as in the default
plan; what changes is how much of each block it computes, and the bytes that cross.
"""

from __future__ import annotations

from dataclasses import dataclass

from pedsam.partitioner.plan import GlobalStep, ModelPlan, SegmentStep

__all__ = ["PLANS", "OffloadStage", "offload_stages"]

PLANS: tuple[str, ...] = ("default", "offload")
"""The execution plans a session can use."""


@dataclass(frozen=True, slots=True)
class OffloadStage:
    """What a worker does for segment ``segment`` in the offload plan.

    Attributes:
        segment: the segment's index.
        finish: the global block (block number) whose post part runs first, or None.
        start: the global block whose pre part runs after the segment, or None.
    """

    segment: int
    finish: int | None
    start: int | None


def offload_stages(plan: ModelPlan) -> tuple[OffloadStage, ...]:
    """One :class:`OffloadStage` per segment of ``plan``, in segment order."""
    steps = plan.steps
    stages = []
    for i, step in enumerate(steps):
        if not isinstance(step, SegmentStep):
            continue
        before = steps[i - 1] if i > 0 else None
        after = steps[i + 1] if i + 1 < len(steps) else None
        stages.append(
            OffloadStage(
                segment=step.index,
                finish=before.block if isinstance(before, GlobalStep) else None,
                start=after.block if isinstance(after, GlobalStep) else None,
            )
        )
    return tuple(stages)
