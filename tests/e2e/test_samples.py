"""The runnable samples in samples/ do what their docstrings say."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

from pedsam.stream.privacy.detection import CnnFaces
from tests.faces import face_frames, write_clip
from tests.support import ROOT


def test_api_example_embeds_segments_and_follows_an_object(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "samples" / "api_example.py"), str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("embedding (1, 64, 32, 32) via ")
    workers = lines[0].split(" via ")[1].split(", ")
    assert len(workers) == 3
    # Each segment line lists every worker with a share; together they hold all 9 windows once.
    for line in lines[1:3]:
        ids = [int(i) for share in re.findall(r"\[([\d, ]+)\]", line) for i in share.split(",")]
        assert all(w in line for w in workers)
        assert sorted(ids) == list(range(9)), line
    assert re.match(r"segment: mask \(240, 320\), \d+ pixels", lines[3])
    frames = [line for line in lines if line.startswith("frame ")]
    assert [int(line.split()[1].rstrip(":")) for line in frames] == list(range(6))
    assert not any("error" in line for line in frames)
    assert (tmp_path / "clip.mp4").stat().st_size > 0


def test_keep_local_attack_finds_a_face_in_a_worker_s_window_only_when_it_is_sent(tmp_path: Path) -> None:
    """samples/keep_local_attack.py with its stronger detector (dlib's CNN, pedsam[attack]): a face
    drawn inside one ViT-B window is found in the view of the worker that gets that window, and in
    no worker's view with --keep-local faces."""
    # 640x480: ViT-B windows are 140 px; the face (about 100x130 px with its hair) sits in window 6
    clip = write_clip(tmp_path / "face.mp4", face_frames(2, size=(480, 640), centre=(210, 215), width=80))
    spec = importlib.util.spec_from_file_location("keep_local_attack", ROOT / "samples" / "keep_local_attack.py")
    assert spec is not None and spec.loader is not None
    attack = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(attack)
    detector = CnnFaces(upsample=0)  # the face is 80 px wide: found without doubling the frame
    sent = attack.attack(clip, "none", detector, stride=1, max_frames=2)
    kept = attack.attack(clip, "faces", detector, stride=1, max_frames=2)
    assert sent["reference_faces"] == kept["reference_faces"] == 2
    assert sent["worst_recall"] == 1.0 and sent["kept_windows"] == 0
    assert kept["worst_recall"] == 0.0 and kept["kept_windows"] >= 2


def test_compare_person_attackers_prints_what_each_detector_finds(tmp_path: Path) -> None:
    """samples/compare_person_attackers.py: on a clip of one drawn person, the SSD finds the person
    on every frame, and the table counts HOG's finds and those both made."""
    from tests.people import person_frame

    clip = write_clip(tmp_path / "person.mp4", [person_frame()] * 3)
    script = str(ROOT / "samples" / "compare_person_attackers.py")
    done = subprocess.run([sys.executable, script, clip, "--every", "1"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    header, row = done.stdout.splitlines()
    assert header.split()[:4] == ["clip", "frames", "ssd", "finds"]
    name, frames, ssd, hog, both, ssd_only, hog_only, *_ = row.split()
    assert (name, int(frames), int(ssd)) == ("person.mp4", 3, 3)
    assert int(both) + int(ssd_only) == 3 and int(both) + int(hog_only) == int(hog)
    missing = subprocess.run([sys.executable, script, str(tmp_path / "missing.mp4")], capture_output=True, text=True,
                             timeout=300)
    assert missing.returncode == 1 and len(missing.stderr.strip().splitlines()) == 1, missing.stderr
    assert "missing.mp4" in missing.stderr
