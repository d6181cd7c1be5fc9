"""A mask's outline fitted to the frame's edges: the colour guided filter, for pedsam-mini.

SAM's decoder answers with logits at a quarter of the encoder's input resolution, upsampled
bilinearly to the frame. For pedsam-mini (512 px input) one low-resolution cell is 5 pixels of a
640x480 frame and 7.5 of a 1280x720 one, and a model that small places its outline to within a
cell or two: the mask is right about where the object is and smooth where its outline is not,
which costs most of its IoU on small objects.

The guided filter (He, Sun and Tang, ECCV 2010) models the mask's probability, in every square
window of the frame, as a linear function of the pixel's colour, fitted by least squares with a
ridge ``eps``; each pixel's value is the average of the fits of the windows that hold it. Where a
window straddles the object's outline and the colours on its two sides differ, the fit follows
the colour edge; in a window of one colour it is the mask's local mean, so the filter cannot
invent an object where the mask had none nearby. Everything is computed in the box around the
mask (its support grown by two radii), with box filters, the windows' models fitted at half a
cell's resolution (He and Sun's fast guided filter): 4 ms for an object of 120 px and 11 ms for
one filling a 640x480 frame, here.

Used by :class:`~pedsam.stream.core.predictor.MaskDecoder` for a preset with ``refine_edges``
(pedsam-mini), and by the keyframed engine on the masks it propagates between keyframes
(:func:`refine_mask`); official checkpoints are decoded exactly as SamPredictor decodes them, and
their propagated masks are left as warped.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["EDGE_EPS", "EDGE_RADIUS", "guided_filter", "refine_logits", "refine_mask"]

EDGE_RADIUS = 6.0  # the filter's window radius, in low-resolution cells of the decoder's logits
EDGE_EPS = 3e-4  # its ridge, in squared intensity (0..1): smaller follows fainter edges
SUPPORT_LOGIT = -3.9  # pixels whose logit is above this (probability 0.02) are the mask's support
SUBSAMPLE_CELL = 2.5  # the windows' models are fitted on a grid of about this many points per cell
LOGIT_CLIP = 20.0


def guided_filter(image: np.ndarray, values: np.ndarray, radius: int, eps: float, subsample: int = 1) -> np.ndarray:
    """``values`` ((H, W) float32) filtered with ``image`` ((H, W, 3) uint8) as the guide, over
    square windows of side ``2 * radius + 1`` (reflected at the borders); float32 (H, W).

    ``subsample`` > 1 fits the windows' linear models on both shrunk by that factor (the radius
    too) and applies them, enlarged again, to the full-size guide (He and Sun's fast guided
    filter, 2015): the models vary as slowly as the windows are wide, so little is lost, and the
    work shrinks with the square of the factor."""
    if image.shape[:2] != values.shape or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"guide {image.shape} does not fit values {values.shape}")
    height, width = values.shape
    p = np.ascontiguousarray(values, dtype=np.float32)
    small: np.ndarray = np.ascontiguousarray(image)
    if subsample > 1:
        size = (max(1, round(width / subsample)), max(1, round(height / subsample)))
        small = cv2.resize(small, size, interpolation=cv2.INTER_AREA)
        p = np.asarray(cv2.resize(p, size, interpolation=cv2.INTER_AREA), dtype=np.float32)
        radius = max(1, round(radius / subsample))
    side = (2 * radius + 1, 2 * radius + 1)

    def mean(x: np.ndarray) -> np.ndarray:
        return np.asarray(cv2.boxFilter(x, -1, side, borderType=cv2.BORDER_REFLECT))

    scale = np.float32(1 / 255)
    channels = [c.astype(np.float32) * scale for c in cv2.split(small)]
    mu = [mean(c) for c in channels]
    # The guide's covariance in every window, with the ridge, and its inverse by the adjugate.
    var = {(i, j): mean(channels[i] * channels[j]) - mu[i] * mu[j] + (eps if i == j else 0.0)
           for i in range(3) for j in range(i, 3)}
    rr, rg, rb, gg, gb, bb = var[0, 0], var[0, 1], var[0, 2], var[1, 1], var[1, 2], var[2, 2]
    inv_rr, inv_rg, inv_rb = gg * bb - gb * gb, gb * rb - rg * bb, rg * gb - gg * rb
    inv_gg, inv_gb, inv_bb = rr * bb - rb * rb, rb * rg - rr * gb, rr * gg - rg * rg
    det = rr * inv_rr + rg * inv_rg + rb * inv_rb
    mean_p = mean(p)
    cr, cg, cb = (mean(c * p) - m * mean_p for c, m in zip(channels, mu))
    ar = (inv_rr * cr + inv_rg * cg + inv_rb * cb) / det
    ag = (inv_rg * cr + inv_gg * cg + inv_gb * cb) / det
    ab = (inv_rb * cr + inv_gb * cg + inv_bb * cb) / det
    offset = mean_p - ar * mu[0] - ag * mu[1] - ab * mu[2]
    model = [mean(ar) * scale, mean(ag) * scale, mean(ab) * scale, mean(offset)]  # on 0..255 colours
    if subsample > 1:
        model = [np.asarray(cv2.resize(x, (width, height), interpolation=cv2.INTER_LINEAR)) for x in model]
    guide = cv2.split(np.ascontiguousarray(image))
    return np.asarray(model[0] * guide[0] + model[1] * guide[1] + model[2] * guide[2] + model[3], dtype=np.float32)


def refine_logits(logits: np.ndarray, image: np.ndarray, cell: float, *, radius: float = EDGE_RADIUS,
                  eps: float = EDGE_EPS) -> np.ndarray:
    """One object's ``logits`` ((H, W) float32 at the frame's size) with the outline fitted to
    ``image`` ((H, W, 3) uint8 RGB, the frame): the guided filter of the mask's probability, in
    the box around its support, back as logits (unchanged outside that box). ``cell``: frame
    pixels per low-resolution cell of the decoder; ``radius`` is in cells. The windows' models
    are fitted on a grid of about :data:`SUBSAMPLE_CELL` points per cell (never finer than the
    frame's pixels: :func:`guided_filter`'s ``subsample``), so the cost depends on the object's
    size in cells, not on the frame's resolution."""
    support = logits > SUPPORT_LOGIT
    if not support.any():
        return logits
    pixels = max(1, round(radius * cell))
    margin = 2 * pixels + 2
    rows, cols = np.flatnonzero(support.any(axis=1)), np.flatnonzero(support.any(axis=0))
    height, width = logits.shape
    y0, y1 = max(0, int(rows[0]) - margin), min(height, int(rows[-1]) + 1 + margin)
    x0, x1 = max(0, int(cols[0]) - margin), min(width, int(cols[-1]) + 1 + margin)
    box = np.clip(np.asarray(logits[y0:y1, x0:x1], dtype=np.float32), -LOGIT_CLIP, LOGIT_CLIP)
    fitted = guided_filter(image[y0:y1, x0:x1], 1.0 / (1.0 + np.exp(-box)), pixels, eps,
                           subsample=max(1, int(cell // SUBSAMPLE_CELL)))
    tiny = np.float32(1e-6)
    fitted = np.clip(fitted, tiny, 1 - tiny)
    out = np.array(logits, dtype=np.float32, copy=True)
    out[y0:y1, x0:x1] = np.log(fitted / (1 - fitted))
    return out


def refine_mask(mask: np.ndarray, image: np.ndarray, cell: float) -> np.ndarray:
    """A bool ``mask`` ((H, W), e.g. a keyframe's mask warped to this frame) with its outline
    fitted to ``image`` as :func:`refine_logits` fits a decoder's: the mask softened over about a
    cell (a warped mask is as sure of its outline as the decoder's logits were, no surer), as
    logits, refined, then ``> 0``. Computed in the box the fit can reach; empty stays empty."""
    if not mask.any():
        return mask
    sigma = max(0.5, cell / 2)
    # The blur reaches 4 sigma past the mask, the filter 2 radii past that (see refine_logits).
    margin = int(np.ceil(4 * sigma)) + 2 * max(1, round(EDGE_RADIUS * cell)) + 2
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    y0, y1 = max(0, int(rows[0]) - margin), min(mask.shape[0], int(rows[-1]) + 1 + margin)
    x0, x1 = max(0, int(cols[0]) - margin), min(mask.shape[1], int(cols[-1]) + 1 + margin)
    soft = cv2.GaussianBlur(mask[y0:y1, x0:x1].astype(np.float32), (0, 0), sigmaX=sigma)
    tiny = np.float32(1e-4)
    soft = np.clip(soft, tiny, 1 - tiny)
    out = np.zeros(mask.shape, bool)
    out[y0:y1, x0:x1] = refine_logits(np.log(soft / (1 - soft)), image[y0:y1, x0:x1], cell) > 0
    return out
