"""Rotation and budgets in real runs: exact embeddings with edge windows, audit and summary, CLI flags."""

from __future__ import annotations

import json
import re
from pathlib import Path

import PIL.Image
import pytest
import torch

from pedsam.partitioner.assignment import EDGE
from pedsam.partitioner.scheduler import Budget
from pedsam.stream.cli.main import main, parse
from pedsam.stream.cli.settings import defaults_in_force, edge_config
from pedsam.stream.core.scheduling import RotationSettings
from pedsam.stream.core.session import EdgeConfig, EdgeSession
from pedsam.stream.errors import ConfigError, ExposureBudgetError
from pedsam.workers.server import WorkerLimits, WorkerModel, WorkerServer
from pedsam.stream.media.masks_io import read_records
from pedsam.stream.media.panning import make_pan_clip
from tests.support import TINY, check_audit, pedsam, scene


async def test_budgeted_round_robin_is_exact_with_windows_on_the_edge(tiny_workers: list[str]) -> None:
    settings = RotationSettings(policy="round-robin", budget=Budget(scene_cap=0.6))
    config = EdgeConfig(model=TINY, workers=tuple(tiny_workers), rotation=settings)
    image = scene(240, 320, seed=4)
    async with EdgeSession(config) as session:
        embeddings = [await session.embed(image) for _ in range(3)]
        with torch.inference_mode():
            reference = session.sam.image_encoder(embeddings[0].prepared.tensor)
        summary = session.exposure_summary()
    assert all(e.audit.exposure is not None for e in embeddings)
    on_edge = [sum(len(ids) for ids in e.audit.exposure["to_edge"].values()) for e in embeddings]  # type: ignore[index]
    assert on_edge[0] == 0 and on_edge[1] > 0 and on_edge[2] > 0  # rotation would show new windows
    for embedding in embeddings:
        error = float((embedding.tensor - reference).abs().max() / reference.abs().max())
        assert error <= 1e-4
        assert embedding.audit.exposure is not None
        padding = embedding.audit.exposure["padding"]
        assert padding == [6, 7, 8] and set(padding) <= set(embedding.audit.assignment.shares[EDGE])
        for server in embedding.audit.exposure["servers"].values():
            assert server["run_scene_share"] <= 0.6
    assert summary["edge_windows"] == sum(on_edge)
    assert max(s["max_run_scene_share"] for s in summary["exposure"].values()) <= 0.6


async def test_stop_setting_fails_the_frame_with_a_clear_error(tiny_workers: list[str]) -> None:
    settings = RotationSettings(policy="round-robin", budget=Budget(scene_cap=0.6, on_exceed="stop"))
    config = EdgeConfig(model=TINY, workers=tuple(tiny_workers), rotation=settings)
    async with EdgeSession(config) as session:
        await session.embed(scene(240, 320))
        with pytest.raises(ExposureBudgetError, match="frame 1: the scene cap of 0.6 of the scene since the stream"):
            await session.embed(scene(240, 320))


