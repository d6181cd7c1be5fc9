"""pedsam.stream.core.propagation: masks carried from a keyframe follow what the objects do.

Every clip is a small :class:`~pedsam.stream.media.synthetic.Scene` whose exact per-frame masks are
the truth. Each accuracy test also checks that simply keeping the keyframe mask would fail it,
so that passing says something about the propagation.
"""

from __future__ import annotations

import numpy as np
import pytest

import cv2

from pedsam.stream.core.propagation import MaskPropagator, Propagated, PropagationConfig, tint
from pedsam.stream.media.synthetic import Scene, Sprite

RED, BLUE, GREEN = (220, 45, 40), (40, 90, 230), (45, 190, 60)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union


def follow(scene: Scene, config: PropagationConfig | None = None) -> list[list[Propagated]]:
    """Keyframe on frame 0 with the true masks, then every later frame propagated."""
    propagator = MaskPropagator(config)
    first = scene.frame(0)
    propagator.reset(first.image, list(first.masks))
    return [propagator.step(scene.frame(i).image) for i in range(1, scene.frames)]


def ious(scene: Scene, results: list[list[Propagated]], obj: int = 0) -> list[float]:
    return [iou(r[obj].mask, scene.frame(i + 1).masks[obj]) for i, r in enumerate(results)]


def one(frames: int, **sprite: object) -> Scene:
    """A 224x160 clip of one textured sprite."""
    values: dict[str, object] = {"name": "object", "colour": RED, "centre": (70.0, 80.0), "half_size": (36.0, 24.0)}
    values.update(sprite)
    return Scene(224, 160, [Sprite(**values)], frames=frames, seed=1)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("motion", "sprite"),
    [
        ("translation", {"shape": "ellipse", "velocity": (4.0, 1.0)}),
        ("rotation", {"shape": "rectangle", "centre": (110.0, 80.0), "spin": 4.0}),
        ("scaling", {"shape": "star", "centre": (110.0, 80.0), "half_size": (40.0, 40.0), "zoom": 0.35,
                     "morph_period": 40.0}),
        ("shape change", {"shape": "ellipse", "centre": (110.0, 80.0), "stretch": 0.35, "morph_period": 40.0}),
    ],
)
def test_masks_follow_motion_rotation_and_scaling(motion: str, sprite: dict[str, object]) -> None:
    scene = one(21, **sprite)
    results = follow(scene)
    got = ious(scene, results)
    # 20 frames: 80 px of travel, 80 degrees of turn, or size from 135 % to 80 % (and back) of the keyframe's.
    assert min(got) >= 0.9, (motion, [round(v, 3) for v in got])
    stale = min(iou(scene.frame(0).masks[0], scene.frame(i).masks[0]) for i in range(1, scene.frames))
    assert stale < 0.75, motion  # keeping the keyframe mask would not pass
    assert all(r[0].confidence > 0.5 for r in results), motion


def test_a_bending_object_is_followed_better_with_the_mesh_than_with_one_affine_motion() -> None:
    scene = one(16, shape="ellipse", centre=(110.0, 80.0), half_size=(22.0, 62.0), angle=90.0, bend=0.6,
                morph_period=30.0)
    with_mesh = ious(scene, follow(scene))
    one_motion = ious(scene, follow(scene, PropagationConfig(grid=0)))
    assert min(with_mesh) >= 0.88, [round(v, 3) for v in with_mesh]
    assert np.mean(with_mesh) > np.mean(one_motion) + 0.02


def test_the_keyframe_anchor_holds_a_long_rigid_motion_without_drift() -> None:
    scene = one(61, shape="rectangle", velocity=(1.5, 0.0), sway=(0.0, 20.0), period=40.0, spin=1.0)
    got = ious(scene, follow(scene))
    assert got[-1] >= 0.92 and np.mean(got[-10:]) >= 0.92, [round(v, 3) for v in got[::10]]


def crossing(frames: int) -> Scene:
    """A blue rectangle in front passes over a red ellipse behind it."""
    sprites = [
        Sprite(name="behind", shape="ellipse", colour=RED, centre=(130.0, 80.0), half_size=(40.0, 28.0), depth=1,
               velocity=(-1.0, 0.0)),
        Sprite(name="front", shape="rectangle", colour=BLUE, centre=(40.0, 76.0), half_size=(22.0, 40.0), depth=0,
               velocity=(5.0, 0.0)),
    ]
    return Scene(224, 160, sprites, frames=frames, seed=2)


