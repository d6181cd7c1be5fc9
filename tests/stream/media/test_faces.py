"""pedsam's clips of drawn faces: the faces are where the clip says, and detectors find them there."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pedsam.stream.media.faces import faces_clip
from pedsam.stream.media.video import read_frames
from pedsam.stream.privacy.detection import Detectors, matched
from tests.support import ROOT


def test_every_face_is_where_its_box_says_and_the_clip_is_the_same_each_time() -> None:
    clip = faces_clip(3, faces=4, seed=1)
    again = faces_clip(3, faces=4, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(clip.frames, again.frames))
    assert clip.boxes == again.boxes and [len(b) for b in clip.boxes] == [4, 4, 4]
    assert not np.array_equal(clip.frames[0], clip.frames[2])  # they move
    haar = Detectors()
    for frame, boxes in zip(clip.frames, clip.boxes):
        for x, y, w, h in boxes:
            assert 0 <= x and 0 <= y and x + w <= 640 and y + h <= 480
        assert matched(boxes, haar.face_boxes(frame), threshold=0.4) >= 3  # the frontal cascade finds them


def test_impossible_clips_are_refused() -> None:
    with pytest.raises(ValueError, match="too small"):
        faces_clip(2, width=160, height=120)
    with pytest.raises(ValueError, match="at least one"):
        faces_clip(0)


def test_the_sample_writes_a_video_of_as_many_frames(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "faces.mp4"
    done = subprocess.run([sys.executable, str(ROOT / "samples" / "make_faces_clip.py"), str(out), "--frames", "5",
                           "--faces", "3", "--size", "320x240"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    frames = list(read_frames(str(out)))
    assert len(frames) == 5 and frames[0].image.shape == (240, 320, 3)
    bad = subprocess.run([sys.executable, str(ROOT / "samples" / "make_faces_clip.py"), str(out), "--size", "100x80"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "too small" in bad.stderr