async def test_run_with_pooled_rotation_records_exposure_per_frame(tmp_path: Path, tiny_workers: list[str]) -> None:
    clip = make_pan_clip(tmp_path / "pan.mp4", frames=8, velocity=(0.0, 6.0))
    out = tmp_path / "out"
    done = await pedsam(
        "run", clip.path, "--point", "160,120", "--workers", ",".join(tiny_workers), "--model", "tiny", "--rotation", "pooled",
        "--scene-cap", "0.5", "--horizon", "6", "--out", str(out), "--no-progress",
    )
    assert done.code == 0, done.err
    assert "rotation pooled" in done.out
    [defaults] = [line for line in done.err.splitlines() if line.startswith("note: defaults in force: ")]
    assert "--scheme interleaved" in defaults and "--run-cap 100" in defaults and "--rotation" not in defaults
    check_audit(out / "audit.jsonl", frames=8, segments=2)
    records = read_records(out / "audit.jsonl")
    exposures = [r["exposure"] for r in records if "exposure" in r]
    assert [e["frame"] for e in exposures] == list(range(8))
    servers: set[str] = set()
    for record, exposure in zip([r for r in records if "exposure" in r], exposures):
        assert exposure["rotation"] == "pooled" and exposure["limits"]["scene"] == 0.5
        active = [name for name in record["shares"] if name != EDGE]
        # 3 workers, 2 slots: pools (w0, w2) and (w1); w1 every frame, w0 and w2 taking turns.
        assert sorted(active) == sorted([tiny_workers[1], tiny_workers[0] if record["frame"] % 2 == 0 else tiny_workers[2]])
        servers.update(active)
        for name, e in exposure["servers"].items():
            assert e["run_scene_share"] <= 0.5
            assert e["run"] <= (1 if name != tiny_workers[1] else record["frame"] + 1)
            assert e["windows"] == len(record["shares"].get(name, []))
        moved = [w for ids in exposure["to_edge"].values() for w in ids]
        assert sorted(record["shares"].get(EDGE, [])) == sorted(moved + exposure["padding"])
    assert servers == set(tiny_workers)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["exposure"]["rotation"] == "pooled"
    assert summary["exposure"]["slots"] == 2
    assert summary["defaults"]["--scheme"] == "interleaved" and "--scene-cap" not in summary["defaults"]
    assert summary["exposure"]["edge_windows"] == sum(
        len(ids) for r in records if "exposure" in r for ids in r["exposure"]["to_edge"].values())


