"""A small synthetic video with known moving objects, and its ground truth.

The edge's stand-in for real footage: ``pedsam demo`` and the tests make their clips here, and
``samples/make_clip.py`` is its command line::

    python samples/make_clip.py OUT.mp4 [--frames N] [--size WxH] [--fps F] [--seed S]
                                        [--truth TRUTH.json]

The clip is deterministic for given arguments: a static textured background (a soft
grey gradient plus seeded sinusoidal texture) and two solid objects that never overlap:

- object 0, ``"disc"``: a red disc moving left to right across the upper third;
- object 1, ``"rectangle"``: a yellow rectangle moving diagonally (right and down) in the
  lower half.

Frames are encoded with PyAV as H.264 (libx264, yuv420p, crf 18) with frame ``i`` at
``pts = i`` in a time base of ``1 / fps``, so readers see exactly ``frames`` frames at
``fps``. :func:`make_clip` returns a :class:`ClipTruth` with, per object and frame, the
exact centre and bounding box of the shape as drawn (before encoding). Coordinates are
pixel indices: ``x`` is the column, ``y`` the row, ``(0, 0)`` the top-left pixel.
"""

from __future__ import annotations

import argparse
import dataclasses
import fractions
import json
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import PIL.Image

_DISC_RGB = (220, 30, 30)
_RECT_RGB = (245, 215, 35)


@dataclass(frozen=True, slots=True)
class ObjectTruth:
    """Where one object is in every frame.

    Attributes:
        name: ``"disc"`` or ``"rectangle"`` (also the shape).
        colour: fill colour, RGB uint8 values.
        half_size: ``(half_width, half_height)`` in pixels; a disc's radius twice.
        centres: per frame, the shape's centre ``(x, y)`` in pixels (floats).
        boxes: per frame, the bounding box of the drawn pixels, XYXY pixel indices with
            inclusive maxima (as SAM's ``batched_mask_to_box``).
    """

    name: str
    colour: tuple[int, int, int]
    half_size: tuple[float, float]
    centres: tuple[tuple[float, float], ...]
    boxes: tuple[tuple[int, int, int, int], ...]


