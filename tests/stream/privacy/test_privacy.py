"""Privacy attacks and the report: inversion, mosaic, detection matching, policies compared end to end."""

from __future__ import annotations

import dataclasses
import json
import re
import statistics
from pathlib import Path

import numpy as np
import pytest

from pedsam.partitioner.scheduler import Budget
from pedsam.stream.cli.main import main
from pedsam.stream.media.panning import make_pan_clip
from pedsam.stream.errors import ConfigError
from pedsam.stream.privacy.detection import CnnFaces, Detectors, iou, matched, visible_iou
from pedsam.stream.privacy.inversion import TokenInverter, prologue
from pedsam.stream.privacy.mosaic import Mosaic, merge_views, psnr, ssim
from pedsam.stream.privacy.report import BASELINE, DEFAULTS, ReportConfig, run_report
from pedsam.workers.models import ModelSource, build_sam
from tests.support import TINY, pedsam, scene


def test_vit_b_tokens_invert_to_the_pixels_and_tiny_ones_do_not() -> None:
    image = scene(240, 320, seed=6)
    for preset, low, high in (("vit_b", 35.0, 99.0), ("tiny", 0.0, 25.0)):
        sam = build_sam(preset, seed=2)
        tokens, prepared = prologue(sam, image)
        recovered = TokenInverter.for_model(sam).reconstruct(tokens, prepared)
        assert recovered.shape == image.shape and recovered.dtype == np.uint8
        value = psnr(image, recovered, np.ones(image.shape[:2], bool))
        assert value is not None and low < value < high, (preset, value)


def test_mosaic_places_pixels_in_scene_coordinates() -> None:
    frame = scene(60, 80, seed=1)
    mosaic = Mosaic((60, 80), low=(0.0, 0.0), high=(0.0, 30.0))
    left = np.zeros((60, 80), bool)
    left[:, :40] = True
    mosaic.paste(frame, left, (0.0, 0.0), 0)
    # The camera moved 10 px right: the pixels seen at x=10..39 now sit at x=0..29.
    view, covered, _, _ = mosaic.view((0.0, 10.0))
    assert covered[:, :30].all() and not covered[:, 30:].any()
    np.testing.assert_array_equal(view[:, :30], frame[:, 10:40])
    assert psnr(frame[:, 10:40], view[:, :30], covered[:, :30]) == 99.0
    assert ssim(frame, frame, covered) == pytest.approx(1.0)
    assert psnr(frame, view, np.zeros((60, 80), bool)) is None
    noisy = np.clip(frame.astype(int) + np.random.default_rng(0).integers(-30, 31, frame.shape), 0, 255).astype(np.uint8)
    assert ssim(frame, noisy, covered) < 0.9
    # The panorama is in scene coordinates: 40 of the 110 scene columns held.
    assert mosaic.filled.shape == (61, 111) and mosaic.filled.sum() == 60 * 40


