"""What a worker learns from the wire over a run of frames, recorded at real loopback workers: no
field follows the frame index, and a request's windows do not come in row-major order. (Its tokens
still place its windows in the frame: SAM's absolute position embedding is in them.)"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch

from pedsam.partitioner.offload import PLANS
from pedsam.protos import pedsam_pb2 as pb
from pedsam.stream.core.session import EdgeConfig, EdgeSession
from pedsam.workers.server import WorkerServer
from tests.support import TINY, carried_windows, record_requests, scene

FRAMES = 16

RHO_LIMIT = 0.6
"""Largest |Spearman rho| between the frame index and a field a worker receives that still counts
as telling nothing. The edge sends each of the 3 tiny workers 2 requests per frame, so 16 frames
give n = 96 pairs. A field with no relation to the frame index has rho near 0 with a standard
deviation of 1 / sqrt(n - 1) = 0.10, so 0.6 lies 5.8 of them out (chance about 5e-9); a frame
number or a counter has rho near 1 (measured before the wire was minimal: 1.000 for frame_id,
0.999 for request_id)."""

ASCENDING_LIMIT = 0.5
"""Largest share of first-segment requests whose windows come in ascending window id (row-major)
order. The default budget gives each of the 3 tiny workers 3 of a square frame's 9 windows; in a
random order 3 windows are ascending with chance 1/6, so about 8 of the 48 requests are, and the
limit's 24 lies over 6 standard deviations out (binomial chance 1e-7); in row-major order all 48
are (measured before the order was drawn: 48 of 48)."""


def ranks(values: Sequence[int]) -> list[float]:
    """1-based ranks of ``values``, ties sharing their average rank (exact for 64-bit ints)."""
    order = sorted(range(len(values)), key=values.__getitem__)
    out = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for position in order[start : end + 1]:
            out[position] = (start + end) / 2 + 1
        start = end + 1
    return out


def rank_correlation(xs: Sequence[int], ys: Sequence[int]) -> float:
    """Spearman's rho of ``xs`` and ``ys``: the correlation of their ranks, in [-1, 1]; 0 when
    either is constant (a constant tells nothing)."""
    x = torch.tensor(ranks(xs), dtype=torch.float64)
    y = torch.tensor(ranks(ys), dtype=torch.float64)
    x, y = x - x.mean(), y - y.mean()
    scale = float(x.norm() * y.norm())
    return 0.0 if scale == 0 else float((x * y).sum()) / scale


def rest(header: pb.SegmentRequest) -> bytes:
    """A request's fields besides its ids, extents and tensors, serialized (deterministically)."""
    copy = pb.SegmentRequest()
    copy.CopyFrom(header)
    for name in ("request_id", "frame_id", "extents"):
        copy.ClearField(name)
    return copy.SerializeToString(deterministic=True)


@pytest.mark.parametrize("plan", PLANS)
async def test_no_field_a_worker_receives_follows_the_frame_and_windows_come_in_random_order(
    tiny_servers: dict[str, WorkerServer], plan: str
) -> None:
    """16 frames of changing content through 3 workers. Over every request they received,
    frame_id and request_id have |rank correlation| with the frame index under RHO_LIMIT, and the
    fields besides those, extents and tensors are the same in every request of a segment; the
    windows of a first-segment request, told apart by their tokens, come in row-major order in at
    most ASCENDING_LIMIT of requests."""
    received = {address: record_requests(server) for address, server in tiny_servers.items()}
    frame_of: dict[str, list[int]] = {address: [] for address in tiny_servers}  # per recorded request
    orders: list[list[int]] = []  # first-segment requests: window ids in the order they came
    config = EdgeConfig(model=TINY, workers=tuple(tiny_servers), plan=plan)
    async with EdgeSession(config) as session:
        encoder = session.sam.image_encoder
        grid = session.encoder.grid
        for index in range(FRAMES):
            embedding = await session.embed(scene(240, 240, seed=index))  # square: no padding windows
            with torch.inference_mode():  # the first segment's input: patch and position embedding
                prologue = (encoder.patch_embed(embedding.prepared.tensor) + encoder.pos_embed)[0]
            for address, seen in received.items():
                new = seen[len(frame_of[address]):]
                frame_of[address].extend([index] * len(new))
                share = embedding.audit.segments[0].shares.get(address, [])
                for request in (r for r in new if r.segment == 0):
                    orders.append(carried_windows(request, prologue, grid, share))
                    assert sorted(orders[-1]) == share
    requests = [r for seen in received.values() for r in seen]
    frames = [index for address in tiny_servers for index in frame_of[address]]
    assert len(requests) == len(frames) == 2 * len(tiny_servers) * FRAMES  # every worker, both segments, every frame

    frame_rho = rank_correlation(frames, [r.frame_id for r in requests])
    request_rho = rank_correlation(frames, [r.request_id for r in requests])
    assert abs(frame_rho) < RHO_LIMIT, f"frame_id follows the frame index: rho {frame_rho:.3f}"
    assert abs(request_rho) < RHO_LIMIT, f"request_id follows the frame index: rho {request_rho:.3f}"
    for address, seen in received.items():  # the edge matches results by request id alone
        assert len({r.request_id for r in seen}) == len(seen), address
    for segment in (0, 1):
        assert len({rest(r.header) for r in requests if r.segment == segment}) == 1, segment

    assert [len(order) for order in orders] == [3] * (len(tiny_servers) * FRAMES)  # as ASCENDING_LIMIT assumes
    ascending = sum(order == sorted(order) for order in orders) / len(orders)
    assert ascending <= ASCENDING_LIMIT, f"{ascending:.0%} of requests carry their windows in row-major order"
