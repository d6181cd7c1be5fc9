"""Attacking what a worker really kept: a ``pedsam worker --capture`` file, against the video.

``pedsam privacy-report`` attacks a model of what each worker receives. This module attacks the
record itself (:mod:`pedsam.workers.capture`): the first-segment requests exactly as they crossed
the wire, from whatever ran the edge (``pedsam run``, ``stream``, ``serve`` with any number of
browser calls at once), through its real scheduler, keyframes, codec and ``--keep-local``.

What the worker has, per request: a batch of windows' tokens in an order the edge shuffled, each
window's extent in tokens, the codec's scales; no frame number (the edge sends 0) and no window
position. The attacker (:class:`CaptureAttacker`) does what such a worker can:

1. decodes the tokens as the worker did, with each token's expected error (int8's scale, fp16's
   magnitude: :func:`pedsam.stream.privacy.wire.through_wire`'s rule);
2. guesses each window's position: of the grid's windows with the same extent, the one whose
   position embedding, taken off before inversion, leaves the most picture-like pixels (fewest
   values outside what pixels can be, smallest jumps between neighbours). Trained position
   embeddings differ from place to place, and the wrong one leaves a patterned residue; an
   embedding of zeros tells positions apart by nothing, and the guess is then chance;
3. inverts each window at its guessed position (:class:`~pedsam.stream.privacy.inversion.TokenInverter`,
   Wiener under a lossy codec), pastes a request's windows into the encoder's input frame,
   black elsewhere, and scales it to the frame's size: one request is one frame's share;
4. runs the attack's face detector on that picture.

The auditor's side (:func:`attack_capture`) knows the video. It finds each request's frame and each
window's true position by comparing the received tokens with the frame's own first-segment tokens
(exact under fp32, within the codec's error otherwise), among the frames from :data:`LOOK_BEHIND`
before the latest frame the worker's requests matched (frames in flight arrive in any order) to
``lookahead`` after the latest any worker's matched, leaving out frames it already matched (a
worker gets one request per frame: two identical frames in a row are told apart so). It then counts
the reference faces (the same detector on the whole frames a worker got any window of) that the
worker's faces match: by IoU >= 0.5 and by the visible part (boxes clipped to the windows the
worker truly received). Worst worker: the one that matched most.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from os import PathLike
from typing import Any

import cv2
import numpy as np
from pedsam.partitioner.geometry import WindowGrid
from pedsam.protos import pedsam_pb2 as pb
from pedsam.workers import codec as wire
from pedsam.workers.capture import CapturedRequest, read_capture
from pedsam.workers.sam import Sam

from pedsam.stream.core.predictor import PreparedImage
from pedsam.stream.media.video import read_frames
from pedsam.stream.privacy.detection import Box, matched
from pedsam.stream.privacy.inversion import TokenInverter, prologue
from pedsam.stream.privacy.wire import token_error

__all__ = ["CaptureAttacker", "ReceivedWindow", "WorkerFindings", "attack_capture"]

MATCH_TOLERANCE = 0.01  # a window matches a frame's window when their relative squared error is below this
# Frames in flight arrive at a worker in any order: a request may be of a frame up to this many
# before the latest one it has matched.
LOOK_BEHIND = 8
Geometry = tuple[tuple[int, int], tuple[int, int]]  # a frame's (input_size, original_size), as PreparedImage


@dataclass(frozen=True, slots=True)
class ReceivedWindow:
    """One window of a request: its tokens (h, w, C) as decoded, their expected RMS error (h, w)."""

    tokens: np.ndarray
    sigma: np.ndarray

    @property
    def extent(self) -> tuple[int, int]:
        return int(self.tokens.shape[0]), int(self.tokens.shape[1])


def received_windows(request: pb.SegmentRequest) -> list[ReceivedWindow]:
    """A request's windows as the worker decodes them.

    Raises:
        ValueError: tokens that do not decode to the extents' shape.
    """
    extents = [(int(e.height), int(e.width)) for e in request.extents]
    rows = sum(h * w for h, w in extents)
    channels = int(request.tokens.shape[1]) if len(request.tokens.shape) == 2 else 0
    tokens = wire.decode(request.tokens, (rows, channels)).numpy().astype(np.float32, copy=False)
    sigma = token_error(request.tokens, tokens)
    out, start = [], 0
    for h, w in extents:
        out.append(ReceivedWindow(tokens[start : start + h * w].reshape(h, w, channels),
                                  np.asarray(sigma[start : start + h * w], np.float32).reshape(h, w)))
        start += h * w
    return out


class CaptureAttacker:
    """The worker's side: position guesses, pixels and faces from its own requests.

    ``sam``: the model the worker serves (its public weights: patch and position embeddings);
    ``window_size``: the preset's window side in tokens.
    """

    def __init__(self, sam: Sam, window_size: int) -> None:
        self.inverter = TokenInverter.for_model(sam)
        side = sam.image_encoder.img_size // self.inverter.patch
        self.grid = WindowGrid(side, side, window_size)
        self.img_size = int(sam.image_encoder.img_size)
        std, mean = self.inverter.std, self.inverter.mean
        self._low = (-mean / std).astype(np.float32)
        self._high = ((255.0 - mean) / std).astype(np.float32)
        # Each window position's embedding as the pseudo-inverse turns it into normalised pixels:
        # inverting at position c is inverting at no position minus this.
        self._offsets = {w.id: self._pixels(self.inverter.pos[w.top : w.top + w.height, w.left : w.left + w.width])
                         for w in self.grid.windows}

    def _pixels(self, centred: np.ndarray) -> np.ndarray:
        """(h, w, C) centred tokens -> (h*P, w*P, 3) normalised pixels, by the pseudo-inverse."""
        h, w, c = centred.shape
        p, inv = self.inverter.patch, self.inverter
        patches = ((centred.reshape(-1, c) @ inv.u) / inv.s) @ inv.vh
        return np.asarray(patches.reshape(h, w, 3, p, p).transpose(0, 3, 1, 4, 2).reshape(h * p, w * p, 3), np.float32)

    def implausibility(self, pixels: np.ndarray) -> float:
        """How unlike a picture normalised pixels are: mean jump between neighbours plus ten times
        the mean excess beyond the range pixels can take."""
        jumps = float(np.abs(np.diff(pixels, axis=0)).mean() + np.abs(np.diff(pixels, axis=1)).mean())
        excess = float((np.maximum(pixels - self._high, 0) + np.maximum(self._low - pixels, 0)).mean())
        return jumps + 10.0 * excess

    def guess_position(self, window: ReceivedWindow) -> int:
        """The id of the grid window whose position embedding makes ``window`` most picture-like."""
        base = self._pixels(window.tokens - self.inverter.bias)
        candidates = [w.id for w in self.grid.windows if (w.height, w.width) == window.extent]
        if not candidates:
            raise ValueError(f"no window of this model's grid is {window.extent[0]}x{window.extent[1]} tokens")
        return min(candidates, key=lambda wid: self.implausibility(base - self._offsets[wid]))

    def picture(self, windows: Sequence[ReceivedWindow], positions: Sequence[int], geometry: Geometry
                ) -> np.ndarray:
        """The frame as the worker recovers it from one request: (H, W, 3) uint8 at the frame's
        size, black where it received nothing."""
        p = self.inverter.patch
        canvas = np.zeros((self.grid.padded_h * p, self.grid.padded_w * p, 3), np.uint8)
        for window, wid in zip(windows, positions):
            w = self.grid.window(wid)
            tile = self.inverter.invert(window.tokens, window.sigma, at=(w.top, w.left))
            canvas[w.top * p : w.top * p + tile.shape[0], w.left * p : w.left * p + tile.shape[1]] = tile
        return _to_frame(canvas, geometry)

    def covered(self, positions: Sequence[int], geometry: Geometry) -> np.ndarray:
        """(H, W) bool: the frame's pixels inside the windows ``positions``."""
        p = self.inverter.patch
        canvas = np.zeros((self.grid.padded_h * p, self.grid.padded_w * p), np.uint8)
        for wid in positions:
            w = self.grid.window(wid)
            canvas[w.top * p : (w.top + w.height) * p, w.left * p : (w.left + w.width) * p] = 255
        return _to_frame(canvas, geometry) > 127


