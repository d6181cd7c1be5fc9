"""The official SAM checkpoints: what is known of them, verifying a local file, downloading one.

pedsam never fetches weights on its own; a user runs ``pedsam weights download`` or puts a file
in place and passes ``--checkpoint PATH``. What is known of each official file, its size in
bytes and its MD5, is what several independent public model registries agree on; no hash here
is computed by pedsam from a file it has never had. Verification checks, in order of cost: the
size, the state dict's structure against the preset's architecture (every key and shape), and
the MD5.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pedsam.workers.errors import CheckpointError, ModelError
from pedsam.workers.presets import get_preset

__all__ = ["DEFAULT_DIR", "OFFICIAL", "Check", "OfficialCheckpoint", "cache_dir", "cached", "download", "official_for",
           "verify"]

DEFAULT_DIR = "checkpoints"


def cache_dir() -> Path:
    """pedsam's checkpoint cache: ``$XDG_CACHE_HOME/pedsam/checkpoints`` (default ``~/.cache``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pedsam" / "checkpoints"


def cached(name: str, folder: Path | None = None) -> Path | None:
    """Preset ``name``'s official checkpoint in the cache, when it is there whole (its official
    size: :func:`download` keeps a file only after its MD5 matched), else None."""
    entry = OFFICIAL.get(name)
    if entry is None:
        return None
    path = (folder or cache_dir()) / entry.file_name
    return path if path.is_file() and path.stat().st_size == entry.size else None

BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything/"


@dataclass(frozen=True, kw_only=True, slots=True)
class OfficialCheckpoint:
    """One of Meta's released SAM checkpoints."""

    preset: str
    file_name: str
    size: int  # bytes
    md5: str

    @property
    def url(self) -> str:
        return BASE_URL + self.file_name


OFFICIAL: dict[str, OfficialCheckpoint] = {
    entry.preset: entry
    for entry in (
        OfficialCheckpoint(preset="vit_b", file_name="sam_vit_b_01ec64.pth", size=375_042_383,
                           md5="01ec64d29a2fca3f0661936605ae66f8"),
        OfficialCheckpoint(preset="vit_l", file_name="sam_vit_l_0b3195.pth", size=1_249_524_607,
                           md5="0b3195507c641ddb6910d2bb5adee89c"),
        OfficialCheckpoint(preset="vit_h", file_name="sam_vit_h_4b8939.pth", size=2_564_550_879,
                           md5="4b8939a88964f0f4ff5f5b2642c598a6"),
    )
}


def official_for(name: str) -> OfficialCheckpoint:
    """The official checkpoint of preset ``name``; :class:`ModelError` for any other preset."""
    try:
        return OFFICIAL[name]
    except KeyError:
        raise ModelError(
            f"no official checkpoint for {name!r}; official ones exist for {', '.join(OFFICIAL)}"
        ) from None


@dataclass(frozen=True, slots=True)
class Check:
    """One verification step: ``ok`` is None when the step could not apply (nothing to compare)."""

    name: str
    ok: bool | None
    detail: str


def _md5(path: Path, chunk: int = 8 << 20) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as file:
        while block := file.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify(path: str | os.PathLike[str], preset: str | None = None) -> list[Check]:
    """Check a local checkpoint file; returns the steps in the order they ran.

    Args:
        path: the ``.pth`` file.
        preset: the architecture it should fit; default: the preset whose official file name
            it carries.

    Raises:
        CheckpointError: the file does not exist, or no preset is given and its name is not
            an official one.
    """
    file = Path(path)
    if not file.is_file():
        raise CheckpointError(f"checkpoint {str(file)!r} does not exist or is not a file")
    official = next((o for o in OFFICIAL.values() if o.file_name == file.name), None)
    if preset is None:
        if official is None:
            raise CheckpointError(
                f"{file.name} is not an official checkpoint name; say which architecture it is "
                f"with --model ({', '.join(OFFICIAL)}, or tiny)"
            )
        preset = official.preset
    get_preset(preset)
    # A renamed copy of a release is still compared with that release.
    reference = official or OFFICIAL.get(preset)
    checks: list[Check] = []
    size = file.stat().st_size
    if reference is None:
        checks.append(Check("size", None, f"{size} bytes; {preset} has no official release to compare with"))
    else:
        same = size == reference.size
        checks.append(Check("size", same, f"{size} bytes, official {reference.file_name} is {reference.size}"))
    from pedsam.workers.models import build_sam, load_checkpoint  # torch: only for this step

    try:
        load_checkpoint(build_sam(preset, shipped=False), file, preset_name=preset)
        checks.append(Check("structure", True, f"every tensor of the {preset} architecture, with its shape"))
    except CheckpointError as exc:
        checks.append(Check("structure", False, str(exc)))
    if reference is None:
        checks.append(Check("md5", None, "no published hash for this architecture"))
    elif not checks[0].ok:
        checks.append(Check("md5", None, "not computed: the size already differs from the official file"))
    else:
        digest = _md5(file)
        checks.append(Check("md5", digest == reference.md5, f"{digest}, official {reference.md5}"))
    return checks


Progress = Callable[[int, int | None], None]


def download(
    name: str,
    directory: str | os.PathLike[str],
    *,
    url: str | None = None,
    timeout: float = 15.0,
    progress: Progress | None = None,
) -> Path:
    """Download preset ``name``'s official checkpoint into ``directory`` and check its MD5.

    The file is written as ``<name>.part`` and renamed only once size and MD5 match, so a
    failed or tampered download never leaves a file that looks complete.

    Args:
        url: a mirror to fetch from instead of Meta's address.
        timeout: seconds to wait for the connection and for each read.
        progress: called with (bytes so far, total bytes or None) as data arrives.

    Raises:
        CheckpointError: no network, an HTTP error, or a file that is not the official one;
            the message says where to put the file by hand.
    """
    entry = official_for(name)
    folder = Path(directory)
    target = folder / entry.file_name
    source = url or entry.url
    by_hand = f"download {entry.url} yourself and put it at {target}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CheckpointError(f"cannot create {str(folder)!r}: {exc.strerror}") from None
    partial = target.with_name(target.name + ".part")
    digest = hashlib.md5(usedforsecurity=False)
    received = 0
    try:
        with urllib.request.urlopen(source, timeout=timeout) as response, partial.open("wb") as out:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            while block := response.read(1 << 20):
                out.write(block)
                digest.update(block)
                received += len(block)
                if progress is not None:
                    progress(received, total)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        partial.unlink(missing_ok=True)
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
        raise CheckpointError(f"cannot download {source} ({reason}); {by_hand}") from None
    if received != entry.size or digest.hexdigest() != entry.md5:
        partial.unlink(missing_ok=True)
        raise CheckpointError(
            f"{source} sent {received} bytes with MD5 {digest.hexdigest()}, not the official "
            f"{entry.size} bytes with MD5 {entry.md5}; nothing was kept; {by_hand}"
        )
    partial.replace(target)
    return target
