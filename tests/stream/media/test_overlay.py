"""pedsam.stream.media.overlay: drawing masks on frames and writing overlay videos that read back exactly."""

from __future__ import annotations

import fractions
from pathlib import Path

import numpy as np
import pytest

from pedsam.stream.errors import ConfigError
from pedsam.stream.media.overlay import PALETTE, OverlayWriter, draw_overlay
from pedsam.stream.media.video import probe_video, read_frames

H, W = 120, 160


def grey(value: int = 100) -> np.ndarray:
    return np.full((H, W, 3), value, np.uint8)


def box_mask(top: int, left: int, bottom: int, right: int) -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[top:bottom, left:right] = True
    return mask


def test_palette_is_distinct_rgb() -> None:
    assert len(PALETTE) >= 8
    assert len(set(PALETTE)) == len(PALETTE)
    assert all(len(c) == 3 and all(0 <= v <= 255 for v in c) for c in PALETTE)


def test_masked_pixels_blend_in_palette_colour_and_rest_untouched() -> None:
    image = grey()
    before = image.copy()
    masks = [box_mask(60, 20, 100, 60), box_mask(60, 100, 100, 140)]
    out = draw_overlay(image, masks, alpha=0.5)

    assert (image == before).all()  # input not modified
    assert out is not image and out.shape == image.shape and out.dtype == np.uint8
    for i, mask in enumerate(masks):
        inner = mask & np.roll(mask, 4, 0) & np.roll(mask, -4, 0)
        inner &= np.roll(mask, 4, 1) & np.roll(mask, -4, 1)  # away from the outline
        expected = np.rint(0.5 * 100 + 0.5 * np.array(PALETTE[i])).astype(np.uint8)
        assert (out[inner] == expected).all()
    far = np.ones((H, W), bool)
    far[50:110, 10:150] = False  # both masks and their outlines lie inside this band
    assert (out[far] == before[far]).all()


def test_outline_drawn_on_mask_border() -> None:
    mask = box_mask(40, 40, 80, 80)
    blended = np.rint(0.5 * 100 + 0.5 * np.array(PALETTE[0]))
    out = draw_overlay(grey(), [mask], alpha=0.5).astype(float)
    edge = out[40, 45:75]  # top edge of the mask
    # The outline is the full palette colour, so it is further from grey than the blend.
    assert np.abs(edge - 100).sum(axis=1).mean() > np.abs(blended - 100).sum() * 1.5


def test_alpha_zero_leaves_mask_interior_and_empty_mask_is_harmless() -> None:
    mask = box_mask(40, 40, 80, 80)
    out = draw_overlay(grey(), [mask, np.zeros((H, W), bool)], alpha=0.0, labels=["a", "b"])
    assert (out[50:70, 50:70] == 100).all()


def test_label_drawn_near_top_left_of_mask() -> None:
    mask = box_mask(60, 70, 100, 110)
    plain = draw_overlay(grey(), [mask])
    labelled = draw_overlay(grey(), [mask], labels=["#0 0.93"])
    changed = np.argwhere((plain != labelled).any(axis=2))
    assert changed.size
    rows, cols = changed[:, 0], changed[:, 1]
    assert rows.max() <= 62 and rows.min() >= 35  # just above the mask's top edge
    assert cols.min() >= 68 and cols.min() <= 75


def test_banner_darkens_top_strip_and_writes_text() -> None:
    image = grey(160)
    out = draw_overlay(image, [], banner="UNTRAINED WEIGHTS - masks are not meaningful")
    strip = out[:8]
    assert np.median(strip) < 60  # darkened
    assert (out[:20] > 200).any()  # white text
    assert (out[40:] == 160).all()  # rest untouched
    assert (draw_overlay(image, []) == image).all()  # no banner, no masks: a plain copy


