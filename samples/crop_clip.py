"""Write a centre crop of a video to another aspect ratio (e.g. Debian's 4:3 vtest.avi as 16:9).

    python samples/crop_clip.py IN OUT.mp4 [--aspect 16:9] [--frames N]

The privacy report measures what one worker's share shows of a frame; the share depends on the
frame's aspect ratio (a 16:9 frame leaves 10 of ViT-B's 25 windows pure padding, a 4:3 one 5).
This makes a real clip of another aspect from one that is on this machine: every frame cropped
around its centre to the largest ``W:H`` rectangle, written as H.264 at the input's frame rate.
Run it with the project's environment (``.venv/bin/python``); the output is derived from
third-party media, so like them it stays out of git (``samples/media/`` is ignored).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pedsam.stream.errors import PedsamError
from pedsam.stream.media.overlay import OverlayWriter
from pedsam.stream.media.video import probe_video, read_frames


def crop_box(height: int, width: int, aspect: tuple[int, int]) -> tuple[int, int, int, int]:
    """``(top, left, h, w)`` of the largest centred ``aspect`` (W, H) rectangle, even-sized."""
    aw, ah = aspect
    w = min(width, (height * aw) // ah)
    h = min(height, (w * ah) // aw)
    w, h = w - w % 2, h - h % 2
    return (height - h) // 2, (width - w) // 2, h, w


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="video to crop")
    parser.add_argument("out", help="video file to write (.mp4)")
    parser.add_argument("--aspect", default="16:9", help="W:H of the crop (default 16:9)")
    parser.add_argument("--frames", type=int, default=None, help="stop after N frames (default all)")
    args = parser.parse_args(argv)
    try:
        aw, ah = (int(v) for v in args.aspect.split(":"))
        if aw < 1 or ah < 1:
            raise ValueError
    except ValueError:
        print(f"crop_clip: error: --aspect {args.aspect!r}: give W:H, like 16:9", file=sys.stderr)
        return 2
    try:
        info = probe_video(args.source)
        top, left, h, w = crop_box(info.height, info.width, (aw, ah))
        count = 0
        with OverlayWriter(args.out, w, h, info.rate) as writer:
            for frame in read_frames(args.source):
                writer.write(frame.image[top : top + h, left : left + w])
                count += 1
                if args.frames is not None and count >= args.frames:
                    break
    except PedsamError as exc:
        print(f"crop_clip: error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.out}: {count} frames {w}x{h}, cropped from {info.width}x{info.height} at ({left}, {top})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
