"""Where each pixel of the current frame was in a keyframe: one object's motion as a map.

A :class:`WarpField` is an affine map plus a smooth residual, both from current-frame pixel
coordinates to keyframe pixel coordinates (full resolution, ``x`` the column, ``y`` the row,
``(0, 0)`` the centre of the top-left pixel). The affine part is the object's rigid-ish motion
(translation, rotation, scale, shear) fitted robustly to tracked points; the residual, a mesh
of nodes over the object's box interpolated bilinearly, is what the affine map leaves where the
object bends or changes shape ("several local motions", kept smooth). Warping a keyframe mask
through the field (:meth:`WarpField.warp`) samples it once per frame, so resampling errors do
not compound from frame to frame.

:func:`fit_field` builds the field from point correspondences: RANSAC for the affine part, then
a regularised least-squares mesh refitted with Tukey weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["FieldFit", "WarpField", "fit_field", "identity_field"]


@dataclass(frozen=True, slots=True)
class WarpField:
    """Current-frame pixel -> keyframe pixel, for one object.

    Attributes:
        affine: ``(2, 3)`` float64, ``key = affine @ (x, y, 1)``.
        box: ``(x0, y0, x1, y1)`` current-frame pixels spanned by the residual's nodes.
        residual: ``(gh, gw, 2)`` float32 keyframe-minus-affine offsets ``(dx, dy)`` at nodes
            evenly spread over ``box`` (corners included), or None for a pure affine map.
            Outside the box the nearest node's value holds.
    """

    affine: np.ndarray
    box: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)
    residual: np.ndarray | None = None

    def points(self, xy: np.ndarray) -> np.ndarray:
        """``(N, 2)`` current-frame points -> ``(N, 2)`` float32 keyframe points."""
        xy = np.asarray(xy, np.float32).reshape(-1, 2)
        key = xy @ self.affine[:, :2].T.astype(np.float32) + self.affine[:, 2].astype(np.float32)
        if self.residual is not None and len(xy):
            gx, gy = self._grid_coords(xy[:, 0], xy[:, 1])
            key = key + cv2.remap(self.residual, gx[None, :], gy[None, :], cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_REPLICATE)[0]
        return np.asarray(key, np.float32)

    def maps(self, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Keyframe coordinates of the current-frame grid of columns ``xs`` (``(w,)``) by rows
        ``ys`` (``(h,)``): ``(map_x, map_y)``, each ``(h, w)`` float32, ready for ``cv2.remap``."""
        xs = np.asarray(xs, np.float32)[None, :]
        ys = np.asarray(ys, np.float32)[:, None]
        a = self.affine.astype(np.float32)
        map_x = a[0, 0] * xs + a[0, 1] * ys + a[0, 2]
        map_y = a[1, 0] * xs + a[1, 1] * ys + a[1, 2]
        if self.residual is not None:
            gx, gy = self._grid_coords(xs[0], ys[:, 0])
            shape = (ys.shape[0], xs.shape[1])
            grid_x = np.ascontiguousarray(np.broadcast_to(gx[None, :], shape))
            grid_y = np.ascontiguousarray(np.broadcast_to(gy[:, None], shape))
            offset = cv2.remap(self.residual, grid_x, grid_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            map_x = map_x + offset[..., 0]
            map_y = map_y + offset[..., 1]
        return np.asarray(map_x, np.float32), np.asarray(map_y, np.float32)

    def warp(self, key: np.ndarray, key_origin: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
        """Sample a keyframe image through the field.

        Args:
            key: a crop of a keyframe image, ``(h, w)`` uint8 or float32.
            key_origin: ``(x, y)`` keyframe pixel of ``key[0, 0]``.
            box: ``(x0, y0, x1, y1)`` current-frame pixels to produce (x1, y1 exclusive).

        Returns:
            ``(y1 - y0, x1 - x0)`` of ``key``'s dtype, bilinear, zero outside ``key``.
        """
        x0, y0, x1, y1 = box
        map_x, map_y = self.maps(np.arange(x0, x1), np.arange(y0, y1))
        map_x -= key_origin[0]
        map_y -= key_origin[1]
        return np.asarray(cv2.remap(key, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0))

    def inverse_box(self, box: tuple[float, float, float, float], margin: float) -> tuple[float, float, float, float]:
        """The current-frame box that holds keyframe box ``box`` (XYXY) after the motion,
        grown by ``margin`` pixels plus the largest residual."""
        full = np.vstack([self.affine, [0.0, 0.0, 1.0]])
        try:
            back = np.linalg.inv(full)[:2]
        except np.linalg.LinAlgError:
            back = np.eye(3)[:2]
        x0, y0, x1, y1 = box
        corners = np.array([[x0, y0, 1.0], [x1, y0, 1.0], [x0, y1, 1.0], [x1, y1, 1.0]]) @ back.T
        grow = margin + (float(np.abs(self.residual).max()) if self.residual is not None else 0.0)
        return (float(corners[:, 0].min() - grow), float(corners[:, 1].min() - grow),
                float(corners[:, 0].max() + grow), float(corners[:, 1].max() + grow))

    def residual_at(self, xy: np.ndarray) -> np.ndarray:
        """``(N, 2)`` float32 the residual part of the map at current-frame points (zeros without one)."""
        xy = np.asarray(xy, np.float32).reshape(-1, 2)
        if self.residual is None or len(xy) == 0:
            return np.zeros((len(xy), 2), np.float32)
        plain = WarpField(self.affine)
        return np.asarray(self.points(xy) - plain.points(xy), np.float32)

    def _grid_coords(self, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        assert self.residual is not None
        gh, gw = self.residual.shape[:2]
        x0, y0, x1, y1 = self.box
        gx = (np.asarray(xs, np.float32) - x0) * ((gw - 1) / max(x1 - x0, 1e-6))
        gy = (np.asarray(ys, np.float32) - y0) * ((gh - 1) / max(y1 - y0, 1e-6))
        return np.asarray(gx, np.float32), np.asarray(gy, np.float32)


def identity_field() -> WarpField:
    """The field of an object that has not moved since its keyframe."""
    return WarpField(np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))


@dataclass(frozen=True, slots=True)
class FieldFit:
    """What :func:`fit_field` found.

    Attributes:
        field: the fitted map, or None when too few points agreed on a motion.
        inliers: ``(N,)`` bool, points the affine part explains within the RANSAC threshold.
        kept: ``(N,)`` bool, points the whole field (affine plus residual) explains within
            ``keep_px``: the ones worth tracking further.
    """

    field: WarpField | None
    inliers: np.ndarray
    kept: np.ndarray


def fit_field(
    current: np.ndarray,
    key: np.ndarray,
    *,
    model: str = "affine",
    ransac_px: float = 2.0,
    keep_px: float = 3.0,
    grid: int = 0,
    cover: tuple[float, float, float, float] | None = None,
    max_residual: float = 0.0,
    smooth: float = 1.0,
    expected: np.ndarray | None = None,
    max_change: float = 0.0,
) -> FieldFit:
    """Fit a :class:`WarpField` to point pairs.

    The global part is fitted with RANSAC; the residual (``grid`` > 0) is a mesh of nodes whose
    bilinear interpolation best matches what the global part leaves, under a penalty on the
    mesh's second differences (``smooth``) that keeps it smooth where points are few, refitted
    three times with Tukey weights so that a few wrong points do not bend it.

    Args:
        current: ``(N, 2)`` float32 points in the current frame, full-resolution pixels.
        key: ``(N, 2)`` float32 the same points in the keyframe.
        model: ``"affine"`` (6 degrees of freedom), ``"similarity"`` (4: translation,
            rotation, uniform scale) or ``"homography"`` (8; its perspective part is dropped
            back to the affine that best matches it on the points).
        ransac_px: RANSAC inlier threshold, full-resolution pixels.
        keep_px: a point is kept when the final field predicts it within this many pixels.
        grid: mesh nodes across the longer side of the covered box (0: the global part alone).
        cover: a keyframe box (XYXY) the mesh must cover once moved into the current frame,
            besides the points (the object's keyframe box: its tips may hold no point).
        max_residual: a residual longer than this (pixels) is an outlier, not deformation
            (0: ``4 * keep_px``).
        smooth: weight of the mesh's smoothness against the points.
        expected: ``(N, 2)`` the residual each point had on the previous frame; with
            ``max_change`` > 0, a point whose residual jumped by more than that many pixels
            since is an outlier (a second motion inside the object, not a deformation: shapes
            change a little per frame).

    Returns:
        A :class:`FieldFit`; its ``field`` is None below 3 agreeing points (4 for a homography).
    """
    n = len(current)
    none = np.zeros(n, bool)
    need = 4 if model == "homography" else 3
    if n < need:
        return FieldFit(None, none, none)
    src, dst = current.reshape(-1, 1, 2), key.reshape(-1, 1, 2)
    if model == "similarity":
        affine, status = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=ransac_px,
                                                     refineIters=10)
    elif model == "homography":
        homography, status = cv2.findHomography(src, dst, cv2.RANSAC, ransac_px)
        affine = None
        if homography is not None:
            chosen = status.ravel().astype(bool)
            affine, _ = cv2.estimateAffine2D(src[chosen], cv2.perspectiveTransform(src[chosen], homography),
                                             method=cv2.LMEDS)
    else:
        affine, status = cv2.estimateAffine2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=ransac_px,
                                              refineIters=10)
    if affine is None or status is None or int(status.sum()) < need:
        return FieldFit(None, none, none)
    inliers = status.ravel().astype(bool)
    field = WarpField(np.asarray(affine, np.float64))
    if grid >= 2:
        x0, y0 = current.min(axis=0)
        x1, y1 = current.max(axis=0)
        if cover is not None:
            cx0, cy0, cx1, cy1 = field.inverse_box(cover, margin=2.0)
            x0, y0, x1, y1 = min(x0, cx0), min(y0, cy0), max(x1, cx1), max(y1, cy1)
        field = _mesh(field, current, key, (float(x0), float(y0), float(x1), float(y1)), grid,
                      max_residual or 4.0 * keep_px, 2.0 * keep_px, smooth, expected, max_change)
    error = np.linalg.norm(field.points(current) - key, axis=1)
    return FieldFit(field, inliers, error <= keep_px)