def test_banner_fits_narrow_frames() -> None:
    image = np.full((40, 50, 3), 160, np.uint8)
    out = draw_overlay(image, [], banner="ERROR: worker w1 unreachable (é)")
    assert (out[:4] < 160).any()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"masks": [np.zeros((H, W), np.uint8)]},
        {"masks": [np.zeros((H, W + 1), bool)]},
        {"masks": [np.zeros((H, W), bool)], "labels": ["a", "b"]},
        {"masks": [], "alpha": 1.5},
    ],
)
def test_draw_overlay_rejects_bad_arguments(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        draw_overlay(grey(), **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        draw_overlay(np.zeros((H, W, 4), np.uint8), [])


def write_ramp(path: Path, width: int, height: int, rate: fractions.Fraction, n: int) -> None:
    with OverlayWriter(path, width, height, rate) as writer:
        for i in range(n):
            writer.write(np.full((height, width, 3), 10 + 15 * i, np.uint8))
            assert writer.frames_written == i + 1


@pytest.mark.parametrize(
    ("name", "rate"),
    [
        ("o.mp4", fractions.Fraction(12)),
        ("o.mp4", fractions.Fraction(30000, 1001)),
        ("o.mkv", fractions.Fraction(25, 2)),
    ],
)
def test_written_video_reads_back_same_count_rate_and_order(
    tmp_path: Path, name: str, rate: fractions.Fraction
) -> None:
    path = tmp_path / name
    write_ramp(path, 64, 48, rate, 15)
    info = probe_video(path)
    assert info.rate == rate
    assert (info.width, info.height) == (64, 48)
    if name.endswith(".mp4"):
        assert info.frame_count == 15
    frames = list(read_frames(path))
    assert len(frames) == 15
    means = [float(f.image.mean()) for f in frames]
    assert means == pytest.approx([10 + 15 * i for i in range(15)], abs=3)
    assert [f.time for f in frames] == pytest.approx([i / rate for i in range(15)], abs=1e-3)


def test_odd_size_is_padded_by_one_pixel_with_edge_replicated(tmp_path: Path) -> None:
    path = tmp_path / "odd.mp4"
    rate = fractions.Fraction(10)
    image = np.zeros((25, 33, 3), np.uint8)
    image[:, :16] = (200, 40, 40)
    image[:, 16:] = (40, 40, 200)
    with OverlayWriter(path, 33, 25, rate) as writer:
        assert (writer.encoded_width, writer.encoded_height) == (34, 26)
        for _ in range(6):
            writer.write(image)
    info = probe_video(path)
    assert (info.width, info.height) == (34, 26)
    assert info.rate == rate and info.frame_count == 6
    frames = list(read_frames(path))
    assert len(frames) == 6
    decoded = frames[0].image.astype(int)
    assert np.abs(decoded[:25, :33] - image).mean() < 8
    assert np.abs(decoded[:, 33] - decoded[:, 32]).max() < 12  # replicated column
    assert np.abs(decoded[25, :] - decoded[24, :]).max() < 12  # replicated row


def test_writer_close_is_idempotent_and_checks_frames(tmp_path: Path) -> None:
    writer = OverlayWriter(tmp_path / "o.mp4", 32, 32, fractions.Fraction(5))
    with pytest.raises(ValueError):
        writer.write(np.zeros((32, 30, 3), np.uint8))
    with pytest.raises(ValueError):
        writer.write(np.zeros((32, 32, 3), np.float32))
    writer.write(np.zeros((32, 32, 3), np.uint8))
    writer.close()
    writer.close()
    with pytest.raises(ValueError):
        writer.write(np.zeros((32, 32, 3), np.uint8))
    assert writer.frames_written == 1
    assert sum(1 for _ in read_frames(tmp_path / "o.mp4")) == 1


def test_writer_flushes_when_the_body_raises(tmp_path: Path) -> None:
    path = tmp_path / "o.mp4"
    with pytest.raises(RuntimeError), OverlayWriter(path, 32, 32, fractions.Fraction(5)) as w:
        for _ in range(4):
            w.write(np.zeros((32, 32, 3), np.uint8))
        raise RuntimeError("pipeline failed")
    assert sum(1 for _ in read_frames(path)) == 4


def test_writer_config_errors(tmp_path: Path) -> None:
    rate = fractions.Fraction(5)
    cases = [
        (lambda: OverlayWriter(tmp_path / "no" / "o.mp4", 32, 32, rate), "No such file"),
        (lambda: OverlayWriter(tmp_path / "o.what", 32, 32, rate), "format"),
        (lambda: OverlayWriter(tmp_path / "o.mp4", 32, 32, rate, codec="nope"), "'nope'"),
        (lambda: OverlayWriter(tmp_path / "o.mp4", 32, 32, rate, codec="aac"), "not a video"),
        (lambda: OverlayWriter(tmp_path / "o.mp4", 0, 32, rate), "positive"),
        (lambda: OverlayWriter(tmp_path / "o.mp4", 32, 32, fractions.Fraction(0)), "positive"),
    ]
    for make, phrase in cases:
        with pytest.raises(ConfigError) as caught:
            make()
        assert phrase in str(caught.value)
