"""An edge session: one model, a set of executors, and the split encoder over them.

This is the library API the CLI is a thin layer over::

    config = EdgeConfig(model=ModelSource(preset="tiny"), local_workers=3)
    async with EdgeSession(config) as session:
        embedding = await session.embed(image)              # HxWx3 uint8 RGB
        masks = await session.segment(image, [ObjectPrompt(points=((120, 80),), labels=(1,))])

Where it computes: ``EdgeConfig.device`` (default ``auto``: the first CUDA GPU, else MPS, else
the CPU) is selected when the session opens, before any worker starts or any weight is read
(:attr:`EdgeSession.placement` says which, and why). The global blocks, the neck, the prompt
encoder, the mask decoder and the windows the edge computes itself (budgets, failover, sensitive
regions) run there; frames are resized on the host exactly as SamPredictor does and normalised on
the device.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import torch
from prometheus_client import CollectorRegistry, start_http_server

from pedsam.partitioner.assignment import EDGE, Assignment
from pedsam.partitioner.offload import PLANS
from pedsam.partitioner.scheduler import FAILOVER
from pedsam.stream.core.autoplan import Measured, PlanChoice, choose
from pedsam.stream.core.bounds import BlockBounds
from pedsam.stream.core.encoder import FrameAudit, SplitEncoder
from pedsam.stream.core.executors import LocalExecutor, SegmentExecutor
from pedsam.stream.core.memory import release_large_blocks
from pedsam.stream.core.metrics import EdgeCollector, EdgeStats
from pedsam.stream.core.predictor import MaskDecoder, MaskPrediction, PreparedImage, prepare_image
from pedsam.stream.core.prompts import ObjectPrompt
from pedsam.stream.core.scheduling import DEFAULT_SCHEME, EdgeScheduler, RotationSettings
from pedsam.stream.core.sensitive import KeepLocal
from pedsam.stream.core.verify import DEFAULT_VERIFY, Watch, tolerance
from pedsam.stream.errors import ConfigError, MediaError, SessionError
from pedsam.stream.fleet.health import Fleet
from pedsam.stream.fleet.links import LinkRelay, LinkSpec
from pedsam.stream.fleet.local import LocalWorkers, capture_path
from pedsam.stream.fleet.providers import check_providers
from pedsam.stream.fleet.remote import RemoteWorker
from pedsam.stream.fleet.transport import ANY_WORKER, ClientSecurity, is_loopback_address
from pedsam.workers.device import Placement, check_request, select
from pedsam.workers.entropy import COMPRESSIONS
from pedsam.workers.errors import WorkerSideError
from pedsam.workers.models import RANDOM_WEIGHTS_NOTICE, ModelSource, fingerprint, get_preset
from pedsam.workers.segment import SegmentRunner

log = logging.getLogger(__name__)

K = TypeVar("K")

BACKGROUND_NICE = 10  # niceness added to keyframe work in a live run (see EdgeConfig.background_sam)


def _fresh_captures(folder: str, count: int) -> None:
    """Make ``folder`` and remove local workers' captures of an earlier session there.

    Raises:
        ConfigError: the folder cannot be made or a capture not removed.
    """
    try:
        os.makedirs(folder, exist_ok=True)
        for index in range(count):
            with contextlib.suppress(FileNotFoundError):
                os.remove(capture_path(folder, index))
    except OSError as exc:
        raise ConfigError(f"--capture-local {folder!r}: {exc.strerror}") from None


def _lower_priority() -> None:
    """Run the calling thread (the edge's SAM thread) at a lower CPU priority: on Linux niceness
    is per thread, and torch's worker threads this thread starts inherit it."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), os.getpriority(os.PRIO_PROCESS, 0) + BACKGROUND_NICE)
    except OSError as exc:  # not permitted or not supported: keyframes then compete as equals
        log.warning("cannot lower the SAM thread's priority: %s", exc.strerror)


WIRE_COMPRESSIONS: tuple[str, ...] = ("auto", "off", *COMPRESSIONS)
"""Settings of ``EdgeConfig.compression``: ``auto`` compresses (zstd) to every worker whose bytes
cross a link (a worker off this machine, or behind an emulated link), not to a worker on
loopback, where moving bytes costs less than compressing them (``pedsam bench-entropy``)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class EdgeConfig:
    """Everything an edge session needs; built once from flags (and later a config file)."""

    model: ModelSource
    workers: tuple[str, ...] = ()
    local_workers: int = 0
    scheme: str = DEFAULT_SCHEME
    secret: bytes | None = None
    codec: str = "fp32"
    worker_threads: int = 1
    edge_threads: int | None = None
    allow_single_server: bool = False
    connect_timeout: float = 10.0
    request_timeout: float | None = 60.0
    security: ClientSecurity | None = None
    rotation: RotationSettings = RotationSettings()
    plan: str = "default"  # "offload": workers also run the global blocks' per-token parts
    standby: tuple[str, ...] = ()  # workers kept for failover, never given work otherwise
    local_standby: int = 0
    on_failure: str = "edge"  # where a failed worker's windows go: edge, standby (else edge), stop
    reconnect_interval: float = 5.0
    metrics_port: int | None = None  # serve Prometheus metrics on 127.0.0.1:PORT (0: any free port)
    # --plan auto: the codec and remote segments chosen from one calibration frame (see
    # pedsam.stream.core.autoplan); codec and remote_segments are then where it starts from.
    auto_plan: bool = False
    # Keyframes in the background of a live run: the edge's SAM work runs on one torch thread at
    # nice +10, and local workers at nice +10, so propagating every frame keeps the CPU it needs.
    background_sam: bool = False
    # Emulated links (tests and benches on this machine): one for every worker, or one per worker
    # in order, active then standby; kept as one per worker. See pedsam.stream.fleet.links.
    links: tuple[LinkSpec, ...] = ()
    # Only segments 0..N-1 go to workers; the edge computes the later ones (None: all). Under the
    # offload plan a segment's stage goes with it. N up to the plan's unmixed segments (ViT-B: 1)
    # keeps every token a global block has mixed on the edge.
    remote_segments: int | None = None
    compression: str = "auto"  # lossless stage after the codec: WIRE_COMPRESSIONS
    # Where the edge computes (auto | cpu | cuda | cuda:N | mps) and in what precision (fp32 |
    # bf16 | fp16, the latter two on a GPU); local workers get the same. See pedsam.workers.device.
    device: str = "auto"
    compute_dtype: str = "fp32"
    # Who runs each remote worker (address, provider): one worker per provider; required off
    # this machine (see pedsam.stream.fleet.providers).
    providers: tuple[tuple[str, str], ...] = ()
    # Watched workers: the share of each worker's windows the edge recomputes in secret to check
    # its results (0: none, 1: all); see pedsam.stream.core.verify.
    verify: float = DEFAULT_VERIFY
    # Sensitive regions the edge finds and computes itself, with their hold over frames (off by
    # default: it costs edge CPU and edge share); see pedsam.stream.core.sensitive.
    keep_local: KeepLocal = KeepLocal()
    # Local workers keep every first-segment request they receive, as a curious provider could,
    # in this folder (worker-I.bin, replaced each session): for pedsam attack-capture.
    capture_local: str | None = None

    def __post_init__(self) -> None:
        try:
            check_request(self.device, self.compute_dtype)
        except WorkerSideError as exc:
            raise ConfigError(str(exc)) from None
        if self.plan not in PLANS:
            raise ConfigError(f"unknown plan {self.plan!r}; choose one of {', '.join(PLANS)}")
        if self.workers and self.local_workers:
            raise ConfigError("give either --workers or --local-workers, not both")
        if not self.workers and self.local_workers < 1:
            raise ConfigError("no workers: give --workers HOST:PORT,... or --local-workers N")
        if max(len(self.workers), self.local_workers) == 1 and not self.allow_single_server:
            raise ConfigError(
                "one worker would see every window of every frame; give 2 or more workers, "
                "or --allow-single-server to accept that"
            )
        if self.on_failure not in FAILOVER:
            raise ConfigError(f"unknown --on-failure {self.on_failure!r}; choose one of {', '.join(FAILOVER)}")
        if self.standby and self.local_workers or self.local_standby and self.workers:
            raise ConfigError("standby workers come the same way as the others: --standby with --workers, "
                              "--local-standby with --local-workers")
        if self.on_failure == "standby" and not (self.standby or self.local_standby):
            raise ConfigError("--on-failure standby needs standby workers: give --standby or --local-standby")
        if self.reconnect_interval <= 0:
            raise ConfigError("--reconnect-interval must be positive")
        if self.capture_local is not None and not self.local_workers:
            raise ConfigError("--capture-local is for --local-workers; a remote worker captures with "
                              "pedsam worker --capture FILE")
        if isinstance(self.verify, bool) or not isinstance(self.verify, (int, float)) or not 0 <= self.verify <= 1:
            raise ConfigError(f"--verify {self.verify:g}: give the share of each worker's windows the edge "
                              "recomputes to check it, from 0 (none) to 1 (all)")
        if self.compression not in WIRE_COMPRESSIONS:
            raise ConfigError(f"unknown --compression {self.compression!r}; choose one of {', '.join(WIRE_COMPRESSIONS)}")
        if self.remote_segments is not None:
            try:
                segments = len(get_preset(self.model.preset).segments())
            except WorkerSideError as exc:
                raise ConfigError(str(exc)) from None
            if isinstance(self.remote_segments, bool) or not 1 <= self.remote_segments <= segments:
                raise ConfigError(f"--remote-segments {self.remote_segments}: {self.model.preset} has {segments} "
                                  f"windowed segments; give 1..{segments}")
        if self.workers:  # plain text only on loopback or with an explicit insecure
            (self.security or ClientSecurity()).check((*self.workers, *self.standby))
        check_providers((*self.workers, *self.standby), dict(self.providers))
        self.rotation.check(max(len(self.workers), self.local_workers))
        count = len(self.workers) + len(self.standby) if self.workers else self.local_workers + self.local_standby
        if len(self.links) == 1:
            object.__setattr__(self, "links", self.links * count)
        elif self.links and len(self.links) != count:
            raise ConfigError(
                f"--link gives {len(self.links)} links for {count} workers: give one for every worker, or one "
                "per worker in order (active workers, then standby)"
            )


@dataclass(frozen=True, slots=True)
class Embedding:
    """A frame's image embedding and what it took to make it.

    ``tensor`` is (1, out_chans, S/16, S/16) float32, the embedding SAM's predictor would
    compute for the frame. It lives on the session's device (:attr:`EdgeSession.placement`:
    the CPU unless a GPU was chosen), where the mask decoder uses it; :meth:`numpy` gives a host
    copy (on the CPU, a view).
    """

    tensor: torch.Tensor
    prepared: PreparedImage
    audit: FrameAudit

    def numpy(self) -> np.ndarray:
        """``tensor`` as a host float32 array."""
        array: np.ndarray = self.tensor.detach().cpu().numpy()
        return array


@dataclass
class EdgeSession:
    """Builds the model, connects (or starts) workers, and embeds and segments frames."""

    config: EdgeConfig
    _local: LocalWorkers | None = field(default=None, init=False)
    _executors: list[SegmentExecutor] = field(default_factory=list, init=False)
    _standby: list[RemoteWorker] = field(default_factory=list, init=False)
    _relays: list[LinkRelay] = field(default_factory=list, init=False)
    fleet: Fleet | None = field(default=None, init=False)
    stats: EdgeStats = field(default_factory=EdgeStats, init=False)
    metrics_port: int | None = field(default=None, init=False)
    _metrics_server: Any = field(default=None, init=False)
    _pool: ThreadPoolExecutor | None = field(default=None, init=False)
    _frames: int = field(default=0, init=False)
    watch: Watch | None = field(default=None, init=False)
    _bounds: BlockBounds | None = field(default=None, init=False)
    _streams: int = field(default=0, init=False)
    _open: bool = field(default=False, init=False)
    plan_choice: PlanChoice | None = field(default=None, init=False)  # with auto_plan: what was chosen
    placement: Placement | None = field(default=None, init=False)

    async def __aenter__(self) -> EdgeSession:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        """Start (or connect) the workers and build the edge's model.

        Local workers are started first and boot while the edge builds its own model.

        Raises:
            ConfigError: a device this machine does not have (before anything else), or a
                checkpoint or preset that cannot be built.
            WorkerError: a worker that cannot be reached, or holds another model.
        """
        config = self.config
        try:
            placement = self.placement = select(config.device, config.compute_dtype)
        except WorkerSideError as exc:
            raise ConfigError(str(exc)) from None
        log.info("edge computes on %s [%s]%s", placement.describe(), placement.reason,
                 f"; {placement.note}" if placement.note else "")
        if config.edge_threads:
            torch.set_num_threads(config.edge_threads)
        release_large_blocks()  # see pedsam.stream.core.memory: freed temporaries go back to the system
        if config.background_sam:
            torch.set_num_threads(1)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="edge",
                                        initializer=_lower_priority if config.background_sam else None)
        booting: asyncio.Task[list[str]] | None = None
        try:
            security = config.security or ClientSecurity()
            if config.local_workers:
                # Loopback children of this process: plain text, but a fresh token per session
                # so no other local process can use them.
                token = secrets.token_urlsafe(24)
                security = ClientSecurity(insecure=True, tokens={ANY_WORKER: token})
                count = config.local_workers + config.local_standby
                if config.capture_local is not None:
                    _fresh_captures(config.capture_local, count)
                self._local = LocalWorkers(
                    count, config.model, threads=config.worker_threads,
                    token=token, nice=BACKGROUND_NICE if config.background_sam else 0,
                    device=placement.device, compute_dtype=placement.compute_dtype, capture=config.capture_local,
                )
                booting = asyncio.create_task(self._local.start())
            try:
                self.preset = get_preset(config.model.preset)
                self.sam = await asyncio.to_thread(config.model.build)
                # On the host, then the model moves: the fingerprint is the same on every device.
                self.fingerprint = await asyncio.to_thread(fingerprint, self.sam, self.preset)
                await asyncio.to_thread(self.sam.to, placement.device)
            except WorkerSideError as exc:  # a bad preset or checkpoint: the user's to fix
                raise ConfigError(str(exc)) from None
            addresses: Sequence[str] = config.workers
            standby: Sequence[str] = config.standby
            if booting is not None:
                started, booting = await booting, None
                addresses, standby = started[: config.local_workers], started[config.local_workers :]
            remotes: list[RemoteWorker] = []
            providers = check_providers((*addresses, *standby), dict(config.providers))
            for index, address in enumerate((*addresses, *standby)):
                via = None
                if config.links:  # an emulated link in front of this worker
                    relay = LinkRelay(address, config.links[index])
                    self._relays.append(relay)
                    via = await relay.start()
                worker = RemoteWorker(
                    address,
                    fingerprint=self.fingerprint,
                    codec=config.codec,
                    compression=self._compression_for(address, emulated=via is not None),
                    connect_timeout=config.connect_timeout,
                    request_timeout=config.request_timeout,
                    security=security,
                    via=via,
                    provider=providers[address],
                )
                await worker.connect()
                remotes.append(worker)
            names = [w.name for w in remotes]
            if len(set(names)) != len(names):
                raise ConfigError(f"the same worker is listed twice: {', '.join(names)}")
            self._executors.extend(remotes[: len(addresses)])
            self._standby = remotes[len(addresses) :]
            self.fleet = Fleet({w.name: w for w in remotes}, reconnect_interval=config.reconnect_interval)
            # The edge is an executor too: a budget may keep windows on it (exactly, same runner).
            self._placement = placement
            self.watch = Watch(config.verify)
            self._bounds = await asyncio.to_thread(BlockBounds, self.sam)
            self.encoder = self._build_encoder(config.remote_segments, config.codec)
            for worker in remotes:
                if worker.info is not None and worker.info.compute_dtype not in ("", "fp32"):
                    log.warning("worker %s computes in %s: embeddings are within that precision's bound, not "
                                "exact", worker.name, worker.info.compute_dtype)
            self.scheduler = self._build_scheduler()
            if config.auto_plan:
                self._open = True  # the calibration frame goes through the session as any frame does
                self.plan_choice = await self._plan_automatically()
            if config.metrics_port is not None:
                self._serve_metrics(config.metrics_port)
        except BaseException:
            if booting is not None:
                booting.cancel()
                await asyncio.wait({booting})
            await self.close()
            raise
        self.decoder = MaskDecoder.for_preset(self.sam, self.preset)
        self._open = True
        log.info("edge session open: %s over %d workers", config.model.describe(), len(self._executors))

    def _compression_for(self, address: str, *, emulated: bool) -> str:
        """The compression to ask worker ``address`` for (it may not take it: see
        :attr:`pedsam.stream.fleet.remote.RemoteWorker.compression`)."""
        setting = self.config.compression
        if setting != "auto":
            return setting
        return "off" if is_loopback_address(address) and not emulated else "zstd"

    def _build_encoder(self, remote_segments: int | None, codec: str) -> SplitEncoder:
        """The split encoder over every executor; with ``--verify``, watching workers whose
        results cross in ``codec`` (each with the tolerance of its codec and precisions)."""
        config = self.config
        assert self._pool is not None and self.placement is not None
        if self.watch is not None:
            edge_dtype = self.placement.compute_dtype
            self.watch.tolerances = {
                w.name: tolerance(codec, (edge_dtype, w.info.compute_dtype if w.info is not None else "fp32"))
                for w in (*self._executors, *self._standby) if isinstance(w, RemoteWorker)
            }
            self.watch.default = tolerance(codec, (edge_dtype,))
        return SplitEncoder(
            self.sam,
            self.preset,
            {e.name: e for e in (*self._executors, *self._standby)} | {EDGE: self.local_executor()},
            self._pool,
            execution=config.plan,
            health=self.fleet,
            on_failure=config.on_failure,
            remote_segments=remote_segments,
            placement=self._placement,
            watch=self.watch,
            bounds=self._bounds,
        )

    def _build_scheduler(self) -> EdgeScheduler:
        """A scheduler with a ledger of its own (see :meth:`new_scheduler` for one more stream)."""
        config = self.config
        return EdgeScheduler.build(
            config.rotation, self.preset, self.executor_names, scheme=config.scheme, secret=config.secret,
            allow_single=config.allow_single_server, standby=self.standby_names, failover=config.on_failure,
            health=self.fleet, keep_local=config.keep_local,
        )

    async def _plan_automatically(self) -> PlanChoice:
        """``--plan auto``: one black calibration frame through the exact split (it shows nothing,
        and goes on a ledger of its own), then the codec and remote segments
        :func:`~pedsam.stream.core.autoplan.choose` predicts a keyframe is quickest with."""
        remotes = [e for e in self._executors if isinstance(e, RemoteWorker)]
        size = self.preset.img_size
        before = {w.name: (w.stats.payload_sent, w.stats.payload_received, w.stats.compute_seconds) for w in remotes}
        started = time.perf_counter()
        embedding = await self.embed(np.zeros((size, size, 3), np.uint8), scheduler=self._build_scheduler())
        wall = time.perf_counter() - started
        segments = len(self.preset.segments())
        sent = [s for s in embedding.audit.segments if s.edge_only is None]
        up = max((w.stats.payload_sent - before[w.name][0]) / max(1, len(sent)) for w in remotes)
        down = max((w.stats.payload_received - before[w.name][1]) / max(1, len(sent)) for w in remotes)
        compute = max((w.stats.compute_seconds - before[w.name][2]) / max(1, len(sent)) for w in remotes)
        tokens = max(len(ids) for s in sent for ids in s.shares.values()) * self.preset.window_size ** 2
        rates = [w.link.up.rate for w in remotes], [w.link.down.rate for w in remotes]
        emulated = bool(self._relays)

        def slowest(values: list[float | None]) -> float | None:
            known = [v for v in values if v]
            return min(known) if known and (emulated or not all(is_loopback_address(w.address) for w in remotes)) \
                else None

        measured = Measured(
            segments=segments, rtt=max((w.link.rtt or 0.0) for w in remotes),
            up_rate=slowest(rates[0]), down_rate=slowest(rates[1]), up_bytes=up, down_bytes=down,
            scale_bytes=4.0 * tokens, worker_seconds=compute, workers=len(remotes),
            edge_seconds=max(0.0, wall - sum(s.seconds for s in embedding.audit.segments)),
        )
        choice = choose(measured)
        for worker in remotes:
            worker.use_codec(choice.codec)
        self.encoder = self._build_encoder(choice.remote_segments, choice.codec)
        log.info("%s", choice.line())
        return choice

    def _check_open(self) -> None:
        if not self._open:
            raise SessionError("the edge session is not open: use 'async with EdgeSession(config)' "
                               "or 'await session.open()' first")

    def new_scheduler(self) -> EdgeScheduler:
        """A scheduler for one more video stream sharing this session (a browser call of
        ``pedsam serve``): its own frame sequence, motion estimate and rotation, the session's
        settings, and the session's exposure ledger, so budgets bound what each worker sees
        across every stream."""
        self._streams += 1
        return self.scheduler.for_stream(str(self._streams))

    @property
    def executor_names(self) -> list[str]:
        """The active workers' names (addresses), in the order given."""
        return [e.name for e in self._executors]

    @property
    def standby_names(self) -> list[str]:
        """The standby workers' names: used only when an active one fails."""
        return [w.name for w in self._standby]

    def links_summary(self) -> dict[str, dict[str, object]]:
        """Per worker, JSON-ready: its link as the edge measured it (round trip in ms, bytes per
        second each way: :meth:`pedsam.stream.fleet.link_meter.LinkMeter.summary`) and, when it
        is emulated, the link as set (``"emulated"``, same units; else None)."""
        workers = [w for w in (*self._executors, *self._standby) if isinstance(w, RemoteWorker)]
        emulated = {r.target: r.spec for r in self._relays}
        summary: dict[str, dict[str, object]] = {}
        for worker in workers:
            spec = emulated.get(worker.address)
            summary[worker.name] = {
                "emulated": None if spec is None else spec.to_json(),
                **worker.link.summary(),
            }
        return summary

    def wire_summary(self) -> dict[str, dict[str, object]]:
        """Per worker, JSON-ready: the compression agreed with it (``"off"`` or a name of
        :data:`pedsam.workers.entropy.COMPRESSIONS`) and its tensor bytes so far, as they crossed
        the wire (``payload_*``, after compression) and uncompressed (``raw_*``)."""
        workers = [w for w in (*self._executors, *self._standby) if isinstance(w, RemoteWorker)]
        return {
            w.name: {
                "compression": w.compression,
                "payload_sent": w.stats.payload_sent, "raw_sent": w.stats.raw_sent,
                "payload_received": w.stats.payload_received, "raw_received": w.stats.raw_received,
            }
            for w in workers
        }

    def fleet_summary(self) -> dict[str, object]:
        """Workers down now, every down/up event, the failover settings, and what watching them
        found (JSON-ready): ``verify``, ``windows_verified``, ``workers_caught`` and per worker
        caught the frame, segment, windows and check that caught it."""
        fleet = self.fleet.summary() if self.fleet is not None else {"down": [], "events": []}
        watch = (self.watch or Watch(self.config.verify)).summary()
        return {"on_failure": self.config.on_failure, "standby": self.standby_names, **fleet, **watch}

    @property
    def random_weights(self) -> bool:
        return self.config.model.random_weights

    @property
    def weights_notice(self) -> str:
        """What a person must be told about the weights' masks: the one line every output of
        random weights carries (CLI note, overlay banner, web page)."""
        return RANDOM_WEIGHTS_NOTICE if self.random_weights else self.config.model.describe()

    @property
    def banner(self) -> str | None:
        """The weights' line drawn on every output a person sees (overlay, web page): random
        weights' warning, pedsam-mini's name, or None for a checkpoint the user gave."""
        return self.config.model.banner

    def local_executor(self) -> LocalExecutor:
        """An executor computing on the edge itself, on its device (for fallback and comparison)."""
        assert self._pool is not None and self.placement is not None
        return LocalExecutor(SegmentRunner(self.sam, self.preset, self.placement), self._pool)

    def devices_summary(self) -> dict[str, object]:
        """Where everything computes (JSON-ready): the edge's placement (device, name, compute
        dtype, why), and each worker's device, name and compute dtype as its ``Describe`` said
        (``"unknown"`` for a worker older than that field)."""
        workers: dict[str, object] = {}
        for worker in (*self._executors, *self._standby):
            if isinstance(worker, RemoteWorker):
                workers[worker.name] = worker.device_json()
        return {"edge": self.placement.to_json() if self.placement is not None else None, "workers": workers}

    async def embed(
        self, image: np.ndarray, *, frame_index: int | None = None, scheduler: EdgeScheduler | None = None
    ) -> Embedding:
        """HxWx3 uint8 RGB frame -> its :class:`Embedding`, computed through the split.

        The frame is scheduled (rotation, motion, budgets) before the first ``await``, so
        frames are scheduled in the order this is called, however many are in flight.
        ``scheduler``: the stream's own (:meth:`new_scheduler`); default the session's.
        """
        self._check_open()
        scheduler = scheduler or self.scheduler
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise MediaError(f"expected an HxWx3 uint8 RGB image, got {getattr(image, 'dtype', type(image))} "
                             f"{getattr(image, 'shape', '')}")
        frame_index = self._next_index(frame_index)
        scheduled = scheduler.schedule(frame_index, image, (int(image.shape[0]), int(image.shape[1])))
        prepared = await asyncio.to_thread(prepare_image, self.sam, image)
        return await self._encode(prepared, frame_index, scheduled.assignment, scheduler.record(scheduled))

    async def embed_prepared(self, prepared: PreparedImage, *, frame_index: int | None = None) -> Embedding:
        """Like :meth:`embed` for an already prepared frame (no motion estimate for it)."""
        self._check_open()
        frame_index = self._next_index(frame_index)
        scheduled = self.scheduler.schedule(frame_index, None, prepared.original_size)
        return await self._encode(prepared, frame_index, scheduled.assignment, self.scheduler.record(scheduled))

    def _next_index(self, frame_index: int | None) -> int:
        if frame_index is None:
            frame_index = self._frames
        self._frames = max(self._frames, frame_index + 1)
        return frame_index

    async def _encode(
        self, prepared: PreparedImage, frame_index: int, assignment: Assignment, exposure: dict[str, object]
    ) -> Embedding:
        started = time.perf_counter()
        tensor, audit = await self.encoder.encode(frame_index, prepared.tensor, assignment)
        audit.exposure = exposure
        self.stats.frames += 1
        self.stats.frame_seconds.observe(time.perf_counter() - started)
        for segment in audit.segments:
            for name in segment.failover:
                self.stats.failovers[name] = self.stats.failovers.get(name, 0) + 1
        return Embedding(tensor=tensor, prepared=prepared, audit=audit)

    def _serve_metrics(self, port: int) -> None:
        """Prometheus metrics of this session at http://127.0.0.1:PORT/metrics, on a thread."""
        remotes = [w for w in (*self._executors, *self._standby) if isinstance(w, RemoteWorker)]
        collector = EdgeCollector(
            self.stats,
            {w.name: w.stats for w in remotes},
            exposure=self.exposure_summary,
            down=lambda: set(self.fleet.down) if self.fleet is not None else set(),
            links={w.name: w.link for w in remotes},
            devices=self.devices_summary,
        )
        registry = CollectorRegistry(auto_describe=False)
        registry.register(collector)
        try:
            self._metrics_server, _ = start_http_server(port, addr="127.0.0.1", registry=registry)
        except OSError as exc:
            raise ConfigError(f"cannot serve metrics on 127.0.0.1:{port}: {exc.strerror}") from None
        self.metrics_port = int(self._metrics_server.server_address[1])
        log.info("edge metrics on http://127.0.0.1:%d/metrics", self.metrics_port)

    def exposure_summary(self) -> dict[str, object]:
        """What each server has seen so far, over every stream of the session
        (:meth:`pedsam.stream.core.scheduling.EdgeScheduler.summary`)."""
        return self.scheduler.summary()

    async def decode(
        self,
        embedding: Embedding,
        prompt: ObjectPrompt,
        *,
        mask_input: np.ndarray | None = None,
    ) -> MaskPrediction:
        """One object's mask from an embedding, on the edge's compute thread."""
        self._check_open()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._pool,
            lambda: self.decoder.predict(embedding.tensor, embedding.prepared, prompt, mask_input=mask_input),
        )

    async def decode_objects(
        self, embedding: Embedding, prompts: Mapping[K, tuple[ObjectPrompt, np.ndarray | None]]
    ) -> dict[K, MaskPrediction]:
        """Every object's mask on one frame, from its prompt and mask input, on the edge's compute
        thread. For a preset with ``prompted_region`` (pedsam-mini) the objects are told apart
        (:meth:`~pedsam.stream.core.predictor.MaskDecoder.predict_all`: negative clicks on the
        others inside a tracker's box, then no pixel in two masks), so tracks of touching objects
        do not merge; with SAM's own weights each is decoded as ``SamPredictor`` would."""
        self._check_open()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._pool, lambda: self.decoder.predict_all(embedding.tensor, embedding.prepared, prompts))

    async def segment(self, image: np.ndarray, objects: Sequence[ObjectPrompt]) -> list[MaskPrediction]:
        """Masks (at the frame's size) for each object in one frame."""
        self._check_open()
        height, width = image.shape[:2]
        for prompt in objects:
            prompt.check_inside(width, height)
        embedding = await self.embed(image)
        return [await self.decode(embedding, prompt) for prompt in objects]

    async def close(self) -> None:
        """Stop the workers this session started, close every connection. Idempotent."""
        self._open = False
        if self._metrics_server is not None:
            await asyncio.to_thread(self._metrics_server.shutdown)
            self._metrics_server = None
        if self.fleet is not None:
            await self.fleet.close()
        executors, self._executors = [*self._executors, *self._standby], []
        self._standby = []
        for executor in executors:
            try:
                await executor.close()
            except Exception as exc:  # closing is best effort; say what happened
                log.warning("closing %s: %s", executor.name, exc)
        relays, self._relays = self._relays, []
        for relay in relays:
            await relay.close()
        if self._local is not None:
            await self._local.stop()
            self._local = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
