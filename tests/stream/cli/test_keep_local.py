"""``--keep-local`` from the command line and the config file to the audit and the summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pedsam.partitioner.assignment import EDGE
from pedsam.stream.cli.main import build_parser, parse
from pedsam.stream.cli.settings import edge_config
from pedsam.stream.core.sensitive import DEFAULT_HOLD, KINDS, KeepLocal
from pedsam.stream.errors import ConfigError
from pedsam.stream.media.masks_io import read_records
from tests.faces import face_frames, write_clip
from tests.support import assert_one_line_error, check_audit, pedsam

FACE_WINDOWS = {0}  # tiny, 320x240: the drawn face (see tests/stream/core/test_sensitive.py) lies in window 0
BLANK = 2


def keep_of(*argv: str) -> KeepLocal:
    return edge_config(parse(["run", "v.mp4", "--out", "o", "--local-workers", "2", *argv])[1]).keep_local


def test_flag_file_and_defaults_reach_the_config(tmp_path: Path) -> None:
    assert keep_of() == KeepLocal() and not keep_of().enabled
    assert keep_of("--keep-local", "people,faces") == KeepLocal(kinds=("people", "faces"), hold=DEFAULT_HOLD)
    assert keep_of("--keep-local", "faces", "--keep-local-hold", "3").hold == 3
    config = tmp_path / "edge.toml"
    config.write_text('[split]\nkeep_local = "faces"\nkeep_local_hold = 12\n')
    assert keep_of("--config", str(config)) == KeepLocal(kinds=("faces",), hold=12)
    assert keep_of("--config", str(config), "--keep-local", "none", "--keep-local-hold", "12") == KeepLocal(hold=12)
    with pytest.raises(ConfigError, match="--keep-local-hold -1"):
        keep_of("--keep-local", "faces", "--keep-local-hold", "-1")
    help_text = build_parser()._subparsers._group_actions[0].choices["run"].format_help()  # type: ignore[union-attr]
    assert all(kind in help_text for kind in KINDS)


async def test_bad_kind_is_one_error_line(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "face.mp4", face_frames(1))
    done = await pedsam("run", clip, "--point", "1,1", "--local-workers", "2", "--keep-local", "faces,cats",
                        "--out", str(tmp_path / "out"))
    assert_one_line_error(done, "--keep-local faces,cats", "faces, people")


async def run_face_clip(tmp_path: Path, workers: list[str], *flags: str) -> tuple[list[dict], dict]:
    clip = write_clip(tmp_path / "face.mp4", face_frames(5, blank={BLANK}))
    out = tmp_path / ("out" + "-".join(flags))
    done = await pedsam("run", clip, "--point", "250,60", "--workers", ",".join(workers), "--model", "tiny", "--rotation", "fixed",
                        "--out", str(out), "--no-progress", *flags)
    assert done.code == 0, done.err
    if "--keyframes" not in flags:  # every frame sent: invariant 2 from the audit file alone
        check_audit(out / "audit.jsonl", frames=5, segments=2)
    return read_records(out / "audit.jsonl"), json.loads((out / "summary.json").read_text())


async def test_run_keeps_the_face_home_on_every_frame_and_says_so(tmp_path: Path, tiny_workers: list[str]) -> None:
    records, summary = await run_face_clip(tmp_path, tiny_workers, "--keep-local", "faces")
    kept_by_frame = {r["frame"]: r["exposure"]["kept"] for r in records if "exposure" in r}
    assert sorted(kept_by_frame) == list(range(5))
    for record in records:
        kept = kept_by_frame[record["frame"]]
        assert FACE_WINDOWS <= set(kept) <= set(record["shares"][EDGE]), record["frame"]  # the blank frame too
        for name, ids in record["shares"].items():
            assert name == EDGE or not set(kept) & set(ids), (record["frame"], name)
    assert summary["keep_local"] == ["faces"]
    exposure = summary["exposure"]
    assert exposure["kept_windows"] == sum(len(k) for k in kept_by_frame.values())
    assert exposure["keep_local"]["frames"] == 5 and exposure["keep_local"]["held_frames"] == 1
    assert exposure["keep_local"]["detect_ms_mean"] > 0

    # keyframes every 2nd frame: the frames in between count for the hold, searched every other
    # one (here none: each follows a search); frame 2, sent and blank, keeps the face by the hold
    records, summary = await run_face_clip(tmp_path, tiny_workers, "--keep-local", "faces", "--keyframes", "every:2")
    assert len({r["frame"] for r in records}) == 3  # frames 0, 2 and 4 went through the split
    assert all(FACE_WINDOWS <= set(r["exposure"]["kept"]) for r in records if "exposure" in r)
    keep = summary["exposure"]["keep_local"]
    assert (keep["frames"], keep["searched_frames"], keep["detections"]) == (5, 3, 2)

    records, summary = await run_face_clip(tmp_path, tiny_workers)  # without the flag the face is sent
    for record in records:
        sent = {w for name, ids in record["shares"].items() if name != EDGE for w in ids}
        assert FACE_WINDOWS <= sent, record["frame"]
    assert summary["keep_local"] == [] and summary["exposure"]["kept_windows"] == 0
    assert summary["defaults"]["--keep-local"] == "none"
