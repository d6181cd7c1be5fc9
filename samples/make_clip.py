"""Write a small synthetic video with known moving objects (and, with --truth, its ground truth).

    python samples/make_clip.py OUT.mp4 [--frames N] [--size WxH] [--fps F] [--seed S]
                                        [--truth TRUTH.json] [--still FIRST.png]

The generator lives in :mod:`pedsam.stream.media.synthetic` (``pedsam demo`` uses it too); this is its
command line. Run it with the project's environment (``.venv/bin/python``).
"""

from __future__ import annotations

import sys

from pedsam.stream.media.synthetic import ClipTruth, ObjectTruth, main, make_clip

__all__ = ["ClipTruth", "ObjectTruth", "main", "make_clip"]

if __name__ == "__main__":
    sys.exit(main())
