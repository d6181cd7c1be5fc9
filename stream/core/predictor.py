"""From a frame to SAM's input, and from an embedding plus prompts to masks.

Preprocessing follows :class:`segment_anything.SamPredictor` exactly (ResizeLongestSide through
PIL, then ``Sam.preprocess``), because a different resize changes the embedding far beyond
float rounding. Mask decoding *is* SamPredictor's: it is handed the split encoder's embedding
in place of its own, so the masks equal the monolithic ones bit for bit given equal embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from segment_anything import SamPredictor
from segment_anything.modeling import Sam
from segment_anything.utils.transforms import ResizeLongestSide

from pedsam.stream.core.prompts import ObjectPrompt
from pedsam.stream.errors import MediaError


@dataclass(frozen=True, slots=True)
class PreparedImage:
    """A frame ready for the encoder.

    ``tensor`` is (1, 3, S, S) float32 normalised and zero-padded (S = img_size);
    ``original_size`` is the frame's (H, W); ``input_size`` the resized (h, w) before padding.
    """

    tensor: torch.Tensor
    original_size: tuple[int, int]
    input_size: tuple[int, int]


@dataclass(frozen=True, slots=True)
class MaskPrediction:
    """One object's mask in one frame.

    ``mask``: (H, W) bool at the original frame size; ``score``: SAM's predicted IoU;
    ``low_res_logits``: (1, 4*grid, 4*grid) float32, the mask input for the next frame.
    """

    mask: np.ndarray
    score: float
    low_res_logits: np.ndarray


def prepare_image(sam: Sam, image: np.ndarray) -> PreparedImage:
    """HxWx3 uint8 RGB -> :class:`PreparedImage`, as ``SamPredictor.set_image`` does it."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise MediaError(f"expected an HxWx3 uint8 RGB image, got {image.dtype} {image.shape}")
    transform = ResizeLongestSide(sam.image_encoder.img_size)
    resized = transform.apply_image(image)
    tensor = torch.as_tensor(resized).permute(2, 0, 1).contiguous()[None]
    with torch.inference_mode():
        prepared = sam.preprocess(tensor)
    return PreparedImage(
        tensor=prepared,
        original_size=(int(image.shape[0]), int(image.shape[1])),
        input_size=(int(tensor.shape[-2]), int(tensor.shape[-1])),
    )


class MaskDecoder:
    """SAM's prompt encoder and mask decoder on the edge, fed a precomputed embedding."""

    def __init__(self, sam: Sam) -> None:
        self._predictor = SamPredictor(sam)

    @torch.inference_mode()
    def predict(
        self,
        embedding: torch.Tensor,
        prepared: PreparedImage,
        prompt: ObjectPrompt,
        *,
        mask_input: np.ndarray | None = None,
        multimask: bool | None = None,
    ) -> MaskPrediction:
        """Decode one object's mask; with several candidates, keep the best-scoring one."""
        predictor = self._predictor
        predictor.features = embedding
        predictor.original_size = prepared.original_size
        predictor.input_size = prepared.input_size
        predictor.is_image_set = True
        points, labels, box = prompt.arrays()
        if multimask is None:
            multimask = prompt.ambiguous and mask_input is None
        masks, scores, low_res = predictor.predict(
            point_coords=points,
            point_labels=labels,
            box=box,
            mask_input=mask_input,
            multimask_output=multimask,
        )
        best = int(np.argmax(scores))
        return MaskPrediction(
            mask=masks[best].astype(bool),
            score=float(scores[best]),
            low_res_logits=low_res[best : best + 1].astype(np.float32),
        )
