"""pedsam-mini on the bench's two generated clips (ours, so the picture may be committed): the middle
frame (30 of 60) of each, one click per object at its most interior pixel, mini's mask drawn, the
truth outlined in white and the clicks as white dots.

    python samples/mini_scenes.py samples/pictures/mini-scenes.png
"""
import asyncio, sys
import numpy as np, PIL.Image, cv2
from pedsam.stream.media.synthetic import demo_scene
from pedsam.stream.mini.evaluate import LocalPipeline, second_scene
from pedsam.stream.core.predictor import interior_point, mask_box
from pedsam.stream.core.prompts import ObjectPrompt
from pedsam.stream.media.overlay import draw_overlay
from pedsam.workers.models import ModelSource, TRAINED_NOTICE

async def main(out):
    rows = []
    with LocalPipeline(ModelSource(preset="mini")) as model:
        for scene, index in ((demo_scene(width=640, height=480, frames=60), 30), (second_scene(60), 30)):
            f = scene.frame(index)
            vis = [m for m in f.masks if m.any()]
            clicks = [ObjectPrompt(points=(interior_point(m),), labels=(1,)) for m in vis]
            answers = await model.segment(f.image, clicks)
            over = draw_overlay(f.image, [a.mask for a in answers], banner=TRAINED_NOTICE)
            for m in vis:
                edge = cv2.morphologyEx(m.astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)).astype(bool)
                over[edge] = (255, 255, 255)
            for a in clicks:
                x, y = a.points[0]
                cv2.circle(over, (int(x), int(y)), 5, (255, 255, 255), -1)
            img = np.concatenate([f.image, over], 1)
            if img.shape[1] != 1280:
                img = cv2.resize(img, (1280, int(img.shape[0] * 1280 / img.shape[1])), interpolation=cv2.INTER_AREA)
            rows.append(img)
    PIL.Image.fromarray(np.concatenate(rows, 0)).resize((960, int(sum(r.shape[0] for r in rows) * 0.75))).save(out, optimize=True)

asyncio.run(main(sys.argv[1]))
