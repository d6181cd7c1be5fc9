"""``pedsam bench-mini``'s pieces: the click, the box, IoU, the interval, the scenes, the local
pipeline against SAM's own modules, and the command line."""

from __future__ import annotations

import asyncio
import sys

import cv2
import numpy as np
import pytest
import torch

from pedsam.stream.cli.main import main, parse
from pedsam.stream.core.predictor import (
    MaskDecoder, PreparedImage, from_mask, interior_point, mask_box, prepare_image, resized_shape,
)
from pedsam.stream.core.prompts import ObjectPrompt
from pedsam.stream.media.composites import TextureBank
from pedsam.stream.mini.evaluate import LocalPipeline, bootstrap_interval, clip_scenes, heldout_scenes, iou
from pedsam.workers.models import ModelSource


def exact_depth(mask: np.ndarray) -> np.ndarray:
    """Per pixel of ``mask``, the Euclidean distance from its centre to the nearest pixel outside
    it, the frame's border counting as outside (brute force); 0 outside."""
    padded = np.pad(mask, 1)
    outside = np.argwhere(~padded).astype(float)
    depth = np.zeros(mask.shape)
    for y, x in np.argwhere(mask):
        depth[y, x] = np.sqrt(((outside - (y + 1, x + 1)) ** 2).sum(axis=1)).min()
    return depth


def shapes() -> dict[str, np.ndarray]:
    height, width = 60, 80
    ring = np.zeros((height, width), np.uint8)
    cv2.circle(ring, (40, 30), 26, 1, -1)
    cv2.circle(ring, (40, 30), 12, 0, -1)
    ell = np.zeros((height, width), bool)
    ell[5:55, 5:20] = True
    ell[40:55, 5:75] = True
    edge = np.zeros((height, width), bool)
    edge[:, :30] = True  # touches the frame's left, top and bottom borders
    blob = np.zeros((height, width), np.uint8)
    cv2.ellipse(blob, (50, 25), (25, 12), 30, 0, 360, 1, -1)
    return {"ring": ring.astype(bool), "ell": ell, "edge": edge, "ellipse": blob.astype(bool)}


@pytest.mark.parametrize("name", ["ring", "ell", "edge", "ellipse"])
def test_the_click_lies_inside_the_mask_farthest_from_its_border(name: str) -> None:
    mask = shapes()[name]
    x, y = interior_point(mask)
    column, row = int(x), int(y)
    assert (x, y) == (column + 0.5, row + 0.5)  # a pixel's centre
    assert mask[row, column]
    depth = exact_depth(mask)
    assert depth[row, column] >= 0.97 * depth.max()  # OpenCV's 5x5 distance is within a few % of exact
    if name == "edge":  # the frame's border is a border: the click keeps away from it
        assert 13 <= column <= 16  # halfway between the frame's left edge and the mask's right one


def test_the_click_is_the_point_pedsam_adds_to_an_object_given_by_its_mask() -> None:
    mask = shapes()["ring"]
    prepared = PreparedImage(tensor=torch.zeros(1), original_size=mask.shape,
                             input_size=resized_shape(*mask.shape, 512))
    prompt, _ = from_mask(ObjectPrompt(mask=mask), prepared, 512)
    assert prompt.points == (interior_point(mask),) and prompt.labels == (1,)
    assert prompt.box == mask_box(mask)
    with pytest.raises(ValueError, match="empty"):
        interior_point(np.zeros((4, 4), bool))


def test_the_box_is_tight_in_pixel_edges() -> None:
    mask = np.zeros((10, 12), bool)
    mask[3:6, 2:8] = True
    mask[4, 9] = True
    assert mask_box(mask) == (2.0, 3.0, 10.0, 6.0)


def test_iou() -> None:
    a = np.zeros((4, 20), bool)
    b = np.zeros((4, 20), bool)
    a[:, 0:10] = True
    b[:, 5:15] = True
    assert iou(a, b) == pytest.approx(1 / 3)
    assert iou(a, a) == 1.0 and iou(a, ~a) == 0.0
    assert iou(a, np.zeros_like(a)) == 0.0
    assert iou(np.zeros_like(a), np.zeros_like(a)) == 1.0  # nothing to find, nothing found


def test_the_bootstrap_interval_holds_the_mean_and_narrows_with_more_objects() -> None:
    rng = np.random.default_rng(3)
    few, many = rng.beta(5, 2, 30), rng.beta(5, 2, 3000)
    for values in (few, many):
        low, high = bootstrap_interval(values)
        assert low < float(np.mean(values)) < high
        assert bootstrap_interval(values) == (low, high)  # seeded
    (a, b), (c, d) = bootstrap_interval(few), bootstrap_interval(many)
    assert d - c < (b - a) / 4  # 100x the objects: about a tenth of the width
    assert bootstrap_interval([0.5] * 7) == (0.5, 0.5)
    with pytest.raises(ValueError):
        bootstrap_interval([])


