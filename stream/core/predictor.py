"""From a frame to SAM's input, and from an embedding plus prompts to masks.

Both follow :class:`segment_anything.SamPredictor` step for step, with SAM's own modules, so
that given the same embedding the masks are SamPredictor's:

- preprocessing is ``ResizeLongestSide.apply_image`` (a bilinear PIL resize of the longest side
  to the encoder's size; a different resize changes the embedding far beyond float rounding),
  then ``Sam.preprocess`` (normalise, zero-pad);
- decoding maps prompts into the resized frame as ``ResizeLongestSide.apply_coords`` and
  ``apply_boxes`` do, runs ``Sam.prompt_encoder`` and ``Sam.mask_decoder`` and upscales with
  ``Sam.postprocess_masks``, as ``SamPredictor.predict`` does.

SamPredictor itself is not used: importing it pulls in torchvision (for one PIL call), which
costs every edge process about a second at start. The tests compare with SamPredictor.

On a GPU edge the model is on the device: the resize stays on the host (the same PIL call), the
resized uint8 frame moves to the device and ``Sam.preprocess`` runs there (elementwise IEEE
arithmetic, the same values as on the host); prompts move there, and masks, scores and logits
come back to the host as numpy arrays.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TypeVar

import numpy as np
import cv2
import PIL.Image
import torch

from pedsam.stream.core.edges import refine_logits
from pedsam.stream.core.prompts import ObjectPrompt
from pedsam.stream.errors import MediaError
from pedsam.workers.presets import ModelPreset
from pedsam.workers.sam import Sam


@dataclass(frozen=True, slots=True)
class PreparedImage:
    """A frame ready for the encoder.

    ``tensor`` is (1, 3, S, S) float32 normalised and zero-padded (S = img_size), on the
    model's device;
    ``original_size`` is the frame's (H, W); ``input_size`` the resized (h, w) before padding;
    ``image`` the frame itself ((H, W, 3) uint8 RGB, not to be modified), when known: a decoder
    that refines edges (:mod:`~pedsam.stream.core.edges`) fits masks to it.
    """

    tensor: torch.Tensor
    original_size: tuple[int, int]
    input_size: tuple[int, int]
    image: np.ndarray | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class MaskPrediction:
    """One object's mask in one frame.

    ``mask``: (H, W) bool at the original frame size; ``score``: SAM's predicted IoU;
    ``low_res_logits``: (1, 4*grid, 4*grid) float32, the mask input for the next frame;
    ``logits``: (H, W) float32, the mask's logits at the frame's size (kept for a preset with
    ``prompted_region`` only; None otherwise).
    """

    mask: np.ndarray
    score: float
    low_res_logits: np.ndarray
    logits: np.ndarray | None = field(default=None, repr=False, compare=False)


def resized_shape(height: int, width: int, long_side: int) -> tuple[int, int]:
    """(h, w) of a HxW frame resized so its longest side is ``long_side``, rounded as SAM rounds."""
    scale = long_side * 1.0 / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def to_input_frame(points: np.ndarray, original_size: tuple[int, int], long_side: int) -> np.ndarray:
    """(..., 2) XY pixels of the original frame -> float64 XY pixels of the resized frame."""
    new_h, new_w = resized_shape(*original_size, long_side)
    out = np.array(points, dtype=float)
    out[..., 0] *= new_w / original_size[1]
    out[..., 1] *= new_h / original_size[0]
    return out


def prepare_image(sam: Sam, image: np.ndarray) -> PreparedImage:
    """HxWx3 uint8 RGB -> :class:`PreparedImage`, as ``SamPredictor.set_image`` does it, on
    ``sam``'s device (resized on the host, normalised and padded there)."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise MediaError(f"expected an HxWx3 uint8 RGB image, got {image.dtype} {image.shape}")
    height, width = resized_shape(image.shape[0], image.shape[1], sam.image_encoder.img_size)
    resized = np.array(PIL.Image.fromarray(image, mode="RGB").resize((width, height), PIL.Image.Resampling.BILINEAR))
    tensor = torch.as_tensor(resized).permute(2, 0, 1).contiguous()[None]
    with torch.inference_mode():
        prepared = sam.preprocess(tensor.to(sam.pixel_mean.device))
    return PreparedImage(
        tensor=prepared,
        original_size=(int(image.shape[0]), int(image.shape[1])),
        input_size=(int(tensor.shape[-2]), int(tensor.shape[-1])),
        image=image,
    )


