"""The edge's client for one gRPC window worker.

One long-lived bidirectional ``Process`` stream per worker per session carries every request;
each request has an id and its result is matched by that id, so many requests (of several
frames) can be in flight on one stream and come back in any order. Encoding and decoding of
multi-megabyte token payloads run on a thread, not on the event loop (see :data:`INLINE_BYTES`).

Tensors may be compressed on the wire (:mod:`pedsam.workers.entropy`), both ways, and only with a
worker that lists the compression in its ``ModelInfo``: a worker that predates it is sent plain
bytes and asked for none. :class:`WireStats` counts the bytes as they cross, after compression,
and the bytes they stand for.

A request tells the worker no more than its computation needs: its id is 64 random bits (ids
say nothing of order or count), its ``frame_id`` is 0 (the frame stays in the edge's own logs
and errors), and its windows come in the order :class:`~pedsam.stream.core.shares.ShareRunner`
drew for it.

The worker's link is measured from the same traffic (:attr:`RemoteWorker.link`, see
:mod:`pedsam.stream.fleet.link_meter`): a ``Ping`` every ``probe_interval`` seconds on the same
channel for the round trip, and the requests and results themselves for each direction's rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
import torch
from google.protobuf.message import DecodeError

from pedsam.partitioner.offload import OffloadStage
from pedsam.protos import pedsam_pb2 as pb
from pedsam.protos import pedsam_pb2_grpc as pb_grpc
from pedsam.stream.errors import WorkerError
from pedsam.stream.fleet.link_meter import LinkMeter
from pedsam.stream.fleet.transport import ClientSecurity, open_channel
from pedsam.workers import codec as wire
from pedsam.workers import entropy
from pedsam.workers.metrics import Histogram
from pedsam.workers.segment import Extent

log = logging.getLogger(__name__)

PROCESS_METHOD = f"/{pb.DESCRIPTOR.services_by_name['WindowWorker'].full_name}/Process"

DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024 * 1024


def channel_options(max_message_bytes: int) -> list[tuple[str, int]]:
    """gRPC channel options for multi-megabyte window batches (the default cap is 4 MiB)."""
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
    ]


def _raw(tensor: pb.Tensor) -> int:
    """Bytes a tensor's values take uncompressed (data and int8 scales), from its shape and codec."""
    if len(tensor.shape) != 2 or tensor.codec not in wire.CODEC_NAMES:
        return 0
    return wire.payload_bytes(tensor.codec, int(tensor.shape[0]), int(tensor.shape[1]))


@dataclass(frozen=True, slots=True)
class _Outgoing:
    """A serialized ``SegmentRequest``: its id, its bytes, and the tensor bytes among them (as
    sent, and uncompressed)."""

    request_id: int
    data: bytes
    payload: int
    raw: int

    @classmethod
    def of(cls, request: pb.SegmentRequest) -> _Outgoing:
        return cls(
            request.request_id, request.SerializeToString(),
            wire.wire_bytes(request.tokens) + wire.wire_bytes(request.mixed),
            _raw(request.tokens) + _raw(request.mixed),
        )


@dataclass
class WireStats:
    """Bytes moved by one executor: tensor payload bytes as they crossed the wire (after any
    compression), the same uncompressed (``raw_*``), and whole messages."""

    requests: int = 0
    payload_sent: int = 0
    payload_received: int = 0
    raw_sent: int = 0
    raw_received: int = 0
    message_sent: int = 0
    message_received: int = 0
    compute_seconds: float = 0.0  # what the worker reported computing, all requests
    seconds: Histogram = field(default_factory=Histogram)  # round trip of each request


INLINE_BYTES = 512 * 1024
"""Messages up to this size are built and parsed on the event loop: handing them to a thread
costs more than the copy (the tiny preset's shares are about 150 KB); larger ones go to a
thread so the loop never stalls on a multi-megabyte copy (a ViT-B share is about 6 MB)."""

PROBES_ON_CONNECT = 3
"""Link probes sent one after another on connecting: the fastest sets the first base round trip,
which times the first requests (one probe alone is often late on a busy machine)."""

