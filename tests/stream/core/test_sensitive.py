"""``--keep-local``: sensitive regions found on the edge, held over missed frames, kept home.

The face is drawn by the test (:mod:`tests.faces`) where OpenCV's Haar cascade finds it; the
workers record what they receive, so "never sent" is checked on the wire, not only in the audit.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pedsam.partitioner.assignment import EDGE
from pedsam.partitioner.geometry import WindowGrid
from pedsam.partitioner.offload import PLANS
from pedsam.stream.core.scheduling import RotationSettings
from pedsam.stream.core.sensitive import Detector, KeepLocal, SensitiveRegions, windows_touching
from pedsam.stream.core.session import EdgeConfig, EdgeSession
from pedsam.stream.errors import ConfigError
from pedsam.workers.server import WorkerServer
from tests.faces import face_frames, write_clip
from tests.support import TINY, carried_windows, pedsam, record_requests

TINY_GRID = WindowGrid.for_encoder(512, 16, 14)  # 32x32 tokens, 3x3 windows
FRAME = (240, 320)  # tiny: 10 frame pixels a token, 140 a window; window row 2 is padding
FACE_WINDOW = 0  # the drawn face (x, y 70, 70; 60 px wide) lies inside window 0's 140x140 pixels
BLANK = 2  # the frame on which the face is gone: the detector finds nothing there


def test_a_box_maps_to_every_window_its_pixels_touch() -> None:
    assert windows_touching([(10, 10, 130, 130)], FRAME, TINY_GRID, 512, 16) == (0,)
    assert windows_touching([(10, 10, 141, 130)], FRAME, TINY_GRID, 512, 16) == (0, 1)  # one pixel into window 1
    assert windows_touching([(135, 135, 145, 145)], FRAME, TINY_GRID, 512, 16) == (0, 1, 3, 4)
    assert windows_touching([(-50, 200, 500, 900)], FRAME, TINY_GRID, 512, 16) == (3, 4, 5)  # clipped to the picture
    assert windows_touching([(400, 10, 500, 20)], FRAME, TINY_GRID, 512, 16) == ()  # outside the frame


def test_a_region_is_held_for_the_grace_period_and_grows_meanwhile() -> None:
    seen = {0, 1, 5}  # frames on which the fake detector finds the box
    frame = {"index": 0}

    def detector(image: np.ndarray) -> list[tuple[float, float, float, float]]:
        return [(100.0, 100.0, 200.0, 200.0)] if frame["index"] in seen else []

    regions = SensitiveRegions(KeepLocal(kinds=("faces",), hold=2, margin=0.0, grow=0.1), detector=detector)
    held = []
    for index in range(6):
        frame["index"] = index
        held.append(regions.update(np.zeros((4, 4, 3), np.uint8)))
    assert held[0] == held[1] == [(100.0, 100.0, 200.0, 200.0)]  # found again: replaced, not stacked
    assert held[2] == [(90.0, 90.0, 210.0, 210.0)] and held[3] == [(80.0, 80.0, 220.0, 220.0)]
    assert held[4] == []  # 3 frames unseen: past the hold
    assert held[5] == [(100.0, 100.0, 200.0, 200.0)]
    assert regions.summary()["held_frames"] == 2 and regions.summary()["detections"] == 3
    frame["index"] = 6
    assert regions.update(np.zeros((4, 6, 3), np.uint8)) == []  # another frame size: boxes of the old one dropped


def test_frames_only_shown_are_searched_every_other_one_and_frames_sent_always() -> None:
    """A keyframed run's in-between frames keep the hold counting at half the detector's cost; a
    region found on one of them is still kept on the next frame sent even if that frame's own
    search misses it, and a frame sent is never left unsearched."""
    calls: list[int] = []
    face = (100.0, 100.0, 200.0, 200.0)

    def detector(image: np.ndarray) -> list[tuple[float, float, float, float]]:
        calls.append(int(image[0, 0, 0]))
        return [face] if image[0, 0, 0] == 2 else []  # only frame 2 shows the face to the detector

    regions = SensitiveRegions(KeepLocal(kinds=("faces",), margin=0.0, grow=0.0, hold=8), detector=detector)
    frame = lambda index: np.full((4, 4, 3), index, np.uint8)  # noqa: E731
    regions.update(frame(0))  # sent
    for index in (1, 2, 3, 4):
        regions.shown(frame(index))
    assert calls == [0, 2, 4]  # shown frames 1 and 3 skipped: each right after a search
    assert regions.update(frame(5)) == [face]  # sent: searched (a miss), the face held from frame 2
    regions.update(frame(6))
    assert calls == [0, 2, 4, 5, 6]
    summary = regions.summary()
    assert (summary["frames"], summary["searched_frames"], summary["shown_every"]) == (7, 5, 2)
    every = SensitiveRegions(KeepLocal(kinds=("faces",), shown_every=1), detector=detector)
    for index in range(3):
        every.shown(frame(index))
    assert every.summary()["searched_frames"] == 3
    with pytest.raises(ConfigError, match="shown_every 0"):
        KeepLocal(kinds=("faces",), shown_every=0)


def test_the_drawn_face_is_found_and_the_blank_frame_has_none() -> None:
    detector = Detector(("faces",))
    frames = face_frames(3, blank={1})
    [box] = detector(frames[0])
    assert windows_touching([box], FRAME, TINY_GRID, 512, 16) == (FACE_WINDOW,)
    assert detector(frames[1]) == []


class FakeHog:
    """Stands in for OpenCV's HOG people detector: records the copy it is given and "finds" one
    64x128 detection window at (128, 64) of that copy."""

    def __init__(self) -> None:
        self.copies: list[tuple[int, ...]] = []

    def detectMultiScale(self, grey: np.ndarray, **_: object) -> tuple[np.ndarray, np.ndarray]:  # noqa: N802
        self.copies.append(grey.shape)
        return np.array([[128, 64, 64, 128]]), np.array([1.0])


@pytest.mark.parametrize("width", [320, 640, 2304])
def test_people_are_searched_at_one_working_width_and_trimmed_to_the_person(width: int) -> None:
    """A small camera's frame is scaled up and a large one down to the same copy, so people of
    the same share of any frame are found; the detection window's margin around the person is
    trimmed and the box is in the frame's own pixels."""
    detector = Detector(("people",))
    hog = detector._hog = FakeHog()  # type: ignore[assignment]
    [box] = detector(np.zeros((width * 3 // 4, width, 3), np.uint8))
    assert hog.copies == [(detector.people_width * 3 // 4, detector.people_width)]
    scale = width / detector.people_width  # frame pixels per copy pixel
    # window x 128-192, y 64-192 of the copy; the person is its middle half across and 3/4 down
    assert box == pytest.approx((144 * scale, 80 * scale, 176 * scale, 176 * scale))


def test_bad_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="give one or more of faces, people"):
        KeepLocal.parse("faces,cats")
    with pytest.raises(ConfigError, match="each once"):
        KeepLocal(kinds=("faces", "faces"))
    with pytest.raises(ConfigError, match="--keep-local-hold -1"):
        KeepLocal.parse("faces", hold=-1)
    assert KeepLocal.parse("none") == KeepLocal() and not KeepLocal().enabled
    import pedsam.stream

    assert pedsam.stream.KeepLocal is KeepLocal  # the library API names it


async def embed_face_clip(
    servers: dict[str, WorkerServer], keep_local: KeepLocal, plan: str = "default"
) -> tuple[list[set[int]], list[list[int]], dict[str, object], float]:
    """Five frames with the face (gone on frame BLANK) through 3 recording workers. Per frame:
    the windows any worker received (told apart by their tokens) and the audit's kept windows;
    the exposure summary; the largest relative error of an embedding against stock SAM."""
    received = {address: record_requests(server) for address, server in servers.items()}
    # fixed shares: what a worker gets is never held back by a scene budget, only by keep-local
    config = EdgeConfig(model=TINY, workers=tuple(servers), rotation=RotationSettings(policy="fixed"),
                        keep_local=keep_local, plan=plan)
    sent: list[set[int]] = []
    kept: list[list[int]] = []
    error = 0.0
    async with EdgeSession(config) as session:
        encoder, grid = session.sam.image_encoder, session.encoder.grid
        for image in face_frames(5, blank={BLANK}):
            for seen in received.values():
                seen.clear()
            embedding = await session.embed(image)
            with torch.inference_mode():
                prologue = (encoder.patch_embed(embedding.prepared.tensor) + encoder.pos_embed)[0]
                reference = encoder(embedding.prepared.tensor)
            error = max(error, float((embedding.tensor - reference).abs().max() / reference.abs().max()))
            windows: set[int] = set()
            for address, seen in received.items():
                for request in (r for r in seen if r.segment == 0):
                    windows.update(carried_windows(request, prologue, grid, range(grid.num_windows)))
                assert {r.segment for r in seen} <= {0, 1}
            sent.append(windows)
            assert embedding.audit.exposure is not None
            kept.append(embedding.audit.exposure["kept"])
            for segment in embedding.audit.segments:  # the audit agrees with the wire
                workers = {w for name, ids in segment.shares.items() if name != EDGE for w in ids}
                assert workers == windows
        summary = session.exposure_summary()
    return sent, kept, summary, error


@pytest.mark.parametrize("plan", PLANS)
async def test_keep_local_faces_never_sends_the_face_window_even_when_the_detector_misses(
    tiny_servers: dict[str, WorkerServer], plan: str
) -> None:
    sent, kept, summary, error = await embed_face_clip(tiny_servers, KeepLocal(kinds=("faces",)), plan)
    assert error <= 1e-4  # windows computed on the edge: the same embedding
    for index, (windows, home) in enumerate(zip(sent, kept)):
        assert FACE_WINDOW in home and FACE_WINDOW not in windows, index
        assert windows and not set(home) & windows, index
    assert summary["kept_windows"] == sum(len(k) for k in kept)
    keep = summary["keep_local"]
    assert isinstance(keep, dict) and keep["kinds"] == ["faces"] and keep["frames"] == 5
    assert keep["detections"] == 4 and keep["held_frames"] == 1  # the blank frame was held, not found


async def test_without_the_hold_or_the_flag_the_face_window_is_sent(tiny_servers: dict[str, WorkerServer]) -> None:
    sent, kept, summary, _ = await embed_face_clip(tiny_servers, KeepLocal(kinds=("faces",), hold=0))
    assert FACE_WINDOW in sent[BLANK] and kept[BLANK] == []  # the miss put the window on the wire
    assert all(FACE_WINDOW not in sent[i] for i in range(5) if i != BLANK)
    sent, kept, summary, _ = await embed_face_clip(tiny_servers, KeepLocal())
    assert all(FACE_WINDOW in windows for windows in sent) and kept == [[]] * 5
    assert summary["kept_windows"] == 0 and "keep_local" not in summary


async def test_bench_counts_what_the_tracker_keeps(tmp_path: Path) -> None:
    """``pedsam bench-keep-local`` on the face clip: the face's window on every frame (the blank
    one held), nothing else kept, figures written as JSON."""
    clip = write_clip(tmp_path / "face.mp4", face_frames(5, blank={BLANK}))
    done = await pedsam("bench-keep-local", clip, "--model", "tiny", "--keep-local", "faces",
                        "--json", str(tmp_path / "bench.json"))
    assert done.code == 0, done.err
    [row] = json.loads((tmp_path / "bench.json").read_text())
    assert row["frames"] == 5 and row["frames_with_kept"] == 5 and row["held_frames"] == 1
    assert row["detections"] == 4 and row["edge_share"] > 0 and row["detect_cpu_ms_p50"] > 0
    assert "face.mp4: 5 frames, --keep-local faces (hold 8)" in done.out
