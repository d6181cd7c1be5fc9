"""Prompts for objects: points, boxes and masks in original-frame pixel coordinates.

A prompt describes one object. Points are (x, y) pixels, x to the right and y down from the
top-left corner of the frame; a box is XYXY pixels. Labels are 1 for a foreground point, 0 for
a background point, as in SAM. A mask is the object itself on that frame, ``(H, W)`` bool: the
frame it is given for shows it as it is, and SAM is prompted from it later (its box, a point
inside it and its low-resolution logits; see :mod:`pedsam.stream.core.predictor`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from pedsam.stream.errors import PromptError


@dataclass(frozen=True, kw_only=True, slots=True)
class ObjectPrompt:
    """Points, a box and/or a mask that pick out one object."""

    points: tuple[tuple[float, float], ...] = ()
    labels: tuple[int, ...] = ()
    box: tuple[float, float, float, float] | None = None
    mask: np.ndarray | None = field(default=None, compare=False, repr=False)  # (H, W) bool

    def __post_init__(self) -> None:
        if not self.points and self.box is None and self.mask is None:
            raise PromptError("an object needs at least one point, a box or a mask")
        if self.mask is not None:
            if not isinstance(self.mask, np.ndarray) or self.mask.ndim != 2 or self.mask.dtype != bool:
                raise PromptError("an object's mask must be an (H, W) bool array")
            if not self.mask.any():
                raise PromptError("an object's mask is empty: it must mark at least one pixel")
        if len(self.labels) != len(self.points):
            raise PromptError("each point needs a label (1 foreground, 0 background)")
        if any(label not in (0, 1) for label in self.labels):
            raise PromptError("point labels are 1 (foreground) or 0 (background)")
        if self.box is not None:
            x0, y0, x1, y1 = self.box
            if not (x0 < x1 and y0 < y1):
                raise PromptError(f"box {_fmt(self.box)} must have x0 < x1 and y0 < y1")

    @property
    def ambiguous(self) -> bool:
        """A single point with no box or mask: SAM's multimask output picks the best of three."""
        return len(self.points) == 1 and self.box is None and self.mask is None

    @property
    def mask_only(self) -> bool:
        """Only a mask: the object is that mask on its frame, with no SAM prediction needed."""
        return self.mask is not None and not self.points and self.box is None

    def check_inside(self, width: int, height: int) -> None:
        """Raise :class:`PromptError` if any point or box corner lies outside a WxH frame."""
        for x, y in self.points:
            if not (0 <= x < width and 0 <= y < height):
                raise PromptError(
                    f"point {_fmt((x, y))} is outside the {width}x{height} frame "
                    f"(x in 0..{width - 1}, y in 0..{height - 1})"
                )
        if self.box is not None:
            x0, y0, x1, y1 = self.box
            if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
                raise PromptError(f"box {_fmt(self.box)} is outside the {width}x{height} frame")
        if self.mask is not None and self.mask.shape != (height, width):
            raise PromptError(f"mask of {self.mask.shape[1]}x{self.mask.shape[0]} pixels does not fit the "
                              f"{width}x{height} frame")

    def arrays(self) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
        """(points (N, 2) float32 | None, labels (N,) int32 | None, box (4,) float32 | None)."""
        points = np.asarray(self.points, dtype=np.float32) if self.points else None
        labels = np.asarray(self.labels, dtype=np.int32) if self.points else None
        box = np.asarray(self.box, dtype=np.float32) if self.box is not None else None
        return points, labels, box

    def to_json(self) -> dict[str, object]:
        found: dict[str, object] = {"points": [list(p) for p in self.points], "labels": list(self.labels),
                                    "box": self.box}
        if self.mask is not None:
            found["mask_area"] = int(self.mask.sum())
        return found


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"


def parse_numbers(text: str, count: int, what: str) -> tuple[float, ...]:
    """``"12,34"`` -> (12.0, 34.0); a clear :class:`PromptError` for anything else."""
    parts = [p.strip() for p in text.split(",")]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != count or not all(np.isfinite(values)):
        example = ",".join(["X", "Y"] if count == 2 else ["X0", "Y0", "X1", "Y1"])
        raise PromptError(f"{what} {text!r} is not {count} numbers like {example}")
    return values


def objects_from_items(
    items: Sequence[tuple[str, str]], read_mask: Callable[[str], np.ndarray] | None = None
) -> list[ObjectPrompt]:
    """Build objects from command-line items in order: ``("point"|"neg"|"box"|"mask"|"object", text)``.

    Every ``object`` item starts a new object; points and boxes add to the current one. A
    ``mask`` item is an object of its own: ``read_mask(text)`` gives its (H, W) bool mask.
    """
    objects: list[ObjectPrompt] = []
    points: list[tuple[float, float]] = []
    labels: list[int] = []
    box: tuple[float, float, float, float] | None = None

    def flush() -> None:
        nonlocal points, labels, box
        if points or box is not None:
            objects.append(ObjectPrompt(points=tuple(points), labels=tuple(labels), box=box))
        points, labels, box = [], [], None

    for kind, text in items:
        if kind == "object":
            flush()
        elif kind == "mask":
            if read_mask is None:
                raise PromptError("masks cannot be read here")
            flush()
            objects.append(ObjectPrompt(mask=read_mask(text)))
        elif kind in ("point", "neg"):
            x, y = parse_numbers(text, 2, "point")
            points.append((x, y))
            labels.append(1 if kind == "point" else 0)
        elif kind == "box":
            if box is not None:
                raise PromptError("one box per object; use --object to start another object")
            x0, y0, x1, y1 = parse_numbers(text, 4, "box")
            box = (x0, y0, x1, y1)
    flush()
    return objects
