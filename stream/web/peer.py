"""One browser's WebRTC call: its camera in, masked video and object state out.

A :class:`PeerSession` owns everything of one peer: the ``RTCPeerConnection``, the
:class:`~pedsam.stream.media.sources.WebRTCSource` over the peer's camera track, its own
:class:`~pedsam.stream.runs.live.ObjectBoard` and :class:`~pedsam.stream.runs.live.LiveStats`, the pipeline task,
and the :class:`OverlayTrack` that sends the masked frames back. Peers share the server's
:class:`~pedsam.stream.core.session.EdgeSession` (model and workers) and nothing else, so one browser's
clicks never reach another's video.

The data channel carries JSON text messages. From the page::

    {"type": "click", "x": 312.5, "y": 140}   # frame pixels of the returned video: new object
    {"type": "remove", "id": 3}
    {"type": "clear"}

To the page: ``{"type": "state", "objects": [...], "stats": {...}}`` on every change and a few
times a second, and ``{"type": "error", "message": "..."}`` when a message was refused or the
pipeline stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import av
import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaBlackhole
from aiortc.mediastreams import MediaStreamError

from pedsam.stream.core.prompts import ObjectPrompt
from pedsam.stream.core.session import EdgeSession
from pedsam.stream.errors import PedsamError, PromptError
from pedsam.stream.media.sources import FrameSource, LatestSlot, RecordingSource, WebRTCSource
from pedsam.stream.runs.board import ObjectBoard
from pedsam.stream.runs.engine import run_frames
from pedsam.stream.runs.keyframes import KeyframePolicy
from pedsam.stream.runs.recorder import render
from pedsam.stream.runs.stats import RunStats

__all__ = ["OverlayTrack", "PeerSession", "parse_message"]

log = logging.getLogger(__name__)

VIDEO_CLOCK = 90_000  # RTP video clock rate, Hz
MAX_MESSAGE_CHARS = 4096
STATE_INTERVAL = 0.25  # seconds between unprompted state messages
STATS_FRAMES = 300  # the page's latency figures are over this many recent frames


class OverlayTrack(MediaStreamTrack):
    """A video track that sends the newest masked frame; older unsent ones are skipped."""

    kind = "video"

    def __init__(self) -> None:
        super().__init__()
        self._slot: LatestSlot[np.ndarray] = LatestSlot()
        self._start: float | None = None
        self._pts = -1
        self.sent = 0

    def put(self, image: np.ndarray) -> None:
        """Queue an ``(H, W, 3)`` uint8 RGB frame for sending (replacing any unsent one)."""
        self._slot.put(image)

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        image = await self._slot.get()
        if image is None:
            raise MediaStreamError
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        now = time.monotonic()
        self._start = now if self._start is None else self._start
        self._pts = max(self._pts + 1, int((now - self._start) * VIDEO_CLOCK))
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        self.sent += 1
        return frame

    def stop(self) -> None:
        super().stop()
        self._slot.end()


def parse_message(text: object) -> dict[str, Any]:
    """Check one data-channel message; returns it as a dict or raises PromptError."""
    if not isinstance(text, str) or len(text) > MAX_MESSAGE_CHARS:
        raise PromptError("messages are JSON text of at most 4096 characters")
    try:
        message = json.loads(text)
    except json.JSONDecodeError:
        raise PromptError("message is not JSON") from None
    if not isinstance(message, dict) or message.get("type") not in ("click", "remove", "clear"):
        raise PromptError('message type must be "click", "remove" or "clear"')
    if message["type"] == "click":
        x, y = message.get("x"), message.get("y")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (x, y)):
            raise PromptError("a click needs numeric x and y (pixels of the video)")
    if message["type"] == "remove" and not (isinstance(message.get("id"), int) and not isinstance(message["id"], bool)):
        raise PromptError("remove needs an integer object id")
    return message


class PeerSession:
    """A browser's call: its own source, objects, stats, pipeline and returned video."""

    def __init__(
        self,
        session: EdgeSession,
        *,
        peer_id: str,
        ice_servers: Sequence[str] = (),
        in_flight: int = 2,
        keyframes: KeyframePolicy | None = None,
        banner: str | None = None,
        on_closed: Callable[[PeerSession], None] | None = None,
        record: str | None = None,
    ) -> None:
        """``record``: a file to write every frame of the call the edge takes to, losslessly
        (:class:`~pedsam.stream.media.sources.RecordingSource`)."""
        self.session = session
        self.record = record
        self.peer_id = peer_id
        self.in_flight = in_flight
        self.keyframes = keyframes or KeyframePolicy(kind="adaptive")
        self.banner = banner
        self.board = ObjectBoard()
        self.stats = RunStats()
        self.scheduler = session.new_scheduler()  # this camera's motion and exposure, apart
        self.out = OverlayTrack()
        self.frame_size: tuple[int, int] | None = None  # (W, H) of the newest processed frame
        self.error: str | None = None
        self.pc = RTCPeerConnection(
            RTCConfiguration(iceServers=[RTCIceServer(urls=url) for url in ice_servers])
        )
        self._channel: RTCDataChannel | None = None
        self._pipeline: asyncio.Task[None] | None = None
        self._blackhole = MediaBlackhole()
        self._on_closed = on_closed
        self._closed = False
        self._last_state = 0.0
        self._state_version = -1
        self.pc.on("track", self._on_track)
        self.pc.on("datachannel", self._on_datachannel)
        self.pc.on("connectionstatechange", self._on_connection_state)

    async def answer(self, sdp: str, kind: str) -> RTCSessionDescription:
        """Take the browser's offer, return our answer (ICE candidates included)."""
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type=kind))
        answer = await self.pc.createAnswer()
        await self.pc.setLocalDescription(answer)
        await self._blackhole.start()  # drains any track other than the first video one
        local = self.pc.localDescription
        return RTCSessionDescription(sdp=local.sdp, type=local.type)

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind != "video" or self._pipeline is not None:
            self._blackhole.addTrack(track)  # drained and discarded, so nothing piles up
            return
        self.pc.addTrack(self.out)
        source: FrameSource = WebRTCSource(track, name=f"webrtc {self.peer_id}")
        if self.record is not None:
            source = RecordingSource(source, self.record)
        self._pipeline = asyncio.create_task(self._run(source), name=f"peer {self.peer_id}")
        log.info("peer %s: video track received", self.peer_id)

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        self._channel = channel
        channel.on("message", self._on_message)
        channel.on("open", lambda: self.send_state(force=True))
        self.send_state(force=True)

    async def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        log.info("peer %s: connection %s", self.peer_id, state)
        if state in ("failed", "closed"):
            await self.close()

    def _on_message(self, text: object) -> None:
        try:
            message = parse_message(text)
            if message["type"] == "click":
                if self.frame_size is None:
                    raise PromptError("no video yet: click once the picture shows")
                prompt = ObjectPrompt(points=((float(message["x"]), float(message["y"])),), labels=(1,))
                object_id = self.board.add(prompt, frame_size=self.frame_size)
                log.info("peer %s: object %d added", self.peer_id, object_id)
            elif message["type"] == "remove":
                if not self.board.remove(message["id"]):
                    raise PromptError(f"no object {message['id']}")
            else:
                self.board.clear()
        except PromptError as exc:
            self._send({"type": "error", "message": str(exc)})
        self.send_state(force=True)

    async def _run(self, source: FrameSource) -> None:
        try:
            results = run_frames(
                self.session, source, self.board, drops="latest", in_flight=self.in_flight, stats=self.stats,
                scheduler=self.scheduler, keyframes=self.keyframes,
            )
            async with source, contextlib.aclosing(results):
                async for result in results:
                    height, width = result.frame.image.shape[:2]
                    self.frame_size = (width, height)
                    image = await asyncio.to_thread(render, result, banner=self.banner)
                    self.out.put(image)
                    self.send_state()
        except PedsamError as exc:
            self.error = str(exc)
            log.warning("peer %s: pipeline stopped: %s", self.peer_id, exc)
            self._send({"type": "error", "message": f"pipeline stopped: {exc}"})
        finally:
            self.out.stop()

    def state(self) -> dict[str, Any]:
        return {
            "type": "state",
            "peer": self.peer_id,
            "objects": self.board.describe(),
            "stats": {**self.stats.to_json(last=STATS_FRAMES), "recent_fps": round(self.stats.recent_fps, 2)},
            "frame_size": list(self.frame_size) if self.frame_size else None,
        }

    def send_state(self, *, force: bool = False) -> None:
        now = time.monotonic()
        changed = self.board.version != self._state_version
        if not (force or changed) and now - self._last_state < STATE_INTERVAL:
            return
        if self._send(self.state()):
            self._last_state, self._state_version = now, self.board.version

    def _send(self, message: dict[str, Any]) -> bool:
        channel = self._channel
        if channel is None or channel.readyState != "open":
            return False
        channel.send(json.dumps(message))
        return True

    async def close(self) -> None:
        """Stop the pipeline, close the source and the call. Idempotent."""
        if self._closed:
            return
        self._closed = True
        pipeline, self._pipeline = self._pipeline, None
        if pipeline is not None:
            pipeline.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pipeline
        self.out.stop()
        await self._blackhole.stop()
        await self.pc.close()
        log.info("peer %s closed after %d frames (%d dropped)", self.peer_id, self.stats.frames, self.stats.dropped)
        if self._on_closed is not None:
            self._on_closed(self)
