"""Every ``pedsam`` command end to end, as a user runs it: real processes, real files, real workers."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import av
import grpc
import numpy as np
import PIL.Image
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc
from segment_anything import SamPredictor

from pedsam.protos import pedsam_pb2 as pb
from pedsam.protos import pedsam_pb2_grpc as pb_grpc
from pedsam.stream.media.masks_io import decode_rle, read_records
from pedsam.stream.media.overlay import draw_overlay
from pedsam.stream.media.synthetic import make_clip
from pedsam.stream.media.video import read_frames
from pedsam.workers.models import RANDOM_WEIGHTS_NOTICE, build_sam
from tests.support import (
    assert_one_line_error, assert_same_mask, check_audit, command, edge_imports, pedsam, scene, scrape,
)


def predictor_for(image: np.ndarray) -> SamPredictor:
    predictor = SamPredictor(build_sam("tiny", seed=0))
    predictor.set_image(image)
    return predictor


async def test_embed_equals_sam_predictor_embedding(tmp_path: Path, tiny_workers: list[str]) -> None:
    image = scene(300, 420, seed=2)
    PIL.Image.fromarray(image).save(tmp_path / "photo.png")
    done = await pedsam(
        "embed", str(tmp_path / "photo.png"), "--model", "tiny", "--workers", ",".join(tiny_workers),
        "--save", str(tmp_path / "emb.npy"), "--audit", str(tmp_path / "audit.jsonl"),
    )
    assert done.code == 0, done.err
    assert "UNTRAINED" in done.err
    saved = np.load(tmp_path / "emb.npy")
    want = predictor_for(image).features.numpy()
    assert saved.shape == want.shape == (1, 64, 32, 32) and saved.dtype == np.float32
    assert np.abs(saved - want).max() <= 1e-4 * np.abs(want).max()
    check_audit(tmp_path / "audit.jsonl", frames=1, segments=2)


async def test_segment_writes_the_predictor_masks(tmp_path: Path) -> None:
    image = scene(240, 320, seed=4)
    PIL.Image.fromarray(image).save(tmp_path / "photo.png")
    done = await pedsam(
        "segment", str(tmp_path / "photo.png"), "--model", "tiny", "--local-workers", "2",
        "--point", "128,108", "--object", "--box", "200,140,290,210", "--out", str(tmp_path / "mask.png"),
    )
    assert done.code == 0, done.err
    # One 0/255 PNG per object, so objects that overlap keep every pixel.
    assert not (tmp_path / "mask.png").exists()
    point = np.asarray(PIL.Image.open(tmp_path / "mask-0.png"))
    box = np.asarray(PIL.Image.open(tmp_path / "mask-1.png"))
    assert point.shape == box.shape == (240, 320) and set(np.unique(point)) <= {0, 255}
    predictor = predictor_for(image)
    point_logits, point_scores, _ = predictor.predict(
        point_coords=np.array([[128.0, 108.0]]), point_labels=np.array([1]), multimask_output=True,
        return_logits=True,
    )
    box_logits, _, _ = predictor.predict(box=np.array([200.0, 140.0, 290.0, 210.0]), multimask_output=False,
                                         return_logits=True)
    assert_same_mask(point > 0, point_logits[int(np.argmax(point_scores))])
    assert_same_mask(box > 0, box_logits[0])


def banner_distances(overlay: np.ndarray, image: np.ndarray, record: dict) -> tuple[float, float]:
    """How far a decoded overlay frame's top strip is from the input frame drawn with its masks
    and the untrained-weights banner, and from the same without the banner (mean abs, 0-255)."""
    masks = [decode_rle(obj["rle"]) for obj in record["objects"]]
    labels = [f"#{obj['id']} {obj['score']:.2f}" for obj in record["objects"]]
    with_banner = draw_overlay(image, masks, labels=labels, banner=RANDOM_WEIGHTS_NOTICE).astype(float)
    without = draw_overlay(image, masks, labels=labels).astype(float)
    strip = int(np.flatnonzero((with_banner != without).any(axis=(1, 2))).max()) + 1  # the banner's rows
    assert strip < image.shape[0] // 3
    top = overlay[:strip].astype(float)
    return float(np.abs(top - with_banner[:strip]).mean()), float(np.abs(top - without[:strip]).mean())


async def test_run_writes_every_output_for_every_frame(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "clip.mp4", frames=8, width=160, height=128)
    x, y = clip.objects[0].centres[0]
    out = tmp_path / "out"
    done = await pedsam(
        "run", clip.path, "--model", "tiny", "--local-workers", "3", "--scheme", "interleaved", "--no-progress",
        "--point", f"{x:.0f},{y:.0f}", "--object", "--box", "20,60,80,110", "--out", str(out),
        "--link", "lan,wifi,200mbit/100mbit:4ms",  # emulated links change timings, never results
    )
    assert done.code == 0, done.err
    assert "8 frames (8 ok, 0 failed, 0 dropped)" in done.out

    with av.open(str(out / "overlay.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.average_rate == 12
        overlay = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert len(overlay) == 8 and overlay[0].shape == (128, 160, 3)

    records = read_records(out / "masks.jsonl")
    assert [r["frame"] for r in records] == list(range(8))
    for record, picture, frame in zip(records, overlay, read_frames(clip.path)):
        assert record["weights"] == "random"
        # Random weights: every frame of the video a person watches carries the banner saying so.
        with_banner, without = banner_distances(picture, frame.image, record)
        assert with_banner < 12 < without, (record["frame"], with_banner, without)
        assert [o["id"] for o in record["objects"]] == [0, 1]
        for obj in record["objects"]:
            assert decode_rle(obj["rle"]).shape == (128, 160)
    # Frame 0 is prompted by the user: its masks are exactly SamPredictor's on that frame.
    first = next(iter(read_frames(clip.path))).image
    predictor = predictor_for(first)
    masks, scores, _ = predictor.predict(
        point_coords=np.array([[round(x), round(y)]], dtype=np.float32), point_labels=np.array([1]),
        multimask_output=True,
    )
    np.testing.assert_array_equal(decode_rle(records[0]["objects"][0]["rle"]), masks[int(np.argmax(scores))])
    assert records[0]["objects"][0]["score"] == pytest.approx(float(scores.max()), abs=1e-5)

    check_audit(out / "audit.jsonl", frames=8, segments=2)
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["frames"], summary["frames_ok"], summary["frames_failed"]) == (8, 8, 0)
    assert summary["random_weights"] is True and len(summary["workers"]) == 3
    # Where everything computed: the edge (chosen by auto), and each local worker on the same device.
    edge = summary["devices"]["edge"]
    assert edge["compute_dtype"] == "fp32" and edge["reason"].startswith("auto: ")
    assert summary["devices"]["workers"] == {
        w: {"device": edge["device"], "name": edge["name"], "compute_dtype": "fp32"} for w in summary["workers"]}
    assert f"note: edge computes on {edge['device']}" in done.err
    # 160x128 at the tiny model: 6 windows hold picture (832 tokens, at most 196 in one), 3 are
    # padding and stay on the edge; no worker gets more than a third of the picture and a window.
    assert 0 < summary["max_picture_share_per_server"] <= 1 / 3 + 196 / 832 + 1e-6
    fleet = summary["fleet"]  # watched by default: nothing caught, every recomputed window exact
    assert fleet["verify"] == 0.05 and fleet["workers_caught"] == 0 and fleet["largest_difference"] <= 1e-4
    assert summary["max_windows_per_server"] <= 3 and summary["defaults"]["--rotation"] == "adaptive"
    links = summary["links"]
    assert [links[w]["emulated"]["spec"] for w in summary["workers"]] == ["1gbit:1ms", "100mbit:10ms",
                                                                          "200mbit/100mbit:4ms"]
    # One answer per segment request; a budget may keep a worker's whole share home on a frame.
    requests = Counter(name for r in read_records(out / "audit.jsonl") for name, ids in r["shares"].items() if ids)
    for worker, rtt in zip(summary["workers"], (1, 10, 4)):
        assert links[worker]["probes"] >= 3 and links[worker]["rtt_ms"] >= rtt - 1
        assert links[worker]["up_bytes"] > 0 and links[worker]["down_messages"] == requests[worker] > 0


async def test_demo_runs_the_whole_pipeline(tmp_path: Path) -> None:
    done = await pedsam("demo", "--out", str(tmp_path / "demo"), "--frames", "6", "--no-progress")
    assert done.code == 0, done.err
    # No official weights here: the demo runs pedsam-mini and every output says so.
    assert "3 local workers" in done.out and "pedsam-mini (small model trained on synthetic scenes)" in done.out
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert (summary["frames"], summary["frames_ok"]) == (6, 6)
    assert len(read_records(tmp_path / "demo" / "masks.jsonl")) == 6
    check_audit(tmp_path / "demo" / "audit.jsonl", frames=6, segments=2)


async def test_worker_prints_its_address_serves_and_stops_on_sigterm() -> None:
    """... and says where it computes: in its serving line, in Describe and in its metrics."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pedsam.stream", "worker", "--port", "0", "--model", "tiny", "--seed", "3",
        "--metrics-port", "0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 60)).decode()
        assert line.startswith("pedsam worker serving on 127.0.0.1:")
        assert "UNTRAINED" in line
        device = "cuda:0" if torch.cuda.is_available() else "cpu"
        assert f" device {device}" in line and "fp32 [auto: " in line, line
        address = line.split()[4]
        async with grpc.aio.insecure_channel(address) as channel:
            health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
            info = await pb_grpc.WindowWorkerStub(channel).Describe(pb.DescribeRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        assert (info.preset, info.num_segments, info.random_weights) == ("tiny", 2, True)
        assert (info.device, info.compute_dtype) == (device, "fp32")
        port = int(re.search(r"metrics on port (\d+)", line).group(1))  # type: ignore[union-attr]
        metrics = await asyncio.to_thread(scrape, port)
        labels = (("compute_dtype", "fp32"), ("device", device), ("name", info.device_name))
        assert metrics[("pedsam_worker_device_info", labels)] == 1
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def descendants_of(pid: int) -> dict[int, str]:
    """Every process below ``pid``: pid -> its command name."""
    parents: dict[int, tuple[int, str]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            name, rest = stat.split("(", 1)[1].rsplit(")", 1)
            parents[int(entry)] = (int(rest.split()[1]), name)
    found: dict[int, str] = {}
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child, (ppid, name) in parents.items():
            if ppid == parent:
                found[child] = name
                frontier.append(child)
    return found


async def start_run_with_local_workers(
    tmp_path: Path, output: int,
) -> tuple[asyncio.subprocess.Process, list[int], list[int]]:
    """``pedsam run`` over a long clip with 2 local workers, once frames are flowing through them:
    the process, its workers' pids and every process it started. ``output``: where its stdout
    and stderr go."""
    clip = make_clip(tmp_path / "clip.mp4", frames=200, width=160, height=128)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pedsam.stream", "run", clip.path, "--model", "tiny", "--local-workers", "2", "--point", "40,40",
        "--out", str(tmp_path / "out"), "--no-progress", stdout=output, stderr=output,
    )
    masks = tmp_path / "out" / "masks.jsonl"
    for _ in range(600):
        if masks.exists() and masks.read_text().count("\n") >= 2:
            break
        await asyncio.sleep(0.1)
    below = descendants_of(process.pid)  # the workers, and the process that forked them
    return process, [pid for pid, name in below.items() if name == "pedsam-worker"], list(below)


async def test_ctrl_c_stops_the_local_workers(tmp_path: Path) -> None:
    process, workers, started = await start_run_with_local_workers(tmp_path, asyncio.subprocess.PIPE)
    try:
        assert len(workers) == 2 and len(started) == 3
        process.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 130
        assert "interrupted" in err.decode() and "Traceback" not in err.decode()
        for pid in started:
            assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
        assert not (tmp_path / "out" / "summary.json").exists()  # an interrupted run is not passed off as done
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_local_workers_end_when_their_edge_is_killed(tmp_path: Path) -> None:
    """kill -9 gives the edge no chance to stop its workers; they notice their stdin close and go,
    instead of holding a model's memory and CPU for nobody."""
    process, workers, started = await start_run_with_local_workers(tmp_path, asyncio.subprocess.DEVNULL)
    try:
        assert len(workers) == 2 and len(started) == 3
        # Forked from the edge before it imported its own code: torch, but no OpenCV or PyAV.
        for pid in workers:
            mapped = Path(f"/proc/{pid}/maps").read_text()
            assert "libtorch" in mapped and "/cv2/" not in mapped and "/av/" not in mapped
    finally:
        process.kill()
        await process.wait()

    def alive(pid: int) -> bool:
        stat = Path(f"/proc/{pid}/stat")
        return stat.exists() and stat.read_text().split()[2] != "Z"

    for _ in range(200):  # they drain for at most --grace (5 s)
        if not any(alive(pid) for pid in started):
            break
        await asyncio.sleep(0.05)
    assert not any(alive(pid) for pid in started), "local workers (or what forked them) outlived their edge"


def test_stop_on_stdin_eof_takes_a_file_or_dev_null_as_stdin() -> None:
    """A script that starts a worker with ``< /dev/null`` (which the loop cannot watch) gets a
    worker that serves, sees its input already ended and shuts down cleanly."""
    with open(os.devnull) as nothing:
        done = subprocess.run([sys.executable, "-m", "pedsam.stream", "worker", "--port", "0", "--model", "tiny",
                               "--stop-on-stdin-eof"], stdin=nothing, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "pedsam worker serving on 127.0.0.1:" in done.stdout
    assert "standard input closed" in done.stderr and "Traceback" not in done.stderr


def wrong_checkpoint(path: Path) -> Path:
    state = build_sam("tiny").state_dict()
    state["image_encoder.blocks.0.attn.qkv.weight"] = torch.zeros(3, 3)
    torch.save(state, path)
    return path


async def test_bad_inputs_get_one_readable_line(tmp_path: Path, root_logger: None) -> None:
    """Each case through ``main`` in this process (the same code the command runs, without a new
    interpreter importing torch for each), the first also as a process of its own."""
    clip = make_clip(tmp_path / "clip.mp4", frames=2, width=96, height=64).path
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00not a video" * 100)
    PIL.Image.fromarray(scene(64, 96)).save(tmp_path / "photo.png")
    out = tmp_path / "out"
    local = ("--local-workers", "2")
    cases = [
        (("run", str(tmp_path / "missing.mp4"), "--point", "1,1", "--out", str(out), *local), ["missing.mp4", "no such file"]),
        (("run", str(garbage), "--point", "1,1", "--out", str(out), *local), ["garbage.mp4", "not a readable video"]),
        (("run", clip, "--point", "500,10", "--out", str(out), *local), ["outside the 96x64 frame"]),
        (("run", clip, "--point", "1,x", "--out", str(out), *local), ["point '1,x'"]),
        (("run", clip, "--out", str(out), *local), ["give at least one prompt"]),
        (("run", clip, "--point", "1,1", "--out", str(out), "--workers", "127.0.0.1:9,127.0.0.1:10", "--connect-timeout", "1"),
         ["127.0.0.1:9", "unreachable"]),
        (("embed", str(tmp_path / "nope.png"), "--save", str(tmp_path / "e.npy"), *local), ["nope.png", "no such file"]),
        (("segment", str(tmp_path / "photo.png"), "--point", "5,5", "--out", str(tmp_path / "m.png"),
          "--checkpoint", str(wrong_checkpoint(tmp_path / "bad.pth")), *local),
         ["bad.pth", "qkv.weight has shape (3, 3)"]),
        (("run", clip, "--point", "1,1", "--out", str(out), "--workers", "127.0.0.1:1"), ["one worker would see every window"]),
        (("run", clip, "--point", "1,1", "--out", str(out), *local, "--verify", "2"), ["--verify 2:", "from 0", "to 1"]),
    ]
    assert_one_line_error(await pedsam(*cases[0][0]), *cases[0][1])
    for args, words in cases:
        assert_one_line_error(await asyncio.to_thread(command, *args), *words)
    assert not (out / "summary.json").exists()


async def test_run_over_a_corrupt_packet_keeps_a_record_for_every_frame(tmp_path: Path) -> None:
    from tests.stream.media.test_video import corrupt_clip

    clip = corrupt_clip(tmp_path / "corrupt.mp4")  # 30 frames, one packet overwritten mid-file
    out = tmp_path / "out"
    done = await pedsam("run", str(clip), "--local-workers", "2", "--point", "10,10", "--no-progress",
                        "--out", str(out))
    assert done.code == 1  # not everything decoded, and the exit status says so
    assert "30 frames (29 ok, 1 failed, 0 dropped)" in done.out
    assert "pedsam: error: 1 frames failed; first: " in done.err and "decoding failed" in done.err
    records = read_records(out / "masks.jsonl")
    assert [r["frame"] for r in records] == list(range(30))
    [bad] = [r for r in records if "error" in r]
    assert "decoding failed" in bad["error"] and 0 < bad["frame"] < 29
    with av.open(str(out / "overlay.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 30
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["frames"], summary["frames_ok"], summary["frames_failed"]) == (30, 29, 1)


def test_a_worker_process_loads_no_edge_libraries(tmp_path: Path) -> None:
    """A worker runs SAM's windowed blocks and nothing else: a serving worker process has
    imported none of OpenCV, PyAV, aiortc, aiohttp, matplotlib or torchvision, nor the edge's
    compute, media or applications."""
    log = tmp_path / "imports.txt"  # -X importtime's report, a line per module imported
    with log.open("w") as sink:
        process = subprocess.Popen(
            [sys.executable, "-X", "importtime", "-m", "pedsam.stream", "worker", "--port", "0", "--model", "tiny"],
            stdout=subprocess.PIPE, stderr=sink, text=True,
        )
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            assert line.startswith("pedsam worker serving on"), line
        finally:
            process.send_signal(signal.SIGTERM)
            process.communicate(timeout=60)
    assert edge_imports(log.read_text()) == []
