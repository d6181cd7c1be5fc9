"""What tests share beyond fixtures: the tiny model, a test image, running ``pedsam`` as a user does."""

from __future__ import annotations

import asyncio
import io
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families

from pedsam.partitioner.geometry import WindowGrid
from pedsam.protos import pedsam_pb2 as pb
from pedsam.stream.core.shares import gather_windows
from pedsam.stream.media.masks_io import read_records
from pedsam.workers import codec as wire
from pedsam.workers.models import ModelPreset, ModelSource
from pedsam.workers.server import WorkerServer

ROOT = Path(__file__).resolve().parents[1]  # the repository
T = TypeVar("T")
TINY = ModelSource(preset="tiny", seed=0)

VIT_B_NARROW = ModelPreset(
    name="vit_b_narrow",
    embed_dim=96,
    depth=12,
    num_heads=2,
    global_attn_indexes=(2, 5, 8, 11),
    prompt_embed_dim=64,
    decoder_mlp_dim=256,
    decoder_heads=4,
    iou_head_hidden_dim=64,
)
"""ViT-B's geometry (1024 px, 64x64 tokens padded to 70x70, 25 windows, four segments between
global blocks 2, 5, 8 and 11) at a width the default suite affords: the tests of ViT-B's shape run
on it by default and on ViT-B itself with ``make test-vit-b`` (see the fixture ``vit_b_shape``)."""

needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="needs a CUDA GPU: torch.cuda.is_available() is False on this machine (these tests run where one is)",
)
"""Marks a test that runs only where torch sees a CUDA device; elsewhere it is skipped with the
reason (``pytest -rs`` lists it)."""


def scene(height: int, width: int, seed: int = 0) -> np.ndarray:
    """An HxWx3 uint8 RGB test image with structure (gradients, shapes) and some noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack(
        [
            (x * 255 // max(1, width - 1)),
            (y * 255 // max(1, height - 1)),
            ((x + y) * 127 // max(1, width + height - 2)),
        ],
        axis=-1,
    ).astype(np.int32)
    cy, cx, r = height * 0.45, width * 0.4, min(height, width) * 0.2
    image[(y - cy) ** 2 + (x - cx) ** 2 < r**2] = (230, 40, 40)
    image[int(height * 0.6) : int(height * 0.85), int(width * 0.65) : int(width * 0.9)] = (30, 200, 60)
    image += rng.integers(-12, 13, size=image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


@dataclass
class Done:
    code: int
    out: str
    err: str


def command(*argv: str) -> Done:
    """``pedsam ARGV`` in this process (its entry point, ``main``), with its stdout and stderr; the
    command sets up the root logger for itself (use the ``root_logger`` fixture). Call it from a
    thread when an event loop runs in this one (``main`` runs its own).

    In this process the tiny workers' own logs go to the same log as the edge's."""
    from pedsam.stream.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(argv))
    return Done(code, out.getvalue(), err.getvalue())


async def pedsam(*args: str, timeout: float = 240) -> Done:
    """Run ``python -m pedsam.stream ARGS`` (the ``pedsam`` command) to completion."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pedsam.stream", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except BaseException:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return Done(process.returncode, out.decode(), err.decode())


def assert_one_line_error(done: Done, *words: str) -> None:
    assert done.code == 2, (done.code, done.err)
    lines = [line for line in done.err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("pedsam: error: ")]
    assert len(errors) == 1, done.err
    assert "Traceback" not in done.err
    for word in words:
        assert word in errors[0], errors[0]


def check_audit(path: Path, frames: int, segments: int, remote_segments: int | None = None) -> None:
    """Invariant 2 from the audit file alone: every window once, padding on the edge, no server
    over the cap (a share of the frame's picture), none with every picture window; with
    ``remote_segments``, every later segment computed whole on the edge and said so."""
    records = read_records(path)
    assert len(records) == frames * segments
    assert sorted({(r["frame"], r["segment"]) for r in records}) == [
        (f, s) for f in range(frames) for s in range(segments)
    ]
    for record in records:
        windows = [w for ids in record["shares"].values() for w in ids]
        assert sorted(windows) == list(range(record["num_windows"]))
        if remote_segments is not None and record["segment"] >= remote_segments:
            assert list(record["shares"]) == ["edge"] and record["edge_only"] == "remote_segments"
            continue
        assert "edge_only" not in record
        picture = record["picture"]
        assert len(picture) == record["num_windows"] and 0 < record["cap"] < 1
        servers = [ids for name, ids in record["shares"].items() if name != "edge"]
        for ids in servers:  # (a budget may have kept some servers' whole shares on the edge)
            assert all(picture[w] for w in ids)  # pure padding stays on the edge
            assert sum(picture[w] for w in ids) / sum(picture) <= record["cap"] + 1e-9
            assert len(ids) < sum(1 for p in picture if p)


def assert_same_mask(got: np.ndarray, logits: np.ndarray, *, tolerance: float = 1e-3) -> None:
    """``got`` (H, W) bool is the mask of ``logits`` (H, W, SAM's mask logits at frame size, the
    reference's), except at pixels whose logit is within ``tolerance`` of SAM's threshold 0: there
    float rounding between two exact computations may fall either way."""
    want = logits > 0
    differ = got != want
    assert not differ[np.abs(logits) >= tolerance].any(), f"{int(differ.sum())} pixels differ"


