"""pedsam.stream.media.sources: file, camera (MJPEG over loopback HTTP, and an injected capture) and WebRTC."""

from __future__ import annotations

import asyncio
import fractions
import time
from pathlib import Path

import av
import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError

from pedsam.stream.errors import MediaError
from pedsam.stream.media.sources import (
    CameraSource,
    FileSource,
    LatestSlot,
    RecordingSource,
    WebRTCSource,
    parse_camera,
)
from pedsam.stream.media.synthetic import make_clip
from pedsam.stream.media.video import read_frames
from tests.mjpeg_server import HEIGHT, PERIOD, WIDTH, MjpegServer, read_mark


async def test_latest_slot_keeps_newest_and_counts_drops() -> None:
    slot: LatestSlot[int] = LatestSlot()
    for i in range(5):
        slot.put(i)
    assert await slot.get() == 4
    assert slot.dropped == 4
    waiter = asyncio.create_task(slot.get())
    await asyncio.sleep(0)
    assert not waiter.done()  # nothing new: waits
    slot.put(5)
    assert await waiter == 5
    slot.put(6)
    slot.end()
    slot.put(7)  # after the end: ignored
    assert await slot.get() == 6  # what was left is still handed out
    assert await slot.get() is None
    assert slot.dropped == 4


async def test_latest_slot_end_with_error_raises_after_the_last_item() -> None:
    slot: LatestSlot[int] = LatestSlot()
    slot.put(1)
    slot.end(MediaError("camera unplugged"))
    assert await slot.get() == 1
    with pytest.raises(MediaError, match="unplugged"):
        await slot.get()


def test_parse_camera() -> None:
    assert parse_camera("0") == 0
    assert parse_camera(" 2 ") == 2
    assert parse_camera("/dev/video1") == "/dev/video1"
    assert parse_camera("http://10.0.0.2/cam") == "http://10.0.0.2/cam"
    with pytest.raises(MediaError):
        parse_camera("  ")


async def test_file_source_never_drops_even_for_a_slow_consumer(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "clip.mp4", frames=12, width=96, height=64)
    want = list(read_frames(clip.path))
    got = []
    async with FileSource(clip.path) as source:
        assert source.rate == fractions.Fraction(12)
        async for item in source:
            got.append(item)
            await asyncio.sleep(0.02)  # slower than decoding
        assert source.dropped == 0
    assert [g.frame.index for g in got] == list(range(12))
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g.frame.image, w.image)
    captured = [g.captured for g in got]
    assert captured == sorted(captured)


async def test_a_recording_closed_while_a_frame_is_written_keeps_every_frame_it_took(tmp_path: Path) -> None:
    """A call that ends while a frame is being written (a browser hanging up): the file is
    finished after that frame, never from two threads at once (FFmpeg aborts the process), and a
    frame after the end does not start the file over."""
    clip = make_clip(tmp_path / "clip.mp4", frames=6, width=96, height=64)
    want = [f.image for f in read_frames(clip.path)]
    for round_ in range(10):
        path = tmp_path / f"call{round_}.mkv"
        source = RecordingSource(FileSource(clip.path), path)
        await source.open()
        taken = [await source.next() for _ in range(3)]
        late = asyncio.create_task(source.next())  # being written while the call ends
        await asyncio.sleep(0)
        await source.close()
        await late
        source._write(want[5])  # after the end: not written
        recorded = [f.image for f in read_frames(path)]
        assert len(recorded) == source.recorded in (3, 4), round_
        for got, item in zip(recorded, [*taken, late.result()]):
            assert item is not None
            np.testing.assert_array_equal(got, item.frame.image)


async def test_file_source_closes_on_error_and_reports_bad_files(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="no such file"):
        async with FileSource(tmp_path / "missing.mp4"):
            pass
    clip = make_clip(tmp_path / "clip.mp4", frames=6, width=64, height=64)
    source = FileSource(clip.path)
    with pytest.raises(RuntimeError, match="consumer failed"):
        async with source:
            await source.next()
            raise RuntimeError("consumer failed")
    with pytest.raises(MediaError, match="not open"):  # closed on the error path
        await source.next()


