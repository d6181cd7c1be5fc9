"""pedsam.stream.media.video: probing and decoding real files written by the tests themselves."""

from __future__ import annotations

import fractions
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import PIL.Image
import pytest

from pedsam.stream.errors import MediaError, PedsamError
from pedsam.stream.media.video import Frame, probe_video, read_frames, read_image

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def write_clip(
    path: Path,
    colours: list[tuple[int, int, int]],
    *,
    width: int = 64,
    height: int = 48,
    rate: fractions.Fraction = fractions.Fraction(12),
    noise: bool = False,
) -> Path:
    """Encode one solid-colour frame per entry of ``colours`` (H.264 in the path's container)."""
    rng = np.random.default_rng(0)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for colour in colours:
            image = np.empty((height, width, 3), np.uint8)
            image[:] = colour
            if noise:  # incompressible frames: big packets, easy to hit when corrupting
                image = rng.integers(0, 256, image.shape, dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_probe_reports_size_rate_count_codec(tmp_path: Path) -> None:
    rate = fractions.Fraction(30000, 1001)
    path = write_clip(tmp_path / "c.mp4", [RED] * 7, width=80, height=60, rate=rate)
    info = probe_video(path)
    assert (info.width, info.height) == (80, 60)
    assert info.rate == rate
    assert info.frame_count == 7
    assert info.codec == "h264"
    assert info.path == str(path)


def test_probe_frame_count_unknown_in_matroska(tmp_path: Path) -> None:
    path = write_clip(tmp_path / "c.mkv", [RED] * 5)
    info = probe_video(path)
    assert info.frame_count is None
    assert sum(1 for _ in read_frames(path)) == 5


def test_read_frames_yields_every_frame_in_order(tmp_path: Path) -> None:
    path = write_clip(tmp_path / "c.mp4", [RED, GREEN, BLUE] * 4)
    frames = list(read_frames(path))
    assert [f.index for f in frames] == list(range(12))
    for f in frames:
        assert isinstance(f, Frame)
        assert f.image.shape == (48, 64, 3) and f.image.dtype == np.uint8
        assert f.image.flags.c_contiguous
        assert f.pts is not None
        assert f.time == pytest.approx(f.index / 12, abs=1e-6)


@pytest.mark.parametrize(("colour", "channel"), [(RED, 0), (GREEN, 1), (BLUE, 2)])
def test_frames_are_rgb(tmp_path: Path, colour: tuple[int, int, int], channel: int) -> None:
    path = write_clip(tmp_path / "c.mp4", [colour] * 2)
    image = next(iter(read_frames(path))).image
    means = image.reshape(-1, 3).mean(axis=0)
    assert int(np.argmax(means)) == channel
    assert means[channel] > 200
    assert max(np.delete(means, channel)) < 60


@pytest.fixture
def held_containers(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Keep a reference to every container av.open returns.

    Dropping the last reference to a PyAV container closes it too, which would hide a
    missing explicit close; holding them makes the fd count show what read_frames did.
    """
    held: list[object] = []
    real_open = av.open

    def spy(*args: object, **kwargs: object) -> object:
        container = real_open(*args, **kwargs)  # type: ignore[call-overload]
        held.append(container)
        return container

    monkeypatch.setattr(av, "open", spy)
    return held


def test_container_closed_when_consumer_stops_early(
    tmp_path: Path, held_containers: list[object]
) -> None:
    path = write_clip(tmp_path / "c.mp4", [RED] * 10)
    held_containers.clear()
    before = open_fds()
    frames = read_frames(path)
    next(frames)
    assert open_fds() > before  # the file is open while iterating
    frames.close()
    assert open_fds() == before

    for _ in read_frames(path):
        break  # the abandoned generator is collected at once and must close the file
    assert open_fds() == before
    assert len(held_containers) == 2


def test_container_closed_at_end_and_on_error(
    tmp_path: Path, held_containers: list[object]
) -> None:
    good = write_clip(tmp_path / "c.mp4", [RED] * 3)
    audio = audio_only(tmp_path / "sound.wav")
    held_containers.clear()
    before = open_fds()
    assert len(list(read_frames(good))) == 3
    probe_video(good)
    with pytest.raises(MediaError):
        next(read_frames(audio))
    with pytest.raises(MediaError):
        probe_video(audio)
    assert len(held_containers) == 4
    assert open_fds() == before


def audio_only(path: Path) -> Path:
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def bad_inputs(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    text = tmp_path / "notes.txt"
    text.write_text("not a video\n")
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8)))
    full = write_clip(tmp_path / "full.mp4", [RED] * 5)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    folder = tmp_path / "folder.mp4"
    folder.mkdir()
    return {
        "missing": (tmp_path / "missing.mp4", "no such file"),
        "directory": (folder, "is a directory"),
        "text": (text, "not a readable video"),
        "garbage": (garbage, "not a readable video"),
        "truncated": (truncated, "not a readable video"),
        "audio only": (audio_only(tmp_path / "sound.wav"), "has no video stream"),
    }


@pytest.mark.parametrize(
    "case", ["missing", "directory", "text", "garbage", "truncated", "audio only"]
)
def test_bad_files_raise_one_line_media_error(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], case: str
) -> None:
    path, phrase = bad_inputs(tmp_path)[case]
    capfd.readouterr()
    for attempt in (lambda: probe_video(path), lambda: next(read_frames(path))):
        with pytest.raises(MediaError) as caught:
            attempt()
        message = str(caught.value)
        assert isinstance(caught.value, PedsamError) and isinstance(caught.value, ValueError)
        assert str(path) in message and phrase in message
        assert "\n" not in message
    assert capfd.readouterr().err == ""  # FFmpeg kept quiet


def corrupt_clip(path: Path) -> Path:
    """A 30-frame clip whose 16th packet in file order is overwritten with 0xff bytes."""
    write_clip(path, [RED] * 30, noise=True)
    with av.open(str(path)) as container:
        packets = [p for p in container.demux(video=0) if p.size]
    victim = sorted(packets, key=lambda p: p.pos)[15]
    data = bytearray(path.read_bytes())
    data[victim.pos : victim.pos + victim.size] = b"\xff" * victim.size  # NAL length too big
    path.write_bytes(bytes(data))
    return path


def test_corrupt_packet_mid_stream_yields_earlier_frames_then_error(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    path = corrupt_clip(tmp_path / "c.mp4")
    capfd.readouterr()

    decoded: list[Frame] = []
    with pytest.raises(MediaError) as caught:
        for frame in read_frames(path):
            decoded.append(frame)
    assert 0 < len(decoded) <= 15
    assert f"decoding failed at frame {len(decoded)}" in str(caught.value)
    assert str(path) in str(caught.value)
    assert capfd.readouterr().err == ""


def test_read_image_converts_to_rgb(tmp_path: Path) -> None:
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, 128
    PIL.Image.fromarray(rgba, "RGBA").save(tmp_path / "red.png")
    PIL.Image.fromarray(np.full((20, 30), 77, np.uint8), "L").save(tmp_path / "grey.png")

    red = read_image(tmp_path / "red.png")
    assert red.shape == (20, 30, 3) and red.dtype == np.uint8 and red.flags.c_contiguous
    assert (red == (255, 0, 0)).all()
    grey = read_image(str(tmp_path / "grey.png"))
    assert grey.shape == (20, 30, 3) and (grey == 77).all()


def test_read_image_errors(tmp_path: Path) -> None:
    text = tmp_path / "notes.png"
    text.write_text("hello")
    PIL.Image.fromarray(np.zeros((64, 64, 3), np.uint8) + 9).save(tmp_path / "ok.png")
    truncated = tmp_path / "cut.png"
    truncated.write_bytes((tmp_path / "ok.png").read_bytes()[:60])
    cases = {
        tmp_path / "missing.png": "no such file",
        tmp_path: "is a directory",
        text: "not an image",
        truncated: "unreadable image",
    }
    for path, phrase in cases.items():
        with pytest.raises(MediaError) as caught:
            read_image(path)
        assert str(path) in str(caught.value) and phrase in str(caught.value)


def test_importing_silences_ffmpeg_log(tmp_path: Path) -> None:
    """Even if FFmpeg logging was switched on before, importing pedsam.stream.media.video turns it off.

    (With logging on, the h264 decoder prints several lines about the corrupt packet.)
    """
    path = corrupt_clip(tmp_path / "c.mp4")
    script = (
        "import sys, av.logging\n"
        "av.logging.set_level(av.logging.VERBOSE)\n"
        "from pedsam.stream.media.video import read_frames\n"
        "from pedsam.stream.errors import MediaError\n"
        "try:\n"
        "    for _ in read_frames(sys.argv[1]): pass\n"
        "except MediaError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0
    assert "decoding failed at frame" in done.stdout
    assert done.stderr == ""
