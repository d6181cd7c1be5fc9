"""Synthetic videos with known moving objects, and their exact ground truth.

Two kinds live here:

- :func:`make_clip`, the edge's stand-in for real footage: ``pedsam demo`` and the tests make
  their clips with it (two solid shapes sliding over a smooth background), described below.
- :class:`Scene`, the truth for mask propagation: textured objects that move, turn, change
  size and shape, bend and pass behind each other over a textured background, with the exact
  mask of each object's visible part in every frame (see its docstring; :func:`demo_scene` is
  the 640x480 clip ``pedsam bench-propagation`` measures on).

``samples/make_clip.py`` is :func:`make_clip`'s command line::

    python samples/make_clip.py OUT.mp4 [--frames N] [--size WxH] [--fps F] [--seed S]
                                        [--truth TRUTH.json]

The clip is deterministic for given arguments: a static textured background (a soft
grey gradient plus seeded sinusoidal texture) and two solid objects that never overlap:

- object 0, ``"disc"``: a red disc moving left to right across the upper third;
- object 1, ``"rectangle"``: a yellow rectangle moving diagonally (right and down) in the
  lower half.

Frames are encoded with PyAV as H.264 (libx264, yuv420p, crf 18) with frame ``i`` at
``pts = i`` in a time base of ``1 / fps``, so readers see exactly ``frames`` frames at
``fps``. :func:`make_clip` returns a :class:`ClipTruth` with, per object and frame, the
exact centre and bounding box of the shape as drawn (before encoding). Coordinates are
pixel indices: ``x`` is the column, ``y`` the row, ``(0, 0)`` the top-left pixel.
"""

from __future__ import annotations

import argparse
import dataclasses
import fractions
import json
import math
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import PIL.Image

_DISC_RGB = (220, 30, 30)
_RECT_RGB = (245, 215, 35)


@dataclass(frozen=True, slots=True)
class ObjectTruth:
    """Where one object is in every frame.

    Attributes:
        name: ``"disc"`` or ``"rectangle"`` (also the shape).
        colour: fill colour, RGB uint8 values.
        half_size: ``(half_width, half_height)`` in pixels; a disc's radius twice.
        centres: per frame, the shape's centre ``(x, y)`` in pixels (floats).
        boxes: per frame, the bounding box of the drawn pixels, XYXY pixel indices with
            inclusive maxima (as SAM's ``batched_mask_to_box``).
    """

    name: str
    colour: tuple[int, int, int]
    half_size: tuple[float, float]
    centres: tuple[tuple[float, float], ...]
    boxes: tuple[tuple[int, int, int, int], ...]


