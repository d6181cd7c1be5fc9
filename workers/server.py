"""The gRPC window worker: a thin servicer over :class:`pedsam.workers.segment.SegmentRunner`.

Every request is validated before any work (segment, fingerprint, codec, compression, extents,
shape, byte counts, batch size; a compressed tensor's byte count as its frame header declares
it, checked again as it is decompressed, never past that size); a bad one ends its stream with
the matching gRPC status and the worker goes on serving every other stream. Compute runs on a
small thread pool shared by all streams.

Memory is bounded: at most ``max_streams`` streams at once (more are refused with
RESOURCE_EXHAUSTED), each holding at most ``max_inflight_per_stream`` requests, of which at most
``max_queued_requests`` across all streams wait for or run compute; a stream over its share
simply stops being read, and HTTP/2 flow control pushes back on its sender. So the
payload held is bounded by ``max_streams * (stream_window_bytes + max_inflight_per_stream *
message size)`` (the window is a fixed HTTP/2 read-ahead per stream).

On a GPU, requests compute one at a time on the device (one compute thread): the device holds
the blocks' weights and one request's working set. ``device_memory_bytes`` bounds the working
sets computing at once (by default 80 % of the device memory free once the weights are loaded;
with more compute threads each request gets its share): a request whose
estimate (:meth:`~pedsam.workers.segment.SegmentRunner.request_bytes`) exceeds it is refused with
RESOURCE_EXHAUSTED naming the limit, ``Describe`` caps ``max_windows_per_request`` to what fits,
and a device that runs out of memory all the same refuses that request the same way and keeps
serving.

Shutdown drains: health goes NOT_SERVING, new requests are refused with UNAVAILABLE, requests
already accepted are finished and answered, then every stream ends with UNAVAILABLE so edges
move the work elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc
import torch
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from pedsam.protos import pedsam_pb2 as pb
from pedsam.protos import pedsam_pb2_grpc as pb_grpc
from pedsam.workers import codec as wire
from pedsam.workers import entropy
from pedsam.workers.capture import CaptureWriter
from pedsam.workers.device import CPU, Placement
from pedsam.workers.errors import RequestError
from pedsam.workers.metrics import WorkerStats
from pedsam.workers.models import ModelSource, fingerprint, get_preset
from pedsam.workers.security import ServerSecurity
from pedsam.workers.segment import SegmentRunner

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["WindowWorker"].full_name


@dataclass(frozen=True, kw_only=True, slots=True)
class WorkerLimits:
    """What one worker accepts."""

    max_message_bytes: int = 256 * 1024 * 1024
    max_windows_per_request: int = 1024
    max_inflight_per_stream: int = 4
    max_queued_requests: int = 8
    max_streams: int = 64
    stream_window_bytes: int = 4 * 1024 * 1024
    compute_threads: int = 1
    device_memory_bytes: int | None = None  # for requests on the device, all at once; None: no limit

    @property
    def request_device_memory(self) -> int | None:
        """Device memory one request may use: the limit shared by the requests that compute at
        once (one per compute thread)."""
        if self.device_memory_bytes is None:
            return None
        return self.device_memory_bytes // max(1, self.compute_threads)


DEFAULT_DEVICE_SHARE = 0.8
"""Share of a CUDA device's free memory (after the weights) one request may use by default."""


class WorkerModel:
    """The part of a SAM model a worker holds: its encoder blocks (windowed blocks, and the global
    blocks for the offload plan) on its device, and their fingerprint."""

    def __init__(self, source: ModelSource, placement: Placement = CPU) -> None:
        self.source = source
        self.placement = placement
        self.preset = get_preset(source.preset)
        sam = source.build()
        # On the host, before the blocks move: the fingerprint is the same on every device.
        self.fingerprint = fingerprint(sam, self.preset)
        self.runner = SegmentRunner(sam, self.preset, placement)
        self.global_blocks: tuple[int, ...] = tuple(sorted(self.runner.global_blocks))
        # Only the encoder's blocks are kept; the runner holds references to them.
        del sam

    def default_device_memory(self) -> int | None:
        """The default limit of one request's device memory: :data:`DEFAULT_DEVICE_SHARE` of what
        is free on a CUDA device now (weights loaded); None elsewhere (the host's memory is
        bounded by the message and queue limits)."""
        if self.placement.kind != "cuda":
            return None
        free, _total = torch.cuda.mem_get_info(self.placement.device)
        return int(DEFAULT_DEVICE_SHARE * free)


