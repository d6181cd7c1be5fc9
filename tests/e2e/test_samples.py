"""The runnable samples in samples/ do what their docstrings say."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT


def test_api_example_embeds_segments_and_follows_an_object(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "samples" / "api_example.py"), str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("embedding (1, 64, 32, 32) via ")
    workers = lines[0].split(" via ")[1].split(", ")
    assert len(workers) == 3
    # Each segment line lists every worker with a share; together they hold all 9 windows once.
    for line in lines[1:3]:
        ids = [int(i) for share in re.findall(r"\[([\d, ]+)\]", line) for i in share.split(",")]
        assert all(w in line for w in workers)
        assert sorted(ids) == list(range(9)), line
    assert re.match(r"segment: mask \(240, 320\), \d+ pixels", lines[3])
    frames = [line for line in lines if line.startswith("frame ")]
    assert [int(line.split()[1].rstrip(":")) for line in frames] == list(range(6))
    assert not any("error" in line for line in frames)
    assert (tmp_path / "clip.mp4").stat().st_size > 0
