"""The wheel: it carries every module and data file, installs one import name, and works beside
other packages called ``stream``, ``workers``, ``protos`` or ``partitioner`` (as a container's
non-editable ``pip install .`` gets it, not the editable install of a checkout)."""

from __future__ import annotations

import shutil
import site
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from tests.support import ROOT, scene

PACKAGES = ("partitioner", "workers", "stream", "protos")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Built from a clean copy: a build/ folder left in the checkout would hide a missing package.
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "src"
    junk = shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "out", "__pycache__", ".mypy_cache", ".hypothesis")
    shutil.copytree(ROOT, source, ignore=lambda folder, names: {
        *junk(folder, names), *(["media"] if Path(folder).name == "samples" else [])})
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp), str(source)],
        check=True, capture_output=True, timeout=300,
    )
    [built] = tmp.glob("pedsam-*.whl")
    return built


def test_wheel_holds_every_module_and_data_file_under_one_name(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    wanted = {
        "pedsam/" + str(path.relative_to(ROOT))
        for package in PACKAGES
        for path in (ROOT / package).rglob("*")
        if path.is_file() and path.suffix in {".py", ".pyi", ".proto", ".html", ".js", ".typed", ".pth"}
        and "__pycache__" not in path.parts
    }
    assert "pedsam/stream/privacy/report.py" in wanted and "pedsam/stream/web/index.html" in wanted
    assert "pedsam/workers/trained/pedsam-mini.pth" in wanted
    assert sorted(wanted - names) == []
    # One import name: everything under pedsam/, beside the wheel's own metadata.
    assert {name.split("/")[0] for name in names} == {"pedsam", wheel.name.split("-")[0] + "-0.1.0.dist-info"}


def test_the_installed_wheel_runs_beside_decoy_packages(wheel: Path, tmp_path: Path) -> None:
    """A fresh environment (reusing this one's dependencies, not its pedsam) gets the wheel; from
    a folder holding packages named like pedsam's four parts, each of which fails when imported,
    ``pedsam embed`` with local workers computes the predictor's embedding."""
    env_dir = tmp_path / "env"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    [target] = (env_dir / "lib").glob("python3*/site-packages")
    # Dependencies from this environment; a .pth line adds a folder without running its .pth files,
    # so this checkout's editable pedsam stays out.
    (target / "deps.pth").write_text("".join(f"{p}\n" for p in site.getsitepackages()))
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--ignore-installed", "--no-compile",
         "--target", str(target), str(wheel)],
        check=True, capture_output=True, timeout=300,
    )
    work = tmp_path / "work"
    for name in PACKAGES:
        (work / name).mkdir(parents=True)
        (work / name / "__init__.py").write_text(f"raise ImportError('decoy {name} was imported')\n")
    PIL.Image.fromarray(scene(96, 128, seed=5)).save(work / "photo.png")
    done = subprocess.run(
        [str(env_dir / "bin" / "python"), "-m", "pedsam.stream", "embed", "photo.png", "--local-workers", "2",
         "--save", "emb.npy"],
        cwd=work, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "decoy" not in done.stderr
    where = subprocess.run(
        [str(env_dir / "bin" / "python"), "-c", "import pedsam.stream.cli.main as m; print(m.__file__)"],
        cwd=work, capture_output=True, text=True, timeout=60, check=True,
    ).stdout.strip()
    assert where.startswith(str(target))  # the wheel's copy, not this checkout's
    from segment_anything import SamPredictor

    from pedsam.workers.models import build_sam

    # No --model: the default, pedsam-mini, from the weights inside the wheel.
    predictor = SamPredictor(build_sam("mini"))
    predictor.set_image(scene(96, 128, seed=5))
    want = predictor.features.numpy()
    got = np.load(work / "emb.npy")
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
