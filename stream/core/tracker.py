"""Following objects through a clip: each object is prompted from its previous mask.

On the first frame an object uses the user's prompt. On every later frame it is prompted with
the bounding box of its previous mask plus SAM's low-resolution mask logits from that frame
(the ``mask_input`` SAM takes for refinement), so the object is followed as it moves. An object
given by its mask is that mask on its first frame, and on the next one is prompted from the
mask itself (its box, a point inside, the mask as logits). When a mask comes back empty the
object is marked lost for that frame and the last good prompt is kept for the next one.

For a preset with ``prompted_region`` (pedsam-mini) the decoder also tells the objects of a frame
apart (:meth:`pedsam.stream.core.predictor.MaskDecoder.predict_all`): a negative click on each
other object inside an object's box, and no pixel in two masks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pedsam.stream.core.predictor import MaskPrediction
from pedsam.stream.core.prompts import ObjectPrompt


def mask_box(mask: np.ndarray) -> tuple[float, float, float, float] | None:
    """(H, W) bool -> XYXY pixel box enclosing every True pixel (x1, y1 exclusive), or None."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return (float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1))


@dataclass
class ObjectTrack:
    """One object's prompt state across frames."""

    id: int
    initial: ObjectPrompt
    box: tuple[float, float, float, float] | None = None
    logits: np.ndarray | None = None
    mask: np.ndarray | None = None  # the last mask taken without SAM's logits (given or propagated)
    frames_lost: int = 0
    history: list[bool] = field(default_factory=list)

    def next_prompt(self) -> tuple[ObjectPrompt, np.ndarray | None]:
        """The prompt and mask input to use on the next frame."""
        if self.logits is not None and self.box is not None:
            return ObjectPrompt(box=self.box), self.logits
        if self.mask is not None:
            return ObjectPrompt(mask=self.mask), None
        return self.initial, None

    def take_mask(self, mask: np.ndarray) -> tuple[float, float, float, float] | None:
        """Take a frame's mask that SAM did not predict (a given mask, a propagated one):
        the next SAM prompt is made from it. Returns its box (None when empty)."""
        box = mask_box(mask)
        self.history.append(box is not None)
        if box is None:
            self.frames_lost += 1
            return None
        self.box, self.logits, self.mask = box, None, mask
        return box

    def update(self, prediction: MaskPrediction) -> tuple[float, float, float, float] | None:
        """Take a frame's prediction; returns the mask's box (None when the mask is empty)."""
        box = mask_box(prediction.mask)
        self.history.append(box is not None)
        if box is None:
            self.frames_lost += 1
            return None
        self.box, self.logits, self.mask = box, prediction.low_res_logits, None
        return box