@dataclass(frozen=True, slots=True)
class ClipTruth:
    """Ground truth of a clip written by :func:`make_clip`.

    Attributes:
        path: the video file written.
        width, height: frame size in pixels.
        fps: frames per second.
        frame_count: number of frames in the file.
        objects: one entry per object, object 0 first.
    """

    path: str
    width: int
    height: int
    fps: fractions.Fraction
    frame_count: int
    objects: tuple[ObjectTruth, ...]

    def mask(self, obj: int, frame: int) -> np.ndarray:
        """The pixels of object ``obj`` in frame ``frame``: ``(height, width)`` bool."""
        truth = self.objects[obj]
        centre = truth.centres[frame]
        return _shape_mask(truth.name, centre, truth.half_size, self.width, self.height)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; ``fps`` becomes a string such as ``"12"`` or ``"30000/1001"``."""
        data = dataclasses.asdict(self)
        data["fps"] = str(self.fps)
        return data


def make_clip(
    path: str | os.PathLike[str],
    *,
    frames: int = 24,
    width: int = 320,
    height: int = 240,
    fps: int | fractions.Fraction = 12,
    seed: int = 0,
) -> ClipTruth:
    """Write the synthetic clip to ``path`` (container from the extension) and return its truth.

    Args:
        frames: number of frames, at least 1.
        width, height: frame size in pixels; even (yuv420p) and at least 32.
        fps: frames per second, positive.
        seed: seeds the background texture only; object paths depend on size and frames.

    Raises:
        ValueError: an argument out of range.
    """
    rate = fractions.Fraction(fps)
    if frames < 1:
        raise ValueError(f"frames must be at least 1, got {frames}")
    if width < 32 or height < 32 or width % 2 or height % 2:
        raise ValueError(f"size must be even and at least 32x32, got {width}x{height}")
    if rate <= 0:
        raise ValueError(f"fps must be positive, got {fps}")

    short = min(width, height)
    radius = 0.12 * short
    rect_half = (0.10 * width, 0.08 * height)
    w, h = float(width), float(height)
    specs = [  # name, colour, half size, start centre, end centre
        ("disc", _DISC_RGB, (radius, radius), (0.15 * w, 0.30 * h), (0.85 * w, 0.30 * h)),
        ("rectangle", _RECT_RGB, rect_half, (0.25 * w, 0.60 * h), (0.75 * w, 0.78 * h)),
    ]
    background = _background(width, height, seed)
    centres: list[list[tuple[float, float]]] = [[] for _ in specs]
    boxes: list[list[tuple[int, int, int, int]]] = [[] for _ in specs]

    def images() -> Iterator[np.ndarray]:
        for i in range(frames):
            t = i / (frames - 1) if frames > 1 else 0.0
            image = background.copy()
            for k, (name, colour, half, start, end) in enumerate(specs):
                centre = (start[0] + t * (end[0] - start[0]), start[1] + t * (end[1] - start[1]))
                mask = _shape_mask(name, centre, half, width, height)
                image[mask] = colour
                rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
                centres[k].append(centre)
                boxes[k].append((int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])))
            yield image

    encode_clip(path, images(), width, height, rate)

    objects = tuple(
        ObjectTruth(name, colour, half, tuple(centres[k]), tuple(boxes[k]))
        for k, (name, colour, half, _, _) in enumerate(specs)
    )
    return ClipTruth(os.fspath(path), width, height, rate, frames, objects)


def encode_clip(
    path: str | os.PathLike[str], images: Iterable[np.ndarray], width: int, height: int,
    rate: fractions.Fraction,
) -> None:
    """Write HxWx3 uint8 RGB ``images`` as H.264 (libx264, yuv420p, crf 18), frame ``i`` at
    ``pts = i`` in a time base of ``1 / rate``."""
    with av.open(os.fspath(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=rate, options={"crf": "18"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = 1 / rate
        for i, image in enumerate(images):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = i, 1 / rate
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def _shape_mask(
    name: str, centre: tuple[float, float], half: tuple[float, float], width: int, height: int
) -> np.ndarray:
    """``(height, width)`` bool mask of a disc or axis-aligned rectangle."""
    ys, xs = np.mgrid[0:height, 0:width]
    dx, dy = xs - centre[0], ys - centre[1]
    if name == "disc":
        return np.asarray(dx * dx + dy * dy <= half[0] * half[0])
    return np.asarray((np.abs(dx) <= half[0]) & (np.abs(dy) <= half[1]))


def _background(width: int, height: int, seed: int) -> np.ndarray:
    """``(height, width, 3)`` uint8 RGB: grey gradient plus seeded low-frequency texture.

    Values stay within about 60..170 and nearly grey, well apart from the objects'
    saturated colours.
    """
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    base = 80.0 + 50.0 * xs / width + 20.0 * ys / height
    texture = np.zeros((height, width))
    for _ in range(6):
        fx, fy = rng.uniform(1.0, 8.0, size=2)
        phase = rng.uniform(0.0, 2.0 * math.pi)
        texture += np.sin(2.0 * math.pi * (fx * xs / width + fy * ys / height) + phase)
    grey = base + 3.0 * texture
    tint = np.array([0.95, 1.0, 1.05])  # a slight blue cast, identical in every frame
    return np.asarray(np.clip(grey[..., None] * tint, 0, 255), dtype=np.uint8)


# ---------------------------------------------------------------------------------------------
# Scenes for mask propagation: textured objects that move, turn, deform and occlude each other.

SHAPES = ("ellipse", "rectangle", "star")
_TEXTURE_SIZE = 128


@dataclass(frozen=True, kw_only=True, slots=True)
class SpritePose:
    """Where a :class:`Sprite` is in one frame.

    Attributes:
        x, y: centre in pixels (``x`` the column, ``y`` the row; may lie outside the frame).
        angle: degrees, clockwise on screen.
        half_width, half_height: half extents along the object's own axes, pixels.
        bend: the object's own ``u`` coordinate is shifted by ``bend * (v * v - 0.5)`` (``v`` in
            [-1, 1] along its height): 0 is straight, +-0.3 a clearly curved (banana) shape.
    """

    x: float
    y: float
    angle: float
    half_width: float
    half_height: float
    bend: float


@dataclass(frozen=True, kw_only=True, slots=True)
class Sprite:
    """One textured object of a :class:`Scene`, and its path through the frames.

    In its own coordinates ``(u, v)``, both in [-1, 1], the object is an ellipse
    (``u^2 + v^2 <= 1``), a rectangle (``|u|, |v| <= 1``) or a star (five rounded points,
    ``r <= 0.7 + 0.3 cos 5 theta``). It carries a seeded grey texture (factor 0.55..1) times
    ``colour``, which moves, turns and deforms with it. In frame ``i``, with
    ``s = sin(2 pi i / morph_period)`` and ``c = cos(2 pi i / morph_period)``:

    - centre ``centre + velocity * i + sway * sin(2 pi i / period + phase)`` (per axis, px);
    - angle ``angle + spin * i`` (degrees, clockwise on screen);
    - half size ``half_size * (1 + zoom * c)``, times ``(1 + stretch * s)`` across and divided
      by it along the height (a change of shape at constant area);
    - bend ``bend * s`` (see :class:`SpritePose`), a non-affine deformation.

    Attributes:
        depth: drawing order, larger is further back; equal depths draw in list order.
    """

    name: str
    shape: str = "ellipse"
    colour: tuple[int, int, int]
    centre: tuple[float, float]
    half_size: tuple[float, float]
    depth: int = 0
    velocity: tuple[float, float] = (0.0, 0.0)
    sway: tuple[float, float] = (0.0, 0.0)
    period: float = 100.0
    phase: float = 0.0
    angle: float = 0.0
    spin: float = 0.0
    zoom: float = 0.0
    stretch: float = 0.0
    bend: float = 0.0
    morph_period: float = 60.0

    def pose(self, frame: float) -> SpritePose:
        """The pose in frame ``frame`` (see the class docstring)."""
        swing = math.sin(2.0 * math.pi * frame / self.period + self.phase)
        s = math.sin(2.0 * math.pi * frame / self.morph_period)
        c = math.cos(2.0 * math.pi * frame / self.morph_period)
        size = 1.0 + self.zoom * c
        aspect = 1.0 + self.stretch * s
        return SpritePose(
            x=self.centre[0] + self.velocity[0] * frame + self.sway[0] * swing,
            y=self.centre[1] + self.velocity[1] * frame + self.sway[1] * swing,
            angle=self.angle + self.spin * frame,
            half_width=self.half_size[0] * size * aspect,
            half_height=self.half_size[1] * size / aspect,
            bend=self.bend * s,
        )


@dataclass(frozen=True, slots=True)
class SceneFrame:
    """One rendered frame of a :class:`Scene`.

    Attributes:
        image: ``(height, width, 3)`` uint8 RGB, exactly as rendered (no codec).
        masks: per sprite, in the scene's order, the ``(height, width)`` bool mask of its
            *visible* pixels: the pixels painted with its texture in ``image``.
        shapes: per sprite, its whole shape as ``(height, width)`` bool, including what
            sprites in front of it hide (but not what lies outside the frame).
    """

    image: np.ndarray
    masks: tuple[np.ndarray, ...]
    shapes: tuple[np.ndarray, ...]


class Scene:
    """Textured sprites over a textured background, rendered frame by frame with exact truth.

    The background is static seeded multi-scale grey noise (values about 50..200, nearly
    colourless, so that point trackers have texture to hold on to as in real footage);
    sprites are drawn back to front (see :attr:`Sprite.depth`) without anti-aliasing, so
    :attr:`SceneFrame.masks` are exactly the pixels each sprite painted. Rendering is
    deterministic: the same arguments give the same frames.

    Args:
        width, height: frame size in pixels, at least 32 each (even to :meth:`write` it).
        sprites: the objects; their paths may leave the frame.
        frames: how many frames :meth:`write` and :meth:`__iter__` produce, at least 1.
        seed: seeds the background and the sprites' textures.

    Raises:
        ValueError: an argument out of range or an unknown sprite shape.
    """

    def __init__(
        self, width: int, height: int, sprites: Sequence[Sprite], *, frames: int, seed: int = 0
    ) -> None:
        if width < 32 or height < 32:
            raise ValueError(f"size must be at least 32x32, got {width}x{height}")
        if frames < 1:
            raise ValueError(f"frames must be at least 1, got {frames}")
        for sprite in sprites:
            if sprite.shape not in SHAPES:
                raise ValueError(f"sprite {sprite.name!r}: shape must be one of {SHAPES}, got {sprite.shape!r}")
            if min(sprite.half_size) <= 0:
                raise ValueError(f"sprite {sprite.name!r}: half_size must be positive")
        self.width, self.height, self.frames, self.seed = width, height, frames, seed
        self.sprites = tuple(sprites)
        self._background = textured_background(width, height, seed)
        self._textures = [shading_texture(seed * 1000 + 17 * k + 1) for k in range(len(self.sprites))]
        self._order = sorted(range(len(self.sprites)), key=lambda k: -self.sprites[k].depth)

    def frame(self, index: float) -> SceneFrame:
        """Render frame ``index`` (any real number; whole numbers are the clip's frames)."""
        image = self._background.copy()
        shapes: list[np.ndarray] = [np.zeros((self.height, self.width), bool) for _ in self.sprites]
        masks: list[np.ndarray] = [np.zeros((self.height, self.width), bool) for _ in self.sprites]
        for k in self._order:  # back to front
            sprite = self.sprites[k]
            found = self._draw(sprite.shape, sprite.pose(index), sprite.colour, self._textures[k], image)
            if found is None:
                continue
            (y0, x0), inside = found
            shapes[k][y0 : y0 + inside.shape[0], x0 : x0 + inside.shape[1]] = inside
            for mask in masks:  # whatever was visible there is now covered
                mask[y0 : y0 + inside.shape[0], x0 : x0 + inside.shape[1]] &= ~inside
            masks[k] = shapes[k].copy()
        return SceneFrame(image, tuple(masks), tuple(shapes))

    def __iter__(self) -> Iterator[SceneFrame]:
        """Frames ``0 .. frames - 1``, rendered one at a time."""
        return (self.frame(i) for i in range(self.frames))

    def write(self, path: str | os.PathLike[str], *, fps: int | fractions.Fraction = 30) -> None:
        """Encode the clip's frames to ``path`` as :func:`make_clip` does (H.264, yuv420p, crf 18).

        The codec blurs colour edges by about two pixels; the truth stays :meth:`frame`'s.

        Raises:
            ValueError: an odd frame size (yuv420p) or a rate that is not positive.
        """
        rate = fractions.Fraction(fps)
        if self.width % 2 or self.height % 2:
            raise ValueError(f"size must be even to encode, got {self.width}x{self.height}")
        if rate <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        encode_clip(path, (f.image for f in self), self.width, self.height, rate)

    def _draw(
        self, shape: str, pose: SpritePose, colour: tuple[int, int, int], texture: np.ndarray,
        image: np.ndarray,
    ) -> tuple[tuple[int, int], np.ndarray] | None:
        """Paint one sprite into ``image``; returns its box's top-left ``(y, x)`` and its
        ``(h, w)`` bool shape in that box, or None when it lies wholly outside the frame."""
        reach = math.hypot(pose.half_width, pose.half_height) * (1.0 + abs(pose.bend)) + 2.0
        x0, x1 = max(0, math.floor(pose.x - reach)), min(self.width, math.ceil(pose.x + reach) + 1)
        y0, y1 = max(0, math.floor(pose.y - reach)), min(self.height, math.ceil(pose.y + reach) + 1)
        if x0 >= x1 or y0 >= y1:
            return None
        dx = np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(pose.x)
        dy = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(pose.y)
        cos, sin = math.cos(math.radians(pose.angle)), math.sin(math.radians(pose.angle))
        v = (-sin * dx + cos * dy) / pose.half_height  # (h, w) float32, the object's own axes
        u = (cos * dx + sin * dy) / pose.half_width - pose.bend * (v * v - 0.5)
        if shape == "ellipse":
            inside = u * u + v * v <= 1.0
        elif shape == "rectangle":
            inside = (np.abs(u) <= 1.0) & (np.abs(v) <= 1.0)
        else:
            inside = np.hypot(u, v) <= 0.7 + 0.3 * np.cos(5.0 * np.arctan2(v, u))
        if not inside.any():
            return None
        scale = 0.5 * (_TEXTURE_SIZE - 1)
        shade = cv2.remap(texture, (u + 1.0) * scale, (v + 1.0) * scale, cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT_101)
        painted = np.clip(shade[..., None] * np.asarray(colour, np.float32) + 0.5, 0, 255).astype(np.uint8)
        region = image[y0:y1, x0:x1]
        region[inside] = painted[inside]
        return (y0, x0), np.asarray(inside)


def demo_scene(*, width: int = 640, height: int = 480, frames: int = 240, seed: int = 0) -> Scene:
    """The clip ``pedsam bench-propagation`` measures on: four objects for ``frames`` frames.

    At 640x480 and 30 fps (positions and sizes scale with the frame size):

    - ``"ellipse"`` (red): sways left and right (up to about 3 px per frame) and turns
      slowly (0.8 degrees per frame);
    - ``"rectangle"`` (blue, in front of everything): turns fast (1.5 degrees per frame) and
      zooms in and out (+-25 % over 4 s) while it sways;
    - ``"star"`` (green, furthest back): crosses the frame behind the others, turning,
      zooming and stretching (a change of aspect ratio);
    - ``"fish"`` (yellow): a long ellipse that bends back and forth (non-affine) as it swims
      past the others, behind the rectangle and in front of the star.
    """
    sx, sy = width / 640.0, height / 480.0
    small = min(sx, sy)
    sprites = (
        Sprite(name="ellipse", shape="ellipse", colour=(220, 45, 40), centre=(170 * sx, 140 * sy),
               half_size=(70 * small, 45 * small), depth=1, sway=(110 * sx, 30 * sy), period=240,
               spin=0.8),
        Sprite(name="rectangle", shape="rectangle", colour=(40, 90, 230), centre=(430 * sx, 190 * sy),
               half_size=(62 * small, 40 * small), depth=0, sway=(120 * sx, 70 * sy), period=160,
               phase=1.0, angle=10.0, spin=-1.5, zoom=0.25, morph_period=120),
        Sprite(name="star", shape="star", colour=(45, 190, 60), centre=(320 * sx, 300 * sy),
               half_size=(70 * small, 70 * small), depth=3, sway=(200 * sx, 50 * sy), period=200,
               phase=2.0, spin=1.0, zoom=0.2, stretch=0.2, morph_period=90),
        Sprite(name="fish", shape="ellipse", colour=(235, 175, 25), centre=(360 * sx, 360 * sy),
               half_size=(30 * small, 85 * small), depth=2, sway=(170 * sx, 40 * sy), period=180,
               phase=3.5, angle=90.0, spin=0.3, bend=0.35, morph_period=50),
    )
    return Scene(width, height, sprites, frames=frames, seed=seed)


def textured_background(width: int, height: int, seed: int) -> np.ndarray:
    """``(height, width, 3)`` uint8 RGB: multi-scale grey noise in about 50..200, a faint tint."""
    rng = np.random.default_rng(seed)
    grey = np.zeros((height, width), np.float32)
    for sigma, weight in ((24.0, 0.5), (6.0, 0.3), (1.5, 0.2)):
        blurred = cv2.GaussianBlur(rng.random((height, width), dtype=np.float32), (0, 0), sigma)
        span = max(1e-6, float(blurred.max() - blurred.min()))
        grey += weight * (blurred - float(blurred.min())) / span
    tint = np.array([0.97, 1.0, 1.03], np.float32)
    return np.asarray(np.clip((50.0 + 150.0 * grey)[..., None] * tint + 0.5, 0, 255), np.uint8)


def shading_texture(seed: int) -> np.ndarray:
    """``(128, 128)`` float32 shading factor in 0.55..1: multi-scale noise, fine grain included."""
    rng = np.random.default_rng(seed)
    pattern = np.zeros((_TEXTURE_SIZE, _TEXTURE_SIZE), np.float32)
    for sigma, weight in ((10.0, 0.4), (3.0, 0.35), (1.2, 0.25)):
        noise = rng.random((_TEXTURE_SIZE, _TEXTURE_SIZE), dtype=np.float32)
        blurred = cv2.GaussianBlur(noise, (0, 0), sigma, borderType=cv2.BORDER_REFLECT_101)
        span = max(1e-6, float(blurred.max() - blurred.min()))
        pattern += weight * (blurred - float(blurred.min())) / span
    return np.asarray(0.55 + 0.45 * pattern, np.float32)


def _parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = text.lower().split("x")
        return int(w), int(h)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WxH such as 320x240, got {text!r}") from None


def _parse_fps(text: str) -> fractions.Fraction:
    try:
        return fractions.Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(
            f"expected a rate such as 12 or 30000/1001, got {text!r}"
        ) from None


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry: 0 on success, 1 if the file cannot be written.

    Bad arguments end in ``SystemExit(2)`` with a usage message, argparse's convention.
    """
    parser = argparse.ArgumentParser(prog="make_clip.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="video file to write (.mp4, .mkv, ...)")
    parser.add_argument("--frames", type=int, default=24, help="number of frames (default 24)")
    parser.add_argument(
        "--size", type=_parse_size, default=(320, 240), help="WxH, even (default 320x240)"
    )
    parser.add_argument(
        "--fps", type=_parse_fps, default=fractions.Fraction(12), help="frame rate (default 12)"
    )
    parser.add_argument("--seed", type=int, default=0, help="background texture seed (default 0)")
    parser.add_argument("--scene", action="store_true",
                        help="textured sprites that move, turn, zoom, bend and pass behind each other "
                             "(the propagation bench's scene) instead of plain discs and boxes")
    parser.add_argument("--truth", help="also write the ground truth as JSON to this file (not with --scene)")
    parser.add_argument("--still", metavar="IMAGE.png", help="also write the first frame as a still image")
    parser.add_argument("--first-mask", metavar="MASK.png",
                        help="also write object 0's mask on the first frame (0/255), for --mask")
    args = parser.parse_args(argv)
    width, height = args.size
    if args.scene and args.truth:
        parser.error("--truth describes the plain clip; the scene's truth is its per-frame masks")
    try:
        for target in (args.out, args.truth, args.still, args.first_mask):
            if target:
                Path(target).parent.mkdir(parents=True, exist_ok=True)
        if args.scene:
            scene = demo_scene(width=width, height=height, frames=args.frames, seed=args.seed)
            scene.write(args.out, fps=args.fps)
            first = scene.frame(0)
            first_image, first_mask = first.image, first.masks[0]
            described = f"object 0 ({len(first.masks)} sprites)"
        else:
            truth = make_clip(
                args.out, frames=args.frames, width=width, height=height, fps=args.fps, seed=args.seed
            )
            if args.truth:
                with open(args.truth, "w", encoding="utf-8") as file:
                    json.dump(truth.to_dict(), file)
                    file.write("\n")
            first_mask = truth.mask(0, 0)
            with av.open(str(truth.path)) as container:
                first_image = next(container.decode(video=0)).to_ndarray(format="rgb24")
            x, y = truth.objects[0].centres[0]
            described = f"object 0 ({truth.objects[0].name}) starts at x={x:.1f} y={y:.1f}"
        if args.still:
            PIL.Image.fromarray(first_image).save(args.still)
        if args.first_mask:
            PIL.Image.fromarray(first_mask.astype(np.uint8) * 255).save(args.first_mask)
    except (av.error.FFmpegError, OSError) as exc:  # before ValueError: some are both
        print(f"make_clip.py: cannot write {args.out}: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        parser.error(str(exc))  # exits with status 2
    print(f"wrote {args.out}: {args.frames} frames, {width}x{height} at {args.fps} fps; {described}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