def _to_frame(canvas: np.ndarray, geometry: Geometry) -> np.ndarray:
    (h, w), (height, width) = geometry
    return np.asarray(cv2.resize(np.ascontiguousarray(canvas[:h, :w]), (width, height), interpolation=cv2.INTER_AREA))


@dataclass
class WorkerFindings:
    """One worker's capture against the video: per frame it got windows of, the faces it found
    there (frame coordinates) and the windows it truly received."""

    name: str
    requests: int = 0
    matched_requests: int = 0
    windows: int = 0
    positions_right: int = 0
    psnr: list[float] = field(default_factory=list)
    found: dict[int, list[Box]] = field(default_factory=dict)
    received: dict[int, set[int]] = field(default_factory=dict)


@dataclass
class _Frame:
    index: int
    image: np.ndarray
    tokens: np.ndarray
    prepared: PreparedImage


class _Frames:
    """The video's frames and first-segment tokens, on demand, the last ``keep`` of them cached."""

    def __init__(self, video: str | PathLike[str], sam: Sam, max_frames: int, keep: int) -> None:
        self._iter: Iterator[Any] = iter(read_frames(video))
        self._sam, self._max, self._keep = sam, max_frames, keep
        self._cache: OrderedDict[int, _Frame] = OrderedDict()
        self._next = 0
        self.geometry: dict[int, Geometry] = {}  # every frame's, kept

    @property
    def earliest(self) -> int:
        """The oldest frame still held (the next to read when none is)."""
        return next(iter(self._cache), self._next)

    def get(self, index: int) -> _Frame | None:
        if index in self._cache:
            return self._cache[index]
        if index < self._next:
            raise RuntimeError(f"frame {index} was evicted; raise the cache")  # cannot happen: callers move forward
        while self._next <= index:
            if self._next >= self._max:
                return None
            try:
                frame = next(self._iter)
            except StopIteration:
                self._max = self._next
                return None
            tokens, prepared = prologue(self._sam, frame.image)
            self._cache[self._next] = _Frame(self._next, frame.image, tokens, prepared)
            self.geometry[self._next] = (prepared.input_size, prepared.original_size)
            self._next += 1
            while len(self._cache) > self._keep:
                self._cache.popitem(last=False)
        return self._cache[index]


