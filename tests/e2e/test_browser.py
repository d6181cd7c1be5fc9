"""The WebRTC page end to end in a real browser: Debian's headless Chromium with its fake camera.

Chromium comes from Debian's ``chromium`` package (``make test`` installs it when missing) and
is driven by the Python ``playwright`` package pointed at it; no browser is downloaded.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pedsam.stream.core.session import EdgeConfig, EdgeSession
from pedsam.stream.web.server import LiveServer, ServeConfig
from tests.support import TINY

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
]

# Mean of (R - G) over the video's current frame: the first object's colour is a strong red.
REDNESS = """() => {
  const video = document.getElementById("video");
  const canvas = document.createElement("canvas");
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  const context = canvas.getContext("2d");
  context.drawImage(video, 0, 0);
  const data = context.getImageData(0, 0, canvas.width, canvas.height).data;
  let sum = 0;
  for (let i = 0; i < data.length; i += 4) sum += data[i] - data[i + 1];
  return sum / (data.length / 4);
}"""


TOKEN = "browser-test-token-0123"  # what serve prints with the page's address off loopback


def text_number(selector: str) -> str:
    return f"Number(document.querySelector('{selector}').textContent)"


@pytest.fixture
async def server_url(tiny_workers: list[str]) -> AsyncIterator[tuple[LiveServer, str]]:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail("/usr/bin/chromium is missing: make test installs Debian's chromium package")
        pytest.skip("needs Debian's chromium (apt-get install chromium); make test installs it")
    async with EdgeSession(EdgeConfig(model=TINY, workers=tuple(tiny_workers))) as session:
        live = LiveServer(session, ServeConfig(port=0, token=TOKEN))
        url = await live.start()
        try:
            yield live, url
        finally:
            await live.stop()


async def test_browser_click_follows_an_object_and_lists_it(server_url: tuple[LiveServer, str]) -> None:
    from playwright.async_api import async_playwright

    live, url = server_url
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        try:
            page = await browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            refused = await page.goto(url)  # without the access token: no page, no call
            assert refused is not None and refused.status == 401 and not live.peers
            await page.goto(f"{url}?token={TOKEN}")
            await page.wait_for_function("document.getElementById('video').videoWidth > 0", timeout=60_000)
            await page.wait_for_function(
                "document.getElementById('status').textContent.includes('connected')", timeout=30_000
            )
            assert await page.text_content("#notice") is not None
            assert "UNTRAINED" in (await page.text_content("#notice") or "")
            # Chromium's fake camera is 640x480; the page shows the server's frames at that size.
            assert await page.evaluate("document.getElementById('video').videoWidth") == 640
            await page.wait_for_function(f"{text_number('#stat-processed')} > 3", timeout=30_000)
            before = await page.evaluate(REDNESS)
            assert await page.locator("#objects li").count() == 0

            await page.locator("#video").click()  # the centre of the video
            await page.wait_for_function("document.querySelectorAll('#objects li').length === 1", timeout=30_000)
            await page.wait_for_function(f"{text_number('#stat-segmented')} > 5", timeout=60_000)
            item = await page.text_content("#objects li")
            assert item is not None and item.startswith("#0")
            after = await page.evaluate(REDNESS)
            assert after > before + 10, (before, after)  # masked frames came back, drawn in red
            assert await page.text_content("#stat-p50") != "-"
            [peer] = live.peers.values()
            assert len(peer.board) == 1 and peer.stats.frames_segmented > 5

            await page.locator("#objects li button").click()  # remove it
            await page.wait_for_function("document.querySelectorAll('#objects li').length === 0", timeout=30_000)
            assert await page.is_visible("#empty")
            assert len(peer.board) == 0
            assert errors == []
        finally:
            await browser.close()
