"""The README's two set-up commands, run on a fresh clone, and CI running the second one."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
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
    # The README's test command runs the type checks and every test but ViT-B's own (marked
    # vit_b), which make test-vit-b runs.
    assert "mypy -p pedsam" in dry_run("test")
    # -n/--dist spread the tests over one process per core and --durations reports the slowest
    assert pytest_arguments("test") == ["-q", "-p", "no:cacheprovider", "-n", "auto", "--dist", "worksteal",
                                        "-m", "not vit_b", "--durations=15"]
    assert pytest_arguments("test-vit-b") == ["-q", "-p", "no:cacheprovider", "-n", "auto", "--dist", "worksteal",
                                              "-m", "vit_b", "--durations=5"]


def test_every_vit_b_test_has_a_narrow_twin_in_make_test() -> None:
    """What make test leaves to make test-vit-b it checks on ViT-B's geometry at a narrow width:
    every test id ending in [vit_b] has an id ending in [narrow] that make test runs."""
    files = [str(path) for path in sorted((ROOT / "tests").rglob("test_*.py"))
             if re.search(r"mark\.vit_b|vit_b_shape", path.read_text())]

    def collected(marker: str) -> set[str]:
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--collect-only",
                               "-m", marker, *files], cwd=ROOT, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stdout[-2000:]
        return {line.strip() for line in done.stdout.splitlines() if "::" in line}

    vit_b, default = collected("vit_b"), collected("not vit_b")
    assert len(vit_b) >= 4 and not vit_b & default
    for test in vit_b:
        assert test.endswith("[vit_b]") and test.removesuffix("[vit_b]") + "[narrow]" in default, test


def dry_run(target: str) -> str:
    """What ``make -n TARGET`` would run in the repository."""
    return subprocess.run(["make", "-n", target], cwd=ROOT, env=clean_env(), capture_output=True, text=True,
                          check=True).stdout


def pytest_arguments(target: str) -> list[str]:
    """The arguments make TARGET gives pytest (without PYTEST_ARGS), split as the shell would."""
    line = next(line for line in dry_run(target).splitlines() if "-m pytest" in line)
    return shlex.split(line.split("-m pytest", 1)[1])


def clean_env() -> dict[str, str]:
    """This process's environment without its virtual environment, as a fresh shell has it (and
    without an enclosing make's variables: ``make test PYTEST_ARGS=...`` would reach the clone's
    make through MAKEFLAGS and override what a test sets)."""
    outer = ("VIRTUAL_ENV", "PYTHONPATH", "PYTEST_ADDOPTS", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")
    env = {k: v for k, v in os.environ.items() if k not in outer}
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


# ---- every README command, in order ------------------------------------------------------------

TAGS = ("until Ctrl-C", "needs", "downloads", "minutes")
READY = ("serving on", "open http")  # what a command that runs until Ctrl-C prints once it is up


def readme_blocks() -> list[list[tuple[str, str]]]:
    """Per sh block after the first, in order: (command, its comment) for every line; lines
    continued with a backslash are joined."""
    text = (ROOT / "README.md").read_text()
    found = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S)[1:]:
        commands = []
        for line in block.replace("\\\n", " ").splitlines():
            command, _, comment = line.partition(" #")
            if command.strip():
                commands.append((" ".join(command.split()), comment.strip()))
        found.append(commands)
    return found


def test_the_readme_commands_cover_the_parser() -> None:
    """Every command the parser has is in the README's command table, and nothing else is."""
    from pedsam.stream.cli.main import COMMANDS

    text = (ROOT / "README.md").read_text()
    table = text[text.index("| command | what it does |"):]
    table = table[: table.index("\n\n")]
    documented = re.findall(r"^\| `([a-z-]+)` \| (.+?) \|$", table, re.M)
    assert [name for name, _ in documented] == [c.name for c in COMMANDS]
    for (name, words), command in zip(documented, COMMANDS):
        assert words == command.help, name


def _check_without_running(command: str, cwd: Path) -> None:
    """A command the walk does not run: its flags must parse, and the files it names must exist
    or be made by the commands it depends on."""
    from pedsam.stream.cli.main import parse

    argv = shlex.split(command)
    if argv[0] == "pedsam":
        parse(argv[1:])  # raises SystemExit on a flag the command does not take
    elif argv[0] == "make":  # the target exists
        subprocess.run(["make", "-n", *argv[1:]], cwd=cwd, env=clean_env(), capture_output=True, check=True)
    else:
        script = next(a for a in argv if a.endswith(".py"))
        assert (cwd / script).is_file(), script


@pytest.mark.timeout(900)
def test_every_readme_command_runs_as_written_in_order(tmp_path: Path) -> None:
    """On a clone of the repository, with this environment as its .venv, every command of the
    README after the set-up block: run as written in order, or, when its comment says it needs
    what a test machine lacks or takes minutes, checked without running."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    (clone / ".venv").symlink_to(Path(sys.executable).parent.parent)
    env = clean_env()
    env["PATH"] = f"{clone / '.venv' / 'bin'}{os.pathsep}{env['PATH']}"
    stopped: list[subprocess.Popen[str]] = []
    ran = checked = 0
    for block in readme_blocks():
        background: list[subprocess.Popen[str]] = []  # servers started in this block, stopped at its end
        try:
            ran, checked = _walk(block, clone, env, background, ran, checked)
        finally:
            for process in background:
                process.send_signal(2)  # Ctrl-C
                process.wait(60)
            stopped += background
    assert all(process.returncode == 0 for process in stopped), [(p.args, p.returncode) for p in stopped]
    assert ran >= 12 and checked >= 8  # the walk really went through the README


def _walk(
    block: list[tuple[str, str]], clone: Path, env: dict[str, str], background: list[subprocess.Popen[str]],
    ran: int, checked: int,
) -> tuple[int, int]:
    """Run or check one block's commands; servers it starts go into ``background``."""
    for command, comment in block:
        if comment.startswith(("needs", "downloads", "minutes")):
            _check_without_running(command, clone)
            checked += 1
        elif comment.startswith("until Ctrl-C"):
            process = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=clone, env=env, text=True,
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            background.append(process)
            assert process.stdout is not None
            seen: list[str] = []
            while not any(word in line for line in seen[-1:] for word in READY):
                seen.append(process.stdout.readline())
                assert seen[-1], (command, "ended before it was ready", seen)
            ran += 1
        else:
            started = time.perf_counter()
            done = subprocess.run(["bash", "-c", command], cwd=clone, env=env, capture_output=True, text=True,
                                  timeout=300)
            assert done.returncode == 0, (command, done.stdout[-1500:], done.stderr[-1500:])
            print(f"{time.perf_counter() - started:6.1f} s  {command}")  # with -s: where the walk's time goes
            ran += 1
    return ran, checked
