"""Rotation and budgets in real runs: exact embeddings with edge windows, audit and summary, CLI flags."""

from __future__ import annotations

import json
from pathlib import Path

import PIL.Image
import pytest
import torch

from pedsam.partitioner.assignment import EDGE
from pedsam.partitioner.scheduler import Budget
from pedsam.stream.cli.main import main
from pedsam.stream.core.scheduling import RotationSettings
from pedsam.stream.core.session import EdgeConfig, EdgeSession
from pedsam.stream.errors import ExposureBudgetError
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
    on_edge = [len(e.audit.assignment.shares.get(EDGE, ())) for e in embeddings]
    assert on_edge[0] == 0 and on_edge[1] > 0 and on_edge[2] > 0  # rotation would show new windows
    for embedding in embeddings:
        error = float((embedding.tensor - reference).abs().max() / reference.abs().max())
        assert error <= 1e-4
        assert embedding.audit.exposure is not None
        for server in embedding.audit.exposure["servers"].values():
            assert server["scene_frames"] <= 0.6
    assert summary["edge_windows"] == sum(on_edge)
    assert max(s["max_scene_share"] for s in summary["exposure"].values()) <= 0.6


async def test_stop_setting_fails_the_frame_with_a_clear_error(tiny_workers: list[str]) -> None:
    settings = RotationSettings(policy="round-robin", budget=Budget(scene_cap=0.6, on_exceed="stop"))
    config = EdgeConfig(model=TINY, workers=tuple(tiny_workers), rotation=settings)
    async with EdgeSession(config) as session:
        await session.embed(scene(240, 320))
        with pytest.raises(ExposureBudgetError, match="frame 1: the cap of 0.6 frames' worth of scene"):
            await session.embed(scene(240, 320))


async def test_run_with_pooled_rotation_records_exposure_per_frame(tmp_path: Path, tiny_workers: list[str]) -> None:
    clip = make_pan_clip(tmp_path / "pan.mp4", frames=8, velocity=(0.0, 6.0))
    out = tmp_path / "out"
    done = await pedsam(
        "run", clip.path, "--point", "160,120", "--workers", ",".join(tiny_workers), "--rotation", "pooled",
        "--scene-cap", "0.5", "--horizon", "6", "--out", str(out), "--no-progress",
    )
    assert done.code == 0, done.err
    assert "rotation pooled" in done.out
    check_audit(out / "audit.jsonl", frames=8, segments=2)
    records = read_records(out / "audit.jsonl")
    exposures = [r["exposure"] for r in records if "exposure" in r]
    assert [e["frame"] for e in exposures] == list(range(8))
    servers: set[str] = set()
    for record, exposure in zip([r for r in records if "exposure" in r], exposures):
        assert exposure["rotation"] == "pooled" and exposure["scene_cap"] == 0.5
        active = [name for name in record["shares"] if name != EDGE]
        # 3 workers, 2 slots: pools (w0, w2) and (w1); w1 every frame, w0 and w2 taking turns.
        assert sorted(active) == sorted([tiny_workers[1], tiny_workers[0] if record["frame"] % 2 == 0 else tiny_workers[2]])
        servers.update(active)
        for name, e in exposure["servers"].items():
            assert e["scene_frames"] <= 0.5
            assert e["run"] <= (1 if name != tiny_workers[1] else record["frame"] + 1)
            assert e["windows"] == len(record["shares"].get(name, []))
        assert sorted(record["shares"].get(EDGE, [])) == sorted(w for ids in exposure["to_edge"].values() for w in ids)
    assert servers == set(tiny_workers)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["exposure"]["rotation"] == "pooled"
    assert summary["exposure"]["slots"] == 2
    assert summary["exposure"]["edge_windows"] == sum(len(r["shares"].get(EDGE, [])) for r in records if "exposure" in r)


async def test_stop_on_budget_marks_every_later_frame_failed(tmp_path: Path, tiny_workers: list[str]) -> None:
    clip = make_pan_clip(tmp_path / "pan.mp4", frames=4, velocity=(0.0, 2.0))
    out = tmp_path / "out"
    done = await pedsam(
        "run", clip.path, "--point", "160,120", "--workers", ",".join(tiny_workers), "--rotation",
        "round-robin", "--scene-cap", "0.6", "--on-budget", "stop", "--out", str(out), "--no-progress",
    )
    assert done.code == 1, done.err
    assert "first: frame 1: the cap of 0.6 frames' worth of scene" in done.err
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
