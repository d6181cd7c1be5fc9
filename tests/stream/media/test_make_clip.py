"""pedsam.stream.media.synthetic and samples/make_clip.py: the synthetic clip decodes as declared and its ground truth is right."""

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