def test_mosaic_keeps_the_best_view_of_each_scene_pixel() -> None:
    good, bad, later = scene(40, 40, seed=1), scene(40, 40, seed=2), scene(40, 40, seed=3)
    everywhere = np.ones((40, 40), bool)
    mosaic = Mosaic((40, 40), low=(0.0, 0.0), high=(0.0, 0.0))
    mosaic.paste(good, everywhere, (0.0, 0.0), 0, np.full((40, 40), 1.0, np.float32))
    mosaic.paste(bad, everywhere, (0.0, 0.0), 1, np.full((40, 40), 20.0, np.float32))  # int8-grade: worse
    view, covered, error, stamp = mosaic.view((0.0, 0.0))
    np.testing.assert_array_equal(view, good)
    assert covered.all() and (error == 1.0).all() and (stamp == 0).all()
    mosaic.paste(later, everywhere, (0.0, 0.0), 2, np.full((40, 40), 1.1, np.float32))  # as good, newer: wins
    np.testing.assert_array_equal(mosaic.view((0.0, 0.0))[0], later)
    # A coalition pools its members' views by the same rule: an exact view beats a noisy one...
    left = np.zeros((40, 40), bool)
    left[:, :20] = True
    exact = Mosaic((40, 40), low=(0.0, 0.0), high=(0.0, 0.0))
    exact.paste(good, left, (0.0, 0.0), 0, np.zeros((40, 40), np.float32))
    pooled, pooled_covered, _, _ = merge_views([exact.view((0.0, 0.0)), mosaic.view((0.0, 0.0))])
    np.testing.assert_array_equal(pooled[:, :20], good[:, :20])
    np.testing.assert_array_equal(pooled[:, 20:], later[:, 20:])
    assert pooled_covered.all()
    # ... and among views as good, the newest wins, whichever member holds it.
    fresh = Mosaic((40, 40), low=(0.0, 0.0), high=(0.0, 0.0))
    fresh.paste(bad, left, (0.0, 0.0), 5, np.zeros((40, 40), np.float32))
    for members in ([exact, fresh], [fresh, exact]):
        pooled, _, _, _ = merge_views([m.view((0.0, 0.0)) for m in members])
        np.testing.assert_array_equal(pooled[:, :20], bad[:, :20])


def test_detection_matching_counts_each_box_once() -> None:
    assert iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)
    reference = [(0, 0, 10, 20), (50, 50, 10, 20)]
    assert matched(reference, [(1, 1, 10, 20), (0, 0, 10, 20)]) == 1  # two finds, one person
    assert matched(reference, [(1, 1, 10, 20), (52, 49, 10, 20)]) == 2
    assert matched(reference, [(30, 30, 10, 20)]) == 0
    # A person the worker holds the top half of, found from that half: the plain IoU (60/128)
    # misses it, the visible part (the box clipped to the held pixels) matches.
    person, found = (100, 50, 64, 128), (100, 50, 64, 60)
    held = np.zeros((240, 320), bool)
    held[:114, :] = True  # rows 50..113: the top 64 of the person's 128
    assert iou(person, found) < 0.5 and visible_iou(person, found, held) > 0.9
    assert matched([person], [found]) == 0 and matched([person], [found], covered=held) == 1
    # Clipping does not let a huge box match, nor a person the worker does not hold at all.
    assert matched([person], [(0, 0, 320, 240)], covered=held) == 0
    nothing = np.zeros((240, 320), bool)
    assert matched([person], [person], covered=nothing) == 0
    detectors = Detectors()
    blank = np.full((240, 320, 3), 128, np.uint8)
    assert detectors.people(blank) == [] and detectors.face_boxes(blank) == []


def test_the_cnn_face_attacker_finds_a_drawn_face_where_it_is_and_nothing_on_a_blank_frame() -> None:
    from tests.faces import face_frames

    face, blank = face_frames(2, size=(240, 320), centre=(200, 110), width=80, blank={1})
    detector = CnnFaces(upsample=0)
    found = detector(face)
    assert len(found) == 1 and iou(found[0], (160, 60, 80, 100)) > 0.4, found
    assert detector(blank) == []


def test_the_cnn_face_attacker_says_which_extra_it_needs(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "dlib" else real(name, *a))
    with pytest.raises(ConfigError, match=r"pip install 'pedsam\[attack\]'"):
        CnnFaces()


def test_the_report_takes_the_cnn_attackers_doubling_from_zero_to_two() -> None:
    assert ReportConfig(model=TINY, face_attacker="cnn", cnn_upsample=0).cnn_upsample == 0
    with pytest.raises(ConfigError, match="cnn-upsample must be 0, 1 or 2, got 3"):
        ReportConfig(model=TINY, face_attacker="cnn", cnn_upsample=3)


