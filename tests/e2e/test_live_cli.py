"""``pedsam stream``, ``pedsam serve`` and ``pedsam bench-pipeline`` as a user runs them.

The camera is an MJPEG stream served over loopback HTTP by the test (tests/mjpeg_server.py),
which OpenCV's FFmpeg backend opens the way it opens an IP camera.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from pedsam.stream.media.masks_io import decode_rle, read_records
from pedsam.stream.media.synthetic import make_clip
from pedsam.stream.media.video import probe_video, read_frames
from tests.mjpeg_server import HEIGHT, WIDTH, MjpegServer


async def start(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pedsam.stream", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL,
    )


async def pedsam(*args: str, timeout: float = 240) -> tuple[int, str, str]:
    process = await start(*args)
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except BaseException:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def one_line_error(code: int, err: str) -> str:
    assert code == 2, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("pedsam: error: ")]
    assert len(errors) == 1, err
    return errors[0]


def check_outputs(out: Path, frames: int, workers: list[str]) -> list[dict[str, object]]:
    """The recorded run has ``frames`` frames in every output, the video plays on without masks
    only until the first keyframe's masks arrive and has one on every frame after, and the audit
    keeps invariant 2."""
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == frames
    assert summary["latency_p50_s"] > 0 and summary["latency_p95_s"] >= summary["latency_p50_s"]
    assert summary["workers"] == workers and summary["max_windows_per_server"] <= 3
    records = read_records(out / "masks.jsonl")
    assert len(records) == frames
    indices = [r["frame"] for r in records]
    assert indices == sorted(set(indices))
    first = next(i for i, r in enumerate(records) if r["objects"])
    assert summary["frames_segmented"] == frames - first
    for record in records[first:]:
        [obj] = record["objects"]
        assert decode_rle(obj["rle"]).shape == (HEIGHT, WIDTH)
        assert record["latency_s"] > 0 and record["weights"] == "random"
    overlay = list(read_frames(out / "overlay.mp4"))
    assert len(overlay) == frames
    audit = read_records(out / "audit.jsonl")
    # only keyframes went through the split: the audit names them, and the records say which
    assert sorted({a["frame"] for a in audit}) == sorted(r["audit_frame"] for r in records if "audit_frame" in r)
    assert summary["keyframes"] == sum(r["keyframe"] or "audit_frame" in r for r in records) >= 1
    for line in audit:
        windows = sorted(w for ids in line["shares"].values() for w in ids)
        assert windows == list(range(line["num_windows"]))
        picture = line["picture"]  # a server's share: its windows' picture tokens over the frame's
        assert all(sum(picture[w] for w in ids) <= line["cap"] * sum(picture) + 1e-6
                   for name, ids in line["shares"].items() if name != "edge")
    return records


async def test_stream_a_camera_and_record_it(tiny_workers: list[str], tmp_path: Path) -> None:
    out = tmp_path / "live"
    with MjpegServer(fps=30, frames=None).running() as server:
        code, stdout, err = await pedsam(
            "stream", "--camera", server.url, "--point", "100,150", "--workers", ",".join(tiny_workers), "--model", "tiny",
            "--record", str(out), "--max-frames", "45", "--no-progress",
        )
        assert code == 0, err
        assert await asyncio.to_thread(server.clients_done.wait, 10)  # the camera was released
    assert "45 frames (45 ok, 0 failed" in stdout and "latency p50" in stdout
    check_outputs(out, 45, tiny_workers)
    assert probe_video(out / "overlay.mp4").width == WIDTH


async def test_ctrl_c_ends_a_live_run_and_finishes_its_outputs(tiny_workers: list[str], tmp_path: Path) -> None:
    out = tmp_path / "live"
    with MjpegServer(fps=30, frames=None).running() as server:
        process = await start(
            "stream", "--camera", server.url, "--point", "100,150", "--workers", ",".join(tiny_workers), "--model", "tiny",
            "--record", str(out),
        )
        try:
            masks = out / "masks.jsonl"
            for _ in range(600):
                if masks.exists() and masks.read_text().count('"rle"') >= 4:  # 4 frames with masks
                    break
                await asyncio.sleep(0.1)
            process.send_signal(signal.SIGINT)
            stdout, err = await asyncio.wait_for(process.communicate(), 60)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        assert process.returncode == 0, err.decode()
        assert await asyncio.to_thread(server.clients_done.wait, 10)
    assert "pedsam live:" in err.decode()  # the status line
    summary = json.loads((out / "summary.json").read_text())
    records = check_outputs(out, summary["frames"], tiny_workers)
    assert len(records) >= 4
    # Frames it skipped to stay current are counted: the gaps in the indices are all dropped.
    indices = [-1] + [int(str(r["frame"])) for r in records]
    assert summary["frames_dropped"] >= sum(b - a - 1 for a, b in zip(indices, indices[1:]))


async def test_stream_a_file_loses_nothing(tiny_workers: list[str], tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "clip.mp4", frames=7, width=160, height=120)
    x, y = clip.objects[0].centres[0]
    code, stdout, err = await pedsam(
        "stream", "--file", str(clip.path), "--point", f"{x},{y}", "--workers", ",".join(tiny_workers), "--model", "tiny",
        "--record", str(tmp_path / "out"), "--no-progress",
    )
    assert code == 0, err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["frames"] == 7 and summary["frames_dropped"] == 0
    assert [r["frame"] for r in read_records(tmp_path / "out" / "masks.jsonl")] == list(range(7))


async def test_stream_a_file_in_real_time_from_a_given_mask(tiny_workers: list[str], tmp_path: Path) -> None:
    """--realtime plays the file as a camera would; the object is given by its mask; adaptive
    keyframes (stream's default): every frame gets a mask, few leave the edge."""
    import numpy as np
    import PIL.Image

    clip = make_clip(tmp_path / "clip.mp4", frames=50, width=160, height=120, fps=25)
    PIL.Image.fromarray(clip.mask(0, 0).astype(np.uint8) * 255).save(tmp_path / "m.png")
    code, stdout, err = await pedsam(
        "stream", "--file", str(clip.path), "--realtime", "--mask", str(tmp_path / "m.png"),
        "--workers", ",".join(tiny_workers), "--model", "tiny", "--record", str(tmp_path / "out"), "--no-progress",
    )
    assert code == 0, err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    records = read_records(tmp_path / "out" / "masks.jsonl")
    assert summary["keyframe_policy"] == "adaptive" and summary["source_kind"] == "file"
    assert summary["frames"] + summary["frames_dropped"] == 50 == len(records) + summary["frames_dropped"]
    assert all(len(r["objects"]) == 1 for r in records)  # a mask on every frame taken
    assert records[0]["keyframe"] and decode_rle(records[0]["objects"][0]["rle"]).sum() == clip.mask(0, 0).sum()
    keyframes = [r for r in records if "audit_frame" in r]
    assert len(keyframes) < len(records) / 2  # most frames never left the edge
    ages = [r["keyframe_age"] for r in records]
    assert ages[0] == 0 and max(ages) >= 1


async def test_stream_errors_are_one_line(tiny_workers: list[str], tmp_path: Path) -> None:
    async def error(*args: str) -> str:
        code, _, err = await pedsam("stream", *args, "--workers", ",".join(tiny_workers), "--model", "tiny", "--no-progress")
        return one_line_error(code, err)

    assert "cannot open camera 9" in await error("--camera", "9", "--point", "1,1")
    assert "--display needs OpenCV with a GUI" in await error("--camera", "0", "--display", "--point", "1,1")
    assert "no such file" in await error("--file", str(tmp_path / "none.mp4"), "--point", "1,1")
    clip = make_clip(tmp_path / "clip.mp4", frames=2, width=64, height=48)
    assert "outside the 64x48 frame" in await error("--file", str(clip.path), "--point", "90,10")
    assert "mask" in await error("--file", str(clip.path), "--mask", str(tmp_path / "none.png"))
    assert "--realtime plays a --file" in await error("--camera", "0", "--realtime", "--point", "1,1")
    assert "--keyframes 'sometimes'" in await error("--file", str(clip.path), "--point", "1,1", "--keyframes", "sometimes")


async def test_serve_command_serves_the_page_until_sigterm(tiny_workers: list[str]) -> None:
    process = await start("serve", "--port", "0", "--workers", ",".join(tiny_workers), "--model", "tiny")
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 120)).decode()
        assert line.startswith("pedsam serve: open http://127.0.0.1:"), line
        url = line.split("open ", 1)[1].split()[0]
        async with aiohttp.ClientSession() as http:
            async with http.get(url) as reply:
                assert reply.status == 200 and "pedsam live" in await reply.text()
            async with http.get(url + "peers") as reply:
                assert await reply.json() == []
        process.send_signal(signal.SIGTERM)
        stdout, err = await asyncio.wait_for(process.communicate(), 60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, err.decode()
    assert "stopped" in stdout.decode()


async def test_bench_pipeline_reports_both_settings_and_their_ratio(tmp_path: Path) -> None:
    pin = [] if len(os.sched_getaffinity(0)) >= 2 else ["--no-pin"]
    figures = tmp_path / "bench.json"
    code, stdout, err = await pedsam(
        "bench-pipeline", "--frames", "4", "--size", "128x96", "--repeat", "1", "--in-flight", "2",
        "--local-workers", "2", "--json", str(figures), *pin, timeout=400,
    )
    assert code == 0, err
    result = json.loads(figures.read_text())
    assert [t["in_flight"] for t in result["trials"]] == [1, 2]
    assert all(t["frames"] == 4 for t in result["trials"])
    one, many = (4 / t["seconds"] for t in result["trials"])
    assert result["ratio"] == pytest.approx(many / one, rel=1e-2)
    printed = re.search(r"ratio (\d+\.\d+)x", stdout)
    assert printed is not None and float(printed.group(1)) == pytest.approx(result["ratio"], abs=0.006)
    assert result["pinned"] == (not pin)
    assert result["edge_cpu_per_frame_s"] > 0 and result["worker_cpu_per_frame_s"] > 0
    code, _, err = await pedsam("bench-pipeline", "--in-flight", "1")
    assert "--in-flight must be at least 2" in one_line_error(code, err)