def test_heldout_scenes_are_seeded_and_masks_are_visible_parts() -> None:
    bank = TextureBank([np.random.default_rng(0).integers(0, 255, (128, 160, 3), dtype=np.uint8)])
    first = list(heldout_scenes(bank, 3, width=160, height=120, seed=5))
    again = list(heldout_scenes(bank, 3, width=160, height=120, seed=5))
    other = list(heldout_scenes(bank, 3, width=160, height=120, seed=6))
    assert all(np.array_equal(a.image, b.image) for a, b in zip(first, again, strict=True))
    assert not any(np.array_equal(a.image, b.image) for a, b in zip(first, other, strict=True))
    for scene in first:
        assert scene.image.shape == (120, 160, 3)
        stack = np.stack(scene.masks) if scene.masks else np.zeros((0, 120, 160), bool)
        assert (stack.sum(axis=0) <= 1).all()  # a pixel belongs to one object at most


def test_the_clips_have_every_object_visible_on_their_first_frame() -> None:
    for name, scene in clip_scenes(frames=2, width=320, height=240):
        first = scene.frame(0)
        assert all(mask.sum() > 200 for mask in first.masks), name
        assert scene.width % 2 == 0 and scene.height % 2 == 0


def test_the_local_pipeline_is_sams_encoder_and_pedsams_decoder() -> None:
    """Same masks as SAM's monolithic image encoder and the edge's decoder on its embedding."""
    image = np.random.default_rng(1).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    prompts = [ObjectPrompt(points=((80.0, 60.0),), labels=(1,)), ObjectPrompt(box=(20.0, 10.0, 90.0, 70.0))]
    with LocalPipeline(ModelSource(preset="tiny")) as model:
        answers = asyncio.run(model.segment(image, prompts))
        prepared = prepare_image(model.sam, image)
        with torch.inference_mode():
            embedding = model.sam.image_encoder(prepared.tensor)
        for prompt, answer in zip(prompts, answers, strict=True):
            reference = MaskDecoder(model.sam).predict(embedding, prepared, prompt)
            assert answer.mask.shape == (120, 160)
            assert iou(answer.mask, reference.mask) > 0.99
            assert answer.score == pytest.approx(reference.score, abs=1e-3)


def test_the_command_line_parses_with_its_defaults() -> None:
    command, values = parse(["bench-mini"])
    assert command.name == "bench-mini"
    assert values["parts"] == "heldout,clips,cost" and values["scenes"] == 200 and values["frames"] == 60
    assert values["local_workers"] == 3 and values["checkpoint"] is None and values["size"] == "640x480"
    assert values["live_runs"] == 3
    _, values = parse(["bench-mini", "--checkpoint", "w.pth", "--parts", "cost", "--rounds", "4", "--json", "o.json"])
    assert (values["checkpoint"], values["parts"], values["rounds"], values["json"]) == ("w.pth", "cost", 4, "o.json")


@pytest.mark.parametrize(("flags", "words"), [
    (["--scenes", "0"], "--scenes"),
    (["--parts", "heldout,speed"], "--parts"),
    (["--size", "641x480"], "--size 641x480"),
    (["--size", "big"], "--size"),
    (["--local-workers", "1"], "--local-workers"),
    (["--live-runs", "0"], "--live-runs"),
])
def test_bad_flags_are_one_readable_line(flags: list[str], words: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench-mini", *flags]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("pedsam: error: ") and words in err[0], err


def test_without_scikit_image_it_says_what_to_install(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "skimage", None)  # import skimage now fails, as when not installed
    monkeypatch.setitem(sys.modules, "skimage.data", None)
    assert main(["bench-mini", "--parts", "heldout"]) == 2  # a missing extra, as every command says it
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("pedsam: error: ") and "pip install 'pedsam[mini]'" in err[0], err


def test_live_runs_are_reported_as_their_mean_and_range_and_the_target_checks_the_mean() -> None:
    from pedsam.stream.mini.evaluate import ClipScore, clip_figure, table

    def score(star: float) -> ClipScore:
        return ClipScore(command="stream", objects=("disc", "star"), per_object=(0.9, star), frames=60,
                         frames_with_masks=20, dropped=30, errors=0, keyframes=1, before_first=10)

    figure = clip_figure("demo", [score(0.8), score(0.2), score(0.8)])
    assert figure["per_object"] == pytest.approx([0.9, 0.6]) and not figure["met"]  # one lost run counts
    assert figure["per_object_range"] == [pytest.approx([0.9, 0.2]), pytest.approx([0.9, 0.8])]
    assert [r["per_object"][1] for r in figure["runs"]] == [0.8, 0.2, 0.8]
    assert clip_figure("demo", [score(0.8)])["met"]
    [line] = [row for row in table({"settings": {"local_workers": 3}, "model": "mini", "clips": [figure]}) if row.startswith("  demo")]
    assert "3 runs; first: 20/60 (1 keyframe, 30 dropped, 10 before the first mask)" in line
    assert "star 0.600 (0.20-0.80)" in line and "MISSED" in line
