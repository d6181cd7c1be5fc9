"""Composite scenes with exact masks: photo textures cut into shapes over photo backgrounds.

pedsam-mini learns and is measured on these. A scene is a background (a crop of a photo, or
generated noise as in :mod:`pedsam.stream.media.synthetic`) with 1 to 6 objects painted back to
front; each object is a shape (ellipse, polygon, star, organic blob, rotated rectangle, two
merged ellipses, a ring) filled with a crop of another photo or a generated texture, with
colour, shading and edge-softness jitter. The truth is the *visible* part of each object: a
pixel belongs to the last object painted over it (an object's soft edge does not change that).
Last, the whole picture may be blurred, get sensor noise or JPEG artefacts.

Everything is drawn from one ``numpy.random.Generator``: the same generator state and the same
:class:`TextureBank` give the same scene.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pedsam.stream.media.synthetic import shading_texture, textured_background

__all__ = ["IMAGE_SUFFIXES", "CompositeScene", "TextureBank", "compose"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
_SHAPES = ("ellipse", "polygon", "star", "blob", "rectangle", "pair", "ring")


class TextureBank:
    """Photos to cut textures and backgrounds from: ``(H, W, 3)`` uint8 RGB arrays.

    An empty bank is allowed: scenes then use generated textures only.
    """

    def __init__(self, images: Sequence[np.ndarray]) -> None:
        self.images = [np.ascontiguousarray(image) for image in images]

    @classmethod
    def from_folder(cls, folder: str | Path, *, min_side: int = 96) -> TextureBank:
        """Every readable image in ``folder`` (sorted by name) whose shorter side is at least
        ``min_side`` pixels; grey images become RGB.

        Raises:
            ValueError: the folder does not exist or holds no usable image.
        """
        root = Path(folder)
        if not root.is_dir():
            raise ValueError(f"texture folder {str(root)!r} does not exist")
        images = []
        for path in sorted(root.iterdir()):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is not None and min(image.shape[:2]) >= min_side:
                images.append(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
        if not images:
            raise ValueError(f"texture folder {str(root)!r} holds no image of at least {min_side} px")
        return cls(images)

    def __len__(self) -> int:
        return len(self.images)

    def crop(self, rng: np.random.Generator, width: int, height: int) -> np.ndarray:
        """A random crop of a random photo, resized to ``(height, width, 3)`` uint8 RGB, at a
        random scale (a quarter of the photo's side up to all of it), maybe flipped or turned."""
        image = self.images[int(rng.integers(len(self.images)))]
        h, w = image.shape[:2]
        aspect = width / height
        side = rng.uniform(0.25, 1.0) * min(h, w * (1 / aspect) if aspect > 1 else w)
        ch = max(8, min(h, int(side)))
        cw = max(8, min(w, int(side * aspect)))
        y0 = int(rng.integers(0, h - ch + 1))
        x0 = int(rng.integers(0, w - cw + 1))
        patch = image[y0 : y0 + ch, x0 : x0 + cw]
        if rng.random() < 0.5:
            patch = patch[:, ::-1]
        if rng.random() < 0.3:
            patch = patch[::-1]
        return cv2.resize(np.ascontiguousarray(patch), (width, height), interpolation=cv2.INTER_AREA)


@dataclass(frozen=True, slots=True)
class CompositeScene:
    """One composite.

    Attributes:
        image: ``(height, width, 3)`` uint8 RGB.
        masks: per object, in painting order (back to front), the ``(height, width)`` bool mask
            of its visible pixels; objects that ended up wholly hidden are left out.
    """

    image: np.ndarray
    masks: tuple[np.ndarray, ...]


def compose(
    rng: np.random.Generator,
    bank: TextureBank,
    width: int,
    height: int,
    *,
    objects: tuple[int, int] = (1, 6),
    sizes: tuple[float, float] = (0.05, 0.45),
    min_visible: float = 0.002,
) -> CompositeScene:
    """Draw one scene of ``width`` x ``height`` pixels with between ``objects[0]`` and
    ``objects[1]`` objects, each about ``sizes[0]`` to ``sizes[1]`` of the longer side across
    (log-uniform); an object whose visible part covers less than ``min_visible`` of the picture
    is dropped from :attr:`CompositeScene.masks` (it stays painted)."""
    image = _background(rng, bank, width, height)
    masks: list[np.ndarray] = []
    for _ in range(int(rng.integers(objects[0], objects[1] + 1))):
        shape = _shape(rng, width, height, sizes)
        if not shape.any():
            continue
        fill = _fill(rng, bank, width, height)
        alpha = shape.astype(np.float32)
        if rng.random() < 0.5:  # a soft edge, as a lens or a resize leaves it
            alpha = np.asarray(cv2.GaussianBlur(alpha, (0, 0), rng.uniform(0.5, 1.5)), np.float32)
            alpha = np.where(shape, np.maximum(alpha, 0.5), np.minimum(alpha, 0.499)).astype(np.float32)
        image = (image * (1.0 - alpha[..., None]) + fill * alpha[..., None]).astype(np.float32)
        for mask in masks:
            mask &= ~shape
        masks.append(shape)
    out = _finish(rng, image)
    area = min_visible * width * height
    return CompositeScene(out, tuple(m for m in masks if m.sum() >= area))


def _background(rng: np.random.Generator, bank: TextureBank, width: int, height: int) -> np.ndarray:
    """``(height, width, 3)`` float32 in 0..255."""
    pick = rng.random()
    if len(bank) and pick < 0.65:
        return _jitter(rng, bank.crop(rng, width, height).astype(np.float32))
    if pick < 0.85:
        return textured_background(width, height, int(rng.integers(1 << 30))).astype(np.float32)
    return _generated(rng, width, height)


def _fill(rng: np.random.Generator, bank: TextureBank, width: int, height: int) -> np.ndarray:
    """What an object is painted with, over the whole canvas: ``(height, width, 3)`` float32."""
    pick = rng.random()
    if len(bank) and pick < 0.6:
        fill = _jitter(rng, bank.crop(rng, width, height).astype(np.float32))
    elif pick < 0.85:  # the synthetic scenes' sprites: grey shading times one colour
        shade = shading_texture(int(rng.integers(1 << 30)))
        shade = cv2.resize(shade, (width, height), interpolation=cv2.INTER_LINEAR)
        fill = shade[..., None] * rng.uniform(20, 250, 3).astype(np.float32)
    else:
        fill = _generated(rng, width, height)
    if rng.random() < 0.3:  # shading across the object
        ramp = np.linspace(rng.uniform(0.6, 1.0), rng.uniform(1.0, 1.4), width, dtype=np.float32)
        fill = fill * (ramp[None, :, None] if rng.random() < 0.5 else cv2.resize(ramp[None], (height, 1)).T[:, :, None])
    return np.asarray(np.clip(fill, 0, 255), np.float32)


def _generated(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Coloured multi-scale noise, stripes or a flat colour with grain: ``(height, width, 3)``."""
    kind = rng.random()
    if kind < 0.5:
        out = np.zeros((height, width, 3), np.float32)
        for sigma in (rng.uniform(8, 40), rng.uniform(1, 6)):
            noise = cv2.GaussianBlur(rng.random((height, width), dtype=np.float32), (0, 0), sigma)
            noise = (noise - noise.min()) / max(1e-6, float(noise.max() - noise.min()))
            out += noise[..., None] * rng.uniform(0, 160, 3).astype(np.float32)
        return out + rng.uniform(0, 90, 3).astype(np.float32)
    if kind < 0.75:
        angle = rng.uniform(0, math.pi)
        period = rng.uniform(6, 60)
        y, x = np.mgrid[0:height, 0:width].astype(np.float32)
        wave = 0.5 + 0.5 * np.sin((x * math.cos(angle) + y * math.sin(angle)) * 2 * math.pi / period)
        a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        return np.asarray(wave[..., None] * a + (1 - wave[..., None]) * b, np.float32)
    grain = rng.normal(0, rng.uniform(2, 15), (height, width, 1)).astype(np.float32)
    return rng.uniform(0, 255, 3).astype(np.float32) + grain


def _jitter(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Per-channel gain, brightness and contrast changes, sometimes grey with a tint."""
    if rng.random() < 0.2:
        grey = image.mean(axis=2, keepdims=True)
        image = grey * rng.uniform(0.6, 1.3, 3).astype(np.float32)
    gain = rng.uniform(0.75, 1.25, 3).astype(np.float32)
    mean = image.mean()
    contrast = rng.uniform(0.7, 1.3)
    return np.asarray(np.clip((image - mean) * contrast + mean * gain + rng.uniform(-25, 25), 0, 255), np.float32)


def _shape(rng: np.random.Generator, width: int, height: int, sizes: tuple[float, float]) -> np.ndarray:
    """One object's whole shape on the canvas: ``(height, width)`` bool."""
    long_side = max(width, height)
    size = long_side * math.exp(rng.uniform(math.log(sizes[0]), math.log(sizes[1])))  # about sqrt(area)
    cx, cy = rng.uniform(-0.05, 1.05) * width, rng.uniform(-0.05, 1.05) * height
    mask = np.zeros((height, width), np.uint8)
    kind = _SHAPES[int(rng.integers(len(_SHAPES)))]
    angle = rng.uniform(0, 360)
    aspect = math.exp(rng.uniform(-0.9, 0.9))
    ax, ay = 0.6 * size * math.sqrt(aspect), 0.6 * size / math.sqrt(aspect)
    centre = (int(cx), int(cy))
    if kind in ("ellipse", "ring", "pair"):
        cv2.ellipse(mask, centre, (max(2, int(ax)), max(2, int(ay))), angle, 0, 360, 1, -1)
        if kind == "pair":
            dx, dy = rng.normal(0, 0.5 * size, 2)
            cv2.ellipse(mask, (int(cx + dx), int(cy + dy)), (max(2, int(0.8 * ay)), max(2, int(0.8 * ax))),
                        rng.uniform(0, 360), 0, 360, 1, -1)
        elif kind == "ring":
            cv2.ellipse(mask, centre, (max(1, int(ax * 0.45)), max(1, int(ay * 0.45))), angle, 0, 360, 0, -1)
    elif kind in ("polygon", "star"):
        count = int(rng.integers(3, 10)) if kind == "polygon" else 2 * int(rng.integers(4, 7))
        thetas = np.sort(rng.uniform(0, 2 * math.pi, count)) if kind == "polygon" else np.linspace(0, 2 * math.pi, count,
                                                                                                 endpoint=False)
        radii = rng.uniform(0.55, 1.0, count) if kind == "polygon" else np.where(np.arange(count) % 2, 0.45, 1.0)
        points = np.stack([cx + ax * radii * np.cos(thetas + angle), cy + ay * radii * np.sin(thetas + angle)], 1)
        cv2.fillPoly(mask, [np.round(points).astype(np.int32)], 1)
    elif kind == "rectangle":
        corners = cv2.boxPoints(((cx, cy), (2 * ax, 2 * ay), angle))
        cv2.fillPoly(mask, [np.round(corners).astype(np.int32)], 1)
    else:  # blob: smooth noise inside a soft disc
        grid = 24
        noise = cv2.GaussianBlur(rng.random((grid, grid), dtype=np.float32), (0, 0), 2.5)
        noise = (noise - noise.mean()) / max(1e-6, float(noise.std()))
        yy, xx = np.mgrid[-1:1:grid * 1j, -1:1:grid * 1j]
        field = 1.0 - (xx * xx + yy * yy) + 0.35 * noise
        span = int(2.4 * max(ax, ay)) | 1
        big = cv2.resize(field.astype(np.float32), (span, span), interpolation=cv2.INTER_CUBIC) > 0.25
        x0, y0 = int(cx) - span // 2, int(cy) - span // 2
        xs, ys = max(0, x0), max(0, y0)
        xe, ye = min(width, x0 + span), min(height, y0 + span)
        if xs < xe and ys < ye:
            mask[ys:ye, xs:xe] = big[ys - y0 : ye - y0, xs - x0 : xe - x0]
    return mask.astype(bool)


def _finish(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Camera-like degradations of the whole picture; returns uint8 RGB."""
    if rng.random() < 0.3:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.4, 1.2))
    if rng.random() < 0.3:
        image = image + rng.normal(0, rng.uniform(1, 6), image.shape).astype(np.float32)
    out = np.clip(image + 0.5, 0, 255).astype(np.uint8)
    if rng.random() < 0.3:
        ok, data = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(40, 91))])
        if ok:
            out = np.asarray(cv2.imdecode(data, cv2.IMREAD_UNCHANGED))
    return out
