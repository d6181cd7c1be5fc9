"""The objects a run follows: added and removed at any time, ids never reused."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pedsam.stream.core.prompts import ObjectPrompt
from pedsam.stream.core.tracker import ObjectTrack
from pedsam.stream.media.overlay import PALETTE
from pedsam.stream.runs.results import ObjectResult

__all__ = ["ObjectBoard"]


class ObjectBoard:
    """The objects a live run follows, in the order they were added; ids are never reused.

    Object ``i`` of :meth:`tracks` (its position, not its id) is drawn in
    ``PALETTE[i % len(PALETTE)]``, as :func:`pedsam.stream.media.overlay.draw_overlay` does.
    """

    def __init__(self, prompts: Sequence[ObjectPrompt] = ()) -> None:
        self._tracks: dict[int, ObjectTrack] = {}
        self._last: dict[int, ObjectResult] = {}
        self._next_id = 0
        self._unchecked: set[int] = set()  # given before any frame was seen: checked on the first
        self.version = 0  # bumped on every add or remove, so a listener can tell it changed
        for prompt in prompts:
            self.add(prompt)

    def __len__(self) -> int:
        return len(self._tracks)

    def add(self, prompt: ObjectPrompt, *, frame_size: tuple[int, int] | None = None) -> int:
        """Follow a new object from ``prompt`` (pixels of the next frame); returns its id.

        ``frame_size`` is (W, H); when given, a prompt outside it raises PromptError.
        """
        object_id = self._next_id
        if frame_size is not None:
            prompt.check_inside(*frame_size)
        else:
            self._unchecked.add(object_id)
        self._next_id += 1
        self._tracks[object_id] = ObjectTrack(id=object_id, initial=prompt)
        self.version += 1
        return object_id

    def check_frame(self, width: int, height: int) -> None:
        """Raise PromptError if a prompt given without a frame size lies outside a WxH frame."""
        for object_id in sorted(self._unchecked):
            track = self._tracks.get(object_id)
            if track is not None:
                track.initial.check_inside(width, height)
        self._unchecked.clear()

    def remove(self, object_id: int) -> bool:
        """Stop following an object; False if there is no such object."""
        if self._tracks.pop(object_id, None) is None:
            return False
        self._last.pop(object_id, None)
        self.version += 1
        return True

    def clear(self) -> None:
        if self._tracks:
            self._tracks.clear()
            self._last.clear()
            self.version += 1

    def tracks(self) -> list[ObjectTrack]:
        return list(self._tracks.values())

    def __contains__(self, object_id: int) -> bool:
        return object_id in self._tracks

    def record(self, result: ObjectResult) -> None:
        if result.id in self._tracks:
            self._last[result.id] = result

    def describe(self) -> list[dict[str, Any]]:
        """JSON-ready list: id, colour (``#rrggbb``), last score, mask area (pixels), box."""
        out = []
        for position, (object_id, track) in enumerate(self._tracks.items()):
            r, g, b = PALETTE[position % len(PALETTE)]
            last = self._last.get(object_id)
            out.append(
                {
                    "id": object_id,
                    "colour": f"#{r:02x}{g:02x}{b:02x}",
                    "score": round(last.score, 4) if last else None,
                    "area": int(last.mask.sum()) if last else None,
                    "box": [round(v, 1) for v in last.box] if last and last.box else None,
                    "frames_lost": track.frames_lost,
                }
            )
        return out
