"""``pedsam weights``: the official list, verifying local files, downloads that fail safely."""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from pedsam.workers.errors import CheckpointError
from pedsam.workers.models import build_sam
from pedsam.workers.weights import OFFICIAL, download, verify


def pedsam(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pedsam.stream", "weights", *args],
                          capture_output=True, text=True, timeout=300)


def test_list_names_every_official_checkpoint() -> None:
    done = pedsam("list")
    assert done.returncode == 0
    for entry in OFFICIAL.values():
        line = next(line for line in done.stdout.splitlines() if line.startswith(entry.preset + " "))
        assert entry.file_name in line and entry.md5 in line and f"{entry.size:,}" in line
        assert entry.url == "https://dl.fbaipublicfiles.com/segment_anything/" + entry.file_name


def test_verify_a_file_of_the_right_architecture(tmp_path: Path) -> None:
    path = tmp_path / "mine.pth"
    torch.save(build_sam("tiny", seed=2).state_dict(), path)
    done = pedsam("verify", str(path), "--model", "tiny")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok   structure" in done.stdout and "not an official release" in done.stdout


def test_verify_names_what_is_wrong(tmp_path: Path) -> None:
    state = build_sam("tiny").state_dict()
    state["mask_decoder.iou_token.weight"] = torch.zeros(2, 2)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    done = pedsam("verify", str(path), "--model", "tiny")
    assert done.returncode == 1
    assert "FAIL structure" in done.stdout and "mask_decoder.iou_token.weight has shape (2, 2)" in done.stdout


def test_a_file_carrying_an_official_name_is_held_to_the_release(tmp_path: Path) -> None:
    path = tmp_path / "sam_vit_b_01ec64.pth"
    torch.save(build_sam("vit_b", seed=0).state_dict(), path)  # right shapes, not Meta's weights
    checks = {c.name: c for c in verify(path)}
    assert checks["structure"].ok is True
    assert checks["size"].ok is False and "375042383" in checks["size"].detail
    assert checks["md5"].ok is None and "not computed" in checks["md5"].detail  # skipped, not failed
    with pytest.raises(CheckpointError, match="not an official checkpoint name"):
        verify(_renamed(path, tmp_path / "other.pth"))


def _renamed(path: Path, target: Path) -> Path:
    path.rename(target)
    return target


class _Mirror(BaseHTTPRequestHandler):
    body = b"not the weights" * 1000

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def mirror() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Mirror)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/sam_vit_b_01ec64.pth"
    finally:
        server.shutdown()
        server.server_close()


def test_download_of_a_wrong_file_keeps_nothing(tmp_path: Path, mirror: str) -> None:
    received = []
    with pytest.raises(CheckpointError) as caught:
        download("vit_b", tmp_path, url=mirror, progress=lambda done, total: received.append((done, total)))
    message = str(caught.value)
    assert hashlib.md5(_Mirror.body).hexdigest() in message and "nothing was kept" in message
    assert str(tmp_path / "sam_vit_b_01ec64.pth") in message
    assert received[-1] == (len(_Mirror.body), len(_Mirror.body))
    assert list(tmp_path.iterdir()) == []


def test_download_without_network_fails_fast_and_says_where_to_put_the_file(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}/sam_vit_h_4b8939.pth"
    started = time.monotonic()
    done = pedsam("download", "vit_h", "--dir", str(tmp_path / "ck"), "--url", closed, "--timeout", "5")
    assert time.monotonic() - started < 60
    assert done.returncode == 2
    [line] = [line for line in done.stderr.splitlines() if line.startswith("pedsam: error:")]
    assert "cannot download" in line and str(tmp_path / "ck" / "sam_vit_h_4b8939.pth") in line
    assert "Traceback" not in done.stderr
    assert not any((tmp_path / "ck").iterdir())
