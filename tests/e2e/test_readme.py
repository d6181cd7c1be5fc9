"""The README's two set-up commands, run on a fresh clone, and CI running the second one."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT


def setup_commands() -> list[str]:
    """The commands of the README's first code block, comments stripped."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```(?:sh|bash)?\n(.*?)```", text, re.S)
    assert block is not None, "README has no code block"
    lines = [line.split("#", 1)[0].strip() for line in block.group(1).splitlines()]
    return [line for line in lines if line]


def test_readme_opens_with_two_commands_and_ci_runs_the_second() -> None:
    commands = setup_commands()
    assert len(commands) == 2, commands
    assert "demo" in commands[0] and "test" in commands[1]
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert commands[1] in ci
    # The README's test command runs the type checks and every test, with nothing filtered out.
    dry = subprocess.run(["make", "-n", "test"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "mypy -p pedsam" in dry
    pytest_line = next(line for line in dry.splitlines() if "-m pytest" in line)
    assert pytest_line.split("-m pytest", 1)[1].split() == ["-q", "-p", "no:cacheprovider"]


def clean_env() -> dict[str, str]:
    """This process's environment without its virtual environment, as a fresh shell has it."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTEST_ADDOPTS")}
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    return env


@pytest.mark.timeout(1500)
def test_readme_commands_work_on_a_fresh_clone(tmp_path: Path) -> None:
    """Clone the committed tree, run the first command, then the second on one test file."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(clone)], check=True)
    demo, test = setup_commands()
    env = clean_env()
    try:
        done = subprocess.run(demo, shell=True, cwd=clone, env=env, capture_output=True, text=True, timeout=1200)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        assert (clone / ".venv" / "bin" / "pedsam").exists()
        summary = json.loads((clone / "out" / "demo" / "summary.json").read_text())
        assert summary["frames"] == summary["frames_ok"] > 0
        assert summary["max_windows_per_server"] < summary["windows_per_frame"]
        for name in ("overlay.mp4", "masks.jsonl", "audit.jsonl"):
            assert (clone / "out" / "demo" / name).stat().st_size > 0
        # The second command reuses that environment; one test file keeps this from recursing.
        env["PYTEST_ARGS"] = "tests/workers/test_protos.py"
        done = subprocess.run(test, shell=True, cwd=clone, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        assert "Success: no issues found" in done.stdout
        assert re.search(r"\b2 passed\b", done.stdout), done.stdout[-1000:]
    finally:
        shutil.rmtree(clone / ".venv", ignore_errors=True)  # gigabytes of torch; do not keep them
