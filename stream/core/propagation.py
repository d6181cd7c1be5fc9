"""Masks between keyframes: each object's mask carried forward on the edge at camera rate.

SAM runs only on keyframes (a frame through the split costs seconds over real links); between
them :class:`MaskPropagator` moves every object's keyframe mask with the object. Per frame::

    frame (HxWx3 uint8 RGB) -> RGB and grey at work_size     shared by all objects
    Lucas-Kanade of every object's points, forward and back   one call each way for all objects
    per object:
      tint   where grey kept under half its points: again in grey and its tint (below)
      fit    RANSAC affine + smooth mesh residual, current -> keyframe (warp_field.fit_field)
      refine the keyframe warped through that fit, matched to this frame by Lucas-Kanade:
             correspondences measured against the keyframe, so point drift does not pile up
      warp   the keyframe mask, once, through the field (no resampling of resampled masks)
    overlaps: the object whose warped keyframe looks like the overlap (or whose points are
             there) is in front; the other loses those pixels and its points there
    top up:  new corners in the visible mask when fewer than ``redetect`` of the points remain

Tint: an object whose colour differs from its surroundings more than its brightness does (an
orange shape on a grey background of the same luminance) has little to track in grey, and a large
jump between frames (a live run's, after a dropped stretch) loses it. Such an object gets a *tint*
on its keyframe: the frame's colours projected on the direction that best tells its pixels from a
ring around them (Fisher's linear discriminant), stretched to 0-255. On a frame where grey kept
fewer than half its points, they are tracked again in two channels, grey and tint (Lucas-Kanade
sums both channels' evidence, so an outline that only colour shows holds the points at the edge),
and the frame is matched to the keyframe the same way. Only then: a tint also shows an occluder's
edge sharply, which drags the points next to it, where grey (which kept them) does not. On the
generated clips an orange star of its background's brightness, followed every 8th frame, keeps
IoU 0.98 with the tint and is lost at once (0.27, then 0.10) without it.

The fitted motion is anchored at the keyframe: an object's state is its keyframe mask and one
map from the current frame to the keyframe, refitted every frame. That is why it holds for
dozens of frames where warping the previous mask by dense flow (``method="dense"``, the
baseline kept for comparison) drifts: there every frame's errors are carried into the next.
``pedsam bench-propagation`` measures both.

Each :class:`Propagated` carries a confidence in [0, 1] for the caller to ask for a keyframe:
the product of ``tracked`` (points that survived this frame's forward-backward check),
``inliers`` (surviving points the fitted motion explains), ``visible`` (visible area over the
area the motion predicts: falls when the object is hidden or leaves the frame) and
``appearance`` (structural similarity of the warped keyframe with this frame inside the mask:
falls on a cut, a flash, an occluder the propagator does not know, or a wrong fit), times
``min(1, points / min_points)``. An object with no usable points keeps moving at its last
frame-to-frame motion, with confidence 0.

Pure and synchronous: no threads, no I/O, no logging.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from pedsam.stream.core.flow_warp import flow_back, warp_by_flow
from pedsam.stream.core.points import find_corners, points_inside, sample, similarity, track_points
from pedsam.stream.core.warp_field import FieldFit, WarpField, fit_field, identity_field

__all__ = ["MaskPropagator", "Propagated", "PropagationConfig", "Working"]

METHODS = ("points", "dense")
MODELS = ("similarity", "affine", "homography")


@dataclass(frozen=True, kw_only=True, slots=True)
class PropagationConfig:
    """How masks are propagated. Pixel distances are in working-image pixels.

    The defaults are the measured choice (``pedsam bench-propagation``).

    Attributes:
        method: ``"points"`` (tracked points, a motion per object anchored at the keyframe) or
            ``"dense"`` (Farneback flow warping of the previous mask; the baseline).
        model: the global part of an object's motion: ``"similarity"``, ``"affine"`` or
            ``"homography"``.
        grid: mesh nodes across an object for what the global motion leaves (bending, shape
            change); 0 for the global motion alone.
        smooth: the mesh's stiffness against the points.
        max_change: a point whose residual jumps by more than ``keep_px`` plus this share of the
            object's size (square root of its keyframe area) in one frame moves with something
            else (a second motion inside the mask), not with the object's deformation.
        work_size: longest side of the working image; smaller frames are not enlarged.
        max_points: points tracked per object at most; min_points: below this many an
            object's confidence is scaled down; min_distance: least distance between points.
        window, levels: Lucas-Kanade window side and pyramid levels above the base.
        fb_px: forward-backward error above which a point is dropped.
        ransac_px: RANSAC inlier threshold of the global motion.
        keep_px: a point further than this from where the fitted field puts it is dropped.
        redetect: top points up when fewer than this share of the keyframe's remain.
        refine: match points against the keyframe every frame (see the module docstring);
            refine_window, refine_levels: its Lucas-Kanade window and pyramid levels.
        tint: track an object in grey and its tint (see the module docstring) on a frame where grey
            alone kept fewer than ``tint_below`` of its points; off: grey alone.
    """

    method: str = "points"
    model: str = "affine"
    grid: int = 6
    smooth: float = 0.1
    max_change: float = 0.03
    work_size: int = 480
    max_points: int = 100
    min_points: int = 8
    min_distance: int = 4
    window: int = 15
    levels: int = 3
    fb_px: float = 0.5
    ransac_px: float = 1.0
    keep_px: float = 1.5
    redetect: float = 0.7
    refine: bool = True
    refine_window: int = 9
    refine_levels: int = 1
    tint: bool = True
    tint_below: float = 0.5

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {self.model!r}")
        if self.work_size < 32 or self.max_points < 4 or min(self.window, self.refine_window) < 5:
            raise ValueError("work_size must be at least 32, max_points at least 4 and windows at least 5")
        if self.grid < 0 or self.grid == 1:
            raise ValueError(f"grid must be 0 (no mesh) or at least 2, got {self.grid}")


@dataclass(frozen=True, slots=True)
class Propagated:
    """One object's mask on the frame given to :meth:`MaskPropagator.step`.

    Attributes:
        id: the object's id, as given to :meth:`MaskPropagator.reset` or :meth:`~MaskPropagator.add`.
        mask: ``(H, W)`` bool, the object's visible pixels.
        confidence: in [0, 1], the product described in the module docstring; ask for a
            keyframe when it falls (0.5 is a sensible threshold).
        tracked, inliers, visible, appearance: its factors, each in [0, 1].
        points: points that carry the object into the next frame.
    """

    id: int
    mask: np.ndarray
    confidence: float
    tracked: float
    inliers: float
    visible: float
    appearance: float
    points: int


@dataclass
class _Object:
    """One object's state since its keyframe (full-resolution pixels unless said otherwise)."""

    id: int
    key_mask: np.ndarray  # (h, w) uint8 0/255, the keyframe mask cropped to its box
    key_origin: tuple[int, int]  # (x, y) of key_mask[0, 0]
    key_area: int
    key_grey: np.ndarray  # (h', w') uint8, the working grey of the object's keyframe (shared)
    mask: np.ndarray  # (H, W) bool, the mask on the last frame
    anchors: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))  # (P, 2) in the keyframe
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))  # (P, 2) last frame, working px
    key_points: int = 0
    motion: WarpField = field(default_factory=identity_field)  # last frame -> keyframe
    velocity: np.ndarray = field(default_factory=lambda: np.eye(3))  # (3, 3) last step, frame t -> frame t - 1
    box: tuple[int, int, int, int] = (0, 0, 0, 0)  # XYXY (exclusive) around the shape on the last frame
    shape: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), bool))  # (y1 - y0, x1 - x0) in box
    tint: np.ndarray | None = None  # (1, 4) float32: working RGB -> its tint channel (cv2.transform)
    key_image: np.ndarray | None = None  # the keyframe as it is tracked: key_grey, or (h', w', 2) grey and tint

    @property
    def key_box(self) -> tuple[float, float, float, float]:
        height, width = self.key_mask.shape
        return (self.key_origin[0], self.key_origin[1], self.key_origin[0] + width, self.key_origin[1] + height)


