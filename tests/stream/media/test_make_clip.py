"""pedsam.stream.media.synthetic and samples/make_clip.py: the synthetic clip decodes as declared and
its ground truth is right; so is the truth of the propagation scenes (:class:`Scene`): each mask is
exactly what its sprite painted."""

from __future__ import annotations

import fractions
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from pedsam.stream.media import synthetic
from pedsam.stream.media.video import probe_video, read_frames
from tests.support import ROOT

SCRIPT = ROOT / "samples" / "make_clip.py"


make_clip_module = synthetic
make_clip = synthetic.make_clip


def colour_distance(pixel: np.ndarray, colour: tuple[int, int, int]) -> float:
    return float(np.abs(pixel.astype(int) - np.array(colour)).max())


def test_clip_decodes_with_declared_count_rate_and_size(tmp_path: Path) -> None:
    rate = fractions.Fraction(25, 2)
    truth = make_clip(tmp_path / "c.mp4", frames=9, width=96, height=64, fps=rate)
    info = probe_video(truth.path)
    assert (info.width, info.height) == (96, 64) == (truth.width, truth.height)
    assert info.rate == rate == truth.fps
    assert info.frame_count == 9 == truth.frame_count
    assert sum(1 for _ in read_frames(truth.path)) == 9
    assert len(truth.objects) >= 2
    assert all(len(o.centres) == len(o.boxes) == 9 for o in truth.objects)


def test_objects_are_at_their_declared_centres_and_move(tmp_path: Path) -> None:
    truth = make_clip(tmp_path / "c.mp4", frames=8)
    frames = [f.image for f in read_frames(truth.path)]
    for obj in truth.objects:
        for index, image in enumerate(frames):
            x, y = obj.centres[index]
            pixel = image[round(y), round(x)]
            assert colour_distance(pixel, obj.colour) < 40, (obj.name, index)
        # The object has left its first position by the last frame: background shows there.
        x0, y0 = obj.centres[0]
        background = frames[-1][round(y0), round(x0)]
        assert colour_distance(background, obj.colour) > 100
        assert int(background.max()) - int(background.min()) < 30  # nearly grey
        assert obj.centres[0] != obj.centres[-1]


def test_decoded_object_pixels_match_truth_masks(tmp_path: Path) -> None:
    truth = make_clip(tmp_path / "c.mp4", frames=5)
    for index, frame in enumerate(read_frames(truth.path)):
        for k, obj in enumerate(truth.objects):
            near = np.abs(frame.image.astype(int) - np.array(obj.colour)).max(axis=2) < 60
            mask = truth.mask(k, index).astype(np.uint8)
            # yuv420p blurs colour across about two pixels, so skip a band along the edge.
            inside = cv2.erode(mask, np.ones((5, 5), np.uint8)).astype(bool)
            outside = ~cv2.dilate(mask, np.ones((5, 5), np.uint8)).astype(bool)
            assert near[inside].mean() > 0.99, (obj.name, index)
            assert near[outside].mean() < 0.001, (obj.name, index)


def test_boxes_and_masks_agree_and_objects_never_overlap(tmp_path: Path) -> None:
    truth = make_clip(tmp_path / "c.mp4", frames=6, width=160, height=96)
    for index in range(truth.frame_count):
        masks = [truth.mask(k, index) for k in range(len(truth.objects))]
        assert not (masks[0] & masks[1]).any()
        for k, (obj, mask) in enumerate(zip(truth.objects, masks)):
            rows, cols = np.nonzero(mask)
            assert obj.boxes[index] == (cols.min(), rows.min(), cols.max(), rows.max())
            x, y = obj.centres[index]
            assert mask[round(y), round(x)], (k, index)


def test_deterministic_for_a_seed(tmp_path: Path) -> None:
    a = make_clip(tmp_path / "a.mp4", frames=3, seed=5)
    b = make_clip(tmp_path / "b.mp4", frames=3, seed=5)
    c = make_clip(tmp_path / "c.mp4", frames=3, seed=6)
    first = [f.image for f in read_frames(a.path)]
    assert all((x == y.image).all() for x, y in zip(first, read_frames(b.path)))
    assert not all((x == y.image).all() for x, y in zip(first, read_frames(c.path)))
    assert a.objects == b.objects


