"""What a curious worker really keeps (``--capture``) and what ``pedsam attack-capture`` finds in it.

The run is real: ``pedsam run`` with three local worker processes of the default model
(pedsam-mini), each keeping what it receives; the attack reads only those files (and the video,
to score itself)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from pedsam.protos import pedsam_pb2 as pb
from pedsam.stream.media.synthetic import demo_scene
from pedsam.stream.media.video import read_frames
from pedsam.stream.privacy.captured import attack_capture
from pedsam.stream.privacy.inversion import prologue
from pedsam.workers import codec as wire
from pedsam.workers.capture import CaptureWriter, read_capture
from pedsam.workers.models import ModelSource
from pedsam.workers.presets import get_preset
from tests.faces import face_frames, write_clip
from tests.support import assert_one_line_error, pedsam

FRAMES = 2


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> str:
    """320x240, a 60 px face at (70, 70): inside one window of mini's grid, so one worker gets it whole."""
    return write_clip(tmp_path_factory.mktemp("clip") / "face.mp4", face_frames(4))


async def _run_and_attack(clip: str, folder: Path, *flags: str) -> dict[str, object]:
    captures = folder / "captures"
    done = await pedsam("run", clip, "--local-workers", "3", "--capture-local", str(captures), "--max-frames",
                        str(FRAMES), "--point", "250,200", "--out", str(folder / "run"), "--no-progress", *flags)
    assert done.code == 0, done.err
    files = sorted(captures.glob("worker-*.bin"))
    assert [f.name for f in files] == ["worker-0.bin", "worker-1.bin", "worker-2.bin"]
    done = await pedsam("attack-capture", clip, *map(str, files), "--face-attacker", "haar", "--json",
                        str(folder / "attack.json"))
    assert done.code == 0, done.err
    report: dict[str, object] = json.loads((folder / "attack.json").read_text())
    return report


async def test_a_face_a_worker_received_is_found_in_its_capture_and_one_kept_home_is_not(
        clip: str, tmp_path: Path) -> None:
    sent = await _run_and_attack(clip, tmp_path / "sent")
    rows = sent["workers"]
    assert isinstance(rows, list)
    # Frames past --max-frames never reach a worker (the pipeline does not read ahead past it).
    assert [row["requests"] for row in rows] == [FRAMES] * 3
    assert all(row["matched_requests"] == FRAMES for row in rows)
    # Positions are not sent; the attacker recovers them from the position embedding.
    assert all(row["position_accuracy"] >= 0.9 for row in rows), rows
    assert all(row["psnr_db_median"] > 25 for row in rows), rows
    assert sent["reference_faces"] == FRAMES
    assert sent["worst_face_recall"] == 1.0

    kept = await _run_and_attack(clip, tmp_path / "kept", "--keep-local", "faces")
    assert kept["reference_faces"] == FRAMES  # the frames still went out, without the face
    assert (kept["worst_face_recall"], kept["worst_face_recall_visible"]) == (0.0, 0.0)


async def test_attack_capture_refuses_a_capture_of_another_model(clip: str, tmp_path: Path) -> None:
    request = pb.SegmentRequest(segment=0, model_fingerprint="f" * 64)
    writer = CaptureWriter(tmp_path / "w.bin")
    writer.record(request, 1.0)
    writer.close()
    done = await pedsam("attack-capture", clip, str(tmp_path / "w.bin"), "--face-attacker", "haar")
    assert_one_line_error(done, "fingerprint", "--model")


def test_a_capture_keeps_first_segment_work_only_and_survives_a_torn_last_record(tmp_path: Path) -> None:
    path = tmp_path / "w.bin"
    writer = CaptureWriter(path)
    first = pb.SegmentRequest(request_id=7, segment=0, extents=[pb.WindowExtent(height=14, width=14)])
    writer.record(first, 100.5)
    writer.record(pb.SegmentRequest(request_id=8, segment=1), 101.0)  # a later segment: not pixels
    writer.record(pb.SegmentRequest(request_id=9, segment=0, skip_segment=True, finish_block=2), 102.0)
    writer.record(pb.SegmentRequest(request_id=10, segment=0), 103.0)
    writer.close()
    with open(path, "ab") as handle:  # a worker killed while writing a record
        handle.write(struct.pack("<dI", 104.0, 500) + b"\x08\x01")
    got = list(read_capture(path))
    assert [(c.request.request_id, c.arrived) for c in got] == [(7, 100.5), (10, 103.0)]
    assert got[0].request == first
    (tmp_path / "junk.bin").write_bytes(struct.pack("<dI", 1.0, 4) + b"\xff\xff\xff\xff")
    with pytest.raises(ValueError, match="not a pedsam capture"):
        list(read_capture(tmp_path / "junk.bin"))


def test_requests_out_of_frame_order_and_through_int8_are_placed_on_their_frames(tmp_path: Path) -> None:
    """Frames in flight reach a worker in any order, windows shuffled, no frame number: the
    auditor still finds every request's frame, and the attacker every window's position."""
    scene = demo_scene(width=320, height=240, frames=5)
    clip = tmp_path / "scene.mp4"
    scene.write(clip)
    sam = ModelSource(preset="mini").build()
    images = [f.image for f in read_frames(clip)]
    grid_windows = [(0, 0), (0, 14), (14, 14)]  # (top, left) of windows 0, 1 and 4 of mini's grid
    writer, sparse = CaptureWriter(tmp_path / "w.bin"), CaptureWriter(tmp_path / "v.bin")
    for order, index in enumerate((1, 0, 3, 2, 4)):
        tokens, _ = prologue(sam, images[index])
        picked = [grid_windows[k] for k in np.random.default_rng(index).permutation(3)]
        rows = np.concatenate([tokens[t : t + 14, l : l + 14].reshape(-1, tokens.shape[-1]) for t, l in picked])
        request = pb.SegmentRequest(segment=0, extents=[pb.WindowExtent(height=14, width=14)] * 3,
                                    tokens=wire.encode(torch.from_numpy(rows), wire.codec_id("int8")))
        writer.record(request, float(order))
        if index in (0, 4):  # another worker, sent only frames 0 and 4 (the rest kept home)
            sparse.record(request, order + 0.5)
    writer.close()
    sparse.close()
    report = attack_capture(clip, {"w": tmp_path / "w.bin", "v": tmp_path / "v.bin"}, sam,
                            get_preset("mini").window_size, lambda _: [], lookahead=2)
    w, v = report["workers"]
    assert (w["matched_requests"], w["frames"], w["windows"]) == (5, 5, 15)
    assert (v["matched_requests"], v["frames"]) == (2, 2)  # a gap longer than the look-ahead
    assert w["position_accuracy"] == v["position_accuracy"] == 1.0
    assert w["psnr_db_median"] > 25