@dataclass(frozen=True, slots=True)
class ClipTruth:
    """Ground truth of a clip written by :func:`make_clip`.

    Attributes:
        path: the video file written.
        width, height: frame size in pixels.
        fps: frames per second.
        frame_count: number of frames in the file.
        objects: one entry per object, object 0 first.
    """

    path: str
    width: int
    height: int
    fps: fractions.Fraction
    frame_count: int
    objects: tuple[ObjectTruth, ...]

    def mask(self, obj: int, frame: int) -> np.ndarray:
        """The pixels of object ``obj`` in frame ``frame``: ``(height, width)`` bool."""
        truth = self.objects[obj]
        centre = truth.centres[frame]
        return _shape_mask(truth.name, centre, truth.half_size, self.width, self.height)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; ``fps`` becomes a string such as ``"12"`` or ``"30000/1001"``."""
        data = dataclasses.asdict(self)
        data["fps"] = str(self.fps)
        return data


def make_clip(
    path: str | os.PathLike[str],
    *,
    frames: int = 24,
    width: int = 320,
    height: int = 240,
    fps: int | fractions.Fraction = 12,
    seed: int = 0,
) -> ClipTruth:
    """Write the synthetic clip to ``path`` (container from the extension) and return its truth.

    Args:
        frames: number of frames, at least 1.
        width, height: frame size in pixels; even (yuv420p) and at least 32.
        fps: frames per second, positive.
        seed: seeds the background texture only; object paths depend on size and frames.

    Raises:
        ValueError: an argument out of range.
    """
    rate = fractions.Fraction(fps)
    if frames < 1:
        raise ValueError(f"frames must be at least 1, got {frames}")
    if width < 32 or height < 32 or width % 2 or height % 2:
        raise ValueError(f"size must be even and at least 32x32, got {width}x{height}")
    if rate <= 0:
        raise ValueError(f"fps must be positive, got {fps}")

    short = min(width, height)
    radius = 0.12 * short
    rect_half = (0.10 * width, 0.08 * height)
    w, h = float(width), float(height)
    specs = [  # name, colour, half size, start centre, end centre
        ("disc", _DISC_RGB, (radius, radius), (0.15 * w, 0.30 * h), (0.85 * w, 0.30 * h)),
        ("rectangle", _RECT_RGB, rect_half, (0.25 * w, 0.60 * h), (0.75 * w, 0.78 * h)),
    ]
    background = _background(width, height, seed)
    centres: list[list[tuple[float, float]]] = [[] for _ in specs]
    boxes: list[list[tuple[int, int, int, int]]] = [[] for _ in specs]

    with av.open(os.fspath(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=rate, options={"crf": "18"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = 1 / rate
        for i in range(frames):
            t = i / (frames - 1) if frames > 1 else 0.0
            image = background.copy()
            for k, (name, colour, half, start, end) in enumerate(specs):
                centre = (start[0] + t * (end[0] - start[0]), start[1] + t * (end[1] - start[1]))
                mask = _shape_mask(name, centre, half, width, height)
                image[mask] = colour
                rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
                centres[k].append(centre)
                boxes[k].append((int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])))
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = i, 1 / rate
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))

    objects = tuple(
        ObjectTruth(name, colour, half, tuple(centres[k]), tuple(boxes[k]))
        for k, (name, colour, half, _, _) in enumerate(specs)
    )
    return ClipTruth(os.fspath(path), width, height, rate, frames, objects)


def _shape_mask(
    name: str, centre: tuple[float, float], half: tuple[float, float], width: int, height: int
) -> np.ndarray:
    """``(height, width)`` bool mask of a disc or axis-aligned rectangle."""
    ys, xs = np.mgrid[0:height, 0:width]
    dx, dy = xs - centre[0], ys - centre[1]
    if name == "disc":
        return np.asarray(dx * dx + dy * dy <= half[0] * half[0])
    return np.asarray((np.abs(dx) <= half[0]) & (np.abs(dy) <= half[1]))


def _background(width: int, height: int, seed: int) -> np.ndarray:
    """``(height, width, 3)`` uint8 RGB: grey gradient plus seeded low-frequency texture.

    Values stay within about 60..170 and nearly grey, well apart from the objects'
    saturated colours.
    """
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    base = 80.0 + 50.0 * xs / width + 20.0 * ys / height
    texture = np.zeros((height, width))
    for _ in range(6):
        fx, fy = rng.uniform(1.0, 8.0, size=2)
        phase = rng.uniform(0.0, 2.0 * math.pi)
        texture += np.sin(2.0 * math.pi * (fx * xs / width + fy * ys / height) + phase)
    grey = base + 3.0 * texture
    tint = np.array([0.95, 1.0, 1.05])  # a slight blue cast, identical in every frame
    return np.asarray(np.clip(grey[..., None] * tint, 0, 255), dtype=np.uint8)


def _parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = text.lower().split("x")
        return int(w), int(h)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WxH such as 320x240, got {text!r}") from None


def _parse_fps(text: str) -> fractions.Fraction:
    try:
        return fractions.Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(
            f"expected a rate such as 12 or 30000/1001, got {text!r}"
        ) from None


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry: 0 on success, 1 if the file cannot be written.

    Bad arguments end in ``SystemExit(2)`` with a usage message, argparse's convention.
    """
    parser = argparse.ArgumentParser(prog="make_clip.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="video file to write (.mp4, .mkv, ...)")
    parser.add_argument("--frames", type=int, default=24, help="number of frames (default 24)")
    parser.add_argument(
        "--size", type=_parse_size, default=(320, 240), help="WxH, even (default 320x240)"
    )
    parser.add_argument(
        "--fps", type=_parse_fps, default=fractions.Fraction(12), help="frame rate (default 12)"
    )
    parser.add_argument("--seed", type=int, default=0, help="background texture seed (default 0)")
    parser.add_argument("--truth", help="also write the ground truth as JSON to this file")
    parser.add_argument("--still", metavar="IMAGE.png", help="also write the first frame as a still image")
    args = parser.parse_args(argv)
    width, height = args.size
    try:
        for target in (args.out, args.truth, args.still):
            if target:
                Path(target).parent.mkdir(parents=True, exist_ok=True)
        truth = make_clip(
            args.out, frames=args.frames, width=width, height=height, fps=args.fps, seed=args.seed
        )
        if args.truth:
            with open(args.truth, "w", encoding="utf-8") as file:
                json.dump(truth.to_dict(), file)
                file.write("\n")
        if args.still:
            with av.open(str(truth.path)) as container:
                first = next(container.decode(video=0)).to_ndarray(format="rgb24")
            PIL.Image.fromarray(first).save(args.still)
    except (av.error.FFmpegError, OSError) as exc:  # before ValueError: some are both
        print(f"make_clip.py: cannot write {args.out}: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        parser.error(str(exc))  # exits with status 2
    x, y = truth.objects[0].centres[0]
    print(
        f"wrote {truth.path}: {truth.frame_count} frames, {width}x{height} at {truth.fps} fps; "
        f"object 0 ({truth.objects[0].name}) starts at x={x:.1f} y={y:.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
