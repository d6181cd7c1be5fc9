"""pedsam.stream.logs: a run's debug logs, text and JSON, carry ids, counts, shapes and timings, never values."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import av
import numpy as np

from tests.support import Done, command

PAINT = (137, 173, 197, 229)  # the only values in the painted frames: a leak shows them side by side
WIDTH, HEIGHT, FRAMES = 96, 64, 3
MAX_MESSAGE = 300  # characters; a log message about a frame is a sentence, not a dump

_FLOAT = r"-?\d+\.\d+(?:e[+-]?\d+)?"
_BETWEEN = r"[\s,;\]\[()]+"  # what separates the values of a dumped array, list or tensor
LEAKS = {
    "pixel values": re.compile(rf"\b(?:137|173|197|229){_BETWEEN}(?:137|173|197|229)\b"),
    "a run of floats (tensor values)": re.compile(rf"{_FLOAT}(?:{_BETWEEN}{_FLOAT}){{2}}"),
    "an array or tensor": re.compile(r"\b(?:array|tensor|Tensor|ndarray)\(|\[\s*\["),
    "raw bytes": re.compile(r"(?:\\x[0-9a-fA-F]{2}){2}"),
}
TEXT_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} \S+ (?:DEBUG|INFO|WARNING|ERROR|CRITICAL) ")


def painted_clip(path: Path) -> Path:
    """FRAMES frames of PAINT values at random, stored losslessly (FFV1), so the frames the edge
    decodes hold exactly those values."""
    rng = np.random.default_rng(7)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("ffv1", rate=12)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "bgr0"
        for _ in range(FRAMES):
            image = np.asarray(PAINT, np.uint8)[rng.integers(0, len(PAINT), size=(HEIGHT, WIDTH, 3))]
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def messages(done: Done, log_format: str) -> list[str]:
    """Every log message of a run's stderr, checked to be one well-formed record per line."""
    found = []
    for line in done.err.splitlines():
        if not line.strip() or line.startswith("note: "):
            continue
        if log_format == "json":
            record = json.loads(line)  # a line that is not one JSON record is a leak in itself
            found.append(" ".join(str(value) for key, value in record.items() if key != "time"))
        else:
            assert TEXT_LINE.match(line), f"not a log line (a multi-line message?): {line[:120]!r}"
            found.append(line)
    return found


async def test_debug_logs_of_a_run_hold_no_pixel_or_tensor_values(
    tiny_workers: list[str], tmp_path: Path, root_logger: None
) -> None:
    clip = painted_clip(tmp_path / "painted.mkv")
    for log_format in ("json", "text"):
        done = await asyncio.to_thread(
            command, "-vv", "--log-format", log_format, "run", str(clip), "--workers", ",".join(tiny_workers), "--model", "tiny",
            "--point", "40,30", "--out", str(tmp_path / log_format), "--no-progress",
        )
        assert done.code == 0, done.err
        assert f"{FRAMES} frames ({FRAMES} ok" in done.out
        found = messages(done, log_format)
        # Debug logging was on and saw every frame go through the split.
        assert sum("segment" in message and "windows" in message for message in found) >= FRAMES * 2
        for message in found:
            assert len(message) <= MAX_MESSAGE, f"{log_format} log record of {len(message)} characters"
            for leak, pattern in LEAKS.items():
                match = pattern.search(message)
                assert match is None, f"{log_format} log shows {leak}: ...{match.group(0)[:80]}..."
