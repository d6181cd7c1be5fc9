"""Write a clip of several drawn faces drifting over a still, textured background (pedsam's own footage with faces).

    python samples/make_faces_clip.py OUT.mp4 [--frames 100] [--faces 4] [--size 640x480] [--seed 0]

For the privacy harnesses (``samples/keep_local_attack.py``, ``pedsam privacy-report``): faces of
50 to 110 px in known places, no third-party picture. The faces and their paths are
:func:`pedsam.stream.media.faces.faces_clip`'s.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pedsam.stream.media.faces import faces_clip, write_faces_clip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make_faces_clip.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the video to write (.mp4)")
    parser.add_argument("--frames", type=int, default=100, help="frames (default 100, at 10 fps)")
    parser.add_argument("--faces", type=int, default=4, help="faces (default 4)")
    parser.add_argument("--size", default="640x480", help="WxH (default 640x480)")
    parser.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    args = parser.parse_args(argv)
    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
        clip = faces_clip(args.frames, width=width, height=height, faces=args.faces, seed=args.seed)
    except ValueError as exc:
        parser.error(str(exc))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_faces_clip(args.out, clip)
    print(f"{args.out}: {args.frames} frames, {args.faces} faces, {width}x{height}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