@dataclass
class Received:
    """One request a worker computed, as it received it, and whether its answer was a residual."""

    request_id: int
    frame_id: int  # as the request said (the pedsam edge sends 0)
    segment: int
    windows: int
    extents: list[tuple[int, int]]  # (height, width) per window, in the request's order
    tokens: torch.Tensor  # (N, C) float32, decoded as the worker decoded them
    residual_asked: bool
    residual_sent: bool
    header: pb.SegmentRequest  # the request without its tensors (tokens, mixed)


def record_requests(server: WorkerServer) -> list[Received]:
    """Make ``server`` record every request it computes (appended as it answers them)."""
    received: list[Received] = []
    service = server._service  # every request a worker computes goes through its servicer's _compute
    compute = service._compute

    def recording(request: pb.SegmentRequest) -> pb.SegmentResult:
        result = compute(request)
        header = pb.SegmentRequest()
        header.CopyFrom(request)
        header.ClearField("tokens")
        header.ClearField("mixed")
        received.append(Received(
            request_id=request.request_id, frame_id=request.frame_id, segment=request.segment,
            windows=len(request.extents), extents=[(e.height, e.width) for e in request.extents],
            tokens=wire.decode(request.tokens).clone(), residual_asked=request.residual_result,
            residual_sent=result.residual, header=header,
        ))
        return result

    service._compute = recording  # type: ignore[method-assign]
    return received


def carried_windows(request: Received, prologue: torch.Tensor, grid: WindowGrid, candidates: Sequence[int]) -> list[int]:
    """The ids of the windows a first-segment request carried, in its order, told apart by their
    tokens: each window's must be exactly ``prologue``'s ((H, W, C) tokens after patch and
    position embedding) in one of ``candidates`` (fp32 on the wire)."""
    order = []
    pieces = request.tokens.split([height * width for height, width in request.extents])
    for (height, width), piece in zip(request.extents, pieces, strict=True):
        found = [
            wid for wid in candidates
            if (grid.window(wid).height, grid.window(wid).width) == (height, width)
            and torch.equal(gather_windows(prologue, [grid.window(wid)]), piece)
        ]
        assert len(found) == 1, f"a {height}x{width} window matches windows {found} of {list(candidates)}"
        order.extend(found)
    return order


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample a Prometheus endpoint on 127.0.0.1:PORT serves: (name, sorted labels) -> value."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def unstalled(
    attempt: Callable[[], Awaitable[T]],
    check: Callable[[T], None] | None = None,
    *,
    tries: int = 3,
    stall: float = 0.02,
) -> T:
    """``await attempt()`` until a try is trusted; that try's result.

    For tests that time things to a few percent or milliseconds on this shared 2-core machine: a
    busy neighbour can hold the whole process off the CPU for a tenth of a second, which no code
    under test can make up for. With ``check`` (the test's timing asserts), a try is trusted when
    ``check(result)`` passes, and the test fails only if it failed on every try (a fault in the
    code under test fails them all; a neighbour rarely spoils three in a row). Without it, a 5 ms
    timer watches the event loop and a try is trusted when the loop was never more than ``stall``
    s late; if every try stalled, the test fails and says so.
    """
    worst = 0.0
    failure: AssertionError | None = None
    for _ in range(tries):
        worst = 0.0

        async def watch() -> None:
            nonlocal worst
            while True:
                started = time.perf_counter()
                await asyncio.sleep(0.005)
                worst = max(worst, time.perf_counter() - started - 0.005)

        watcher = asyncio.create_task(watch())
        try:
            result = await attempt()
        finally:
            watcher.cancel()
        if check is None:
            if worst <= stall:
                return result
            continue
        try:
            check(result)
        except AssertionError as exc:
            failure = exc
            continue
        return result
    if failure is not None:
        raise AssertionError(f"failed in each of {tries} tries (the last with the event loop up to "
                             f"{worst * 1e3:.0f} ms late): {failure}") from failure
    raise AssertionError(f"the event loop stalled {worst * 1e3:.0f} ms in each of {tries} tries: "
                         "the machine is too busy to time this")


EDGE_ONLY = ("cv2", "av", "aiortc", "aiohttp", "matplotlib", "torchvision")


def edge_imports(report: str) -> list[str]:
    """The edge's libraries and modules (OpenCV, PyAV, aiortc, aiohttp, matplotlib, torchvision;
    pedsam's compute, media and applications) in ``report``, the ``-X importtime`` lines a worker
    process wrote; a worker should have imported none of them."""
    imported = {row.split("|")[-1].strip() for row in report.splitlines() if row.startswith("import time:")}
    assert "pedsam.workers.server" in imported and "torch" in imported  # the list is real
    edge_parts = tuple(f"pedsam.stream.{part}" for part in ("core", "media", "runs", "web", "privacy", "bench"))
    return sorted(m for m in imported if m.split(".")[0] in EDGE_ONLY or m.startswith(edge_parts))