async def test_camera_source_reads_an_mjpeg_stream_over_loopback_http() -> None:
    with MjpegServer(fps=30, frames=40).running() as server:
        async with CameraSource(server.url) as source:
            assert source.kind == "camera" and source.live
            first = await source.next()
            assert first is not None
            assert first.frame.image.shape == (HEIGHT, WIDTH, 3)
            assert first.frame.image.dtype == np.uint8
            # RGB, not OpenCV's BGR: the scene's green rectangle (30, 200, 60) stays green
            r, g, b = (int(v) for v in first.frame.image[190, 250])
            assert g > r + 80 and g > b + 80
            assert read_mark(first.frame.image) == first.frame.index % PERIOD
            rest = [item async for item in source]
        indices = [first.frame.index] + [item.frame.index for item in rest]
        # Every frame was either handed out or counted as dropped; the stream's end ends the source.
        assert indices == sorted(indices)
        assert len(indices) + source.dropped == 40
        assert sum(b - a - 1 for a, b in zip(indices, indices[1:])) + indices[0] == source.dropped
        for item in rest:
            assert read_mark(item.frame.image) == item.frame.index % PERIOD


async def test_camera_source_latest_frame_wins_and_stops_reading_on_close() -> None:
    with MjpegServer(fps=40, frames=None).running() as server:
        async with CameraSource(server.url) as source:
            await source.next()
            await asyncio.sleep(1.0)  # the consumer falls behind by about 40 frames
            item = await source.next()
            assert item is not None
            sent = server.sent
            assert source.dropped >= 20
            # What we got is the newest frame, not the oldest unread one.
            assert item.frame.index >= sent - 8
            assert read_mark(item.frame.image) == item.frame.index % PERIOD
        # Closed: the reader released the stream, so the server's client went away.
        assert await asyncio.to_thread(server.clients_done.wait, 10)


async def test_camera_source_reports_a_camera_it_cannot_open() -> None:
    with pytest.raises(MediaError, match="cannot open camera /nonexistent/video7"):
        async with CameraSource("/nonexistent/video7"):
            pass
    with pytest.raises(MediaError, match="cannot open camera 93"):
        async with CameraSource("93"):
            pass


class FakeCapture:
    """An injected capture: ``count`` frames as fast as asked, then the end of the stream."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.reads = 0
        self.released = 0

    def isOpened(self) -> bool:
        return True

    def read(self) -> tuple[bool, np.ndarray | None]:
        if self.reads >= self.count:
            return False, None
        self.reads += 1
        bgr = np.zeros((8, 10, 3), np.uint8)
        bgr[..., 0] = self.reads  # blue channel in OpenCV's order
        return True, bgr

    def get(self, prop: int) -> float:
        return 25.0

    def release(self) -> None:
        self.released += 1


async def test_camera_source_with_an_injected_capture_counts_every_drop() -> None:
    capture = FakeCapture(50)
    source = CameraSource(3, open_capture=lambda device: capture)
    async with source:
        assert source.rate == fractions.Fraction(25)
        deadline = time.monotonic() + 10
        while capture.reads < 50 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        last = await source.next()
        assert last is not None and await source.next() is None
    assert last.frame.index == 49
    assert last.frame.image[0, 0].tolist() == [0, 0, 50]  # converted to RGB
    assert source.dropped == 49
    assert capture.released == 1


class FakeTrack:
    """An aiortc-like remote video track delivering ``count`` frames, then ending."""

    kind = "video"

    def __init__(self, count: int, delay: float = 0.0) -> None:
        self.count = count
        self.delay = delay
        self.sent = 0

    async def recv(self) -> av.VideoFrame:
        if self.sent >= self.count:
            raise MediaStreamError
        await asyncio.sleep(self.delay)
        image = np.full((48, 64, 3), (10 * self.sent) % 256, np.uint8)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts = self.sent * 3000
        self.sent += 1
        return frame


async def test_webrtc_source_hands_out_the_newest_frame() -> None:
    track = FakeTrack(30, delay=0.002)
    async with WebRTCSource(track) as source:
        first = await source.next()
        assert first is not None and first.frame.image.shape == (48, 64, 3)
        while track.sent < 30:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.02)
        last = await source.next()
        assert last is not None
        assert await source.next() is None  # the track ended
    assert last.frame.index == 29
    assert int(last.frame.image[0, 0, 0]) == (10 * 29) % 256
    assert 1 + 1 + source.dropped == 30