async def test_stop_on_budget_marks_every_later_frame_failed(tmp_path: Path, tiny_workers: list[str]) -> None:
    clip = make_pan_clip(tmp_path / "pan.mp4", frames=4, velocity=(0.0, 2.0))
    out = tmp_path / "out"
    done = await pedsam(
        "run", clip.path, "--point", "160,120", "--workers", ",".join(tiny_workers), "--model", "tiny", "--rotation",
        "round-robin", "--scene-cap", "0.6", "--on-budget", "stop", "--out", str(out), "--no-progress",
    )
    assert done.code == 1, done.err
    assert "first: frame 1: the scene cap of 0.6 of the scene since the stream started" in done.err
    records = read_records(out / "masks.jsonl")
    assert [r["frame"] for r in records] == [0, 1, 2, 3]
    assert "objects" in records[0] and all("error" in r for r in records[1:])


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--scene-cap", "1.5"], "scene_cap is a share"),
        (["--horizon", "0"], "horizon"),
        (["--rotation", "pooled", "--slots", "5"], "needs 1 <= slots <= workers (3)"),
        (["--rotation", "fixed", "--slots", "2"], "--slots applies to pooled and keyed-random"),
    ],
)
def test_bad_rotation_flags_fail_before_any_worker_is_reached(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], words: str
) -> None:
    image = tmp_path / "photo.png"
    PIL.Image.fromarray(scene(120, 160)).save(image)
    unreachable = "127.0.0.1:9,127.0.0.1:10,127.0.0.1:11"  # never contacted: the flags fail first
    code = main(["embed", str(image), "--workers", unreachable, "--save", str(tmp_path / "e.npy"), *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("pedsam: error: ") and words in err[0], err


async def test_two_interleaved_streams_rotate_on_their_own_frames_and_share_budgets(
    tiny_servers: dict[str, WorkerServer], tiny_worker_model: WorkerModel
) -> None:
    # Two calls of `pedsam serve` whose frames alternate. Each rotates over its own frame
    # sequence (one shared counter would give each call every other frame: pooled would then
    # hand a call's windows to one worker of each pool for ever, a run of every frame), and the
    # budgets bound what each worker saw in both calls together.
    extra = WorkerServer(tiny_worker_model, WorkerLimits())
    workers = (*tiny_servers, await extra.start("127.0.0.1", 0))
    try:
        settings = RotationSettings(policy="pooled", budget=Budget(horizon_cap=0.6, horizon=8))
        config = EdgeConfig(model=TINY, workers=workers, rotation=settings)
        frames = [scene(240, 320, seed=s) for s in (1, 2)]
        async with EdgeSession(config) as session:
            calls = [session.new_scheduler(), session.new_scheduler()]
            embeddings = []
            for _ in range(8):
                for call, image in zip(calls, frames):
                    embeddings.append(await session.embed(image, scheduler=call))
            summary = calls[0].summary()
            with torch.inference_mode():
                reference = session.sam.image_encoder(embeddings[-1].prepared.tensor)
    finally:
        await extra.stop(0)
    assert [c.frames for c in calls] == [8, 8] and summary["streams"] == 2 and summary["frames"] == 16
    assert {s["longest_run"] for s in summary["exposure"].values()} == {1}
    for embedding in embeddings:
        exposure = embedding.audit.exposure
        assert exposure is not None
        assert all(e["scene_frames"] <= 0.6 + 1e-9 for e in exposure["servers"].values())
    # Alone, one call stays under the cap; the two together do not: the edge took windows.
    assert summary["edge_windows"] > 0
    assert float((embeddings[-1].tensor - reference).abs().max() / reference.abs().max()) <= 1e-4


def test_the_library_defaults_are_the_command_lines() -> None:
    values = parse(["run", "v.mp4", "--out", "o", "--point", "1,1", "--local-workers", "3"])[1]
    config = edge_config(values)
    assert config.rotation == RotationSettings()
    assert config.keep_local == EdgeConfig(model=TINY, local_workers=3).keep_local and not config.keep_local.enabled
    assert config.scheme == EdgeConfig(model=TINY, local_workers=3).scheme == "interleaved"
    assert config.rotation.policy == "adaptive" and config.rotation.budget.scene_cap == "auto"
    assert config.rotation.budget.run_cap == 100 and config.rotation.budget.frame_cap is None
    assert defaults_in_force(values) == {
        "--scheme": "interleaved", "--codec": "fp32", "--plan": "default", "--compression": "auto", "--keep-local": "none",
        "--rotation": "adaptive", "--frame-cap": "auto", "--scene-cap": "auto", "--horizon-cap": "none", "--run-cap": 100,
        "--coalition": 1, "--coalition-cap": "auto", "--horizon": 50, "--on-budget": "edge",
    }
    chosen = parse(["run", "v.mp4", "--out", "o", "--point", "1,1", "--local-workers", "3", "--scene-cap", "0.5",
                    "--rotation", "fixed"])[1]
    assert "--scene-cap" not in defaults_in_force(chosen) and "--rotation" not in defaults_in_force(chosen)
    assert edge_config(chosen).rotation.budget.scene_cap == 0.5


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--workers", "10.0.0.7:1@a,10.0.0.8:1", "--insecure"], "worker 10.0.0.8:1 is off this machine and names no "
                                                                 "provider"),
        (["--workers", "10.0.0.7:1@a,10.0.0.8:1@a", "--insecure"], "workers 10.0.0.7:1 and 10.0.0.8:1 are both at "
                                                                   "provider 'a'"),
        (["--workers", "10.0.0.7:1@a,10.0.0.8:1@b", "--standby", "10.0.0.9:1@b", "--insecure"],
         "workers 10.0.0.8:1 and 10.0.0.9:1 are both at provider 'b'"),
        (["--workers", "10.0.0.7:1@,10.0.0.8:1@b"], "give HOST:PORT or HOST:PORT@PROVIDER"),
        (["--frame-cap", "none", "--local-workers", "2"], "a per-frame cap is always in force"),
        (["--coalition", "3", "--local-workers", "3"], "--coalition 3: a coalition of every one of the 3 workers"),
        (["--run-cap", "0", "--local-workers", "2"], "run_cap is a number of frames"),
    ],
)
def test_providers_and_caps_are_checked_before_any_worker_starts(flags: list[str], words: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(words)):
        edge_config(parse(["run", "v.mp4", "--out", "o", "--point", "1,1", *flags])[1])


def test_every_worker_gets_its_provider() -> None:
    config = edge_config(parse(["run", "v.mp4", "--out", "o", "--point", "1,1", "--insecure",
                                "--workers", "10.0.0.7:1@provider-a, 10.0.0.8:1@provider-b"])[1])
    assert config.workers == ("10.0.0.7:1", "10.0.0.8:1")
    assert dict(config.providers) == {"10.0.0.7:1": "provider-a", "10.0.0.8:1": "provider-b"}