@dataclass(frozen=True, slots=True)
class Working:
    """A frame as the propagator works on it (:meth:`MaskPropagator.prepare`): its ``(H, W)``, its
    grey image at the working size, ``(h, w)`` uint8, and (for tints) its colours there, ``(h, w,
    3)`` uint8. What a caller keeps of frames it may have to propagate through again: for a
    1280x720 frame (2.8 MB), 0.5 MB at the default working size."""

    size: tuple[int, int]
    grey: np.ndarray
    colour: np.ndarray | None = None  # (h, w, 3) uint8 RGB at the working size, for tints


class MaskPropagator:
    """Carries objects' masks from a keyframe through the following frames.

    Typical use::

        propagator = MaskPropagator()
        propagator.reset(keyframe, {0: mask_a, 1: mask_b})   # SAM's masks on a keyframe
        for frame in frames_until_next_keyframe:
            for result in propagator.step(frame):            # one per object, in id order
                if result.confidence < 0.5: ...              # ask for a keyframe

    Frames are ``(H, W, 3)`` uint8 RGB and masks ``(H, W)`` bool, all of one size until the
    next :meth:`reset`.
    """

    def __init__(self, config: PropagationConfig | None = None) -> None:
        self.config = config or PropagationConfig()
        self._objects: dict[int, _Object] = {}
        self._size: tuple[int, int] | None = None  # (H, W)
        self._scale = 1.0  # working pixels per frame pixel
        self._grey: np.ndarray | None = None  # (h', w') uint8, working grey of the last frame
        self._colour: np.ndarray | None = None  # (h', w', 3) uint8, its working RGB (with tints)
        self._front: dict[tuple[int, int], int] = {}  # (lower id, higher id) -> the id in front

    @property
    def ids(self) -> list[int]:
        """Ids of the objects being propagated, in order."""
        return sorted(self._objects)

    def reset(self, frame: np.ndarray, masks: Mapping[int, np.ndarray] | Sequence[np.ndarray]) -> None:
        """Start over from a keyframe: ``masks`` by object id (a sequence numbers them from 0).

        Raises:
            ValueError: a frame that is not HxWx3 uint8, or a mask of another size.
        """
        height, width = _check_frame(frame)
        self._size = (height, width)
        self._scale = min(1.0, self.config.work_size / max(height, width))
        working = self.prepare(frame)
        self._grey, self._colour = working.grey, working.colour
        self._objects.clear()
        self._front.clear()
        items = masks.items() if isinstance(masks, Mapping) else enumerate(masks)
        for object_id, mask in items:
            self._add(int(object_id), mask)

    def add(self, object_id: int, mask: np.ndarray) -> None:
        """Start propagating one more object from its mask on the last frame given (to
        :meth:`reset` or :meth:`step`); an existing id is replaced.

        Raises:
            ValueError: before any :meth:`reset`, or a mask of another size.
        """
        if self._grey is None:
            raise ValueError("add() needs a frame first: call reset() with a keyframe")
        self._add(object_id, mask)

    def remove(self, object_id: int) -> None:
        """Stop propagating an object (unknown ids are ignored)."""
        self._objects.pop(object_id, None)
        self._front = {pair: front for pair, front in self._front.items() if object_id not in pair}

    def prepare(self, frame: np.ndarray) -> Working:
        """``frame`` (HxWx3 uint8 RGB) as :meth:`step` works on it; :meth:`step` takes either."""
        height, width = _check_frame(frame)
        scale = min(1.0, self.config.work_size / max(height, width))
        if not self.config.tint or self.config.method != "points":
            return Working((height, width), self._working_grey(frame, scale))
        colour = frame
        if scale < 1.0:
            size = (max(8, round(width * scale)), max(8, round(height * scale)))
            colour = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
        return Working((height, width), np.asarray(cv2.cvtColor(colour, cv2.COLOR_RGB2GRAY), np.uint8), colour)

    def step(self, frame: np.ndarray | Working) -> list[Propagated]:
        """Every object's mask on ``frame``, the frame after the last one given, in id order.

        Raises:
            ValueError: before any :meth:`reset`, or a frame of another size than the keyframe's.
        """
        if self._grey is None or self._size is None:
            raise ValueError("step() needs a keyframe first: call reset()")
        working = frame if isinstance(frame, Working) else self.prepare(frame)
        if working.size != self._size:
            raise ValueError(f"frame size {working.size[1]}x{working.size[0]} differs from the keyframe's "
                             f"{self._size[1]}x{self._size[0]}: reset() with a new keyframe")
        previous, grey = self._grey, working.grey
        before = (previous, self._colour)
        self._grey, self._colour = grey, working.colour
        if self.config.method == "dense":
            return self._step_dense(previous, grey)
        return self._step_points(before, (grey, working.colour))

    # -- the points method -------------------------------------------------------------------

    def _step_points(self, previous: tuple[np.ndarray, np.ndarray | None],
                     current: tuple[np.ndarray, np.ndarray | None]) -> list[Propagated]:
        """``previous`` and ``current``: each frame's working grey and RGB (None without tints)."""
        config, s = self.config, self._scale
        grey = current[0]
        objects = [self._objects[i] for i in self.ids]
        factors: dict[int, tuple[float, float]] = {}
        counts = [len(o.points) for o in objects]
        every = np.concatenate([o.points for o in objects]) if objects else np.zeros((0, 2), np.float32)
        moved_all, good_all = track_points(previous[0], current[0], every, window=config.window,
                                           levels=config.levels, fb_px=config.fb_px)
        start = 0
        for obj, count in zip(objects, counts):
            moved, good = moved_all[start:start + count], good_all[start:start + count]
            start += count
            tinted = (obj.tint is not None and previous[1] is not None and current[1] is not None and count > 0
                      and good.mean() < config.tint_below)
            if tinted:  # grey lost it: its outline in colour may hold it
                moved_tint, good_tint = self._track_tinted(obj, previous, current)
                tinted = good_tint.sum() > good.sum()
                if tinted:
                    moved, good = moved_tint, good_tint
            points, anchors = moved[good], obj.anchors[good]
            expected = obj.motion.residual_at(obj.points[good] / s)
            before = obj.motion.affine
            fit = self._fit(obj, points, anchors, expected)
            if fit.field is not None:
                obj.motion = fit.field
                obj.points, obj.anchors = points[fit.kept], anchors[fit.kept]
                if config.refine:
                    fit = self._refine(obj, current, tinted=tinted) or fit
                obj.velocity = _step(before, obj.motion.affine)
            else:  # lost: hidden, gone, or a cut; carry on at the last frame-to-frame motion
                obj.motion = WarpField((_homogeneous(before) @ obj.velocity)[:2])
                obj.points, obj.anchors = points[:0], anchors[:0]
            factors[obj.id] = (float(good.mean()) if count else 0.0, float(fit.kept.mean()) if len(fit.kept) else 0.0)
            self._warp_shape(obj)
        self._settle_overlaps(objects)
        results = []
        for obj in objects:
            hidden = ~points_inside(obj.points / s, obj.shape, obj.box[:2])  # under another object, or off it
            obj.points, obj.anchors = obj.points[~hidden], obj.anchors[~hidden]
            result = self._result(obj, *factors[obj.id])
            # New points only where the object still looks like its keyframe: on an occluder
            # or after a cut they would make it follow something else.
            if (len(obj.points) < config.redetect * max(obj.key_points, config.min_points)
                    and result.appearance >= 0.5 and result.visible >= 0.3):
                found = self._corners(obj, grey, obj.shape, obj.box[:2], config.max_points - len(obj.points))
                obj.points = np.concatenate([obj.points, found])
                obj.anchors = np.concatenate([obj.anchors, obj.motion.points(found / s)])
                result = dataclasses.replace(result, points=len(obj.points))
            results.append(result)
        return results

    def _track_tinted(self, obj: _Object, previous: tuple[np.ndarray, np.ndarray | None],
                      current: tuple[np.ndarray, np.ndarray | None]) -> tuple[np.ndarray, np.ndarray]:
        """:func:`track_points` of one object's points in its grey and tint, in a crop around
        them as far out as Lucas-Kanade's pyramid reaches (the tint is made there only)."""
        config, points = self.config, obj.points
        reach = config.window * (1 << config.levels) // 2 + config.window
        height, width = current[0].shape[:2]
        x0, y0 = max(0, int(points[:, 0].min()) - reach), max(0, int(points[:, 1].min()) - reach)
        x1 = min(width, int(points[:, 0].max()) + reach + 1)
        y1 = min(height, int(points[:, 1].max()) + reach + 1)
        before = self._image(obj, previous, (x0, y0, x1, y1), tinted=True)
        after = self._image(obj, current, (x0, y0, x1, y1), tinted=True)
        origin = np.array([x0, y0], np.float32)
        moved, good = track_points(before, after, points - origin, window=config.window, levels=config.levels,
                                   fb_px=config.fb_px)
        return moved + origin, good

    @staticmethod
    def _image(obj: _Object, frame: tuple[np.ndarray, np.ndarray | None],
               box: tuple[int, int, int, int] | None = None, *, tinted: bool = False) -> np.ndarray:
        """A frame (working grey and RGB) within ``box`` (XYXY working pixels; None: all of it):
        grey, or with ``tinted`` (and a tint to make) (h', w', 2) grey and the object's tint."""
        grey, colour = frame
        if box is not None:
            x0, y0, x1, y1 = box
            grey, colour = grey[y0:y1, x0:x1], colour[y0:y1, x0:x1] if colour is not None else None
        if not tinted or obj.tint is None or colour is None:
            return grey
        return np.asarray(cv2.merge([grey, cv2.transform(colour, obj.tint)]), np.uint8)

    def _fit(self, obj: _Object, points: np.ndarray, anchors: np.ndarray, expected: np.ndarray) -> FieldFit:
        """The field through ``(N, 2)`` working-pixel ``points`` and their keyframe ``anchors``,
        whose residuals were ``expected`` (``(N, 2)``, full-resolution pixels) on the last frame."""
        config, s = self.config, self._scale
        size = float(np.sqrt(obj.key_area))
        return fit_field(points / s, anchors, model=config.model, ransac_px=config.ransac_px / s,
                         keep_px=config.keep_px / s, grid=config.grid, cover=obj.key_box, max_residual=0.4 * size,
                         smooth=config.smooth, expected=expected,
                         max_change=config.keep_px / s + config.max_change * size)

    def _refine(self, obj: _Object, current: tuple[np.ndarray, np.ndarray | None], *, tinted: bool) -> FieldFit | None:
        """Match the object's points against its keyframe, not the last frame, and refit.

        The keyframe (grey, or grey and tint when this frame's points were ``tinted``) is warped
        through the predicted field into this frame's box around the points; Lucas-Kanade from
        there to this frame (``current``: its working grey and RGB) finds where each keyframe
        point really is. Returns None (the prediction stands) when too few points match.
        """
        grey = current[0]
        config, s = self.config, self._scale
        points = obj.points
        if len(points) < config.min_points:
            return None
        height, width = grey.shape[:2]
        margin = config.window
        x0, y0 = max(0, int(points[:, 0].min()) - margin), max(0, int(points[:, 1].min()) - margin)
        x1 = min(width, int(points[:, 0].max()) + margin + 1)
        y1 = min(height, int(points[:, 1].max()) + margin + 1)
        map_x, map_y = obj.motion.maps(np.arange(x0, x1) / s, np.arange(y0, y1) / s)
        key = obj.key_image if tinted and obj.key_image is not None else obj.key_grey
        template = cv2.remap(key, map_x * s, map_y * s, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        origin = np.array([x0, y0], np.float32)
        here = self._image(obj, current, (x0, y0, x1, y1), tinted=tinted)
        found, good = track_points(template, here, points - origin, window=config.refine_window,
                                   levels=config.refine_levels, fb_px=config.fb_px)
        if int(good.sum()) < config.min_points:
            return None
        matched = found[good] + origin
        anchors = obj.motion.points(points[good] / s)
        fit = self._fit(obj, matched, anchors, obj.motion.residual_at(points[good] / s))
        if fit.field is None or int(fit.kept.sum()) < config.min_points:
            return None
        obj.motion = fit.field
        obj.points, obj.anchors = matched[fit.kept], anchors[fit.kept]
        return fit

    def _warp_shape(self, obj: _Object) -> None:
        """The keyframe mask through the object's field: ``obj.box`` and ``obj.shape``."""
        height, width = self._size or (0, 0)
        x0, y0, x1, y1 = obj.motion.inverse_box(obj.key_box, margin=2.0)
        box = (max(0, int(x0)), max(0, int(y0)), min(width, int(np.ceil(x1)) + 1), min(height, int(np.ceil(y1)) + 1))
        if obj.key_area == 0 or box[0] >= box[2] or box[1] >= box[3]:
            obj.box, obj.shape = (0, 0, 0, 0), np.zeros((0, 0), bool)
            return
        obj.box, obj.shape = box, obj.motion.warp(obj.key_mask, obj.key_origin, box) > 127

    def _settle_overlaps(self, objects: list[_Object]) -> None:
        """Where two shapes overlap, the one in front (:meth:`_in_front`) keeps the pixels and
        the other loses them. Without evidence this frame, the last decision holds."""
        for i, a in enumerate(objects):
            for b in objects[i + 1:]:
                x0, y0 = max(a.box[0], b.box[0]), max(a.box[1], b.box[1])
                x1, y1 = min(a.box[2], b.box[2]), min(a.box[3], b.box[3])
                if x0 >= x1 or y0 >= y1:
                    continue
                overlap = (a.shape[y0 - a.box[1]:y1 - a.box[1], x0 - a.box[0]:x1 - a.box[0]]
                           & b.shape[y0 - b.box[1]:y1 - b.box[1], x0 - b.box[0]:x1 - b.box[0]])
                if not overlap.any():
                    continue
                pair = (min(a.id, b.id), max(a.id, b.id))
                decided = self._in_front(a, b, overlap, (x0, y0))
                if decided is not None:
                    self._front[pair] = decided
                front = self._front.get(pair)
                if front is not None:
                    back = b if front == a.id else a
                    back.shape[y0 - back.box[1]:y1 - back.box[1], x0 - back.box[0]:x1 - back.box[0]] &= ~overlap

    def _in_front(self, a: _Object, b: _Object, overlap: np.ndarray, origin: tuple[int, int]) -> int | None:
        """Which of two objects shows in their overlap (bool, top-left pixel at ``origin``), or
        None when this frame cannot tell: the one whose warped keyframe matches the pixels
        there clearly better, else the one with clearly more tracked points there."""
        assert self._grey is not None
        s = self._scale
        ys, xs = np.nonzero(overlap)
        stride = max(1, len(xs) // 200)
        xy = np.stack([xs[::stride] + origin[0], ys[::stride] + origin[1]], axis=1).astype(np.float32)
        now = sample(self._grey, xy * s)
        miss_a = float(np.abs(sample(a.key_grey, a.motion.points(xy) * s) - now).mean())
        miss_b = float(np.abs(sample(b.key_grey, b.motion.points(xy) * s) - now).mean())
        if abs(miss_a - miss_b) > 4.0 and min(miss_a, miss_b) < 0.6 * max(miss_a, miss_b):
            return a.id if miss_a < miss_b else b.id
        here_a = int(points_inside(a.points / s, overlap, origin).sum())
        here_b = int(points_inside(b.points / s, overlap, origin).sum())
        if max(here_a, here_b) >= 2 and max(here_a, here_b) >= 2 * min(here_a, here_b):
            return a.id if here_a > here_b else b.id
        return None

    def _result(self, obj: _Object, tracked: float, inliers: float) -> Propagated:
        height, width = self._size or (0, 0)
        mask = np.zeros((height, width), bool)
        x0, y0, x1, y1 = obj.box
        if x1 > x0:
            mask[y0:y1, x0:x1] = obj.shape
        obj.mask = mask
        area = int(np.count_nonzero(obj.shape))
        expected = obj.key_area / max(abs(float(np.linalg.det(obj.motion.affine[:, :2]))), 1e-6)
        visible = min(1.0, area / expected) if expected > 0 else 0.0
        appearance = self._appearance(obj) if area else 0.0
        support = min(1.0, len(obj.points) / self.config.min_points)
        confidence = tracked * inliers * visible * appearance * support
        return Propagated(obj.id, mask, confidence, tracked, inliers, visible, appearance, len(obj.points))

    def _appearance(self, obj: _Object) -> float:
        """How alike the keyframe, warped through the field, and this frame look inside the
        object: :func:`~pedsam.stream.core.points.similarity` of about 400 samples of the
        shape's interior (two pixels in from its edge, where a pixel's error would weigh most)."""
        assert self._grey is not None
        inner = cv2.erode(obj.shape.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        ys, xs = np.nonzero(inner if inner.any() else obj.shape)
        stride = max(1, len(xs) // 400)
        xy = np.stack([xs[::stride] + obj.box[0], ys[::stride] + obj.box[1]], axis=1).astype(np.float32)
        now = sample(self._grey, xy * self._scale)
        return similarity(now, sample(obj.key_grey, obj.motion.points(xy) * self._scale))

    def _corners(self, obj: _Object, grey: np.ndarray, shape: np.ndarray, origin: tuple[int, int],
                 wanted: int) -> np.ndarray:
        config = self.config
        return find_corners(grey, shape, origin, self._scale, wanted=wanted, existing=obj.points,
                            min_distance=config.min_distance, edge=max(1, config.window // 5))

    # -- the dense baseline ------------------------------------------------------------------

    def _step_dense(self, previous: np.ndarray, grey: np.ndarray) -> list[Propagated]:
        """Every mask moved by the flow from this frame back to the last; confidence is the
        visible share of the keyframe area alone (no points, no keyframe to compare with)."""
        flow = flow_back(previous, grey)
        results = []
        for object_id in self.ids:
            obj = self._objects[object_id]
            obj.mask = warp_by_flow(obj.mask, flow, self._scale)
            visible = min(1.0, int(np.count_nonzero(obj.mask)) / obj.key_area) if obj.key_area else 0.0
            results.append(Propagated(object_id, obj.mask, visible, 1.0, 1.0, visible, 1.0, 0))
        return results

    # -- shared ------------------------------------------------------------------------------

    @staticmethod
    def _working_grey(frame: np.ndarray, scale: float) -> np.ndarray:
        height, width = frame.shape[:2]
        grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)  # before resizing: a third of the work
        if scale < 1.0:
            size = (max(8, round(width * scale)), max(8, round(height * scale)))
            grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
        return np.asarray(grey, np.uint8)

    def _add(self, object_id: int, mask: np.ndarray) -> None:
        assert self._size is not None and self._grey is not None
        mask = np.asarray(mask).astype(bool, copy=False)
        if mask.shape != self._size:
            raise ValueError(f"mask of object {object_id} has shape {tuple(mask.shape)}; "
                             f"the frame's (H, W) is {self._size}")
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        y0, y1, x0, x1 = (int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1) if rows.size else (0,) * 4
        crop = mask[y0:y1, x0:x1]
        obj = _Object(object_id, crop.astype(np.uint8) * 255, (x0, y0), int(np.count_nonzero(crop)), self._grey,
                      mask.copy(), box=(x0, y0, x1, y1), shape=crop.copy())
        if self._colour is not None and rows.size:
            obj.tint = tint(self._colour, mask, self._scale)
            obj.key_image = self._image(obj, (self._grey, self._colour), tinted=True)
        if self.config.method == "points":
            obj.points = self._corners(obj, self._grey, crop, (x0, y0), self.config.max_points)
            obj.anchors = obj.points / self._scale
            obj.key_points = len(obj.points)
        self._objects[object_id] = obj
        self._front = {pair: front for pair, front in self._front.items() if object_id not in pair}


_GREY = np.array([0.299, 0.587, 0.114])  # RGB -> grey, as cv2.COLOR_RGB2GRAY weighs them


def tint(colour: np.ndarray, mask: np.ndarray, scale: float) -> np.ndarray | None:
    """The ``(1, 4)`` float32 :func:`cv2.transform` matrix that maps working RGB ``colour``
    (h', w', 3) uint8 to an object's tint (see the module docstring): Fisher's discriminant between
    the object's pixels (``mask``, (H, W) bool at the frame's size; ``scale`` working pixels per
    frame pixel) and a ring around them a quarter of the object's size wide, stretched so that
    the 1st to 99th percentile of both spans 0-255. None when there are too few pixels either
    side, or when colour tells them apart no better than brightness does (Fisher's criterion
    under twice grey's: a grey video, or an object that stands out in grey already)."""
    height, width = colour.shape[:2]
    inside = cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST).astype(bool)
    area = int(np.count_nonzero(inside))
    if area < 16:
        return None
    reach = max(3, round(0.25 * math.sqrt(area)))
    ring = cv2.dilate(inside.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * reach + 1,) * 2))
    around = ring.astype(bool) & ~inside
    if np.count_nonzero(around) < 16:
        return None
    a, b = colour[inside].astype(np.float64), colour[around].astype(np.float64)
    spread = np.cov(a.T) + np.cov(b.T) + np.eye(3)  # + 1 grey level^2 of noise: a flat colour stays solvable
    difference = a.mean(axis=0) - b.mean(axis=0)
    direction = np.linalg.solve(spread, difference)
    if float(difference @ direction) < 2.0 * float(_GREY @ difference) ** 2 / float(_GREY @ spread @ _GREY):
        return None
    values = np.concatenate([a, b]) @ direction
    low, high = np.percentile(values, [1.0, 99.0])
    if not np.isfinite(direction).all() or high - low < 1e-6:
        return None
    gain = 255.0 / (high - low)
    return np.array([[*(direction * gain), -low * gain]], np.float32)


def _homogeneous(affine: np.ndarray) -> np.ndarray:
    """``(2, 3)`` affine -> ``(3, 3)`` float64."""
    return np.vstack([np.asarray(affine, np.float64), [0.0, 0.0, 1.0]])


def _step(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """The ``(3, 3)`` motion from a frame to the one before, given both frames' ``(2, 3)`` maps
    to the keyframe (identity when the earlier map is degenerate)."""
    try:
        return np.asarray(np.linalg.inv(_homogeneous(before)) @ _homogeneous(after))
    except np.linalg.LinAlgError:
        return np.eye(3)


def _check_frame(frame: np.ndarray) -> tuple[int, int]:
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"a frame must be HxWx3 uint8 RGB, got {frame.shape} {frame.dtype}")
    return int(frame.shape[0]), int(frame.shape[1])