def mask_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    """The tight box of a non-empty ``(H, W)`` bool mask, XYXY pixel edges: ``(x0, y0)`` the top-left
    corner of its first column and row, ``(x1, y1)`` the bottom-right corner of its last (last
    index + 1), the box prompt SAM is trained with."""
    ys, xs = np.nonzero(mask)
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


def interior_point(mask: np.ndarray) -> tuple[float, float]:
    """The centre ``(x, y)`` in pixels of the most interior pixel of an ``(H, W)`` bool mask: the
    one farthest from every pixel outside it, the frame's border counting as outside (the maximum
    of OpenCV's L2 distance transform, 5x5 mask; the first such pixel in row order on a tie).

    The point pedsam prompts SAM with for an object given by its mask, and the click a user aims
    at an object's middle.

    Raises:
        ValueError: the mask is empty.
    """
    if not mask.any():
        raise ValueError("an empty mask has no interior point")
    inside = cv2.distanceTransform(np.pad(mask, 1).astype(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(inside)), inside.shape)
    return float(x) + 0.5, float(y) + 0.5


MASK_LOGIT = 8.0  # a given mask's pixels as SAM logits: inside +8, outside -8 (sigmoid 0.9997)


def from_mask(prompt: ObjectPrompt, prepared: PreparedImage, long_side: int) -> tuple[ObjectPrompt, np.ndarray]:
    """A prompt with a mask -> the same prompt with the mask's box and one point at its most
    interior pixel added (where the prompt has none), and the mask as SAM's low-resolution mask
    input: (1, long_side/4, long_side/4) float32 logits in the resized, zero-padded input frame."""
    mask = prompt.mask
    assert mask is not None
    box = prompt.box or mask_box(mask)
    points, labels = prompt.points, prompt.labels
    if not points:
        points, labels = (interior_point(mask),), (1,)
    height, width = prepared.input_size
    resized = cv2.resize(mask.astype(np.float32), (width, height), interpolation=cv2.INTER_AREA)
    padded = np.zeros((long_side, long_side), np.float32)
    padded[:height, :width] = resized
    low = cv2.resize(padded, (long_side // 4, long_side // 4), interpolation=cv2.INTER_AREA)
    logits = ((low * 2.0 - 1.0) * MASK_LOGIT)[None].astype(np.float32)
    return ObjectPrompt(points=points, labels=labels, box=box), logits


PRIOR_FLOOR = -4.0  # a prompt prior's logit away from every prompt
PRIOR_BOX = 0.0  # its logit inside a box (the object fills part of it)
PRIOR_BUMP = 8.0  # the height of a point's bump (negative for a negative point)
PRIOR_SIGMA = 3.0  # the bump's width, in low-resolution cells (4 input pixels each)


def prompt_prior(points: np.ndarray | None, labels: np.ndarray | None, box: np.ndarray | None,
                 long_side: int) -> np.ndarray:
    """A prompt drawn as SAM's low-resolution mask input: (1, long_side/4, long_side/4) float32
    logits, :data:`PRIOR_FLOOR` everywhere, :data:`PRIOR_BOX` inside the box, plus a Gaussian
    bump of :data:`PRIOR_BUMP` (sigma :data:`PRIOR_SIGMA` cells) at every positive point and a
    dip at every negative one. ``points`` (N, 2) and ``box`` (4,) XY in the resized input frame.

    Models of a preset with ``prompt_prior`` (pedsam-mini) are trained to read their prompt from
    this as well as from SAM's sparse prompt tokens: a decoder trained from scratch in a few CPU
    hours localises from the dense path (added to every image token where it lies) far more
    reliably than from the sparse tokens' Fourier features.
    """
    side = long_side // 4
    cell = long_side / side
    centres = (np.arange(side, dtype=np.float64) + 0.5) * cell
    prior = np.full((side, side), PRIOR_FLOOR, np.float64)
    if box is not None:
        x0, y0, x1, y1 = (float(v) for v in np.asarray(box, dtype=np.float64).reshape(4))
        inside_x = (centres >= x0) & (centres <= x1)
        inside_y = (centres >= y0) & (centres <= y1)
        prior[np.ix_(inside_y, inside_x)] = PRIOR_BOX
    if points is not None and labels is not None:
        width = 2.0 * (PRIOR_SIGMA * cell) ** 2
        for (x, y), label in zip(np.asarray(points, dtype=np.float64).reshape(-1, 2), np.asarray(labels).reshape(-1)):
            bump = np.exp(-((centres - y) ** 2)[:, None] / width) * np.exp(-((centres - x) ** 2)[None, :] / width)
            prior += (PRIOR_BUMP if label > 0 else -PRIOR_BUMP) * bump
    return prior[None].astype(np.float32)


CLICKED_LOGIT = -20.0  # the low-resolution logits of what :func:`clicked_region` drops


def clicked_region(mask: np.ndarray, points: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The connected parts (8-connected) of an ``(H, W)`` bool ``mask`` that hold a positive
    point of ``points`` ((N, 2) XY pixels); ``mask`` itself when none does."""
    count, parts = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    if count <= 2:
        return mask
    height, width = mask.shape
    hit = {int(parts[min(int(y), height - 1), min(int(x), width - 1)])
           for (x, y), label in zip(np.asarray(points).reshape(-1, 2), np.asarray(labels).reshape(-1))
           if label > 0 and 0 <= x < width and 0 <= y < height}
    hit.discard(0)
    return np.isin(parts, sorted(hit)) if hit else mask


def followed_region(mask: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """The connected parts (8-connected) of an ``(H, W)`` bool ``mask`` that continue ``previous``
    (the object's mask on the frame before, same shape): the part overlapping it most, and every
    part at least half inside it; ``mask`` itself when none overlaps it."""
    count, parts = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    if count <= 2:
        return mask
    areas = np.bincount(parts.ravel(), minlength=count)
    overlaps = np.bincount(parts[previous], minlength=count)
    overlaps[0] = 0
    if not overlaps.any():
        return mask
    keep = (2 * overlaps >= areas) & (overlaps > 0)
    keep[int(np.argmax(overlaps))] = True
    keep[0] = False
    return np.asarray(keep[parts], dtype=bool)


def _drop_logits(low: np.ndarray, dropped: np.ndarray, prepared: PreparedImage, long_side: int) -> np.ndarray:
    """(1, 4g, 4g) low-resolution logits with every cell that ``dropped`` ((H, W) bool, frame
    pixels) touches set to at most :data:`CLICKED_LOGIT`."""
    h, w = prepared.input_size
    side = low.shape[-1]
    canvas = np.zeros((long_side, long_side), np.uint8)
    canvas[:h, :w] = cv2.resize(dropped.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
    cells = cv2.resize(canvas, (side, side), interpolation=cv2.INTER_AREA) > 0
    out = low.copy()
    out[0][cells] = np.minimum(out[0][cells], CLICKED_LOGIT)
    return out


K = TypeVar("K")


def told_apart(prompt: ObjectPrompt, others: Sequence[tuple[float, float]]) -> ObjectPrompt:
    """A tracker's prompt (a box alone, the previous logits going with it) with a negative point
    at each of ``others`` ((x, y) pixels, the other objects' centres) that lies inside its box;
    any other prompt as it is.

    A box around an object that touches another holds part of it, and the previous logits
    reach into it: the model, asked for "the object in this box", may answer with both, and the
    box then grows with them frame by frame. A negative click on the neighbour is how a person
    tells SAM "not that one"; pedsam-mini is trained with negative points."""
    if prompt.box is None or prompt.points or prompt.mask is not None:
        return prompt
    x0, y0, x1, y1 = prompt.box
    inside = tuple((x, y) for x, y in others if x0 <= x < x1 and y0 <= y < y1)
    return ObjectPrompt(points=inside, labels=(0,) * len(inside), box=prompt.box) if inside else prompt


def separate(
    predictions: Mapping[K, MaskPrediction], prepared: PreparedImage, long_side: int
) -> dict[K, MaskPrediction]:
    """The objects' masks of one frame made disjoint: a pixel that several masks hold stays with
    the one whose logit there is highest (SAM 2's rule for objects in one video), and the others
    lose it, from their low-resolution logits too (as :func:`clicked_region` drops a part), so
    that a tracker prompted with them next frame does not take it back.

    Objects decoded one by one know nothing of each other: two that touch are each free to grow
    over the other, and once one object's mask holds both, its box and logits keep it so, until
    two tracks follow the same pixels. Predictions without ``logits`` are left as they are.
    (Giving a pixel to the object whose previous mask held it instead was tried: an early wrong
    claim then stays, and grows frame by frame.)
    """
    held = [(key, p) for key, p in predictions.items() if p.logits is not None and p.mask.any()]
    out = dict(predictions)
    if len(held) < 2:
        return out
    masks = np.stack([p.mask for _, p in held])
    contested = masks.sum(axis=0) > 1
    if not contested.any():
        return out
    claims = np.stack([np.where(p.mask, p.logits, -np.inf) for _, p in held])  # type: ignore[arg-type]
    winner = np.argmax(claims, axis=0)
    for k, (key, prediction) in enumerate(held):
        lost = contested & prediction.mask & (winner != k)
        if lost.any():
            out[key] = replace(prediction, mask=prediction.mask & ~lost,
                               low_res_logits=_drop_logits(prediction.low_res_logits, lost, prepared, long_side))
    return out


class MaskDecoder:
    """SAM's prompt encoder and mask decoder on the edge, fed a precomputed embedding.

    ``prompt_prior``: when a prompt comes without a mask input, give the decoder
    :func:`prompt_prior` as one (the model's preset says whether it was trained so).
    ``prompted_region``: a prompt of points alone (no box, no mask input) keeps only the parts of
    its mask that hold a positive point (:func:`clicked_region`), and a tracker's prompt (a box
    and the previous frame's logits) only the parts that overlap the previous mask
    (:func:`followed_region`); the low-resolution logits lose the rest too, so the tracker goes
    on with the prompted object alone.
    ``refine_edges``: the chosen mask's outline is fitted to the frame's colour edges
    (:func:`~pedsam.stream.core.edges.refine_logits`) when the prepared frame carries its image;
    the low-resolution logits, which prompt the next frame, stay the model's own.
    """

    def __init__(self, sam: Sam, *, prompt_prior: bool = False, prompted_region: bool = False,
                 refine_edges: bool = False) -> None:
        self._sam = sam
        self._prompt_prior = prompt_prior
        self._prompted_region = prompted_region
        self._refine_edges = refine_edges

    @classmethod
    def for_preset(cls, sam: Sam, preset: ModelPreset) -> MaskDecoder:
        """The decoder ``preset``'s model was trained for (its ``prompt_prior``,
        ``prompted_region`` and ``refine_edges``)."""
        return cls(sam, prompt_prior=preset.prompt_prior, prompted_region=preset.prompted_region,
                   refine_edges=preset.refine_edges)

    @torch.inference_mode()
    def predict(
        self,
        embedding: torch.Tensor,
        prepared: PreparedImage,
        prompt: ObjectPrompt,
        *,
        mask_input: np.ndarray | None = None,
        multimask: bool | None = None,
        previous: np.ndarray | None = None,
    ) -> MaskPrediction:
        """Decode one object's mask; with several candidates, keep the best-scoring one.

        ``embedding`` is (1, C, g, g) float32 on the model's device; ``mask_input`` (1, 4g, 4g)
        float32 logits of a previous prediction (host), or None; ``previous`` the mask they stand
        for at frame size (:meth:`as_mask`), when the caller has it already.
        """
        logits, scores, low_res = self.decode(embedding, prepared, prompt, mask_input=mask_input, multimask=multimask)
        best = int(np.argmax(scores))
        chosen = logits[best]
        if self._refine_edges and prepared.image is not None:
            chosen = refine_logits(chosen, prepared.image, max(prepared.original_size) / low_res.shape[-1])
        mask = chosen > self._sam.mask_threshold
        low = low_res[best : best + 1].astype(np.float32)
        points, labels, box = prompt.arrays()
        kept = mask
        if not self._prompted_region or prompt.mask is not None:
            pass
        elif points is not None and labels is not None and box is None and mask_input is None:
            kept = clicked_region(mask, points, labels)
        elif mask_input is not None and (labels is None or not (labels > 0).any()):
            kept = followed_region(mask, self.as_mask(mask_input, prepared) if previous is None else previous)
        if kept is not mask:
            low = _drop_logits(low, mask & ~kept, prepared, self._sam.image_encoder.img_size)
            mask = kept
        kept_logits = np.array(chosen, copy=True) if self._prompted_region else None  # only separate() reads them
        return MaskPrediction(mask=mask, score=float(scores[best]), low_res_logits=low, logits=kept_logits)

    def as_mask(self, mask_input: np.ndarray, prepared: PreparedImage) -> np.ndarray:
        """(1, 4g, 4g) low-resolution logits -> the (H, W) bool mask they stand for at frame size."""
        with torch.inference_mode():
            upsampled = self._sam.postprocess_masks(torch.as_tensor(mask_input, dtype=torch.float)[None],
                                                    prepared.input_size, prepared.original_size)
        return np.asarray(upsampled[0, 0].cpu().numpy() > self._sam.mask_threshold)

    def predict_all(
        self,
        embedding: torch.Tensor,
        prepared: PreparedImage,
        prompts: Mapping[K, tuple[ObjectPrompt, np.ndarray | None]],
    ) -> dict[K, MaskPrediction]:
        """:meth:`predict` for each object of one frame (its prompt and mask input). With
        ``prompted_region``, a tracker's prompt (a box and the previous logits) is told the other
        objects apart (:func:`told_apart`, at their most interior pixels on the frame before, as
        their previous masks or mask inputs show them), and the masks are made disjoint by
        :func:`separate`."""
        if not self._prompted_region:
            return {key: self.predict(embedding, prepared, prompt, mask_input=logits)
                    for key, (prompt, logits) in prompts.items()}
        centres = {}  # each object's most interior pixel on the frame before, where known
        upsampled = {}  # the masks the mask inputs stand for, upsampled once
        for key, (prompt, logits) in prompts.items():
            previous = prompt.mask
            if previous is None and logits is not None:
                previous = upsampled[key] = self.as_mask(logits, prepared)
            if previous is not None and previous.any():
                centres[key] = interior_point(previous)
        told = {key: (told_apart(prompt, [c for other, c in centres.items() if other != key]), logits)
                for key, (prompt, logits) in prompts.items()}
        predictions = {key: self.predict(embedding, prepared, prompt, mask_input=logits, previous=upsampled.get(key))
                       for key, (prompt, logits) in told.items()}
        return separate(predictions, prepared, self._sam.image_encoder.img_size)

    @torch.inference_mode()
    def decode(
        self,
        embedding: torch.Tensor,
        prepared: PreparedImage,
        prompt: ObjectPrompt,
        *,
        mask_input: np.ndarray | None = None,
        multimask: bool | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every candidate: (C, H, W) float32 mask logits at frame size, (C,) scores, and
        (C, 4g, 4g) low-resolution logits, as ``SamPredictor.predict(return_logits=True)``."""
        sam = self._sam
        device = sam.pixel_mean.device
        long_side = sam.image_encoder.img_size
        if prompt.mask is not None:
            prompt, derived = from_mask(prompt, prepared, long_side)
            mask_input = derived if mask_input is None else mask_input
        points, labels, box = prompt.arrays()
        if multimask is None:
            multimask = prompt.ambiguous and mask_input is None
        point_input = None
        if points is not None and labels is not None:
            coords = torch.as_tensor(to_input_frame(points, prepared.original_size, long_side), dtype=torch.float,
                                     device=device)
            point_input = (coords[None, :, :], torch.as_tensor(labels, dtype=torch.int, device=device)[None, :])
        boxes = None
        if box is not None:
            corners = to_input_frame(box.reshape(-1, 2, 2), prepared.original_size, long_side).reshape(-1, 4)
            boxes = torch.as_tensor(corners, dtype=torch.float, device=device)[None, :]
        masks = None
        if mask_input is None and self._prompt_prior:
            input_points = None if points is None else to_input_frame(points, prepared.original_size, long_side)
            input_box = None if box is None else to_input_frame(box.reshape(2, 2), prepared.original_size, long_side)
            mask_input = prompt_prior(input_points, labels, input_box, long_side)
        if mask_input is not None:
            masks = torch.as_tensor(mask_input, dtype=torch.float, device=device)[None, :, :, :]
        sparse, dense = sam.prompt_encoder(points=point_input, boxes=boxes, masks=masks)
        low_res, scores = sam.mask_decoder(
            image_embeddings=embedding.to(device),
            image_pe=sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
        )
        logits = sam.postprocess_masks(low_res, prepared.input_size, prepared.original_size)
        return logits[0].cpu().numpy(), scores[0].cpu().numpy(), low_res[0].cpu().numpy()