def test_an_object_passing_in_front_takes_its_pixels_from_the_one_behind() -> None:
    scene = crossing(25)
    results = follow(scene)
    hidden = [1.0 - scene.frame(i).masks[0].sum() / scene.frame(i).shapes[0].sum() for i in range(1, 25)]
    assert max(hidden) > 0.4  # the clip does hide much of the object behind
    behind, front = ious(scene, results, 0), ious(scene, results, 1)
    assert min(front) >= 0.9 and min(behind) >= 0.8, ([round(v, 2) for v in behind], [round(v, 2) for v in front])
    overlap = [np.count_nonzero(r[0].mask & r[1].mask) / np.count_nonzero(r[1].mask) for r in results]
    assert max(overlap) < 0.05  # the object behind does not claim the one in front
    # Its confidence falls as it is hidden: lowest where most of it is hidden.
    confidence = [r[0].confidence for r in results]
    assert confidence[int(np.argmax(hidden))] < 0.6 < confidence[0]


ORANGE = (230, 120, 30)  # textured, about as bright as a generated background: grey 110 against 102 around it


def test_an_object_as_bright_as_its_background_is_followed_across_jumps_by_its_colour() -> None:
    """An orange star of about its background's grey level, moving and turning, followed every
    6th frame (a live run's jump after dropped frames): grey alone loses it, its tint holds it."""
    scene = Scene(224, 160, [Sprite(name="star", shape="star", colour=ORANGE, centre=(80.0, 80.0),
                                    half_size=(34.0, 34.0), velocity=(3.0, 0.0), spin=-2.0)], frames=40, seed=3)

    def worst(config: PropagationConfig) -> float:
        propagator = MaskPropagator(config)
        first = scene.frame(0)
        propagator.reset(first.image, list(first.masks))
        return min(iou(propagator.step(scene.frame(i).image)[0].mask, scene.frame(i).masks[0]) for i in range(6, 40, 6))

    assert worst(PropagationConfig()) >= 0.9  # measured 0.95
    assert worst(PropagationConfig(tint=False)) < 0.5  # measured 0.00: the case needs colour