def test_report_ranks_policies_as_the_threat_model_says(tmp_path: Path) -> None:
    clip = make_pan_clip(tmp_path / "pan.mp4", frames=16, velocity=(0.0, 3.0))
    config = ReportConfig(model=TINY, max_frames=16, eval_every=3, detect_every=8)
    report, results = run_report([clip.path], config)
    [video] = report["videos"]
    policies = video["policies"]
    assert list(policies) == [BASELINE, "fixed", "round-robin", "keyed-random", "pooled", "scene-anchored", "adaptive",
                              DEFAULTS]
    assert policies[BASELINE]["mosaic"]["coverage_mean"] == 1.0
    assert policies[BASELINE]["exposure"]["max_scene_share"] == 1.0
    fixed, rr, pooled = policies["fixed"], policies["round-robin"], policies["pooled"]
    # Rotation spreads each server over the whole frame within a few frames; fixed does not.
    assert rr["mosaic"]["coverage_mean"] > fixed["mosaic"]["coverage_mean"] + 0.15
    assert rr["exposure"]["max_scene_share"] > 0.95 > fixed["exposure"]["max_scene_share"]
    # ... but breaks runs: a server holds a piece of scene at most two frames running (a piece the
    # pan carries across the border into the next share), with fixed all 16.
    assert rr["exposure"]["longest_run"] <= 2 and fixed["exposure"]["longest_run"] == 16
    assert pooled["servers"] == 6 and pooled["exposure"]["longest_run"] == 1
    assert pooled["exposure"]["max_scene_share"] < 0.95
    assert video["frames"] == 16 and len(fixed["series"]["frame"]) == 6  # frames 0, 3, ..., 15
    assert set(results[0].views) == set(policies) == set(results[0].panoramas)
    # The worst worker is one worker over the whole run: for each figure, the worker whose
    # whole-run figure is highest. Taking the best worker on every frame would claim more.
    for label, policy in policies.items():
        workers = policy["workers"]
        means = {name: statistics.fmean(w["coverage"]) for name, w in workers.items()}
        worst = max(means, key=lambda name: means[name])
        assert policy["mosaic"]["worker"] == worst
        assert policy["mosaic"]["coverage_mean"] == pytest.approx(means[worst], abs=1e-3)
        assert policy["series"]["coverage"] == workers[worst]["coverage"]
        panorama = max(workers, key=lambda name: workers[name]["panorama"][-1])
        assert policy["mosaic"]["panorama_coverage"] == pytest.approx(workers[panorama]["panorama"][-1], abs=1e-3)
        per_frame_best = statistics.fmean(max(c) for c in zip(*(w["coverage"] for w in workers.values())))
        assert per_frame_best >= means[worst] - 1e-9, label
    keyed = policies["keyed-random"]
    per_frame_best = statistics.fmean(max(c) for c in zip(*(w["coverage"] for w in keyed["workers"].values())))
    assert per_frame_best > keyed["mosaic"]["coverage_mean"] + 1e-3  # the secret makes a different worker best
    # Every interval holds its figure; the monolithic server holds the whole scene.
    for policy in policies.values():
        for group in ("exposure", "mosaic", "detection"):
            for key, span in policy[group].items():
                if key.endswith("_ci") and span is not None:
                    assert span[0] <= policy[group][key.removesuffix("_ci")] <= span[1], key
    assert policies[BASELINE]["mosaic"]["panorama_coverage"] == 1.0
    # The panorama is the scene a worker's mosaic holds over the run, in scene coordinates: about
    # its whole-run scene share (counted in tokens by the ledger), and all of it under rotation.
    assert fixed["mosaic"]["panorama_coverage"] == pytest.approx(fixed["exposure"]["max_run_scene_share"], abs=0.03)
    assert rr["mosaic"]["panorama_coverage"] > 0.95 > fixed["mosaic"]["panorama_coverage"] + 0.4
    coalition = fixed["coalition"]
    assert coalition["coverage"]["party"].count("+") == 1 and coalition["coverage"]["mean"] > 0.75
    assert policies[BASELINE]["coalition"] is None
    # The worst pair of workers: with round-robin two of three pool the whole scene.
    assert rr["exposure"]["worst_coalition"] is not None and rr["exposure"]["coalition_run_scene_share"] > 0.95
    assert fixed["exposure"]["coalition_run_scene_share"] < rr["exposure"]["coalition_run_scene_share"]
    assert policies[BASELINE]["exposure"]["worst_coalition"] is None  # one server: no coalition
    # The defaults row: interleaved, adaptive, no worker past the whole-run scene cap.
    defaults = policies[DEFAULTS]
    assert defaults["scheme"] == "interleaved" and defaults["budget"]["scene_cap"] == "auto"
    assert defaults["exposure"]["max_run_scene_share"] <= 1 / 3 + 196 / 768 + 1e-6  # tiny, 4:3: 1/3 + one window
    assert set(defaults["modes"]) <= {"still", "travel-rows", "travel-columns"} and sum(defaults["modes"].values()) == 16

    capped = ReportConfig(model=TINY, max_frames=16, eval_every=3, detect_every=8, policies=("round-robin",),
                          budget=Budget(scene_cap=0.5))
    report, _ = run_report([clip.path], capped)
    capped_rr = report["videos"][0]["policies"]["round-robin"]
    assert capped_rr["exposure"]["max_run_scene_share"] <= 0.5
    assert capped_rr["exposure"]["edge_share"] > 0.2
    assert capped_rr["mosaic"]["coverage_mean"] < rr["mosaic"]["coverage_mean"]


    # Without a motion estimate every frame sits at offset 0: the pan looks like a still scene.
    still = ReportConfig(model=TINY, max_frames=6, policies=("fixed",), motion=False)
    report, _ = run_report([clip.path], still)
    [video] = report["videos"]
    assert video["motion"] == {"estimated": False, "cuts": 0, "offset_range_px": [[0.0, 0.0], [0.0, 0.0]]}
    exposure = video["policies"]["fixed"]["exposure"]
    assert exposure["max_scene_share"] == pytest.approx(exposure["max_frame_share"])


