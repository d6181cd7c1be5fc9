"""Fetch real test media from Debian packages into ``samples/media/``.

    python samples/fetch_media.py [--dest samples/media] [--labelme] [--photos] [NAME ...]

Names default to ``vtest.avi`` (768x576, 795 frames, fixed camera, pedestrians), ``tree.avi``
(320x240, 68 frames, handheld camera) and ``Megamind.avi`` (720x528, 270 frames, moving camera
and cuts, faces). Debian's opencv-doc 4.6 ships no ``box.mp4`` or ``cup.mp4``. The script runs ``apt-get download opencv-doc`` in a
temporary folder (Debian's package archive is the only network it touches), then extracts
just the named files from the ``.deb`` with ``dpkg-deb --fsys-tarfile | tar -x`` and moves them
into the destination. Files already there are kept. ``samples/media/`` is ignored by git: the
videos are third-party media and are never committed.

``--labelme`` also fetches Debian's ``labelme-examples`` video annotation: five consecutive real
frames (1000x563 JPEG, a street with a truck driving past) with hand-drawn polygon masks (labelme
JSON), into ``labelme-video/`` of the destination; ``pedsam bench-propagation`` measures mask
propagation on them. Without NAMEs, ``--labelme`` fetches only those.

``--photos`` fetches opencv-doc's example photos (``examples/data/*.jpg`` and ``*.png``) into
``photos/`` of the destination: the textures pedsam-mini is trained on (``samples/train_mini.py``).

Exit status: 0 when every named file is in the destination, 1 otherwise (one line saying why).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

DEFAULT_NAMES = ("vtest.avi", "tree.avi", "Megamind.avi")
DEFAULT_DEST = Path(__file__).resolve().parent / "media"
LABELME_FOLDER = "labelme-video"
LABELME_SOURCE = "video_annotation/data_annotated"  # inside the package's examples/
LABELME_FRAMES = 5
PHOTOS_FOLDER = "photos"
PHOTO_SUFFIXES = (".jpg", ".png")


class FetchError(Exception):
    """A step of the fetch failed; ``str()`` is one readable line."""


def _run(command: Sequence[str], cwd: Path, *, stdout: int | None = subprocess.DEVNULL) -> bytes:
    try:
        done = subprocess.run(list(command), cwd=cwd, stdout=stdout, stderr=subprocess.PIPE, check=False)
    except FileNotFoundError:
        raise FetchError(f"{command[0]} is not installed; this script needs a Debian system (apt-get, dpkg-deb)") from None
    if done.returncode != 0:
        reason = done.stderr.decode(errors="replace").strip().splitlines()
        raise FetchError(f"{' '.join(command)} failed: {reason[-1] if reason else f'exit {done.returncode}'}")
    return done.stdout or b""


def _package(package: str, work: Path) -> tuple[bytes, list[str]]:
    """``apt-get download`` a package into ``work``: its data tarball and its member paths."""
    _run(["apt-get", "download", package], work)
    debs = sorted(work.glob(f"{package}_*.deb"))
    if not debs:
        raise FetchError(f"apt-get download {package} produced no .deb; run apt-get update first")
    listing = _run(["dpkg-deb", "--fsys-tarfile", str(debs[0])], work, stdout=subprocess.PIPE)
    return listing, _members(listing, work)


def _extract(listing: bytes, members: Sequence[str], work: Path) -> None:
    tar = subprocess.run(["tar", "-x", "-C", str(work), *members], input=listing,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    if tar.returncode != 0:
        raise FetchError(f"tar -x failed: {tar.stderr.decode(errors='replace').strip()}")


def fetch(names: Sequence[str] = DEFAULT_NAMES, dest: Path = DEFAULT_DEST) -> list[Path]:
    """Make sure each of ``names`` is in ``dest``; returns their paths, in order.

    Raises:
        FetchError: apt-get or dpkg-deb is missing or fails, or a name is not in the package.
    """
    dest.mkdir(parents=True, exist_ok=True)
    missing = [name for name in names if not (dest / name).is_file()]
    if missing:
        with tempfile.TemporaryDirectory(prefix="pedsam-media-") as tmp:
            work = Path(tmp)
            listing, members = _package("opencv-doc", work)
            wanted = []
            for name in missing:
                matches = [m for m in members if m.rsplit("/", 1)[-1] == name]
                if not matches:
                    raise FetchError(f"{name} is not in the opencv-doc package; "
                                     f"videos there: {', '.join(_videos(members))}")
                wanted.append(min(matches, key=len))
            _extract(listing, wanted, work)
            for name, member in zip(missing, wanted):
                shutil.move(str(work / member), dest / name)
    return [dest / name for name in names]


def fetch_labelme(dest: Path = DEFAULT_DEST) -> Path:
    """Make sure ``dest/labelme-video/`` holds labelme's annotated video frames (``*.jpg`` and
    their ``*.json``); returns that folder.

    Raises:
        FetchError: apt-get or dpkg-deb is missing or fails, or the package lacks the frames.
    """
    folder = dest / LABELME_FOLDER
    if len(list(folder.glob("*.json"))) >= LABELME_FRAMES:
        return folder
    with tempfile.TemporaryDirectory(prefix="pedsam-media-") as tmp:
        work = Path(tmp)
        listing, members = _package("labelme-examples", work)
        wanted = [m for m in members if f"/{LABELME_SOURCE}/" in m and m.endswith((".jpg", ".json"))]
        if len([m for m in wanted if m.endswith(".json")]) < LABELME_FRAMES:
            raise FetchError(f"labelme-examples has no {LABELME_SOURCE}/ with {LABELME_FRAMES} annotated frames")
        _extract(listing, wanted, work)
        folder.mkdir(parents=True, exist_ok=True)
        for member in wanted:
            shutil.move(str(work / member), folder / member.rsplit("/", 1)[-1])
    return folder


def fetch_photos(dest: Path = DEFAULT_DEST) -> Path:
    """Make sure ``dest/photos/`` holds opencv-doc's example photos (every ``.jpg`` and ``.png``
    of its ``examples/data/``, about 90 files); returns that folder. pedsam-mini's training cuts
    its textures and backgrounds from them.

    Raises:
        FetchError: apt-get or dpkg-deb is missing or fails, or the package has no photos.
    """
    folder = dest / PHOTOS_FOLDER
    if folder.is_dir() and any(folder.iterdir()):
        return folder
    with tempfile.TemporaryDirectory(prefix="pedsam-media-") as tmp:
        work = Path(tmp)
        listing, members = _package("opencv-doc", work)
        wanted = [m for m in members if "/examples/data/" in m and m.count("/examples/data/") == 1
                  and "/" not in m.split("/examples/data/", 1)[1] and m.lower().endswith(PHOTO_SUFFIXES)]
        if not wanted:
            raise FetchError("opencv-doc has no photos in examples/data/")
        _extract(listing, wanted, work)
        folder.mkdir(parents=True, exist_ok=True)
        for member in wanted:
            shutil.move(str(work / member), folder / member.rsplit("/", 1)[-1])
    return folder


def _members(tarball: bytes, work: Path) -> list[str]:
    done = subprocess.run(["tar", "-t"], input=tarball, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          cwd=work, check=False)
    if done.returncode != 0:
        raise FetchError(f"tar -t failed: {done.stderr.decode(errors='replace').strip()}")
    return [line for line in done.stdout.decode().splitlines() if not line.endswith("/")]


def _videos(members: Sequence[str]) -> list[str]:
    return sorted({m.rsplit("/", 1)[-1] for m in members if m.endswith((".avi", ".mp4"))})


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="files to fetch (default: vtest.avi tree.avi Megamind.avi)")
    parser.add_argument("--dest", type=Path, default=DEFAULT_DEST, help="folder to put them in (default samples/media)")
    parser.add_argument("--labelme", action="store_true",
                        help="also fetch labelme-examples' annotated video frames into DEST/labelme-video")
    parser.add_argument("--photos", action="store_true",
                        help="also fetch opencv-doc's example photos into DEST/photos (pedsam-mini's training textures)")
    args = parser.parse_args(argv)
    names = args.names or ([] if args.labelme or args.photos else list(DEFAULT_NAMES))
    try:
        paths = fetch(names, args.dest) if names else []
        if args.labelme:
            folder = fetch_labelme(args.dest)
            paths += sorted(folder.iterdir())
        if args.photos:
            paths += sorted(fetch_photos(args.dest).iterdir())
    except FetchError as exc:
        print(f"fetch_media: error: {exc}", file=sys.stderr)
        return 1
    for path in paths:
        print(f"{path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
