"""pedsam.stream.web.server + pedsam.stream.web.peer: real aiortc peers calling a real server on loopback, in one process."""

from __future__ import annotations

import asyncio
import fractions
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np
import pytest
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from pedsam.stream.core.session import EdgeConfig, EdgeSession
from pedsam.stream.privacy.captured import attack_capture
from pedsam.workers.capture import CaptureWriter, read_capture
from pedsam.workers.presets import get_preset
from pedsam.workers.server import WorkerLimits, WorkerModel, WorkerServer
from pedsam.stream.errors import PromptError
from pedsam.stream.web.peer import parse_message
from pedsam.stream.web.server import LiveServer, ServeConfig
from tests.mjpeg_server import HEIGHT, WIDTH, frame_image
from tests.support import TINY


class SceneTrack(MediaStreamTrack):
    """A synthetic camera: the test scene with a moving disc, 320x240, 15 fps."""

    kind = "video"

    def __init__(self, fps: int = 15) -> None:
        super().__init__()
        self.fps = fps
        self.count = 0
        self._start: float | None = None

    async def recv(self) -> av.VideoFrame:
        self._start = time.monotonic() if self._start is None else self._start
        delay = self._start + self.count / self.fps - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        frame = av.VideoFrame.from_ndarray(frame_image(self.count), format="rgb24")
        frame.pts = self.count * (90_000 // self.fps)
        frame.time_base = fractions.Fraction(1, 90_000)
        self.count += 1
        return frame


class MirroredTrack(SceneTrack):
    """Another camera: the same scene, mirrored left to right."""

    async def recv(self) -> av.VideoFrame:
        frame = await super().recv()
        mirrored = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame.to_ndarray(format="rgb24")[:, ::-1]),
                                              format="rgb24")
        mirrored.pts, mirrored.time_base = frame.pts, frame.time_base
        return mirrored


class Client:
    """A browser stand-in: sends ``track`` (default SceneTrack), keeps the frames and messages
    that come back."""

    def __init__(self, track: MediaStreamTrack | None = None) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.frames: list[np.ndarray] = []
        self.states: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.peer: str | None = None
        self._reader: asyncio.Task[None] | None = None
        self.pc.addTrack(track or SceneTrack())
        self.channel = self.pc.createDataChannel("control")
        self.channel.on("message", self._on_message)
        self.pc.on("track", self._on_track)

    def _on_message(self, text: str) -> None:
        message = json.loads(text)
        if message["type"] == "state":
            self.states.append(message)
        elif message["type"] == "error":
            self.errors.append(message["message"])

    def _on_track(self, track: MediaStreamTrack) -> None:
        async def read() -> None:
            while True:
                frame = await track.recv()
                self.frames.append(frame.to_ndarray(format="rgb24"))

        self._reader = asyncio.create_task(read())

    async def connect(self, http: aiohttp.ClientSession, url: str, token: str | None = None) -> None:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        offer = {"sdp": self.pc.localDescription.sdp, "type": self.pc.localDescription.type}
        async with http.post(url + "offer" + (f"?token={token}" if token else ""), json=offer) as reply:
            assert reply.status == 200, await reply.text()
            answer = await reply.json()
        self.peer = answer["peer"]
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))

    def send(self, message: dict[str, Any]) -> None:
        self.channel.send(json.dumps(message))

    @property
    def objects(self) -> list[dict[str, Any]]:
        return self.states[-1]["objects"] if self.states else []

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        await self.pc.close()