async def test_privacy_report_command_writes_json_and_html(tmp_path: Path) -> None:
    clip = make_pan_clip(tmp_path / "pan.mp4", frames=6, velocity=(1.0, 2.0))
    out = tmp_path / "report"
    done = await pedsam("privacy-report", clip.path, "--out", str(out), "--model", "tiny", "--policies",
                        "fixed,pooled", "--eval-every", "2", "--detect-every", "3", "--codec", "fp16",
                        "--face-attacker", "haar")
    assert done.code == 0, done.err
    report = json.loads((out / "report.json").read_text())
    assert list(report["videos"][0]["policies"]) == [BASELINE, "fixed", "pooled", DEFAULTS]
    assert report["defaults"]["rotation"] == "adaptive" and report["defaults"]["scheme"] == "interleaved"
    assert report["scheme"] == "contiguous" and report["budget"]["scene_cap"] is None  # the rows: a policy alone
    assert report["codec"] == "fp16"  # --codec, the run's own flag: the attacks see fp16 tokens
    assert report["face_attacker"] == "haar"
    page = (out / "report.html").read_text()
    assert "{'" not in page and "': " not in page  # settings read as words, not as a Python dict
    # Bars, leakage curves, and per policy the true frame, the worst worker's view and its mosaic.
    assert page.count("data:image/png;base64,") >= 2 + 4 * 3 and "leakage curves" in page
    # It opens with no network: every image inline, no URL to fetch anything from.
    assert re.findall(r"https?://", page) == [] and re.findall(r"(?:src|href)=['\"](?!data:)", page) == []
    assert "[" in page and "of 0" in page  # intervals and reference counts (a pan has no people)
    assert "pooled" in done.out and "token inversion" in done.out and "coal" in done.out


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["missing.mp4"], "missing.mp4"),
        (["pan.mp4", "--policies", "fixed,spin"], "unknown rotation policies ['spin']"),
        (["pan.mp4", "--servers", "1"], "--servers 2 or more"),
        (["pan.mp4", "--scene-cap", "0"], "scene_cap is a share"),
        (["pan.mp4", "--run-cap", "0"], "run_cap is a number of frames"),
    ],
)
def test_privacy_report_bad_input_gets_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], words: str
) -> None:
    make_pan_clip(tmp_path / "pan.mp4", frames=2)
    code = main(["privacy-report", str(tmp_path / flags[0]), *flags[1:], "--out", str(tmp_path / "r"), "--model", "tiny"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("pedsam: error: ") and words in err[0], err


def test_the_report_keeps_sensitive_regions_home_under_every_policy(tmp_path: Path) -> None:
    """``--keep-local faces``: the face's window goes to no worker on any frame (the blank one
    too: the region is held), under every split policy, through the scheduler a run uses; the
    monolithic baseline, one cloud server, is left as it is."""
    from pedsam.stream.core.sensitive import KeepLocal
    from tests.faces import face_frames, write_clip

    clip = write_clip(tmp_path / "face.mp4", face_frames(5, blank={2}))
    plain = ReportConfig(model=TINY, max_frames=5, eval_every=1, detect_every=5, policies=("fixed", "round-robin"))
    kept = dataclasses.replace(plain, keep_local=KeepLocal(kinds=("faces",)))
    off, _ = run_report([clip], plain)
    on, _ = run_report([clip], kept)
    [video_off], [video_on] = off["videos"], on["videos"]
    assert video_off["keep_local"] is None and video_on["keep_local"]["kinds"] == ["faces"]
    picture = video_on["windows_per_frame"] - video_on["padding_windows"]
    for label, policy in video_on["policies"].items():
        before = video_off["policies"][label]["exposure"]["edge_share"]
        if label == BASELINE:
            assert policy["exposure"]["edge_share"] == before == 0.0
        else:  # window 0 (the face) on the edge on all 5 frames, whoever held it before
            assert policy["exposure"]["edge_share"] >= before + 1 / picture - 1e-9, label
            assert policy["exposure"]["edge_share"] >= 1 / picture - 1e-9, label


def test_the_cnn_attacker_finds_a_planted_face_when_its_window_is_sent_and_not_when_it_is_kept_home(
    tmp_path: Path,
) -> None:
    """The report's face attack with dlib's CNN, on ViT-B's prologue (seeded weights: its
    inversion is exact, so the attack sees the pixels a worker could recover): the worker given
    the face's window finds the face; with ``--keep-local faces`` no worker does,
    while the monolithic baseline, one server with everything, still does."""
    from pedsam.stream.core.sensitive import KeepLocal
    from tests.faces import face_frames, write_clip

    clip = write_clip(tmp_path / "face.mp4", face_frames(1, size=(240, 320), centre=(70, 70), width=60))
    sent = ReportConfig(model=ModelSource(preset="vit_b"), max_frames=1, eval_every=1, detect_every=1,
                        policies=("fixed",), coalitions=0, defaults=None, face_attacker="cnn")
    kept = dataclasses.replace(sent, keep_local=KeepLocal(kinds=("faces",)))
    for config, worker_recall in ((sent, 1.0), (kept, 0.0)):
        report, _ = run_report([clip], config)
        assert report["face_attacker"] == "cnn" and report["cnn_upsample"] == 1  # a 60 px face needs one doubling
        [video] = report["videos"]
        found = {label: (p["detection"]["faces_reference"], p["detection"]["faces_recall"])
                 for label, p in video["policies"].items()}
        assert found == {BASELINE: (1, 1.0), "fixed": (1, worker_recall)}, config.keep_local
