"""pedsam-mini on the bench's two generated clips (ours, so the picture may be committed): the middle
frame (30 of 60) of each, one click per object at its most interior pixel, mini's mask drawn, the
truth outlined in white and the clicks as white dots.

    python samples/mini_scenes.py samples/pictures/mini-scenes.png
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

import cv2
import numpy as np
import PIL.Image

from pedsam.stream.core.predictor import interior_point
from pedsam.stream.core.prompts import ObjectPrompt
from pedsam.stream.media.overlay import draw_overlay
from pedsam.stream.media.synthetic import demo_scene
from pedsam.stream.mini.evaluate import LocalPipeline, second_scene
from pedsam.workers.models import TRAINED_NOTICE, ModelSource

WIDTH = 1280  # a row: the frame and its overlay side by side; the whole picture is then shown at 3/4


async def render(out: str) -> None:
    rows = []
    with LocalPipeline(ModelSource(preset="mini")) as model:
        for scene in (demo_scene(width=640, height=480, frames=60), second_scene(60)):
            frame = scene.frame(30)  # the middle of 60 frames
            visible = [m for m in frame.masks if m.any()]
            clicks = [ObjectPrompt(points=(interior_point(m),), labels=(1,)) for m in visible]
            answers = await model.segment(frame.image, clicks)
            over = draw_overlay(frame.image, [a.mask for a in answers], banner=TRAINED_NOTICE)
            for mask in visible:  # the truth, outlined
                edge = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
                over[edge.astype(bool)] = (255, 255, 255)
            for click in clicks:
                x, y = click.points[0]
                cv2.circle(over, (int(x), int(y)), 5, (255, 255, 255), -1)
            row = np.concatenate([frame.image, over], 1)
            if row.shape[1] != WIDTH:
                row = cv2.resize(row, (WIDTH, int(row.shape[0] * WIDTH / row.shape[1])), interpolation=cv2.INTER_AREA)
            rows.append(row)
    height = int(sum(r.shape[0] for r in rows) * 0.75)
    PIL.Image.fromarray(np.concatenate(rows, 0)).resize((960, height)).save(out, optimize=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python samples/mini_scenes.py OUT.png", file=sys.stderr)
        return 2
    asyncio.run(render(args[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
