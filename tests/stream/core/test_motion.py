"""Camera motion on the edge: phase correlation recovers a known pan, and token conversions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pedsam.stream.core.motion import MotionEstimator, content_tokens, token_offset
from pedsam.stream.media.panning import make_pan_clip, pan_scene
from pedsam.stream.media.video import read_frames


def test_a_known_pan_is_recovered_from_the_video(tmp_path: Path) -> None:
    clip = make_pan_clip(tmp_path / "pan.mp4", frames=30, velocity=(-1.0, 5.5))
    motion = MotionEstimator()
    got = [motion.update(frame.image) for frame in read_frames(clip.path)]
    assert len(got) == 30 and motion.cuts == 0
    truth = np.array(clip.offsets)
    error = np.abs(np.array(got) - truth)
    # Drift stays a small fraction of the 160 px pan (the camera moved right and up).
    assert error[:, 1].max() < 0.06 * abs(truth[-1, 1])
    assert error[:, 0].max() < 8
    assert got[-1][1] > 140 and got[-1][0] < -20


def test_a_still_camera_stays_put_and_a_cut_jumps_to_new_scene() -> None:
    scene = pan_scene(240, 320, seed=1)
    motion = MotionEstimator()
    for _ in range(5):
        assert motion.update(scene) == pytest.approx((0.0, 0.0), abs=0.05)
    other = pan_scene(240, 320, seed=9)
    dy, dx = motion.update(other)
    assert motion.cuts == 1 and dx >= 4 * 320


def test_token_conversions_follow_sams_resize() -> None:
    # 768x576 -> 1024x768 encoder input -> 64x48 tokens of 16 px.
    assert content_tokens((576, 768), 1024, 16) == (48, 64)
    assert content_tokens((240, 320), 512, 16) == (24, 32)
    assert content_tokens((100, 30), 1024, 16) == (64, 20)  # 30*10.24 = 307.2 px -> 20 tokens
    assert token_offset((12.0, -75.0), (576, 768), 1024, 16) == pytest.approx((1.0, -6.25))