def _mesh(
    field: WarpField, current: np.ndarray, key: np.ndarray, box: tuple[float, float, float, float], grid: int,
    max_residual: float, cutoff: float, smooth: float, expected: np.ndarray | None, max_change: float,
) -> WarpField:
    """``field`` plus the smooth mesh residual described in :func:`fit_field`."""
    x0, y0, x1, y1 = box
    step = max(x1 - x0, y1 - y0, 1.0) / (grid - 1)
    gw, gh = int(np.ceil((x1 - x0) / step)) + 1, int(np.ceil((y1 - y0) / step)) + 1
    offsets = (key - field.points(current)).astype(np.float64)  # (N, 2) what the global part leaves
    # Each point is the bilinear mix of the four nodes around it: one row of A.
    gx = np.clip((current[:, 0] - x0) / step, 0.0, gw - 1.0001)
    gy = np.clip((current[:, 1] - y0) / step, 0.0, gh - 1.0001)
    ix, iy = gx.astype(int), gy.astype(int)
    fx, fy = gx - ix, gy - iy
    nodes = gw * gh
    a = np.zeros((len(current), nodes))
    rows = np.arange(len(current))
    for dx, dy, weight in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        a[rows, (iy + dy) * gw + ix + dx] += weight
    penalty = smooth * _second_differences(gh, gw) + 1e-3 * np.eye(nodes)
    usable = np.linalg.norm(offsets, axis=1) <= max_residual
    if expected is not None and max_change > 0:
        usable &= np.linalg.norm(offsets - expected, axis=1) <= max_change
    weights = usable.astype(np.float64)
    solution = np.zeros((nodes, 2))
    for _ in range(3):
        if weights.sum() < 3:
            return field
        weighted = a * weights[:, None]
        solution = np.linalg.solve(weighted.T @ a + penalty, weighted.T @ offsets)
        miss = np.linalg.norm(a @ solution - offsets, axis=1)
        weights = np.where(miss < cutoff, (1.0 - (miss / cutoff) ** 2) ** 2, 0.0)  # Tukey's biweight
    box = (x0, y0, x0 + (gw - 1) * step, y0 + (gh - 1) * step)
    return WarpField(field.affine, box, solution.reshape(gh, gw, 2).astype(np.float32))


def _second_differences(gh: int, gw: int) -> np.ndarray:
    """``(gh*gw, gh*gw)`` float64 ``D.T @ D`` for the second differences of a grid along rows
    and columns: zero exactly for residuals that vary linearly."""
    index = np.arange(gh * gw).reshape(gh, gw)
    triples = [index[:, :-2].ravel(), index[:, 1:-1].ravel(), index[:, 2:].ravel()], \
              [index[:-2, :].ravel(), index[1:-1, :].ravel(), index[2:, :].ravel()]
    rows = []
    for left, middle, right in triples:
        d = np.zeros((len(left), gh * gw))
        r = np.arange(len(left))
        d[r, left], d[r, middle], d[r, right] = 1.0, -2.0, 1.0
        rows.append(d)
    stacked = np.vstack(rows)
    return np.asarray(stacked.T @ stacked)
