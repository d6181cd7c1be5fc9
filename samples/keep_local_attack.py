"""Does ``--keep-local faces`` hold against a face detector stronger than the edge's own?

    pip install 'pedsam[attack]'   # dlib and its CNN face detector's weights (make test installs them)
    python samples/keep_local_attack.py samples/media/Megamind.avi [--stride 4] [--max-frames 200]

The attacker is dlib's MMOD CNN face detector (:class:`pedsam.stream.privacy.detection.CnnFaces`:
a convolutional network trained on faces in many poses, not the edge's frontal Haar cascade),
with the image doubled first (``--upsample 1``) so that faces down to about 40 px are found. A
worker whose view is black wherever a reference face is gets no detector run (it cannot match).

For each clip and each setting (``--keep-local`` none, faces, faces,people), every frame goes
through pedsam's own scheduler (:class:`~pedsam.stream.core.scheduling.EdgeScheduler`: the
default adaptive rotation, interleaved scheme, budgets and, with keep-local, the edge's tracker)
for three workers on the ViT-B grid; no model runs. What a worker received is taken as the exact
pixels of its windows, the rest black: an upper bound on what token inversion gives it (first-
segment tokens are linear in the pixels; the README's inversion recovers 33-47 dB). On every
``--stride``-th frame the CNN looks for faces in the whole frame (the reference)
and in each worker's view. Printed per setting: reference faces, the worst worker's face recall
over the run (faces it found matching a reference face with IoU >= 0.5, over all reference
faces), the worst worker's recall counted by visible part (a face found whose box overlaps a
reference face's by at least half of the found box: a half face counts), and the edge share of
picture windows.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from pedsam.stream.core.motion import input_scale
from pedsam.stream.core.scheduling import EdgeScheduler, RotationSettings
from pedsam.stream.core.sensitive import KeepLocal
from pedsam.stream.media.video import read_frames
from pedsam.stream.errors import ConfigError
from pedsam.stream.privacy.detection import CnnFaces, matched
from pedsam.workers.presets import get_preset

SERVERS = ("w0:1", "w1:1", "w2:1")
SETTINGS = ("none", "faces", "faces,people")

Box = tuple[int, int, int, int]  # XYWH


def view(image: np.ndarray, windows: Sequence[int], scheduler: EdgeScheduler) -> np.ndarray:
    """``image`` with only the pixels of ``windows`` kept (the rest black)."""
    preset = scheduler.preset
    grid = scheduler.scheduler.grid
    step = preset.patch_size / input_scale(image.shape[:2], preset.img_size)  # frame pixels per token
    out = np.zeros_like(image)
    for wid in windows:
        w = grid.window(wid)
        y0, y1 = int(round(w.top * step)), int(round((w.top + w.height) * step))
        x0, x1 = int(round(w.left * step)), int(round((w.left + w.width) * step))
        out[y0:y1, x0:x1] = image[y0:y1, x0:x1]
    return out


def by_visible_part(reference: Sequence[Box], found: Sequence[Box]) -> int:
    """Reference faces some found box covers by at least half of the found box's own area."""
    hits = 0
    for rx, ry, rw, rh in reference:
        for fx, fy, fw, fh in found:
            w = max(0, min(rx + rw, fx + fw) - max(rx, fx))
            h = max(0, min(ry + rh, fy + fh) - max(ry, fy))
            if fw * fh and w * h >= 0.5 * fw * fh:
                hits += 1
                break
    return hits


def attack(video: str, setting: str, faces: Callable[[np.ndarray], list[Box]], *, stride: int,
           max_frames: int, references: dict[int, list[Box]] | None = None) -> dict[str, object]:
    """One clip under one ``--keep-local`` setting. ``references``: the attacker's faces on whole
    frames by frame index, filled on first use, so that the settings of a clip share them."""
    references = {} if references is None else references
    scheduler = EdgeScheduler.build(RotationSettings(), get_preset("vit_b"), SERVERS, scheme="interleaved",
                                    secret=None, allow_single=False, keep_local=KeepLocal.parse(setting))
    reference = 0
    found = {name: 0 for name in SERVERS}
    visible = {name: 0 for name in SERVERS}
    for frame in read_frames(video):
        if frame.index >= max_frames:
            break
        image = frame.image
        scheduled = scheduler.schedule(frame.index, image, image.shape[:2])
        if frame.index % stride:
            continue
        if frame.index not in references:
            references[frame.index] = faces(image)
        truth = references[frame.index]
        reference += len(truth)
        if not truth:
            continue
        for name in SERVERS:
            shown = view(image, scheduled.assignment.shares.get(name, ()), scheduler)
            if not any(shown[max(y, 0) : y + h, max(x, 0) : x + w].any() for x, y, w, h in truth):
                continue  # black wherever a reference face is: nothing there to find
            seen = faces(shown)
            found[name] += matched(truth, seen)
            visible[name] += by_visible_part(truth, seen)
    summary = scheduler.summary()
    worst = max(found, key=lambda n: found[n])
    return {
        "video": Path(video).name, "keep_local": setting, "reference_faces": reference,
        "worst_recall": round(found[worst] / reference, 3) if reference else None,
        "worst_visible_recall": round(max(visible.values()) / reference, 3) if reference else None,
        "edge_share": summary["edge_share"], "kept_windows": summary["kept_windows"],
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("videos", nargs="+")
    parser.add_argument("--stride", type=int, default=4, help="attack every S-th frame (default 4)")
    parser.add_argument("--max-frames", type=int, default=200, help="frames per clip (default 200)")
    parser.add_argument("--upsample", type=int, default=1, choices=(0, 1, 2),
                        help="times the CNN doubles each picture first: it finds faces down to about 80 px at 0, "
                             "40 px at 1 (default 1; each doubling costs about 4 times the time)")
    args = parser.parse_args(argv)
    try:
        detector = CnnFaces(upsample=args.upsample)
    except ConfigError as exc:
        print(f"keep_local_attack: {exc}", file=sys.stderr)
        return 2
    for video in args.videos:
        references: dict[int, list[Box]] = {}
        for setting in SETTINGS:
            row = attack(video, setting, detector, stride=args.stride, max_frames=args.max_frames,
                         references=references)
            print(", ".join(f"{k} {v}" for k, v in row.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