_SHUTDOWN = "worker is shutting down; send this work elsewhere"


class WindowWorkerService(pb_grpc.WindowWorkerServicer):
    def __init__(self, model: WorkerModel, limits: WorkerLimits, pool: ThreadPoolExecutor,
                 capture: CaptureWriter | None = None) -> None:
        self._model = model
        self._capture = capture
        self._limits = limits
        self._pool = pool
        self._draining = asyncio.Event()
        self._active: set[asyncio.Event] = set()  # per stream: set when its work is drained
        self._queued: asyncio.Semaphore | None = None  # made on the serving loop
        self.stats = WorkerStats()

    async def Describe(
        self, request: pb.DescribeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ModelInfo:
        model = self._model
        placement = model.placement
        return pb.ModelInfo(
            preset=model.preset.name,
            fingerprint=model.fingerprint,
            window_size=model.preset.window_size,
            embed_dim=model.preset.embed_dim,
            num_segments=model.runner.num_segments,
            random_weights=model.source.random_weights,
            codecs=list(wire.CODECS.values()),
            max_windows_per_request=self.max_windows,
            max_message_bytes=self._limits.max_message_bytes,
            global_blocks=model.global_blocks,
            compressions=list(entropy.COMPRESSIONS.values()),
            device=placement.device,
            device_name=placement.name,
            compute_dtype=placement.compute_dtype,
            device_memory_bytes=self._limits.request_device_memory or 0,
        )

    @property
    def max_windows(self) -> int:
        """Windows one request may hold: the limit, and what fits the device memory limit."""
        most = self._limits.max_windows_per_request
        budget = self._limits.request_device_memory
        if budget is not None:
            most = min(most, self._model.runner.windows_that_fit(budget))
        return most

    async def Ping(self, request: pb.PingRequest, context: grpc.aio.ServicerContext[Any, Any]) -> pb.PingReply:
        """The edge's link probe: answered at once, with this worker's clock (``time.perf_counter``)."""
        return pb.PingReply(clock_seconds=time.perf_counter())

    async def drain(self, grace: float) -> None:
        """Refuse new requests, and wait up to ``grace`` s for every stream's accepted work."""
        self._draining.set()
        waits = [asyncio.create_task(done.wait()) for done in self._active]
        if waits:
            await asyncio.wait(waits, timeout=grace)
            for wait in waits:
                wait.cancel()

    async def Process(
        self, request_iterator: AsyncIterator[pb.SegmentRequest], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.SegmentResult]:
        if self._draining.is_set():
            await context.abort(grpc.StatusCode.UNAVAILABLE, _SHUTDOWN)
        if len(self._active) >= self._limits.max_streams:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"this worker serves at most {self._limits.max_streams} streams at once; try later",
            )
        if self._queued is None:
            self._queued = asyncio.Semaphore(self._limits.max_queued_requests)
        queued = self._queued
        queue: asyncio.Queue[pb.SegmentResult | RequestError | None] = asyncio.Queue()
        slots = asyncio.Semaphore(self._limits.max_inflight_per_stream)
        tasks: set[asyncio.Task[None]] = set()
        drained = asyncio.Event()
        loop = asyncio.get_running_loop()

        async def compute(request: pb.SegmentRequest, arrived: float) -> None:
            try:
                async with queued:
                    result = await loop.run_in_executor(self._pool, self._compute, request)
                result.received_seconds = arrived
                self.stats.answered(
                    request.segment, len(request.extents), request.ByteSize(), result.ByteSize(),
                    result.compute_seconds,
                )
                await queue.put(result)
            except RequestError as exc:
                await queue.put(exc)
            except Exception as exc:  # a bug, not the client's fault: say so, keep serving
                log.exception("segment request %d failed", request.request_id)
                await queue.put(RequestError(grpc.StatusCode.INTERNAL, f"worker error: {exc}"))
            finally:
                slots.release()
                if not tasks - {asyncio.current_task()}:
                    drained.set()

        async def read() -> None:
            # Arrival times go back to the edge, which times its link with them; a request read
            # after this stream waited for a free slot may have arrived earlier: its time is 0.
            stalled = False
            try:
                async for request in request_iterator:
                    arrived = 0.0 if stalled else time.perf_counter()
                    if self._draining.is_set():
                        break
                    try:
                        self._validate(request)
                    except RequestError as exc:
                        await queue.put(exc)
                        return
                    if self._capture is not None:  # written before it is computed, off the event loop
                        await asyncio.to_thread(self._capture.record, request, time.time())
                    stalled = slots.locked()
                    await slots.acquire()
                    drained.clear()
                    task = asyncio.create_task(compute(request, arrived))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                if tasks:
                    await asyncio.gather(*tasks)
            finally:
                drained.set()
                await queue.put(None)

        async def on_drain() -> None:
            await self._draining.wait()
            await drained.wait()
            await queue.put(RequestError(grpc.StatusCode.UNAVAILABLE, _SHUTDOWN))

        self._active.add(drained)
        self.stats.streams += 1
        reader = asyncio.create_task(read())
        watcher = asyncio.create_task(on_drain())
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, RequestError):
                    self.stats.refused(item.code.name)
                    if item.code != grpc.StatusCode.UNAVAILABLE:
                        log.warning("refusing request: %s: %s", item.code.name, item)
                    await context.abort(item.code, str(item))
                else:
                    item.sent_seconds = time.perf_counter()
                    yield item
            if self._draining.is_set():
                await context.abort(grpc.StatusCode.UNAVAILABLE, _SHUTDOWN)
        finally:
            self._active.discard(drained)
            self.stats.streams -= 1
            reader.cancel()
            watcher.cancel()
            for task in list(tasks):
                task.cancel()

    def _validate(self, request: pb.SegmentRequest) -> None:
        """Check a request against the model and the limits; raise :class:`RequestError`."""
        model = self._model
        invalid = grpc.StatusCode.INVALID_ARGUMENT
        if request.model_fingerprint != model.fingerprint:
            raise RequestError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"model fingerprint mismatch: this worker serves {model.preset.name} "
                f"{model.fingerprint[:12]}, the request expects {request.model_fingerprint[:12] or 'none'}",
            )
        self._validate_offload(request)
        if not request.skip_segment and request.segment >= model.runner.num_segments:
            raise RequestError(
                invalid,
                f"unknown segment {request.segment}; the model has {model.runner.num_segments}",
            )
        count = len(request.extents)
        if count == 0:
            raise RequestError(invalid, "request has no windows")
        if count > self._limits.max_windows_per_request:
            raise RequestError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{count} windows in one request; this worker takes at most "
                f"{self._limits.max_windows_per_request}",
            )
        budget = self._limits.request_device_memory
        stage = request.HasField("finish_block") or request.HasField("start_block")
        if budget is not None and (need := model.runner.request_bytes(count, stage=stage)) > budget:
            raise RequestError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{count} windows need about {need / 2**20:.0f} MiB of {model.placement.device} memory; this "
                f"worker's device memory limit is {budget / 2**20:.0f} MiB a request (--device-memory-mb): "
                f"send at most {model.runner.windows_that_fit(budget, stage=stage)} windows per request",
            )
        ws = model.preset.window_size
        for extent in request.extents:
            if not (1 <= extent.height <= ws and 1 <= extent.width <= ws):
                raise RequestError(
                    invalid,
                    f"window extent {extent.height}x{extent.width} outside 1..{ws} tokens",
                )
        rows = sum(e.height * e.width for e in request.extents)
        check_tensor("tokens", request.tokens, rows, model.preset.embed_dim)
        if request.HasField("finish_block"):
            check_tensor("mixed", request.mixed, rows, model.preset.embed_dim)
        if request.result_codec not in (pb.CODEC_UNSPECIFIED, *wire.CODEC_NAMES):
            raise RequestError(invalid, f"unsupported result codec {request.result_codec}")
        if request.result_compression not in (pb.COMPRESSION_NONE, *entropy.COMPRESSION_NAMES):
            raise RequestError(invalid, f"unsupported result compression {request.result_compression}")

    def _validate_offload(self, request: pb.SegmentRequest) -> None:
        """The offload plan's fields: known global blocks, and something to do."""
        invalid = grpc.StatusCode.INVALID_ARGUMENT
        known = self._model.global_blocks
        for field in ("finish_block", "start_block"):
            if request.HasField(field) and getattr(request, field) not in known:
                raise RequestError(
                    invalid,
                    f"{field} {getattr(request, field)} is not a global block of this model "
                    f"({', '.join(map(str, sorted(known)))})",
                )
        if request.HasField("mixed") and not request.HasField("finish_block"):
            raise RequestError(invalid, "mixed tokens are only taken with finish_block")
        if request.skip_segment and not (request.HasField("finish_block") or request.HasField("start_block")):
            raise RequestError(invalid, "request skips its segment and asks for nothing else")

    def _compute(self, request: pb.SegmentRequest) -> pb.SegmentResult:
        try:
            return self._compute_on_device(request)
        except torch.OutOfMemoryError:
            placement = self._model.placement
            if placement.kind == "cuda":
                torch.cuda.empty_cache()
            raise RequestError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{placement.device} ran out of memory computing {len(request.extents)} windows; send fewer "
                f"windows per request (this worker's device memory limit allows {self.max_windows})",
            ) from None

    def _compute_on_device(self, request: pb.SegmentRequest) -> pb.SegmentResult:
        """Decode (moving the raw values to the device once), compute, encode back to bytes."""
        started = time.perf_counter()
        runner = self._model.runner
        upload = runner.upload if self._model.placement.kind != "cpu" else None
        tokens = decode_tensor("tokens", request.tokens, upload)
        extents = [(e.height, e.width) for e in request.extents]
        codec = request.result_codec or request.tokens.codec
        compression = request.result_compression
        qkv: torch.Tensor | None = None
        if request.HasField("finish_block") or request.HasField("start_block") or request.skip_segment:
            mixed = decode_tensor("mixed", request.mixed, upload) if request.HasField("finish_block") else None
            out, qkv = self._model.runner.run_stage(
                None if request.skip_segment else request.segment,
                tokens,
                extents,
                finish=request.finish_block if request.HasField("finish_block") else None,
                mixed=mixed,
                start=request.start_block if request.HasField("start_block") else None,
            )
        else:
            out = self._model.runner.run(request.segment, tokens, extents)
        if request.residual_result:
            out = out - tokens
        return pb.SegmentResult(
            request_id=request.request_id,
            frame_id=request.frame_id,
            segment=request.segment,
            tokens=wire.encode(out, codec, compression),
            compute_seconds=time.perf_counter() - started,
            qkv=wire.encode(qkv, codec, compression) if qkv is not None else None,
            residual=request.residual_result,
        )


