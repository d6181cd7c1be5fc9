"""The installable package carries every module and data file the commands need (as a
container's non-editable ``pip install .`` gets it, not the editable install of a checkout)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("partitioner", "workers", "stream", "protos")


def test_wheel_holds_every_module_and_data_file(tmp_path: Path) -> None:
    # Build from a clean copy: a build/ folder left in the checkout would hide a missing package.
    source = tmp_path / "src"
    junk = shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "out", "__pycache__", ".mypy_cache", ".hypothesis")
    shutil.copytree(ROOT, source, ignore=lambda folder, names: {
        *junk(folder, names), *(["media"] if Path(folder).name == "samples" else [])})
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(source)],
        check=True, capture_output=True, timeout=300,
    )
    [wheel] = tmp_path.glob("pedsam-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    wanted = {
        "pedsam/" + str(path.relative_to(ROOT))
        for package in PACKAGES
        for path in (ROOT / package).rglob("*")
        if path.is_file() and path.suffix in {".py", ".pyi", ".proto", ".html", ".js", ".typed"}
        and "__pycache__" not in path.parts
    }
    assert "pedsam/stream/privacy/report.py" in wanted and "pedsam/stream/web/index.html" in wanted
    assert sorted(wanted - names) == []
    # One import name: everything under pedsam/, beside the wheel's own metadata.
    assert {name.split("/")[0] for name in names} == {"pedsam", wheel.name.split("-")[0] + "-0.1.0.dist-info"}
