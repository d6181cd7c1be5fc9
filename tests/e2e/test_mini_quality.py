"""pedsam-mini end to end: generated clips through the split with 3 local workers, each object
followed from one first-frame click, every frame's masks compared with the generator's exact
truth. A regression that scrambles masks anywhere between the decoder and the files (a transposed
RLE, a wrong resize back to the frame, a tracker that follows the wrong object, a shipped model
that no longer segments) fails here, where exactness tests against random weights cannot see it.

Floors per object, a little under what the shipped weights measure on these 12-frame clips
(second scene, SAM every 4th frame: disc 0.985, star 0.966, block 0.983; demo scene, every frame:
ellipse 0.988, rectangle 0.986, star 0.961, fish 0.968) and above what they gave before the
decoder fitted outlines to the frame's edges (disc 0.96, star 0.86, block 0.95; ellipse 0.94,
rectangle 0.91, star 0.85, fish 0.89), so that losing that fit fails here too. The demo scene's
floors also guard the decoder's prompted-region rule: without it a click on the ellipse or the
rectangle takes both, and the tracker carries that on (0.38 and 0.55). A live run (``stream
--realtime``) of the second scene guards keyframes, propagation and the first keyframe's landing
on the steady objects."""

from __future__ import annotations

from pathlib import Path

from pedsam.stream.media.synthetic import demo_scene
from pedsam.stream.mini.evaluate import clip_iou, second_scene

SECOND_FLOORS = {"disc": 0.97, "star": 0.93, "block": 0.97}
DEMO_FLOORS = {"ellipse": 0.97, "rectangle": 0.97, "star": 0.94, "fish": 0.94}


def test_mini_follows_every_object_of_a_generated_clip_with_keyframes_every_4th_frame(tmp_path: Path) -> None:
    """SAM on every 4th frame through the split, masks propagated on the edge in between."""
    score = clip_iou(second_scene(frames=12), command="run", folder=tmp_path, flags=("--keyframes", "every:4"),
                     timeout=300)
    assert (score.frames_with_masks, score.errors, score.keyframes) == (12, 0, 3)
    found = dict(zip(score.objects, score.per_object))
    assert list(found) == ["disc", "star", "block"]
    assert all(found[name] >= floor for name, floor in SECOND_FLOORS.items()), found


def test_mini_finds_the_objects_of_the_demo_scene_on_every_frame(tmp_path: Path) -> None:
    """Every frame through the split (keyframes all)."""
    scene = demo_scene(width=640, height=480, frames=12, seed=0)
    score = clip_iou(scene, command="run", folder=tmp_path, flags=("--keyframes", "all"), timeout=300)
    assert (score.frames_with_masks, score.errors, score.keyframes) == (12, 0, 12)
    found = dict(zip(score.objects, score.per_object))
    assert all(found[name] >= floor for name, floor in DEMO_FLOORS.items()), found


def test_mini_follows_the_steady_objects_of_a_clip_played_live(tmp_path: Path) -> None:
    """``pedsam stream --realtime``: the clip played as a camera delivers it, adaptive keyframes,
    frames dropped to stay current, the video playing on without masks until the first keyframe
    lands. What a live run shows depends on what this machine took in time, hence floors well
    below what every live run here gave (disc 0.98, block 0.98, star 0.95 in each of 5 runs; before
    outlines were fitted to the frame's edges disc 0.93-0.95, block 0.94-0.95, star 0.82-0.84 in
    each of 9 runs, 3 of them with both cores busy elsewhere). The star is as bright as the
    background: propagation follows it across the live run's jumps by its tint, and lost it
    without (0.00-0.47 in 3 runs)."""
    score = clip_iou(second_scene(frames=60), command="stream", folder=tmp_path, timeout=300)
    assert score.errors == 0 and score.keyframes >= 1
    assert score.frames_with_masks + score.before_first + score.dropped == 60  # every frame accounted for
    assert score.frames_with_masks >= 5 and score.before_first >= 1  # the video played while SAM computed
    found = dict(zip(score.objects, score.per_object))
    assert found["disc"] >= 0.9 and found["block"] >= 0.9 and found["star"] >= 0.85, found
