"""partitioner.plan: encoder blocks grouped into worker segments and edge global steps."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pedsam.partitioner import GlobalStep, ModelPlan, PartitionError, SegmentStep, model_plan
from pedsam.partitioner.offload import offload_stages


def test_vit_b_plan() -> None:
    plan = model_plan(12, (2, 5, 8, 11))
    assert plan.steps == (
        SegmentStep(0, (0, 1)), GlobalStep(2),
        SegmentStep(1, (3, 4)), GlobalStep(5),
        SegmentStep(2, (6, 7)), GlobalStep(8),
        SegmentStep(3, (9, 10)), GlobalStep(11),
    )  # fmt: skip
    assert plan.num_segments == 4
    assert plan.segment(2) == SegmentStep(2, (6, 7))
    assert plan.global_blocks == (2, 5, 8, 11) and plan.depth == 12


@pytest.mark.parametrize(
    ("depth", "global_blocks", "segments"),
    [
        (24, (5, 11, 17, 23), ((0, 1, 2, 3, 4), (6, 7, 8, 9, 10), (12, 13, 14, 15, 16), (18, 19, 20, 21, 22))),
        (32, (7, 15, 23, 31), tuple(tuple(range(s, s + 7)) for s in (0, 8, 16, 24))),
    ],
    ids=["vit_l", "vit_h"],
)
def test_vit_l_and_h_segments(depth: int, global_blocks: tuple[int, ...], segments: tuple[tuple[int, ...], ...]) -> None:
    assert tuple(s.blocks for s in model_plan(depth, global_blocks).segments) == segments


def test_edge_cases() -> None:
    assert model_plan(4, ()).steps == (SegmentStep(0, (0, 1, 2, 3)),)
    assert model_plan(4, (0,)).steps == (GlobalStep(0), SegmentStep(0, (1, 2, 3)))
    assert model_plan(5, (1, 2)).steps == (SegmentStep(0, (0,)), GlobalStep(1), GlobalStep(2), SegmentStep(1, (3, 4)))
    assert model_plan(5, (3,)).steps == (SegmentStep(0, (0, 1, 2)), GlobalStep(3), SegmentStep(1, (4,)))
    assert model_plan(2, (0, 1)).steps == (GlobalStep(0), GlobalStep(1))
    assert model_plan(2, (0, 1)).num_segments == 0
    assert model_plan(6, [4, 1]).global_blocks == (1, 4)


@settings(max_examples=200, deadline=None)
@given(depth=st.integers(1, 40), data=st.data())
def test_steps_run_every_block_once_in_order(depth: int, data: st.DataObject) -> None:
    global_blocks = data.draw(st.lists(st.integers(0, depth - 1), unique=True))
    plan = model_plan(depth, global_blocks)
    order: list[int] = []
    for step in plan.steps:
        order.extend(step.blocks if isinstance(step, SegmentStep) else (step.block,))
    assert order == list(range(depth))
    assert {s.block for s in plan.steps if isinstance(s, GlobalStep)} == set(global_blocks)
    # Segments are maximal: two segments are never adjacent, and each is consecutive blocks.
    for before, after in zip(plan.steps, plan.steps[1:]):
        assert not (isinstance(before, SegmentStep) and isinstance(after, SegmentStep))
    for index, segment in enumerate(plan.segments):
        assert segment.index == index and plan.segment(index) is segment
        assert segment.blocks == tuple(range(segment.blocks[0], segment.blocks[-1] + 1))
        assert not set(segment.blocks) & set(global_blocks)


@pytest.mark.parametrize(
    ("depth", "global_blocks", "needle"),
    [
        (0, (), "depth must be an int of at least 1"),
        (12, (2, 12), r"global block 12 is not a block of a depth-12 encoder; use 0\.\.11"),
        (12, (-1,), "global block -1 is not a block"),
        (12, (2, 5, 2), "global block 2 is listed twice"),
    ],
)
def test_bad_plans(depth: int, global_blocks: tuple[int, ...], needle: str) -> None:
    with pytest.raises(PartitionError, match=needle):
        model_plan(depth, global_blocks)


def test_unknown_segment() -> None:
    plan: ModelPlan = model_plan(12, (2, 5, 8, 11))
    with pytest.raises(PartitionError, match=r"no segment 4 in this plan; segments are 0\.\.3"):
        plan.segment(4)
    with pytest.raises(PartitionError, match="no segment -1"):
        plan.segment(-1)
    with pytest.raises(PartitionError, match="every block is global"):
        model_plan(1, (0,)).segment(0)


@pytest.mark.parametrize("count", [1, 2, 3, 4])
def test_vit_b_remote_segments_are_the_first_n(count: int) -> None:
    """ViT-B, N = 1..4: the first N segments go to workers; N = 1 is the one whose input no global
    block has mixed, and under the offload plan its stage finishes no global block either (a
    worker gets no attention output), so no worker receives anything a global block mixed."""
    plan = model_plan(12, (2, 5, 8, 11))
    remote = plan.remote_segments(count)
    assert [s.index for s in remote] == list(range(count))
    assert [b for s in remote for b in s.blocks] == [0, 1, 3, 4, 6, 7, 9, 10][: 2 * count]
    assert plan.unmixed_segments == 1
    first_global = next(i for i, step in enumerate(plan.steps) if isinstance(step, GlobalStep))
    mixed_inputs = [s for s in remote if plan.steps.index(s) > first_global]
    assert len(mixed_inputs) == count - 1  # N <= unmixed_segments: none
    stages = offload_stages(plan)[:count]
    assert [s.finish for s in stages] == [None, 2, 5, 8][:count]
    assert plan.remote_segments(None) == plan.segments


@pytest.mark.parametrize(("depth", "global_blocks", "unmixed"),
                         [(4, (), 1), (4, (0,), 0), (5, (3,), 1), (6, (2, 5), 1), (2, (0, 1), 0)])
def test_unmixed_segments(depth: int, global_blocks: tuple[int, ...], unmixed: int) -> None:
    assert model_plan(depth, global_blocks).unmixed_segments == unmixed


@pytest.mark.parametrize("count", [0, 5, -1, True, 1.0])
def test_remote_segments_outside_the_plan_are_refused(count: object) -> None:
    with pytest.raises(PartitionError, match=r"this model has 4 windowed segments; give 1\.\.4"):
        model_plan(12, (2, 5, 8, 11)).remote_segments(count)  # type: ignore[arg-type]
