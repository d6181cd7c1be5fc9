"""The model plan: which encoder blocks run on the workers and which on the edge.

A SAM ViT encoder has ``depth`` blocks, numbered from 0. The global-attention blocks (ViT-B:
2, 5, 8, 11) need the whole token grid and run on the edge. Every maximal run of consecutive
windowed blocks is a *segment*: a worker runs all of a segment's blocks on its windows without a
round trip. Segments are numbered from 0 in block order.

For ViT-B, ``model_plan(12, (2, 5, 8, 11))`` gives
``Seg0(0, 1), G2, Seg1(3, 4), G5, Seg2(6, 7), G8, Seg3(9, 10), G11``.

A session may send only the first few segments to workers (``--remote-segments N``,
:meth:`ModelPlan.remote_segments`); the edge computes the later ones itself with the same segment
code. Segments before the first global block (:attr:`ModelPlan.unmixed_segments`, ViT-B: one)
take the patch embedding as input: tokens that no global block has mixed, which carry nothing
of the windows a worker was not given. Every later segment's input has been through a global
block, so each of its tokens holds some context of the whole frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pedsam.partitioner.errors import PartitionError

__all__ = ["GlobalStep", "ModelPlan", "SegmentStep", "Step", "model_plan"]


@dataclass(frozen=True, slots=True)
class SegmentStep:
    """Segment ``index``: a maximal run of consecutive windowed ``blocks``, run on workers."""

    index: int
    blocks: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class GlobalStep:
    """Global-attention block number ``block``, run on the edge over the whole token grid."""

    block: int


Step = SegmentStep | GlobalStep


@dataclass(frozen=True, slots=True)
class ModelPlan:
    """The encoder's blocks in execution order, grouped into segments and global steps.

    Attributes:
        depth: number of encoder blocks.
        global_blocks: the global-attention block numbers, ascending.
        steps: every block exactly once, in order: one :class:`SegmentStep` per run of
            windowed blocks, one :class:`GlobalStep` per global block.
    """

    depth: int
    global_blocks: tuple[int, ...]
    steps: tuple[Step, ...]

    @property
    def segments(self) -> tuple[SegmentStep, ...]:
        """The segment steps, in order (``segments[i].index == i``)."""
        return tuple(step for step in self.steps if isinstance(step, SegmentStep))

    @property
    def num_segments(self) -> int:
        """Number of segments (worker round trips per frame)."""
        return len(self.segments)

    @property
    def unmixed_segments(self) -> int:
        """Segments that come before the first global block (ViT-B: 1; a plan that starts with a
        global block: 0). Their input is the patch and position embedding, a function of each
        window's own pixels: a worker given only those segments never receives tokens mixed
        by a global attention block."""
        count = 0
        for step in self.steps:
            if isinstance(step, GlobalStep):
                break
            count += 1
        return count

    def remote_segments(self, count: int | None) -> tuple[SegmentStep, ...]:
        """The segments that go to workers when only the first ``count`` do (None: every one);
        the edge computes the others.

        Raises:
            PartitionError: ``count`` is not an int in ``1..num_segments``.
        """
        segments = self.segments
        if count is None:
            return segments
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= len(segments):
            valid = f"1..{len(segments)}" if segments else "none: every block is global"
            raise PartitionError(
                f"remote segments {count!r}: this model has {len(segments)} windowed segments; give {valid}"
            )
        return segments[:count]

    def segment(self, index: int) -> SegmentStep:
        """Segment number ``index``; :class:`PartitionError` if the plan has no such segment."""
        segments = self.segments
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(segments):
            valid = f"0..{len(segments) - 1}" if segments else "none: every block is global"
            raise PartitionError(f"no segment {index!r} in this plan; segments are {valid}")
        return segments[index]


def model_plan(depth: int, global_blocks: Sequence[int]) -> ModelPlan:
    """Group blocks ``0..depth-1`` into segments around ``global_blocks``.

    Args:
        depth: number of encoder blocks (>= 1).
        global_blocks: block numbers with global attention, each in ``0..depth-1``, no
            repeats, in any order (they are sorted). Empty means the whole encoder is one
            segment.

    Raises:
        PartitionError: ``depth < 1``, or a global block out of range or repeated.
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise PartitionError(f"depth must be an int of at least 1 (number of encoder blocks), got {depth!r}")
    seen: set[int] = set()
    for block in global_blocks:
        if isinstance(block, bool) or not isinstance(block, int) or not 0 <= block < depth:
            raise PartitionError(f"global block {block!r} is not a block of a depth-{depth} encoder; use 0..{depth - 1}")
        if block in seen:
            raise PartitionError(f"global block {block} is listed twice; list each global block once")
        seen.add(block)
    steps: list[Step] = []
    run: list[int] = []
    segments = 0
    for block in range(depth + 1):
        if block < depth and block not in seen:
            run.append(block)
            continue
        if run:
            steps.append(SegmentStep(index=segments, blocks=tuple(run)))
            segments += 1
            run = []
        if block < depth:
            steps.append(GlobalStep(block=block))
    return ModelPlan(depth=depth, global_blocks=tuple(sorted(seen)), steps=tuple(steps))