def _relative_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((a - b) ** 2) / max(1e-12, float(np.mean(b**2))))


def _locate(windows: Sequence[ReceivedWindow], frame: _Frame, grid: WindowGrid) -> tuple[float, list[int]]:
    """Worst window's relative error against ``frame`` and each window's best-matching id."""
    worst, ids = 0.0, []
    for window in windows:
        best, best_id = math.inf, -1
        for w in grid.windows:
            if (w.height, w.width) != window.extent:
                continue
            error = _relative_error(window.tokens, frame.tokens[w.top : w.top + w.height, w.left : w.left + w.width])
            if error < best:
                best, best_id = error, w.id
        worst = max(worst, best)
        ids.append(best_id)
    return worst, ids


def attack_capture(
    video: str | PathLike[str],
    captures: Mapping[str, str | PathLike[str]],
    sam: Sam,
    window_size: int,
    faces: Callable[[np.ndarray], list[Box]],
    *,
    max_frames: int = 10**9,
    lookahead: int = 30,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Each worker's capture (name -> file) attacked against ``video``; the figures as a dict
    (see the module docstring). ``faces``: the attack's face detector (frame -> XYWH boxes).

    Raises:
        OSError: a capture or the video cannot be read.
        ValueError: a capture file that is not one.
    """
    attacker = CaptureAttacker(sam, window_size)
    frames = _Frames(video, sam, max_frames, keep=lookahead + LOOK_BEHIND + 2)
    reference: dict[int, list[Box]] = {}
    queues = {name: list(read_capture(path)) for name, path in captures.items()}
    # Every worker walks the video forward from frame 0; the cache holds the frames of the
    # furthest-behind worker, so the workers are walked together, request by request, in
    # arrival order.
    states = {name: WorkerFindings(name, requests=len(queue)) for name, queue in queues.items()}
    cursor = {name: 0 for name in queues}
    ordered = sorted(((c.arrived, name, c) for name, queue in queues.items() for c in queue), key=lambda t: t[0])
    for done, (_, name, captured) in enumerate(ordered):
        _attack_one(attacker, frames, faces, reference, states[name], captured, cursor, name, lookahead)
        if (done + 1) % 10 == 0:
            progress(f"{done + 1}/{len(ordered)} requests attacked")
    attacked = sorted(set().union(*(f.received for f in states.values()))) if states else []
    total = sum(len(reference[i]) for i in attacked)
    rows = []
    for f in states.values():
        hits = visible = 0
        for index, boxes in f.found.items():
            truth_faces = reference[index]
            hits += matched(truth_faces, boxes)
            visible += matched(truth_faces, boxes, covered=attacker.covered(sorted(f.received[index]),
                                                                            frames.geometry[index]))
        rows.append({
            "worker": f.name, "requests": f.requests, "matched_requests": f.matched_requests,
            "frames": len(f.received), "windows": f.windows,
            "position_accuracy": round(f.positions_right / f.windows, 4) if f.windows else None,
            "psnr_db_median": round(float(np.median(f.psnr)), 2) if f.psnr else None,
            "faces_found": hits, "faces_found_visible": visible,
            "face_recall": round(hits / total, 4) if total else None,
            "face_recall_visible": round(visible / total, 4) if total else None,
        })
    worst = max(rows, key=lambda r: (r["faces_found_visible"], r["faces_found"])) if rows else None
    return {"video": str(video), "frames_attacked": len(attacked), "reference_faces": total,
            "workers": rows, "worst_worker": worst["worker"] if worst else None,
            "worst_face_recall": worst["face_recall"] if worst else None,
            "worst_face_recall_visible": worst["face_recall_visible"] if worst else None}


def _attack_one(attacker: CaptureAttacker, frames: _Frames, faces: Callable[[np.ndarray], list[Box]],
                reference: dict[int, list[Box]], state: WorkerFindings, captured: CapturedRequest,
                cursor: dict[str, int], name: str, lookahead: int) -> None:
    windows = received_windows(captured.request)
    if not windows:
        return
    best: tuple[float, _Frame, list[int]] | None = None
    # Requests are taken in arrival order over all workers: a worker that got nothing for a while
    # is next sent a frame near the latest any worker matched.
    start = max(cursor[name] - LOOK_BEHIND, frames.earliest)
    for index in range(start, max(cursor.values()) + lookahead + 1):
        if index in state.received:
            continue  # a worker gets one request per frame and segment
        frame = frames.get(index)
        if frame is None:
            break
        error, ids = _locate(windows, frame, attacker.grid)
        if best is None or error < best[0]:
            best = (error, frame, ids)
        if error == 0.0:
            break
    if best is None or best[0] > MATCH_TOLERANCE:
        return  # not of this video's frames (or beyond the look-ahead)
    _, frame, truth = best
    cursor[name] = max(cursor[name], frame.index + 1)
    state.matched_requests += 1
    guesses = [attacker.guess_position(w) for w in windows]
    state.windows += len(windows)
    state.positions_right += sum(g == t for g, t in zip(guesses, truth))
    p = attacker.inverter.patch
    pixels = frame.prepared.tensor[0].permute(1, 2, 0).numpy() * attacker.inverter.std + attacker.inverter.mean
    for window, guess, wid in zip(windows, guesses, truth):
        w, g = attacker.grid.window(wid), attacker.grid.window(guess)
        got = attacker.inverter.invert(window.tokens, window.sigma, at=(g.top, g.left)).astype(np.float32)
        true = np.clip(np.rint(pixels[w.top * p : (w.top + w.height) * p, w.left * p : (w.left + w.width) * p]), 0, 255)
        mse = float(np.mean((got - true) ** 2))
        state.psnr.append(99.0 if mse == 0 else 10 * math.log10(255.0**2 / mse))
    state.received.setdefault(frame.index, set()).update(truth)
    found = state.found.setdefault(frame.index, [])
    if frame.index not in reference:
        reference[frame.index] = faces(frame.image)
    if reference[frame.index]:
        geometry = (frame.prepared.input_size, frame.prepared.original_size)
        found.extend(faces(attacker.picture(windows, guesses, geometry)))
