"""A worker on a CUDA GPU: the same kernels, exact against segment_anything on the CPU, the wire
bytes moved once, the device memory estimate an upper bound. Skipped, with the reason, where
torch sees no CUDA device."""

from __future__ import annotations

import grpc
import torch

from pedsam.protos import pedsam_pb2 as pb
from pedsam.protos import pedsam_pb2_grpc as pb_grpc
from pedsam.stream.fleet.remote import channel_options
from pedsam.workers import codec as wire
from pedsam.workers import kernels
from pedsam.workers.device import Uploader, select
from pedsam.workers.server import WorkerLimits, WorkerModel, WorkerServer
from tests.support import TINY, needs_cuda
from tests.workers.test_kernels import relative_error, sam_block, valid_window_tokens

pytestmark = needs_cuda

WHOLE, BORDER = (14, 14), (4, 14)


def test_blocks_on_cuda_equal_segment_anything_on_the_cpu() -> None:
    """ViT-B's width and heads, a 64x64 grid: fp32 with TF32 off stays within the exactness bound."""
    select("cuda")  # TF32 off, as every worker and edge has it
    x = torch.randn(1, 64, 64, 768, generator=torch.Generator().manual_seed(7))
    with torch.inference_mode():
        glob = sam_block(768, 12, window_size=0, grid=64, seed=1)
        want_global = glob(x)
        got_global = kernels.global_block(glob.to("cuda"), x.to("cuda")).cpu()
        windowed = sam_block(768, 12, window_size=14, grid=64, seed=2)
        want, _ = valid_window_tokens(windowed(x), 14)
        tokens, extents = valid_window_tokens(x, 14)
        batch = kernels.WindowBatch.of(extents, 14, "cuda")
        got = kernels.windowed_block(windowed.to("cuda"), tokens.to("cuda"), batch).cpu()
    assert relative_error(got_global, want_global) <= 1e-4
    assert relative_error(got, want) <= 1e-4


async def test_a_worker_on_cuda_answers_like_the_cpu_and_says_where_it_computes() -> None:
    cpu = WorkerModel(TINY)
    placement = select("cuda")
    model = WorkerModel(TINY, placement)
    assert model.fingerprint == cpu.fingerprint  # the same on every device
    server = WorkerServer(model, WorkerLimits(device_memory_bytes=model.default_device_memory()))
    address = await server.start("127.0.0.1", 0)
    try:
        async with grpc.aio.insecure_channel(address, options=channel_options(64 << 20)) as channel:
            stub = pb_grpc.WindowWorkerStub(channel)
            info = await stub.Describe(pb.DescribeRequest())
            assert (info.device, info.compute_dtype) == ("cuda:0", "fp32") and info.device_name
            assert info.device_memory_bytes > 0 and info.max_windows_per_request >= 9
            tokens = torch.randn(196 + 56, 64, generator=torch.Generator().manual_seed(3))
            for codec in (pb.CODEC_FP32, pb.CODEC_FP16, pb.CODEC_INT8):
                call = stub.Process()
                await call.write(pb.SegmentRequest(
                    request_id=codec, frame_id=1, segment=1, model_fingerprint=model.fingerprint,
                    extents=[pb.WindowExtent(height=h, width=w) for h, w in (WHOLE, BORDER)],
                    tokens=wire.encode(tokens, codec),
                ))
                await call.done_writing()
                [result] = [r async for r in call]
                want = cpu.runner.run(1, wire.decode(wire.encode(tokens, codec)), [WHOLE, BORDER])
                got = wire.decode(result.tokens)
                bound = 1e-4 if codec == pb.CODEC_FP32 else 1e-2
                assert relative_error(got, want) <= bound, codec
    finally:
        await server.stop(0)


def test_the_device_memory_estimate_bounds_what_a_request_uses() -> None:
    model = WorkerModel(TINY, select("cuda"))
    tokens = torch.randn(9 * 196, 64, generator=torch.Generator().manual_seed(4))
    model.runner.run_stage(0, tokens, [WHOLE] * 9, start=2)  # libraries' workspaces are made once, here
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    model.runner.run_stage(0, tokens, [WHOLE] * 9, start=2)
    torch.cuda.synchronize()
    used = torch.cuda.max_memory_allocated() - before
    assert 0 < used <= model.runner.request_bytes(9, stage=True)


def test_the_pinned_uploader_moves_each_tensor_exactly_and_reuses_its_buffer() -> None:
    upload = Uploader("cuda:0")
    first = torch.randn(1000, 64)
    second = torch.randint(-127, 127, (300, 64), dtype=torch.int8)
    a, b = upload(first), upload(second)  # the second reuses the buffer after the first's copy
    assert a.device.type == "cuda" and b.dtype == torch.int8
    assert torch.equal(a.cpu(), first) and torch.equal(b.cpu(), second)
    data = wire.encode(first, pb.CODEC_FP16)
    assert torch.equal(wire.decode(data, upload).cpu(), wire.decode(data))
    assert wire.encode(first.to("cuda"), pb.CODEC_INT8).data == wire.encode(first, pb.CODEC_INT8).data
