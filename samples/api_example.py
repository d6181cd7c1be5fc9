"""The pedsam library API in one runnable script: embed an image, segment it, follow an object.

    .venv/bin/python samples/api_example.py [OUT_DIR]

Starts three local workers with the ``tiny`` preset (seeded random weights, so the masks are
not meaningful; pass a real preset and checkpoint through ``ModelSource`` for real masks),
makes a synthetic clip, and prints what each step returns. Everything used here is exported by
``pedsam.stream``.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from pedsam.stream import EdgeConfig, EdgeSession, FileSource, ModelSource, ObjectPrompt, read_frames, run_frames
from pedsam.stream.media.synthetic import make_clip


async def main(out_dir: Path) -> int:
    clip = make_clip(out_dir / "clip.mp4", frames=6, width=320, height=240)
    first = next(iter(read_frames(clip.path))).image  # (240, 320, 3) uint8 RGB
    x, y = clip.objects[0].centres[0]
    disc = ObjectPrompt(points=((x, y),), labels=(1,))

    config = EdgeConfig(model=ModelSource(preset="tiny", seed=0), local_workers=3, scheme="interleaved")
    async with EdgeSession(config) as session:
        embedding = await session.embed(first)  # an Embedding: .tensor (1, 64, 32, 32) float32, .audit
        print(f"embedding {tuple(embedding.tensor.shape)} via {', '.join(session.executor_names)}")
        for segment in embedding.audit.segments:
            print(f"  segment {segment.segment}: " + "; ".join(
                f"{name} got windows {ids}" for name, ids in segment.shares.items()))

        [mask] = await session.segment(first, [disc])
        print(f"segment: mask {mask.mask.shape}, {int(mask.mask.sum())} pixels, score {mask.score:.3f}")

        async for result in run_frames(session, FileSource(clip.path), [disc]):
            if result.error is not None:
                print(f"frame {result.frame.index}: error {result.error}")
                continue
            [obj] = result.objects
            print(f"frame {result.frame.index}: {int(obj.mask.sum())} pixels, box {obj.box}, "
                  f"{result.latency * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1:
        target = Path(sys.argv[1])
        target.mkdir(parents=True, exist_ok=True)
        sys.exit(asyncio.run(main(target)))
    with tempfile.TemporaryDirectory() as tmp:
        sys.exit(asyncio.run(main(Path(tmp))))
