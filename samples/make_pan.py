"""Write a synthetic camera pan (known camera motion) for the privacy report.

    python samples/make_pan.py OUT.mp4 [--frames N] [--size WxH] [--velocity VY,VX] [--seed S]

The camera moves ``VX`` pixels right and ``VY`` down per frame over a wide textured scene
(see :mod:`pedsam.stream.media.panning`), so a run covers ``N * VX`` pixels of scene sideways: the case in
which a fixed assignment sweeps the scene through each worker's region. Run it with the
project's environment (``.venv/bin/python``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pedsam.stream.media.panning import make_pan_clip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="video file to write (.mp4)")
    parser.add_argument("--frames", type=int, default=200, help="frames (default 200)")
    parser.add_argument("--size", default="320x240", help="frame size WxH (default 320x240)")
    parser.add_argument("--velocity", default="0.5,6", help="camera pixels per frame VY,VX (default 0.5,6)")
    parser.add_argument("--seed", type=int, default=0, help="scene seed (default 0)")
    args = parser.parse_args(argv)
    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
        vy, vx = (float(v) for v in args.velocity.split(","))
        clip = make_pan_clip(args.out, frames=args.frames, width=width, height=height, velocity=(vy, vx), seed=args.seed)
    except ValueError as exc:
        print(f"make_pan: error: {exc}", file=sys.stderr)
        return 2
    dy, dx = clip.offsets[-1]
    print(f"{clip.path}: {len(clip.offsets)} frames {clip.width}x{clip.height}, camera moved ({dy:.0f}, {dx:.0f}) px")
    return 0


if __name__ == "__main__":
    sys.exit(main())