async def until(condition: Callable[[], bool], timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def redness(frames: list[np.ndarray], box: list[float]) -> float:
    """Mean of R - G inside an XYXY box over frames: the first palette colour is strong red."""
    x0, y0, x1, y1 = (int(v) for v in box)
    values = [float(f[y0:y1, x0:x1, 0].astype(np.int32).mean() - f[y0:y1, x0:x1, 1].astype(np.int32).mean())
              for f in frames]
    return float(np.mean(values))


@pytest.fixture
async def server(tiny_workers: list[str]) -> AsyncIterator[tuple[LiveServer, str]]:
    async with EdgeSession(EdgeConfig(model=TINY, workers=tuple(tiny_workers))) as session:
        live = LiveServer(session, ServeConfig(port=0, max_peers=3))
        url = await live.start()
        try:
            yield live, url
        finally:
            await live.stop()


async def test_page_config_and_bad_offers(server: tuple[LiveServer, str]) -> None:
    live, url = server
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as reply:
            assert reply.status == 200 and "pedsam live" in await reply.text()
        async with http.get(url + "app.js") as reply:
            assert reply.status == 200 and "createDataChannel" in await reply.text()
        async with http.get(url + "config") as reply:
            config = await reply.json()
        assert config["iceServers"] == []  # no public STUN unless configured
        assert "UNTRAINED" in config["notice"]
        for body in (b"not json", json.dumps({"type": "answer", "sdp": "x"}).encode()):
            async with http.post(url + "offer", data=body) as reply:
                assert reply.status == 400
                assert "offer" in (await reply.json())["error"]
        async with http.post(url + "offer", json={"type": "offer", "sdp": "v=0 garbage"}) as reply:
            assert reply.status == 400
    assert live.peers == {}


async def test_a_click_adds_an_object_whose_mask_comes_back_drawn_on_the_video(
    server: tuple[LiveServer, str],
) -> None:
    live, url = server
    client = Client()
    async with aiohttp.ClientSession() as http:
        try:
            await client.connect(http, url)
            await until(lambda: len(client.frames) >= 5 and bool(client.states), what="first frames")
            before = client.frames[-3:]
            assert before[0].shape == (HEIGHT, WIDTH, 3)
            assert client.objects == []
            assert live.peers[client.peer or ""].stats.frames_segmented == 0  # nothing sent to workers yet

            client.send({"type": "click", "x": 150.0, "y": 170.0})
            await until(lambda: bool(client.objects) and client.objects[0]["area"], what="a mask")
            [obj] = client.objects
            assert obj["id"] == 0 and obj["colour"] == "#e6194b" and obj["area"] > 0
            shown = len(client.frames)
            await until(lambda: len(client.frames) >= shown + 5, what="masked frames")
            after = client.frames[-3:]
            assert redness(after, obj["box"]) > redness(before, obj["box"]) + 10
            stats = client.states[-1]["stats"]
            assert stats["frames_segmented"] > 0 and stats["latency_p50_s"] > 0

            client.send({"type": "click", "x": 5000, "y": 1})
            client.send({"type": "remove", "id": 42})
            client.send({"type": "dance"})
            await until(lambda: len(client.errors) >= 3, what="three refusals")
            assert "outside" in client.errors[0] and "no object 42" in client.errors[1]

            client.send({"type": "remove", "id": 0})
            await until(lambda: client.objects == [], what="object removed")
        finally:
            await client.close()
    await until(lambda: not live.peers, timeout=20, what="the server to drop the closed call")


async def test_two_browsers_are_isolated(server: tuple[LiveServer, str]) -> None:
    live, url = server
    first, second = Client(), Client()
    async with aiohttp.ClientSession() as http:
        try:
            await first.connect(http, url)
            await second.connect(http, url)
            assert first.peer != second.peer and len(live.peers) == 2
            await until(lambda: len(first.frames) >= 3 and len(second.frames) >= 3, what="both videos")
            first.send({"type": "click", "x": 150.0, "y": 170.0})
            await until(lambda: bool(first.objects) and first.objects[0]["area"], what="first's mask")
            # The mask's state message can come before the video frames painted with it.
            shown, seen = len(first.frames), len(second.frames)
            await until(lambda: len(first.frames) >= shown + 5 and len(second.frames) >= seen + 5,
                        what="both videos going on")
            assert second.objects == [] and second.states[-1]["stats"]["frames_segmented"] == 0
            async with http.get(url + "peers") as reply:
                peers = {p["peer"]: p for p in await reply.json()}
            assert len(peers[first.peer or ""]["objects"]) == 1
            assert peers[second.peer or ""]["objects"] == []
            # Each call keeps its own frame sequence (its rotation's), in one ledger per worker:
            # only the first sent frames to workers, and the ledger counts them for every call.
            mine, theirs = peers[first.peer or ""]["exposure"], peers[second.peer or ""]["exposure"]
            assert mine["stream"]["frames"] >= 1 and theirs["stream"]["frames"] == 0
            assert mine["stream"]["id"] != theirs["stream"]["id"]
            assert theirs["frames"] == mine["frames"] == mine["stream"]["frames"] and theirs["streams"] == 1
            assert live.session.exposure_summary()["stream"]["frames"] == 0
            box = first.objects[0]["box"]
            assert redness(first.frames[-3:], box) > redness(second.frames[-3:], box) + 10
        finally:
            await first.close()
            await until(lambda: len(live.peers) == 1, timeout=20, what="first call to close")
            assert second.peer in live.peers
            await second.close()


async def test_the_server_refuses_calls_beyond_its_limit(tiny_workers: list[str]) -> None:
    async with EdgeSession(EdgeConfig(model=TINY, workers=tuple(tiny_workers))) as session:
        live = LiveServer(session, ServeConfig(port=0, max_peers=1))
        url = await live.start()
        clients = [Client(), Client()]
        try:
            async with aiohttp.ClientSession() as http:
                await clients[0].connect(http, url)
                with pytest.raises(AssertionError, match="503"):
                    await clients[1].connect(http, url)
        finally:
            for client in clients:
                await client.close()
            await live.stop()
        assert live.peers == {}


async def test_tokens_let_in_only_whom_they_should(tiny_workers: list[str]) -> None:
    """With tokens (generated whenever serve listens beyond loopback): the page and a call need
    the access token, /peers the operator token; one client holds a bounded number of calls."""
    token, operator = "call-token-0123456789", "operator-token-0123456789"
    async with EdgeSession(EdgeConfig(model=TINY, workers=tuple(tiny_workers))) as session:
        live = LiveServer(session, ServeConfig(port=0, token=token, operator_token=operator,
                                               max_calls_per_client=1))
        url = await live.start()
        clients = [Client(), Client()]
        try:
            async with aiohttp.ClientSession() as http:
                for path, status in (("", 401), (f"?token={token}", 200), (f"config?token={operator}", 401),
                                     ("app.js", 200), (f"peers?token={token}", 403), (f"peers?token={operator}", 200)):
                    async with http.get(url + path) as reply:
                        assert reply.status == status, path
                async with http.get(url + "config", headers={"Authorization": f"Bearer {token}"}) as reply:
                    assert reply.status == 200
                with pytest.raises(AssertionError, match="401"):
                    await clients[0].connect(http, url)  # no token: no call
                await clients[0].connect(http, url, token)
                with pytest.raises(AssertionError, match="429"):
                    await clients[1].connect(http, url, token)  # one call per client here
        finally:
            for client in clients:
                await client.close()
            await live.stop()


def test_listening_beyond_loopback_generates_tokens() -> None:
    assert ServeConfig(host="127.0.0.1").guarded().token is None
    open_ = ServeConfig(host="0.0.0.0").guarded()
    assert open_.token and open_.operator_token and open_.token != open_.operator_token
    assert ServeConfig(host="0.0.0.0", token="mine-0123456789abcdef").guarded().token == "mine-0123456789abcdef"
    with pytest.raises(ValueError, match="16 printable"):
        ServeConfig(token="short")


def test_parse_message() -> None:
    assert parse_message('{"type": "click", "x": 1, "y": 2.5}')["x"] == 1
    assert parse_message('{"type": "remove", "id": 3}')["id"] == 3
    assert parse_message('{"type": "clear"}')["type"] == "clear"
    for bad in ('{"type": "click", "x": "1", "y": 2}', '{"type": "remove", "id": true}', "[1]", "{",
                '{"type": "click", "x": 1}', b"bytes", "x" * 5000):
        with pytest.raises(PromptError):
            parse_message(bad)


def test_serve_config_checks() -> None:
    with pytest.raises(ValueError, match="stun"):
        ServeConfig(ice_servers=("http://example.org",))
    with pytest.raises(ValueError, match="together"):
        ServeConfig(certfile="cert.pem")
    assert ServeConfig(ice_servers=("stun:stun.example.org:3478",)).ice_servers


async def test_what_workers_kept_of_two_calls_at_once_is_placed_call_by_call(
        tmp_path: Path, tiny_worker_model: WorkerModel) -> None:
    """Two browser calls through the real path of serve, workers keeping what they receive
    (--capture) and the server recording each call (--record-calls): every request a worker
    kept is placed on exactly one call's recording, each call's on its own."""
    captures = [tmp_path / f"w{i}.bin" for i in range(3)]
    writers = [CaptureWriter(path) for path in captures]
    workers = [WorkerServer(tiny_worker_model, WorkerLimits(), capture=writer) for writer in writers]
    try:
        addresses = tuple([await worker.start("127.0.0.1", 0) for worker in workers])
        async with EdgeSession(EdgeConfig(model=TINY, workers=addresses)) as session:
            live = LiveServer(session, ServeConfig(port=0, record_calls=str(tmp_path / "calls")))
            url = await live.start()
            first, second = Client(), Client(MirroredTrack())
            try:
                async with aiohttp.ClientSession() as http:
                    await first.connect(http, url)
                    await second.connect(http, url)
                    await until(lambda: len(first.frames) >= 3 and len(second.frames) >= 3, what="both videos")
                    first.send({"type": "click", "x": 150.0, "y": 170.0})
                    second.send({"type": "click", "x": WIDTH - 150.0, "y": 170.0})
                    await until(lambda: all(c.states and c.states[-1]["stats"]["frames_segmented"] >= 2
                                            for c in (first, second)), what="keyframes of both calls")
            finally:
                await first.close()
                await second.close()
                await live.stop()
    finally:
        for worker in workers:
            await worker.stop(0)
        for writer in writers:
            writer.close()
    recordings = sorted((tmp_path / "calls").glob("call-*.mkv"))
    assert len(recordings) == 2
    kept = sum(len(list(read_capture(path))) for path in captures)
    sam = TINY.build()
    placed = []
    for recording in recordings:
        report = attack_capture(recording, {p.stem: p for p in captures}, sam, get_preset("tiny").window_size,
                                lambda _: [])
        placed.append(sum(row["matched_requests"] for row in report["workers"]))
    assert kept >= 4 and all(n >= 2 for n in placed) and sum(placed) == kept, (kept, placed)
