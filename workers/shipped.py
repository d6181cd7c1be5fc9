"""Weights pedsam trains itself and ships inside the package: pedsam-mini.

``samples/train_mini.py`` writes them (see its docstring and the README's model card); the file
lives in ``pedsam/workers/trained/`` of an installed pedsam. A preset with shipped weights (its
``shipped`` field) uses them whenever no ``--checkpoint`` is given. Before the file is used its
size and SHA-256 are checked against the values below, once per process: a damaged or replaced
file is refused with a :class:`~pedsam.workers.errors.CheckpointError`, never loaded quietly.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

from pedsam.workers.errors import CheckpointError, ModelError

__all__ = ["SHIPPED", "ShippedWeights", "checked", "shipped_path"]

FOLDER = Path(__file__).resolve().parent / "trained"


@dataclass(frozen=True, kw_only=True, slots=True)
class ShippedWeights:
    """One file of :data:`FOLDER`: what it must be, and where it came from."""

    preset: str
    file_name: str
    size: int  # bytes
    sha256: str
    commit: str  # the commit of the training code that wrote it
    command: str
    folder: Path = FOLDER

    @property
    def path(self) -> Path:
        return self.folder / self.file_name


SHIPPED: dict[str, ShippedWeights] = {
    "mini": ShippedWeights(
        preset="mini",
        file_name="pedsam-mini.pth",
        size=4454355,
        sha256="0f5135a9e9d357278adba27233e5988aea9d22f35522cecce91019eb6d2699e0",
        commit="686621e",
        command="python samples/fetch_media.py --photos && python samples/train_mini.py",
    ),
}


def shipped_path(preset: str) -> Path:
    """The checked file of ``preset``'s shipped weights.

    Raises:
        ModelError: the preset ships no weights.
        CheckpointError: the file is missing, or its size or SHA-256 is not the one pedsam
            was released with.
    """
    entry = SHIPPED.get(preset)
    if entry is None:
        raise ModelError(f"preset {preset!r} ships no weights; presets with shipped weights: {', '.join(SHIPPED)}")
    return checked(entry)


@functools.cache
def checked(entry: ShippedWeights) -> Path:
    """``entry``'s file once its size and SHA-256 match (checked once per process and entry)."""
    path = entry.path
    reinstall = "reinstall pedsam, or give --checkpoint"
    if not path.is_file():
        raise CheckpointError(f"{entry.preset}'s shipped weights {str(path)!r} are missing; {reinstall}")
    size = path.stat().st_size
    if size != entry.size:
        raise CheckpointError(f"{entry.preset}'s shipped weights {str(path)!r} have {size} bytes, "
                              f"expected {entry.size}; {reinstall}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != entry.sha256:
        raise CheckpointError(f"{entry.preset}'s shipped weights {str(path)!r} have SHA-256 {digest[:16]}..., "
                              f"expected {entry.sha256[:16]}...; {reinstall}")
    return path