def test_a_tint_tells_the_object_from_its_surroundings_and_grey_frames_get_none() -> None:
    scene = Scene(224, 160, [Sprite(name="star", shape="star", colour=ORANGE, centre=(110.0, 80.0),
                                    half_size=(34.0, 34.0))], frames=1, seed=3)
    frame = scene.frame(0)
    mask = frame.masks[0]
    matrix = tint(frame.image, mask, 1.0)
    assert matrix is not None and matrix.shape == (1, 4)
    channel = cv2.transform(frame.image, matrix)
    ring = cv2.dilate(mask.astype(np.uint8), np.ones((15, 15), np.uint8)).astype(bool) & ~mask
    assert channel[mask].mean() > 200 and channel[ring].mean() < 50  # grey: 110 against 102
    grey = np.repeat(cv2.cvtColor(frame.image, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
    assert tint(grey, mask, 1.0) is None  # colour adds nothing to grey
    assert tint(frame.image, np.zeros_like(mask), 1.0) is None


def test_confidence_collapses_on_a_scene_cut() -> None:
    scene = one(6, shape="ellipse", velocity=(3.0, 0.0))
    other = Scene(224, 160, [Sprite(name="x", shape="star", colour=GREEN, centre=(150.0, 60.0),
                                    half_size=(30.0, 30.0))], frames=1, seed=7)
    propagator = MaskPropagator()
    first = scene.frame(0)
    propagator.reset(first.image, [first.masks[0]])
    before = [propagator.step(scene.frame(i).image)[0].confidence for i in range(1, 6)]
    after = propagator.step(other.frame(0).image)[0]
    assert min(before) > 0.7
    assert after.confidence < 0.2 and after.appearance < 0.5


def test_an_object_leaving_the_frame_loses_confidence_then_its_mask_without_error() -> None:
    scene = one(30, shape="ellipse", centre=(170.0, 80.0), velocity=(6.0, 0.0))
    results = follow(scene)
    inside = [scene.frame(i).masks[0].sum() / scene.frame(0).masks[0].sum() for i in range(1, 30)]
    confidence = [r[0].confidence for r in results]
    half_out = next(i for i, v in enumerate(inside) if v < 0.5)
    assert confidence[half_out] < 0.6 < confidence[0]
    gone = [i for i, v in enumerate(inside) if v == 0]
    assert gone, "the clip should end with the object out of the frame"
    for i in gone:
        assert results[i][0].confidence < 0.1 and np.count_nonzero(results[i][0].mask) < 20
    assert all(r[0].mask.shape == (160, 224) and r[0].mask.dtype == bool for r in results)


def test_a_fully_hidden_object_has_no_confidence_and_nothing_breaks() -> None:
    sprites = [
        Sprite(name="small", shape="ellipse", colour=RED, centre=(112.0, 80.0), half_size=(18.0, 14.0), depth=1),
        Sprite(name="cover", shape="rectangle", colour=BLUE, centre=(40.0, 80.0), half_size=(40.0, 40.0), depth=0,
               velocity=(6.0, 0.0)),
    ]
    scene = Scene(224, 160, sprites, frames=26, seed=4)
    results = follow(scene)
    covered = [i for i in range(1, 26) if not scene.frame(i).masks[0].any()]
    assert covered, "the clip should hide the small object completely"
    for i in covered:
        assert results[i - 1][0].confidence < 0.2, i
        assert np.count_nonzero(results[i - 1][0].mask) < 0.2 * scene.frame(0).masks[0].sum()
    assert iou(results[-1][1].mask, scene.frame(25).masks[1]) > 0.85


def test_empty_masks_and_no_objects_are_fine() -> None:
    scene = one(3, shape="ellipse")
    empty = np.zeros((160, 224), bool)
    propagator = MaskPropagator()
    propagator.reset(scene.frame(0).image, {3: empty, 5: scene.frame(0).masks[0]})
    for i in (1, 2):
        out = propagator.step(scene.frame(i).image)
        assert [r.id for r in out] == [3, 5]
        assert not out[0].mask.any() and out[0].confidence == 0.0 and out[0].points == 0
        assert iou(out[1].mask, scene.frame(i).masks[0]) > 0.9
    nothing = MaskPropagator()
    nothing.reset(scene.frame(0).image, [])
    assert nothing.step(scene.frame(1).image) == []
    tiny = np.zeros((160, 224), bool)
    tiny[50, 60] = True  # a single pixel: no points to track, still no error
    nothing.add(0, tiny)
    assert nothing.step(scene.frame(2).image)[0].confidence == 0.0


def test_objects_can_be_added_and_removed_between_keyframes() -> None:
    scene = crossing(6)
    propagator = MaskPropagator()
    propagator.reset(scene.frame(0).image, {7: scene.frame(0).masks[0]})
    propagator.step(scene.frame(1).image)
    propagator.add(9, scene.frame(1).masks[1])  # a mask on the last frame given
    out = propagator.step(scene.frame(2).image)
    assert [r.id for r in out] == [7, 9] and propagator.ids == [7, 9]
    assert iou(out[1].mask, scene.frame(2).masks[1]) > 0.9
    propagator.remove(7)
    propagator.remove(42)
    assert [r.id for r in propagator.step(scene.frame(3).image)] == [9]


def test_bad_input_is_refused_with_a_clear_error() -> None:
    frame = one(1).frame(0)
    propagator = MaskPropagator()
    with pytest.raises(ValueError, match="reset"):
        propagator.step(frame.image)
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        propagator.reset(frame.image[..., 0], [])
    with pytest.raises(ValueError, match="mask of object 0"):
        propagator.reset(frame.image, [np.zeros((10, 10), bool)])
    propagator.reset(frame.image, [frame.masks[0]])
    with pytest.raises(ValueError, match="differs from the keyframe"):
        propagator.step(frame.image[:100])
    with pytest.raises(ValueError, match="method"):
        PropagationConfig(method="magic")


def test_the_dense_baseline_follows_a_few_frames_of_translation() -> None:
    scene = one(6, shape="ellipse", velocity=(4.0, 1.0))
    got = ious(scene, follow(scene, PropagationConfig(method="dense")))
    assert min(got) > 0.85, got


def test_frames_larger_than_the_working_size_are_tracked_at_reduced_resolution() -> None:
    scene = one(11, shape="rectangle", velocity=(4.0, 0.0), spin=2.0)
    small = ious(scene, follow(scene, PropagationConfig(work_size=112)))  # half resolution
    assert min(small) >= 0.85, small
