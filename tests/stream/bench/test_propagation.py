"""pedsam.stream.bench.propagation: the bench reports every method's accuracy, drift and cost,
on the generated scene and on labelme-style annotated frames, and refuses bad settings."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from pedsam.stream.bench.propagation import (
    METHODS,
    PropagationBench,
    confidence_auc,
    iou,
    labelme_clip,
    run,
)
from pedsam.stream.cli.main import main
from pedsam.stream.media.synthetic import Scene, Sprite


def write_labelme(folder: Path, frames: int = 3) -> list[list[np.ndarray]]:
    """labelme JSON polygons + JPEGs of a moving rectangle and a still one; returns the truth."""
    folder.mkdir()
    sprites = [Sprite(name="mover", shape="rectangle", colour=(220, 45, 40), centre=(60.0, 60.0),
                      half_size=(30.0, 20.0), velocity=(6.0, 2.0)),
               Sprite(name="still", shape="rectangle", colour=(40, 90, 230), centre=(170.0, 90.0),
                      half_size=(20.0, 25.0))]
    scene = Scene(240, 160, sprites, frames=frames, seed=5)
    truth = []
    for i in range(frames):
        frame = scene.frame(i)
        shapes = []
        for k, sprite in enumerate(sprites):
            pose = sprite.pose(i)
            x0, x1 = pose.x - pose.half_width, pose.x + pose.half_width
            y0, y1 = pose.y - pose.half_height, pose.y + pose.half_height
            shapes.append({"label": sprite.name, "shape_type": "polygon",
                           "points": [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]})
        (folder / f"{i:08d}.json").write_text(json.dumps({"shapes": shapes}))
        cv2.imwrite(str(folder / f"{i:08d}.jpg"), frame.image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
        truth.append(list(frame.masks))
    return truth


def test_labelme_polygons_become_the_masks_of_the_drawn_objects(tmp_path: Path) -> None:
    truth = write_labelme(tmp_path / "lm")
    images, masks, labels = labelme_clip(tmp_path / "lm")
    assert labels == ["mover", "still"] and len(images) == len(masks) == 3
    assert images[0].shape == (160, 240, 3) and images[0].dtype == np.uint8
    red_ish = images[0][..., 0].astype(int) - images[0][..., 2].astype(int) > 80  # RGB order kept
    assert iou(red_ish, masks[0][0]) > 0.9
    for got, want in zip(masks, truth):
        assert all(iou(g, w) > 0.95 for g, w in zip(got, want))


def test_the_bench_reports_accuracy_drift_and_cost_of_every_method(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    write_labelme(tmp_path / "lm")
    settings = PropagationBench(size="256x192", frames=24, intervals=(4, 12), labelme=str(tmp_path / "lm"),
                                out=str(tmp_path / "out"))
    assert run(settings) == 0
    printed = capsys.readouterr().out
    assert "drift, keyframe every 12" in printed and "labelme" in printed
    report = json.loads((tmp_path / "out" / "propagation.json").read_text())
    trials = {(t["method"], t["interval"]): t for t in report["scene"]["trials"]}
    assert set(trials) == {(m, n) for m in METHODS for n in (4, 12)}
    for trial in trials.values():
        assert len(trial["drift"]) == trial["interval"] - 1
        assert trial["frames"] == 24 - 24 // trial["interval"] and trial["objects"] == 4
        assert 0 < trial["cpu_ms_per_frame_per_object"] < trial["cpu_ms_per_frame"]
    # The chosen method holds the masks; the dense baseline visibly drifts over 11 frames.
    assert trials[("points", 12)]["mean_iou"] > 0.9
    assert trials[("points", 12)]["mean_iou"] > trials[("dense", 12)]["mean_iou"]
    dense = trials[("dense", 12)]["drift"]
    assert dense[-1] < dense[0] - 0.05
    jumps = {(t["method"], t["jump"]): t for t in report["scene"]["jumps"]}
    assert set(jumps) == {(m, k) for m in METHODS for k in (4, 8)}
    assert jumps[("points", 4)]["frames"] == 6 - 6 // 3  # every 4th frame; a keyframe every 3 of them
    assert jumps[("points", 8)]["mean_iou"] > 0.8
    assert "jumps: every k-th frame propagated" in printed
    assert {t["method"] for t in report["labelme"]["trials"]} == set(METHODS)
    assert all(t["mean_iou"] > 0.8 for t in report["labelme"]["trials"])
    assert (tmp_path / "out" / "drift.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_confidence_auc_says_how_well_low_confidence_finds_bad_masks() -> None:
    assert confidence_auc([[0.95, 0.5, 0.9]], [[0.9, 0.1, 0.8]]) == 1.0
    assert confidence_auc([[0.95, 0.5, 0.9]], [[0.1, 0.9, 0.8]]) == 0.0
    assert confidence_auc([[0.95, 0.9]], [[0.9, 0.8]]) is None  # no bad mask to find


def test_bad_settings_end_with_one_line_and_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench-propagation", "--methods", "points,magic", "--out", ""]) == 2
    assert main(["bench-propagation", "--intervals", "30", "--frames", "40", "--out", ""]) == 2
    assert main(["bench-propagation", "--intervals", "ten"]) == 2
    assert main(["bench-propagation", "--jumps", "1", "--out", ""]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(line.startswith("pedsam: error: ") for line in err)
    assert "--jumps must be at least 2" in err[-1]