def check_tensor(name: str, tensor: pb.Tensor, rows: int, cols: int) -> None:
    """A (rows, cols) tensor's codec, compression, shape and byte counts (a compressed one's as its
    frame header declares them; :func:`pedsam.workers.codec.check`); :class:`RequestError` if wrong."""
    try:
        wire.check(tensor, rows, cols)
    except ValueError as exc:  # PayloadError included
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"{name} {exc}") from None


def decode_tensor(name: str, tensor: pb.Tensor, upload: wire.Upload | None = None) -> torch.Tensor:
    """A checked tensor decoded (decompressed, bounded by its shape; on ``upload``'s device when
    given) and found finite; :class:`RequestError` INVALID_ARGUMENT if it is not."""
    try:
        out = wire.decode(tensor, upload=upload)
    except ValueError as exc:  # PayloadError included: a corrupt or lying compressed frame
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"{name} {exc}") from None
    if not torch.isfinite(out).all():
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"{name} contain NaN or infinity")
    return out


class WorkerServer:
    """A running worker: gRPC server, health service, compute pool.

    ``security`` defaults to plain text with no token, for in-process use on loopback; the
    ``pedsam worker`` command asks for TLS or an explicit ``--insecure``. ``capture``: keep every
    first-segment request as it arrives (:mod:`pedsam.workers.capture`, for audits).
    """

    def __init__(
        self,
        model: WorkerModel,
        limits: WorkerLimits = WorkerLimits(),
        security: ServerSecurity = ServerSecurity(insecure=True),
        capture: CaptureWriter | None = None,
    ) -> None:
        self.model = model
        self.limits = limits
        self.security = security
        self._pool = ThreadPoolExecutor(limits.compute_threads, thread_name_prefix="segment")
        self._server = grpc.aio.server(
            interceptors=security.interceptors(),
            options=[
                # A busy port is refused, never shared: with SO_REUSEPORT a second worker on the
                # same port would silently take half of the edge's connections.
                ("grpc.so_reuseport", 0),
                ("grpc.max_send_message_length", limits.max_message_bytes),
                ("grpc.max_receive_message_length", limits.max_message_bytes),
                # Edges keep one stream open for a whole session and ping to keep it alive.
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
                ("grpc.http2.max_pings_without_data", 0),
                # A fixed read-ahead per stream instead of one that grows with the measured
                # bandwidth-delay product: the bound on what a stream can buffer here.
                ("grpc.http2.bdp_probe", 0),
                ("grpc.http2.lookahead_bytes", limits.stream_window_bytes),
            ],
        )
        self._service = WindowWorkerService(model, limits, self._pool, capture)
        pb_grpc.add_WindowWorkerServicer_to_server(  # type: ignore[no-untyped-call]
            self._service, self._server
        )
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        self.port = 0

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Bind, start, mark SERVING; return the address ``host:port`` actually bound."""
        credentials = self.security.credentials()
        where = f"{host}:{port}"
        try:
            if credentials is None:
                self.port = self._server.add_insecure_port(where)
            else:
                self.port = self._server.add_secure_port(where, credentials)
        except RuntimeError:  # grpc's "Failed to bind"
            self.port = 0
        if self.port == 0:
            raise OSError(f"cannot listen on {host}:{port}: the port is in use or the address is not this machine's")
        await self._server.start()
        for service in ("", SERVICE_NAME):
            await self._health.set(service, health_pb2.HealthCheckResponse.SERVING)
        shown = f"[{host}]" if ":" in host else host
        return f"{shown}:{self.port}"

    async def stop(self, grace: float = 5.0) -> None:
        """Go NOT_SERVING, finish accepted work for up to ``grace`` seconds, then stop."""
        for service in ("", SERVICE_NAME):
            await self._health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self._service.drain(grace)
        await self._server.stop(grace)
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def wait(self) -> None:
        await self._server.wait_for_termination()

    @property
    def health(self) -> health.aio.HealthServicer:
        """The ``grpc.health.v1`` servicer, to serve on a second (probe) port too."""
        return self._health

    @property
    def stats(self) -> WorkerStats:
        return self._service.stats

    @property
    def max_windows(self) -> int:
        """Windows one request may hold, device memory included (as ``Describe`` says)."""
        return self._service.max_windows
