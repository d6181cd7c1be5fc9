"""A camera stand-in for tests: MJPEG over HTTP on loopback, the format of many IP cameras.

OpenCV's FFmpeg backend opens ``http://127.0.0.1:PORT/`` as a live stream (it is not a file
the ``file`` source could read). Frame ``i`` is :func:`frame_image` ``(i)``: a test scene whose
top-left square has grey level ``gray(i)``, so a test can tell which frame it received.
"""

from __future__ import annotations

import http.server
import socketserver
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import cv2
import numpy as np

from tests.support import scene

WIDTH, HEIGHT = 320, 240
MARK = 32  # side of the square that carries the frame number, pixels
PERIOD = 28  # the mark tells frame numbers apart modulo this


def gray(index: int) -> int:
    return 16 + 8 * (index % PERIOD)


def frame_image(index: int) -> np.ndarray:
    """(HEIGHT, WIDTH, 3) uint8 RGB: the scene, a bright disc that moves, the index mark."""
    image = scene(HEIGHT, WIDTH, seed=1).copy()
    x = 60 + (index * 4) % 200
    cv2.circle(image, (x, 120), 30, (250, 250, 250), -1)
    image[:MARK, :MARK] = gray(index)
    return image


def read_mark(image: np.ndarray) -> int:
    """The frame number, modulo PERIOD, that a received RGB frame carries."""
    level = float(image[4 : MARK - 4, 4 : MARK - 4].mean())
    return int(round((level - 16) / 8)) % PERIOD


class MjpegServer:
    """Serves ``frames`` frames (None: until the client leaves) at ``fps`` to each client."""

    def __init__(self, *, fps: float = 30.0, frames: int | None = None) -> None:
        self.fps = fps
        self.frames = frames
        self.sent = 0
        self.clients_done = threading.Event()  # set when a client's stream has ended
        self._jpegs = [self._encode(i) for i in range(PERIOD)]
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner._stream(self)

            def log_message(self, *args: object) -> None:
                pass

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/camera.mjpg"

    @staticmethod
    def _encode(index: int) -> bytes:
        ok, data = cv2.imencode(".jpg", cv2.cvtColor(frame_image(index), cv2.COLOR_RGB2BGR),
                                [cv2.IMWRITE_JPEG_QUALITY, 95])
        assert ok
        return bytes(data.tobytes())

    def _stream(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        handler.end_headers()
        index = 0
        start = time.monotonic()
        try:
            while self.frames is None or index < self.frames:
                data = self._jpegs[index % PERIOD]
                handler.wfile.write(
                    b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(data)
                    + data + b"\r\n"
                )
                handler.wfile.flush()
                index += 1
                self.sent = index
                delay = start + index / self.fps - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            self.clients_done.set()

    @contextmanager
    def running(self) -> Iterator[MjpegServer]:
        thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()
            thread.join()