_T = TypeVar("_T")


async def _off_loop(size: int, fn: Callable[..., _T], *args: Any) -> _T:
    """``fn(*args)``: on a thread when it handles ``size`` bytes or more, else right here."""
    if size < INLINE_BYTES:
        return fn(*args)
    return await asyncio.to_thread(fn, *args)


class RemoteWorker:
    """A :class:`pedsam.stream.core.executors.SegmentExecutor` backed by a worker at ``address``."""

    def __init__(
        self,
        address: str,
        *,
        fingerprint: str,
        codec: str = "fp32",
        compression: str = "off",
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        connect_timeout: float = 10.0,
        request_timeout: float | None = None,
        security: ClientSecurity = ClientSecurity(insecure=True),
        via: str | None = None,
        probe_interval: float | None = 1.0,
        provider: str | None = None,
    ) -> None:
        """``request_timeout``: seconds a segment request may take before the worker counts
        as failed (it hangs or is overloaded); None waits as long as the stream lives.
        ``via``: reach the worker through this address (an emulated link's relay); its name,
        token and TLS identity stay ``address``'s. ``probe_interval``: seconds between link
        probes after the :data:`PROBES_ON_CONNECT` sent on connecting; None: only those.
        ``compression``: a name of :data:`pedsam.workers.entropy.COMPRESSIONS` to compress tensors
        with, both ways, when the worker lists it (else plain bytes), or ``"off"``.
        ``provider``: who runs the worker (see :mod:`pedsam.stream.fleet.providers`), logged with it."""
        self.address = address
        self.provider = provider
        self.via = via
        self._probe_interval = probe_interval
        self._prober: asyncio.Task[None] | None = None
        self._security = security
        self._metadata = security.metadata(address)
        self._request_timeout = request_timeout
        self._fingerprint = fingerprint
        self._codec = wire.codec_id(codec)
        if compression != "off" and compression not in entropy.COMPRESSIONS:
            raise ValueError(f"unknown compression {compression!r}; choose off or {', '.join(entropy.COMPRESSIONS)}")
        self._wanted = entropy.COMPRESSIONS.get(compression, pb.COMPRESSION_NONE)
        self._compression: pb.Compression = pb.COMPRESSION_NONE  # what this worker agreed to, once connected
        self._max_message_bytes = max_message_bytes
        self._connect_timeout = connect_timeout
        self._channel: grpc.aio.Channel | None = None
        self._call: grpc.aio.StreamStreamCall[bytes, bytes] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[tuple[pb.SegmentResult, int]]] = {}  # result, its bytes
        self._building: set[int] = set()  # ids drawn for requests not yet sent
        self._write_lock = asyncio.Lock()
        self._failure: WorkerError | None = None
        self.info: pb.ModelInfo | None = None
        self.stats = WireStats()
        self.link = LinkMeter()

    @property
    def name(self) -> str:
        return self.address

    async def connect(self) -> pb.ModelInfo:
        """Describe the worker, check it holds our model, and open the session stream."""
        self._channel = open_channel(
            self.address, self._security, channel_options(self._max_message_bytes), via=self.via
        )
        stub = pb_grpc.WindowWorkerStub(self._channel)  # type: ignore[no-untyped-call]
        try:
            info: pb.ModelInfo = await stub.Describe(
                pb.DescribeRequest(), timeout=self._connect_timeout, metadata=self._metadata
            )
        except grpc.aio.AioRpcError as exc:
            await self.close()
            if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                raise WorkerError(
                    f"worker {self.address} refused this edge's token ({exc.details()}); "
                    "give the worker's token with --token-file"
                ) from None
            raise WorkerError(
                f"worker {self.address} is unreachable ({exc.code().name}: {exc.details()})"
            ) from None
        if info.fingerprint != self._fingerprint:
            await self.close()
            raise WorkerError(
                f"worker {self.address} serves other weights ({info.preset}, fingerprint "
                f"{info.fingerprint[:12]}) than this edge ({self._fingerprint[:12]}); start it with "
                "the same --model, --checkpoint and --seed"
            )
        self.info = info
        self._compression = self._wanted if self._wanted in info.compressions else pb.COMPRESSION_NONE
        if self._compression != self._wanted:
            log.info("worker %s does not take %s compression; its tensors cross uncompressed",
                     self.address, entropy.COMPRESSION_NAMES[self._wanted])
        # No (de)serializers on the session stream: messages are built and parsed by _off_loop,
        # so the event loop never copies multi-megabyte payloads.
        self._call = self._channel.stream_stream(PROCESS_METHOD)(metadata=self._metadata)
        self._reader = asyncio.create_task(self._read_results(), name=f"read {self.address}")
        # The base round trip and the worker's clock, while the link carries nothing else.
        for _ in range(PROBES_ON_CONNECT):
            if not await self.probe():
                break
        else:
            self._prober = asyncio.create_task(self._probe_every(), name=f"probe {self.address}")
        log.info("connected to worker %s at provider %s (%s on %s, %s)", self.address, self.provider or "unnamed",
                 info.preset, info.device or "unknown device", info.compute_dtype or "fp32")
        return info

    @property
    def compression(self) -> str:
        """The compression of this worker's tensors as agreed on connecting: a name of
        :data:`pedsam.workers.entropy.COMPRESSIONS`, or ``"off"``."""
        return entropy.COMPRESSION_NAMES.get(self._compression, "off")

    async def probe(self) -> bool:
        """One link probe (``Ping``) into :attr:`link`; False if this worker does not answer them
        (an older worker: then its link is not measured)."""
        assert self._channel is not None
        stub = pb_grpc.WindowWorkerStub(self._channel)  # type: ignore[no-untyped-call]
        sent = time.perf_counter()
        try:
            reply: pb.PingReply = await stub.Ping(
                pb.PingRequest(), timeout=self._connect_timeout, metadata=self._metadata
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                log.info("worker %s answers no link probes; its link is not measured", self.address)
                return False
            return True  # a failing worker is the request path's business; try again later
        self.link.probed(sent, reply.clock_seconds, time.perf_counter())
        return True

    async def _probe_every(self) -> None:
        while self._probe_interval is not None:
            await asyncio.sleep(self._probe_interval)
            if not await self.probe():
                return

    async def run(
        self, frame_id: int, segment: int, tokens: torch.Tensor, extents: Sequence[Extent]
    ) -> torch.Tensor:
        self._check_usable()
        outgoing = await self._build(tokens.numel() * 4, self._segment_request, segment, tokens, extents)
        result = await self._exchange(outgoing, frame_id, segment, len(extents))
        return await _off_loop(tokens.numel() * 4, self._result_tokens, result, tokens)

    async def run_stage(
        self,
        frame_id: int,
        stage: OffloadStage,
        tokens: torch.Tensor,
        mixed: torch.Tensor | None,
        extents: Sequence[Extent],
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        self._check_usable()
        if self.info is not None and not {b for b in (stage.finish, stage.start) if b is not None} <= set(
            self.info.global_blocks
        ):
            raise WorkerError(f"worker {self.address} does not run global blocks (offload plan); update it")
        outgoing = await self._build(tokens.numel() * 8, self._stage_request, stage, tokens, mixed, extents)
        result = await self._exchange(outgoing, frame_id, stage.segment, len(extents))
        out = await _off_loop(tokens.numel() * 4, self._result_tokens, result, tokens)
        qkv = None
        if stage.start is not None:
            qkv = await _off_loop(tokens.numel() * 12, self._result_qkv, result, tokens)
        return out, qkv

    def use_codec(self, name: str) -> None:
        """Send (and ask for) tensors in codec ``name`` from now on (``--plan auto`` chooses it)."""
        self._codec = wire.codec_id(name)

    def _check_usable(self) -> None:
        """Raise the reason this worker cannot take a request now: not connected, or failed."""
        if self._call is None:
            raise WorkerError(f"worker {self.address} is not connected")
        if self._failure is not None:
            raise self._failure

    def device_json(self) -> dict[str, str]:
        """Where this worker computes, as its ``Describe`` said: device, name and compute dtype
        (``"unknown"`` before it was described, or from a worker older than those fields)."""
        info = self.info
        if info is None or not info.device:
            return {"device": "unknown", "name": "unknown", "compute_dtype": "unknown"}
        return {"device": info.device, "name": info.device_name, "compute_dtype": info.compute_dtype or "fp32"}

    def _result_tokens(self, result: pb.SegmentResult, sent: torch.Tensor) -> torch.Tensor:
        """A result's tokens on ``sent``'s device (the edge's), with a residual added back to the
        exact tokens that were sent."""
        try:
            return wire.decode_result(result.tokens, result.residual, sent)
        except ValueError as exc:  # PayloadError included: never decompressed past sent's shape
            raise self._fail(WorkerError(f"worker {self.address} sent a malformed result: tokens {exc}")) from None

    def _result_qkv(self, result: pb.SegmentResult, sent: torch.Tensor) -> torch.Tensor:
        """A stage result's (N, 3C) qkv, for the (N, C) tokens ``sent``."""
        rows, cols = sent.shape
        try:
            return wire.decode(result.qkv, (rows, 3 * cols)).to(sent.device)
        except ValueError as exc:
            raise self._fail(WorkerError(f"worker {self.address} sent a malformed result: qkv {exc}")) from None

    def _new_request_id(self) -> int:
        """A fresh request id, on the event loop: 64 random bits, none of this worker's requests
        being built or in flight (nor one its link meter still times); it counts as being built
        until :meth:`_exchange` sends it or :meth:`_build` gives it up."""
        while True:
            request_id = secrets.randbits(64)
            taken = request_id in self._pending or request_id in self._building or self.link.timing(request_id)
            if not taken:
                self._building.add(request_id)
                return request_id

    async def _build(self, size: int, make: Callable[..., _Outgoing], *args: Any) -> _Outgoing:
        """``make(request_id, *args)`` with a fresh request id (on a thread for ``size`` bytes or
        more; see :func:`_off_loop`)."""
        request_id = self._new_request_id()
        try:
            return await _off_loop(size, make, request_id, *args)
        except BaseException:
            self._building.discard(request_id)
            raise

    def _segment_request(
        self, request_id: int, segment: int, tokens: torch.Tensor, extents: Sequence[Extent]
    ) -> _Outgoing:
        # frame_id stays 0: the worker only echoes it, and a frame number would tell it which
        # frame (and, in a batch run, where in the video) its windows come from.
        request = pb.SegmentRequest(
            request_id=request_id,
            segment=segment,
            model_fingerprint=self._fingerprint,
            extents=[pb.WindowExtent(height=h, width=w) for h, w in extents],
            tokens=wire.encode(tokens, self._codec, self._compression),
            residual_result=self._codec in wire.LOSSY,
            result_compression=self._compression,
        )
        return _Outgoing.of(request)

    def _stage_request(
        self,
        request_id: int,
        stage: OffloadStage,
        tokens: torch.Tensor,
        mixed: torch.Tensor | None,
        extents: Sequence[Extent],
    ) -> _Outgoing:
        request = pb.SegmentRequest(  # frame_id stays 0, as in _segment_request
            request_id=request_id,
            segment=stage.segment,
            model_fingerprint=self._fingerprint,
            extents=[pb.WindowExtent(height=h, width=w) for h, w in extents],
            tokens=wire.encode(tokens, self._codec, self._compression),
            residual_result=self._codec in wire.LOSSY,
            result_compression=self._compression,
        )
        if stage.finish is not None:
            if mixed is None:
                raise ValueError("finishing a global block needs its attention output")
            request.finish_block = stage.finish
            request.mixed.CopyFrom(wire.encode(mixed, self._codec, self._compression))
        if stage.start is not None:
            request.start_block = stage.start
        return _Outgoing.of(request)

    async def _exchange(self, outgoing: _Outgoing, frame_id: int, segment: int, windows: int) -> pb.SegmentResult:
        """Send one serialized request on the session stream and wait for its result; ``frame_id``
        (the edge's own) names the frame in the log and in errors only."""
        assert self._call is not None
        request_id = outgoing.request_id
        future: asyncio.Future[tuple[pb.SegmentResult, int]] = asyncio.get_running_loop().create_future()
        self._building.discard(request_id)
        self._pending[request_id] = future
        started = time.perf_counter()
        try:
            async with self._write_lock:
                self.link.sent(request_id, time.perf_counter(), len(outgoing.data))
                await self._call.write(outgoing.data)
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as exc:
            self._pending.pop(request_id, None)
            raise self._fail(exc) from None
        self.stats.requests += 1
        self.stats.payload_sent += outgoing.payload
        self.stats.raw_sent += outgoing.raw
        self.stats.message_sent += len(outgoing.data)
        try:
            result, size = await asyncio.wait_for(asyncio.shield(future), self._request_timeout)
        except TimeoutError:
            self._pending.pop(request_id, None)
            error = self._fail(
                WorkerError(
                    f"worker {self.address} missed its deadline: no result for frame {frame_id} "
                    f"segment {segment} within {self._request_timeout:g} s"
                )
            )
            self._abandon(error)
            raise error from None
        self.stats.payload_received += wire.wire_bytes(result.tokens) + wire.wire_bytes(result.qkv)
        self.stats.raw_received += _raw(result.tokens) + _raw(result.qkv)
        self.stats.message_received += size
        self.stats.seconds.observe(time.perf_counter() - started)
        self.stats.compute_seconds += result.compute_seconds
        log.debug(
            "frame %d segment %d: %d windows on %s in %.3f s (worker compute %.3f s)",
            frame_id, segment, windows, self.address,
            time.perf_counter() - started, result.compute_seconds,
        )
        return result

    async def _read_results(self) -> None:
        assert self._call is not None
        try:
            while True:
                data = await self._call.read()
                read_at = time.perf_counter()
                if data is grpc.aio.EOF:
                    raise WorkerError(f"worker {self.address} closed the stream")
                assert isinstance(data, bytes)  # the channel has no deserializer: raw bytes
                try:
                    result = await _off_loop(len(data), pb.SegmentResult.FromString, data)
                except DecodeError:
                    raise WorkerError(f"worker {self.address} sent a malformed result") from None
                future = self._pending.pop(result.request_id, None)
                if future is not None and not future.done():
                    self.link.answered(result.request_id, size=len(data), at=read_at,
                                       received=result.received_seconds, left=result.sent_seconds)
                    future.set_result((result, len(data)))
        except asyncio.CancelledError:
            raise
        except (grpc.aio.AioRpcError, WorkerError) as exc:
            self._abandon(self._fail(exc))

    def _abandon(self, error: WorkerError) -> None:
        """Fail every request still waiting on this worker, and stop using its stream."""
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)
        self._pending.clear()
        self.link.forget()
        if self._call is not None:
            self._call.cancel()

    @property
    def failed(self) -> WorkerError | None:
        """Why this worker was given up on, or None while it is healthy."""
        return self._failure

    def _fail(self, exc: BaseException) -> WorkerError:
        if self._failure is None:
            if isinstance(exc, grpc.aio.AioRpcError):
                self._failure = WorkerError(
                    f"worker {self.address} failed: {exc.code().name}: {exc.details()}"
                )
            elif isinstance(exc, WorkerError):
                self._failure = exc
            else:
                self._failure = WorkerError(f"worker {self.address} failed: {exc}")
        return self._failure

    async def reconnect(self) -> pb.ModelInfo:
        """Drop the broken stream and channel, then :meth:`connect` afresh, with the same checks."""
        await self.close()
        self._failure = None
        return await self.connect()

    async def close(self) -> None:
        if self._prober is not None:
            self._prober.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._prober
            self._prober = None
        if self._call is not None:
            try:
                # A stalled worker may never take the end of the stream: do not wait for it.
                await asyncio.wait_for(self._call.done_writing(), 1.0)
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError, TimeoutError):
                pass
            self._call.cancel()
        if self._reader is not None:
            self._reader.cancel()
            try:
                await self._reader
            except asyncio.CancelledError:
                pass
            self._reader = None
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
        self._call = None
        self.link.forget()