@pytest.mark.parametrize(
    "kwargs", [{"frames": 0}, {"width": 33}, {"height": 16}, {"fps": 0}]
)
def test_rejects_bad_arguments(tmp_path: Path, kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        make_clip(tmp_path / "c.mp4", **kwargs)


def test_main_writes_clip_and_truth(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, truth_file = tmp_path / "c.mkv", tmp_path / "truth.json"
    argv = [str(out), "--frames", "5", "--size", "64x48", "--fps", "30000/1001"]
    assert make_clip_module.main([*argv, "--truth", str(truth_file)]) == 0
    assert "5 frames" in capsys.readouterr().out
    info = probe_video(out)
    assert (info.width, info.height, info.rate) == (64, 48, fractions.Fraction(30000, 1001))
    assert sum(1 for _ in read_frames(out)) == 5
    truth = json.loads(truth_file.read_text())
    assert truth["fps"] == "30000/1001" and truth["frame_count"] == 5
    assert len(truth["objects"][0]["centres"]) == 5


def test_main_reports_bad_size_with_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        make_clip_module.main([str(tmp_path / "c.mp4"), "--size", "33x20"])
    assert caught.value.code == 2
    assert "even" in capsys.readouterr().err


def test_runs_as_a_script(tmp_path: Path) -> None:
    out = tmp_path / "clip.mp4"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(out), "--frames", "4", "--size", "64x64"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert probe_video(out).frame_count == 4


# -- Scene: textured sprites that move, turn, deform and occlude, with exact visible masks ------

Sprite, Scene = synthetic.Sprite, synthetic.Scene


def chroma_labels(image: np.ndarray, colours: list[tuple[int, int, int]]) -> np.ndarray:
    """Per pixel, the index of the sprite colour whose chromaticity (rgb / sum) is nearest,
    or -1 for the nearly grey background: what a viewer would say each pixel shows."""
    rgb = image.astype(np.float64) + 1e-6
    chroma = rgb / rgb.sum(axis=2, keepdims=True)
    refs = np.array([[1 / 3, 1 / 3, 1 / 3]] + [np.array(c) / sum(c) for c in colours])
    distance = np.linalg.norm(chroma[:, :, None, :] - refs[None, None], axis=3)
    return np.asarray(distance.argmin(axis=2) - 1)


def crossing_scene() -> Scene:
    """Three sprites of different shapes whose paths overlap, turning, zooming and bending."""
    sprites = [
        Sprite(name="front", shape="rectangle", colour=(40, 90, 230), centre=(60, 60), half_size=(28, 18),
               depth=0, velocity=(4.0, 1.0), spin=3.0, zoom=0.2, morph_period=12),
        Sprite(name="middle", shape="star", colour=(45, 190, 60), centre=(120, 70), half_size=(34, 34),
               depth=1, velocity=(-2.0, 0.0), spin=-2.0, stretch=0.2, morph_period=10),
        Sprite(name="back", shape="ellipse", colour=(220, 45, 40), centre=(100, 64), half_size=(50, 22),
               depth=2, velocity=(0.5, 0.5), bend=0.4, morph_period=8),
    ]
    return Scene(192, 128, sprites, frames=12, seed=3)


def test_scene_masks_are_exactly_the_pixels_each_sprite_painted() -> None:
    scene = crossing_scene()
    colours = [s.colour for s in scene.sprites]
    background = scene.frame(-1000).image  # every sprite far away: the bare background
    overlapped = 0
    for index in range(scene.frames):
        frame = scene.frame(index)
        labels = chroma_labels(frame.image, colours)
        union = np.zeros(labels.shape, bool)
        for k, mask in enumerate(frame.masks):
            assert (labels[mask] == k).all(), (index, k)
            assert ((labels == k) == mask).all(), (index, k)
            assert not (union & mask).any()  # visible parts never share a pixel
            union |= mask
            assert (frame.shapes[k] >= mask).all()
        assert (frame.image[~union] == background[~union]).all()
        overlapped += int(sum(int((s & ~m).sum()) for s, m in zip(frame.shapes, frame.masks)) > 0)
    assert overlapped >= 3  # the sprites do pass behind each other


def test_scene_sprites_move_turn_and_deform_as_declared() -> None:
    sprite = Sprite(name="r", shape="rectangle", colour=(40, 90, 230), centre=(100, 60), half_size=(30, 10),
                    spin=90.0, zoom=0.5, morph_period=4)
    scene = Scene(200, 120, [sprite], frames=2)
    first, second = scene.frame(0).masks[0], scene.frame(1).masks[0]
    # Frame 0: zoom 1.5 (cos 0 = 1): 90x30 px. Frame 1: turned 90 degrees, zoom 1 (cos pi/2): 20x60.
    def extent(mask: np.ndarray) -> tuple[int, int]:
        rows, cols = np.nonzero(mask)
        return int(cols.max() - cols.min() + 1), int(rows.max() - rows.min() + 1)

    assert extent(first) == (pytest.approx(91, abs=1), pytest.approx(31, abs=1))
    assert extent(second) == (pytest.approx(21, abs=1), pytest.approx(61, abs=1))
    assert scene.frame(0).image.shape == (120, 200, 3) and scene.frame(0).image.dtype == np.uint8


def test_scene_background_and_sprites_carry_texture_to_track() -> None:
    frame = synthetic.demo_scene(width=320, height=240, frames=2).frame(0)
    grey = cv2.cvtColor(frame.image, cv2.COLOR_RGB2GRAY)
    corners = cv2.goodFeaturesToTrack(grey, 500, 0.01, 5)
    assert corners is not None
    outside = ~np.any(frame.masks, axis=0)
    points = corners.reshape(-1, 2).astype(int)
    on_background = outside[points[:, 1], points[:, 0]]
    assert on_background.sum() >= 100  # a flat background would give none
    for mask in frame.masks:
        assert mask[points[:, 1], points[:, 0]].sum() >= 5


def test_scene_writes_a_clip_whose_frames_match_the_render(tmp_path: Path) -> None:
    scene = crossing_scene()
    scene.write(tmp_path / "s.mp4", fps=15)
    decoded = [f.image for f in read_frames(tmp_path / "s.mp4")]
    assert len(decoded) == scene.frames
    for index in (0, scene.frames - 1):
        error = np.abs(decoded[index].astype(int) - scene.frame(index).image.astype(int))
        assert np.median(error) <= 3  # H.264 at crf 18


def test_scene_rejects_bad_arguments() -> None:
    good = Sprite(name="a", colour=(1, 2, 3), centre=(10, 10), half_size=(5, 5))
    with pytest.raises(ValueError):
        Scene(16, 64, [good], frames=1)
    with pytest.raises(ValueError):
        Scene(64, 64, [good], frames=0)
    with pytest.raises(ValueError):
        Scene(64, 64, [Sprite(name="a", shape="hexagon", colour=(1, 2, 3), centre=(0, 0), half_size=(5, 5))], frames=1)
    with pytest.raises(ValueError):
        Scene(63, 64, [good], frames=1).write("never.mp4")
