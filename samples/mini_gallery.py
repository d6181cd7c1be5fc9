"""pedsam-mini on real footage, where no truth exists: overlays chosen by a rule, not by hand.

    python samples/fetch_media.py                     # vtest.avi, tree.avi, Megamind.avi
    python samples/mini_gallery.py [VIDEO ...] [--out out/gallery] [--grid 4] [--top 4]

The rule, the same for every clip: the clip's middle frame; a GRID x GRID lattice of clicks at
the centres of equal cells; each click answered as pedsam answers a lone point (the best-scoring
of SAM's three candidates); of those masks, in order of the model's own predicted IoU, the first
``--top`` that overlap no mask kept before by more than half of the smaller one, drawn largest
first. One PNG per clip goes to ``--out`` with the frame beside its
overlay, banner included. The pictures are made here, from third-party clips: they stay in
``out/`` (git ignores it) and are never committed.

Exit status: 0 when every clip gave a picture, 1 with one line on stderr otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import PIL.Image

from pedsam.stream.core.prompts import ObjectPrompt
from pedsam.stream.media.overlay import draw_overlay
from pedsam.stream.media.video import read_frames
from pedsam.stream.mini.evaluate import LocalPipeline
from pedsam.workers.models import TRAINED_NOTICE, ModelSource

MEDIA = Path(__file__).resolve().parent / "media"
DEFAULT_VIDEOS = tuple(str(MEDIA / name) for name in ("vtest.avi", "tree.avi", "Megamind.avi"))


def middle_frame(path: str) -> np.ndarray:
    """The clip's middle frame (index ``count // 2``), ``(H, W, 3)`` uint8 RGB."""
    frames = [frame.image for frame in read_frames(path)]
    if not frames:
        raise ValueError(f"{path}: no frames")
    return frames[len(frames) // 2]


def keep(found: Sequence[tuple[np.ndarray, float]], top: int) -> list[np.ndarray]:
    """The rule's masks: higher scores first, none overlapping a kept one by more than half of
    the smaller, ``top`` at most; returned largest first."""
    kept: list[np.ndarray] = []
    for mask, _ in sorted(found, key=lambda pair: -pair[1]):
        if len(kept) == top or not mask.any():
            continue
        if all(np.logical_and(mask, other).sum() <= 0.5 * min(mask.sum(), other.sum()) for other in kept):
            kept.append(mask)
    return sorted(kept, key=lambda m: -int(m.sum()))


async def picture(model: LocalPipeline, image: np.ndarray, grid: int, top: int) -> np.ndarray:
    height, width = image.shape[:2]
    clicks = [ObjectPrompt(points=(((i + 0.5) * width / grid, (j + 0.5) * height / grid),), labels=(1,))
              for j in range(grid) for i in range(grid)]
    answers = await model.segment(image, clicks)
    masks = keep([(a.mask, a.score) for a in answers], top)
    overlay = draw_overlay(image, masks, banner=TRAINED_NOTICE if model.source.shipped_weights else None)
    return np.concatenate([image, overlay], axis=1)


async def run(videos: Sequence[str], out: Path, grid: int, top: int) -> int:
    out.mkdir(parents=True, exist_ok=True)
    with LocalPipeline(ModelSource(preset="mini")) as model:
        for video in videos:
            try:
                image = middle_frame(video)
            except Exception as exc:  # a missing or unreadable clip: say which, go on
                print(f"mini_gallery: error: {video}: {exc}", file=sys.stderr)
                return 1
            target = out / (Path(video).stem + ".png")
            PIL.Image.fromarray(await picture(model, image, grid, top)).save(target)
            print(target)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mini_gallery.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("videos", nargs="*", default=list(DEFAULT_VIDEOS),
                        help="clips (default: vtest.avi, tree.avi and Megamind.avi in samples/media)")
    parser.add_argument("--out", type=Path, default=Path("out/gallery"), help="folder (default out/gallery)")
    parser.add_argument("--grid", type=int, default=4, help="clicks per row and column (default 4)")
    parser.add_argument("--top", type=int, default=4, help="masks drawn at most (default 4)")
    args = parser.parse_args(argv)
    if args.grid < 1 or args.top < 1:
        parser.error("--grid and --top must be at least 1")
    return asyncio.run(run(args.videos, args.out, args.grid, args.top))


if __name__ == "__main__":
    sys.exit(main())
