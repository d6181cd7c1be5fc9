"""pedsam-mini end to end: generated clips through the split with 3 local workers, each object
followed from one first-frame click, every frame's masks compared with the generator's exact
truth. A regression that scrambles masks anywhere between the decoder and the files (a transposed
RLE, a wrong resize back to the frame, a tracker that follows the wrong object, a shipped model
that no longer segments) fails here, where exactness tests against random weights cannot see it."""

from __future__ import annotations

from pathlib import Path

import pytest

from pedsam.stream.media.synthetic import demo_scene
from pedsam.stream.mini.evaluate import clip_iou, second_scene

# Per object, mean IoU over the clip. The target for the shipped model is 0.70; the
# bench (pedsam bench-mini) measures what it reaches on longer clips.
FLOOR = 0.70


@pytest.mark.parametrize("keyframes", ["all", "every:4"])
def test_mini_follows_each_object_of_a_generated_clip(tmp_path: Path, keyframes: str) -> None:
    """Every frame through the split (all), and SAM on every 4th frame with masks propagated on
    the edge in between (every:4)."""
    scene = demo_scene(width=640, height=480, frames=12, seed=0)
    score = clip_iou(scene, command="run", folder=tmp_path, flags=("--keyframes", keyframes), timeout=300)
    assert (score.frames_with_masks, score.errors) == (12, 0)
    assert score.keyframes == (12 if keyframes == "all" else 3)
    assert len(score.objects) == 4
    for name, value in zip(score.objects, score.per_object):
        assert value >= FLOOR, f"{name}: mean IoU {value:.3f} over the clip (keyframes {keyframes})"


def test_mini_segments_a_scene_it_has_not_seen_in_the_bench(tmp_path: Path) -> None:
    score = clip_iou(second_scene(frames=8), command="run", folder=tmp_path, timeout=300)
    assert (score.frames_with_masks, score.errors) == (8, 0)
    for name, value in zip(score.objects, score.per_object):
        assert value >= FLOOR, f"{name}: mean IoU {value:.3f} over the clip"
