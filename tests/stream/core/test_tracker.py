"""pedsam.stream.core.tracker: objects followed past frame 0 as the README promises, against SAM's own predictor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from segment_anything import SamPredictor

from pedsam.stream.core.prompts import ObjectPrompt
from pedsam.stream.core.session import EdgeConfig, EdgeSession
from pedsam.stream.media.sources import FileSource
from pedsam.stream.media.synthetic import make_clip
from pedsam.stream.media.video import read_frames
from pedsam.stream.runs.engine import run_frames
from tests.support import TINY, assert_same_mask

FRAMES = 4


def enclosing_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    """XYXY pixels around every True pixel of an (H, W) bool mask, x1 and y1 one past the last."""
    ys, xs = np.nonzero(mask)
    assert ys.size, "the reference lost the object: the comparison would not follow it"
    return (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))


class ReferenceFollower:
    """One object followed with segment_anything's ``SamPredictor`` alone, prompted as the README
    says: frame 0 with the user's prompt (one point and no box: the best-scoring of SAM's three
    masks), each later frame with the box of the previous mask plus the previous frame's
    low-resolution mask logits as ``mask_input`` (one mask)."""

    def __init__(self, prompt: ObjectPrompt) -> None:
        self.points, self.labels, self.box = prompt.arrays()
        self.multimask = len(prompt.points) == 1 and prompt.box is None
        self.mask_input: np.ndarray | None = None
        self.initial = (self.points, self.labels, self.box, self.multimask)

    def step(self, predictor: SamPredictor) -> tuple[np.ndarray, tuple[float, float, float, float]]:
        """The frame set on ``predictor`` -> (mask logits at frame size (H, W), the mask's box)."""
        logits, scores, low_res = predictor.predict(
            point_coords=self.points, point_labels=self.labels, box=self.box, mask_input=self.mask_input,
            multimask_output=self.multimask, return_logits=True,
        )
        best = int(np.argmax(scores))
        box = enclosing_box(logits[best] > predictor.model.mask_threshold)
        self.points, self.labels, self.box = None, None, np.asarray(box, np.float32)
        self.mask_input, self.multimask = low_res[best : best + 1], False
        return logits[best], box

    def unfollowed(self, predictor: SamPredictor) -> np.ndarray:
        """The mask the user's first-frame prompt alone gives on the frame set on ``predictor``."""
        points, labels, box, multimask = self.initial
        masks, scores, _ = predictor.predict(
            point_coords=points, point_labels=labels, box=box, multimask_output=multimask,
        )
        return masks[int(np.argmax(scores))]


async def test_objects_are_followed_as_sam_predictor_follows_them(tiny_workers: list[str], tmp_path: Path) -> None:
    """Frame by frame, each object's mask through the split equals the mask SamPredictor gives with
    the prompts the README promises (up to logits within float rounding of 0)."""
    clip = make_clip(tmp_path / "clip.mp4", frames=FRAMES, width=160, height=120)
    x0, y0, x1, y1 = clip.objects[1].boxes[0]
    prompts = [
        ObjectPrompt(points=(clip.objects[0].centres[0],), labels=(1,)),  # ambiguous: best of three
        ObjectPrompt(box=(float(x0), float(y0), float(x1 + 1), float(y1 + 1))),
    ]
    async with EdgeSession(EdgeConfig(model=TINY, workers=tuple(tiny_workers))) as session:
        results = [r async for r in run_frames(session, FileSource(clip.path), prompts, in_flight=2)]
        predictor = SamPredictor(session.sam)
    assert [r.frame.index for r in results] == list(range(FRAMES))
    followers = [ReferenceFollower(prompt) for prompt in prompts]
    for result, frame in zip(results, read_frames(clip.path)):
        assert result.error is None
        predictor.set_image(frame.image)
        for obj, follower in zip(result.objects, followers):
            unfollowed = follower.unfollowed(predictor)
            logits, box = follower.step(predictor)
            assert_same_mask(obj.mask, logits)
            assert obj.box == box  # masks.jsonl's box: the next frame's prompt
            if result.frame.index > 0:
                # Not following (the first frame's prompt again, no mask logits) would show: the
                # comparison can tell the two apart on every later frame.
                sure = np.abs(logits) >= 1e-2
                assert ((logits > 0) != unfollowed)[sure].mean() > 0.05
