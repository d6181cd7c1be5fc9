"""The commands: each turns resolved settings into library calls and prints what a person reads.

Handlers take :class:`~pedsam.stream.cli.settings.Values` and return the exit status; the
parser that fills them is :mod:`pedsam.stream.cli.main`.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pedsam.stream.cli.errors import require
from pedsam.stream.cli.settings import Values, defaults_in_force, edge_config, prompts, run_settings
from pedsam.stream.core.prompts import ObjectPrompt
from pedsam.stream.core.session import EdgeSession
from pedsam.stream.errors import ConfigError
from pedsam.stream.runs.job import View, run_source
from pedsam.stream.runs.recorder import Recorder

__all__ = ["bench", "bench_pipeline", "config_check", "demo", "embed", "run", "segment", "serve", "stream"]


def notice(session: EdgeSession, defaults: dict[str, Any]) -> None:
    """The lines a person gets before any output, once the session is open (so a bad setting is
    the only line): the split and privacy settings nobody chose (``defaults``, flag -> value: see
    :func:`~pedsam.stream.cli.settings.defaults_in_force`), where the edge computes (and why: what
    ``auto`` found), and about the weights."""
    if defaults:
        shown = " ".join(f"{flag} {value}" for flag, value in defaults.items())
        print(f"note: defaults in force: {shown}", file=sys.stderr)
    if session.placement is not None:
        print(f"note: edge computes on {session.placement.describe()} [{session.placement.reason}]", file=sys.stderr)
        if session.placement.note:
            print(f"note: {session.placement.note}", file=sys.stderr)
    if session.random_weights:
        print(f"note: {session.weights_notice} (give --checkpoint for real masks)", file=sys.stderr)
    elif session.config.model.shipped_weights:
        print(f"note: {session.banner}: not SAM; for SAM's masks give --checkpoint "
              "(pedsam weights download vit_b)", file=sys.stderr)
    if session.plan_choice is not None:
        print(session.plan_choice.line(), file=sys.stderr)


@contextlib.asynccontextmanager
async def stop_on_signals() -> AsyncIterator[asyncio.Event]:
    """An event set by Ctrl-C or SIGTERM while the block runs (a run then finishes its outputs)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        yield stop
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def embed(values: Values) -> int:
    from pedsam.stream.media.video import read_image
    from pedsam.stream.runs.audit import AuditWriter

    image = read_image(values["image"])
    config = edge_config(values)
    async with EdgeSession(config) as session:
        notice(session, defaults_in_force(values))
        embedding = await session.embed(image)
        if values["audit"]:
            with AuditWriter(values["audit"], num_windows=session.encoder.grid.num_windows) as audit:
                audit.write(embedding.audit)
    array = embedding.numpy().astype(np.float32)
    try:
        np.save(values["save"], array)
    except OSError as exc:
        raise ConfigError(f"cannot write {values['save']!r}: {exc.strerror}") from None
    print(f"embedding {tuple(array.shape)} float32 -> {values['save']}")
    return 0


async def segment(values: Values) -> int:
    from PIL import Image

    from pedsam.stream.media.video import read_image

    image = read_image(values["image"])
    objects = prompts(values)
    for prompt in objects:
        prompt.check_inside(image.shape[1], image.shape[0])
    config = edge_config(values)
    async with EdgeSession(config) as session:
        notice(session, defaults_in_force(values))
        predictions = await session.segment(image, objects)
    out = Path(values["out"])
    paths = [out] if len(predictions) == 1 else [out.with_name(f"{out.stem}-{i}{out.suffix}")
                                                 for i in range(len(predictions))]
    for path, prediction in zip(paths, predictions, strict=True):
        try:
            Image.fromarray(prediction.mask.astype(np.uint8) * 255).save(path)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot write {str(path)!r}: {exc}") from None
    for i, (path, prediction) in enumerate(zip(paths, predictions, strict=True)):
        print(f"object {i}: score {prediction.score:.3f}, {int(prediction.mask.sum())} pixels -> {path}")
    return 0


async def run(values: Values) -> int:
    """``pedsam run``: every frame of a file, none dropped, each with a record."""
    from pedsam.stream.media.video import probe_video

    objects = prompts(values)
    settings = run_settings(values, drops="never")
    info = probe_video(values["video"])  # a bad video or prompt fails before any worker starts
    for prompt in objects:
        prompt.check_inside(info.width, info.height)
    return await _run_file(values, values["video"], objects, settings, Path(values["out"]), info.frame_count)


def demo_weights(values: Values) -> Values:
    """The demo's model: the official ViT-B checkpoint when it is in pedsam's cache or can be
    downloaded and verified into it (a few seconds' wait at most when there is no network),
    else pedsam-mini (the small model pedsam ships), with one line on how to get the real weights. A model or
    checkpoint given on the command line is used as given."""
    from dataclasses import replace

    from pedsam.workers.errors import CheckpointError
    from pedsam.workers.weights import OFFICIAL, cache_dir, cached, download

    if "model" in values.given or "checkpoint" in values.given:
        return values
    path = cached("vit_b")
    if path is None:
        try:
            print(f"demo: fetching the official ViT-B checkpoint into {cache_dir()} ...", file=sys.stderr, flush=True)
            path = download("vit_b", cache_dir(), timeout=values["download_timeout"])
        except CheckpointError:
            print(f"demo: no network to fetch the official weights; running pedsam-mini, a small model trained "
                  f"on synthetic scenes. For SAM's masks: pedsam weights download vit_b --dir {cache_dir()} "
                  f"(or put {OFFICIAL['vit_b'].file_name} there)", file=sys.stderr)
            return values
    return replace(values, data={**values.data, "model": "vit_b", "checkpoint": str(path)})


async def demo(values: Values) -> int:
    """``pedsam demo``: a generated clip through the whole pipeline, with real weights when it can."""
    from pedsam.stream.media.synthetic import make_clip

    values = demo_weights(values)
    out = Path(values["out"])
    settings = run_settings(values, drops="never")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create output folder {str(out)!r}: {exc.strerror}") from None
    clip = make_clip(out / "input.mp4", frames=values["frames"])
    x, y = clip.objects[0].centres[0]
    objects = [ObjectPrompt(points=((x, y),), labels=(1,))]
    print(f"demo: generated {clip.frame_count}-frame clip {clip.path}; prompting object at ({x:.0f}, {y:.0f})")
    return await _run_file(values, clip.path, objects, settings, out, clip.frame_count)


async def _run_file(
    values: Values, video: Any, objects: Sequence[ObjectPrompt], settings: Any, out: Path, frames: int | None
) -> int:
    from pedsam.stream.cli.views import ProgressBar
    from pedsam.stream.media.sources import FileSource
    from pedsam.stream.media.video import probe_video

    info = probe_video(video)
    config = edge_config(values)
    defaults = defaults_in_force(values)
    # Ctrl-C interrupts a file run (exit 130): the records so far are kept, and no summary.json
    # passes the run off as complete.
    async with EdgeSession(config) as session:
        notice(session, defaults)
        kind = "local " if config.local_workers else ""
        print(f"{len(session.executor_names)} {kind}workers {', '.join(session.executor_names)}; "
              f"model {config.model.describe()}")
        recorder = _recorder(session, out, rate=info.rate, size=(info.width, info.height))
        views: list[View] = [] if values["no_progress"] else [ProgressBar(frames)]
        summary = await run_source(
            session, FileSource(video, skip_corrupt=True), objects, settings, recorder=recorder, views=views,
            extra={"video": str(video), "width": info.width, "height": info.height,
                   "rate": str(info.rate), "objects": [o.to_json() for o in objects], "defaults": defaults},
        )
    return report(summary, recorder.paths)


def _recorder(session: EdgeSession, out: Path, **kwargs: Any) -> Recorder:
    return Recorder(
        out, num_windows=session.encoder.grid.num_windows,
        banner=session.banner,
        weights="random" if session.random_weights else "pedsam-mini" if session.config.model.shipped_weights else None,
        **kwargs,
    )


def report(summary: dict[str, Any], paths: Sequence[Path] = ()) -> int:
    """Print a finished run's figures; exit status 1 when some frames failed."""
    print(f"{summary['frames']} frames ({summary['frames_ok']} ok, {summary['frames_failed']} failed, "
          f"{summary['frames_dropped']} dropped) in {summary['seconds']:.1f} s, {summary['fps']:.3g} fps; "
          f"latency p50 {summary['latency_p50_s']} s, p95 {summary['latency_p95_s']} s")
    if "max_picture_share_per_server" in summary:
        print(f"largest share any worker saw: {summary['max_picture_share_per_server']:.0%} of a frame's picture "
              f"({summary['max_windows_per_server']} of {summary['windows_per_frame']} windows)")
    exposure = summary.get("exposure")
    if exposure and exposure.get("exposure"):
        servers = exposure["exposure"].values()
        print(f"rotation {exposure['rotation']}: a worker saw at most {max(s['max_run_scene_share'] for s in servers):.0%} "
              f"of the scene since the start ({max(s['max_scene_share'] for s in servers):.0%} over any "
              f"{exposure['horizon']} frames); longest run on one piece of scene "
              f"{max(s['longest_run'] for s in servers)} frames; edge computed {exposure['edge_windows']} windows "
              f"({exposure['edge_share']:.0%}) in workers' place")
    if exposure and exposure.get("keep_local"):
        keep = exposure["keep_local"]
        print(f"keep-local {','.join(keep['kinds'])}: {exposure['kept_windows']} windows kept home as sensitive; "
              f"detection {keep['detect_ms_mean']:.1f} ms per frame over {keep['frames']} frames "
              f"({keep['searched_frames']} searched)")
    if paths:
        print(f"outputs: {', '.join(map(str, paths))}")
    if summary["frames_failed"]:
        print(f"pedsam: error: {summary['frames_failed']} frames failed; first: {summary['first_error']}",
              file=sys.stderr)
        return 1
    return 0


async def stream(values: Values) -> int:
    """``pedsam stream``: a camera (or a file) live, latest frame wins."""
    from pedsam.stream.cli.views import Display, StatusLine
    from pedsam.stream.media.sources import CameraSource, FileSource, FrameSource, PlaybackSource

    objects = prompts(values)
    settings = run_settings(values, drops="latest")
    config = edge_config(values, background_sam=not settings.keyframes.every_frame)
    defaults = defaults_in_force(values)
    display = Display() if values["display"] else None
    if values["realtime"] and values["file"] is None:
        raise ConfigError("--realtime plays a --file at its own rate; a camera is real time already")
    source: FrameSource
    if values["camera"] is not None:
        source = CameraSource(values["camera"])
    else:
        source = PlaybackSource(values["file"]) if values["realtime"] else FileSource(values["file"])
    async with stop_on_signals() as stop, source:  # a bad camera or file fails before workers start
        async with EdgeSession(config) as session:
            notice(session, defaults)
            recorder = _recorder(session, Path(values["record"]), rate=source.rate) if values["record"] else None
            views: list[View] = [] if values["no_progress"] else [StatusLine(objects=len(objects))]
            if display is not None:
                views.append(display)
            summary = await run_source(
                session, source, objects, settings, recorder=recorder, views=views, stop=stop,
                banner=session.banner,
                extra={"objects": [o.to_json() for o in objects], "defaults": defaults},
            )
    report(summary, recorder.paths if recorder is not None else ())
    return 0


async def serve(values: Values) -> int:
    """``pedsam serve``: the web page, until Ctrl-C or SIGTERM."""
    require("aiohttp", "web", "serve")
    from pedsam.stream.runs.keyframes import KeyframePolicy
    from pedsam.stream.web.server import LiveServer, ServeConfig

    config = ServeConfig(
        host=values["host"], port=values["port"], in_flight=values["in_flight"],
        keyframes=KeyframePolicy.parse(values["keyframes"]),
        ice_servers=tuple(values["ice_servers"] or ()), max_peers=values["max_peers"],
        max_calls_per_client=values["max_calls_per_client"], certfile=values["cert"], keyfile=values["key"],
        token=values["token"], operator_token=values["operator_token"], record_calls=values["record_calls"],
    ).guarded()
    edge = edge_config(values, background_sam=not config.keyframes.every_frame)
    async with stop_on_signals() as stop, EdgeSession(edge) as session:
        notice(session, defaults_in_force(values))
        server = LiveServer(session, config)
        url = await server.start()
        page = f"{url}?token={config.token}" if config.token else url
        print(f"pedsam serve: open {page} in a browser ({len(session.executor_names)} workers); Ctrl-C stops",
              flush=True)
        if config.operator_token:
            print(f"pedsam serve: calls and exposure at {url}peers?token={config.operator_token} (operator only)",
                  flush=True)
        try:
            await stop.wait()
        finally:
            await server.stop()
    print("pedsam serve: stopped")
    return 0


def config_check(values: Values) -> int:
    """``pedsam config check FILE``: validate a file as ``pedsam run`` reads it; print what would run."""
    from pedsam.stream.cli.main import parse
    from pedsam.stream.fleet.transport import ClientSecurity

    path = values["file"]
    _, resolved = parse(["run", "VIDEO", "--out", "OUT", "--config", path])
    config = edge_config(resolved)
    security = config.security or ClientSecurity()
    providers = dict(config.providers)

    def describe(address: str) -> str:
        notes = [providers[address]] if address in providers else []
        notes.append("token" if security.token_for(address) else "no token")
        return f"{address} ({', '.join(notes)})"

    if config.local_workers:
        fleet = f"{config.local_workers} local" + (f", {config.local_standby} local standby"
                                                   if config.local_standby else "")
        transport = "plain text on loopback, a fresh token per session"
    else:
        fleet = ", ".join(map(describe, config.workers))
        if config.standby:
            fleet += "; standby " + ", ".join(map(describe, config.standby))
        transport = security.describe()
    budget = config.rotation.budget
    lines = [
        f"config ok: {path}",
        f"model      {config.model.describe()}",
        f"device     {config.device}, {config.compute_dtype}; here: "
        f"{_device_here(config.device, config.compute_dtype)}",
        f"workers    {fleet}",
        f"transport  {transport}",
        f"split      scheme {config.scheme}, codec {config.codec}, plan {config.plan}, "
        f"{resolved['in_flight']} frames in flight",
        f"wire       segments to workers: {config.remote_segments or 'all'}, compression {config.compression}",
        "keep home  " + (f"{', '.join(config.keep_local.kinds)}, held {config.keep_local.hold} frames after the last "
                         "detection" if config.keep_local.enabled else "nothing (--keep-local none)"),
        f"rotation   {config.rotation.policy}; budgets: frame {budget.frame_cap or 'auto'}, scene {budget.scene_cap}, "
        f"horizon {budget.horizon_cap} over {budget.horizon} frames, run {budget.run_cap} frames, coalitions of "
        f"{budget.coalition}{'' if budget.coalition == 1 else f' capped at {budget.coalition_cap}'}, on budget: "
        f"{budget.on_exceed}",
        f"failover   on failure: {config.on_failure}, reconnect every {config.reconnect_interval:g} s, "
        f"request timeout {config.request_timeout} s",
        f"verify     the edge recomputes {config.verify:g} of each worker's windows to check it",
        f"metrics    {'metrics on port ' + str(config.metrics_port) if config.metrics_port is not None else 'off'}",
    ]
    if config.links:
        lines.append(f"links      emulated on this machine: {', '.join(map(str, config.links))}")
    print("\n".join(lines))
    return 0


def _device_here(device: str, compute_dtype: str) -> str:
    """What ``device`` is on this machine, or why it is not (config check only reports it)."""
    from pedsam.workers.device import select
    from pedsam.workers.errors import DeviceError

    try:
        placement = select(device, compute_dtype)
    except DeviceError as exc:
        return f"not available ({exc})"
    return f"{placement.describe()} [{placement.reason}]"


async def bench(values: Values) -> int:
    from pedsam.stream.bench.encoder import EncoderBench
    from pedsam.stream.bench.encoder import run as run_bench

    return await run_bench(EncoderBench.of(values))


async def bench_entropy(values: Values) -> int:
    from pedsam.stream.bench.entropy import EntropyBench
    from pedsam.stream.bench.entropy import run as run_bench

    return await run_bench(EntropyBench.of(values))


async def bench_verify(values: Values) -> int:
    from pedsam.stream.bench.verify import VerifyBench
    from pedsam.stream.bench.verify import run as run_bench

    return await run_bench(VerifyBench.of(values))


async def bench_keep_local(values: Values) -> int:
    from pedsam.stream.bench.keep_local import KeepLocalBench
    from pedsam.stream.bench.keep_local import run as run_bench

    return await run_bench(KeepLocalBench.of(values))


def bench_mini(values: Values) -> int:
    from pedsam.stream.mini.evaluate import MiniBench
    from pedsam.stream.mini.evaluate import run as run_bench

    try:
        width, height = (int(v) for v in values["size"].lower().split("x"))
    except ValueError:
        raise ConfigError(f"--size {values['size']!r}: give WxH, e.g. 640x480") from None
    return run_bench(MiniBench(
        checkpoint=values["checkpoint"], parts=tuple(p.strip() for p in values["parts"].split(",") if p.strip()),
        scenes=values["scenes"], width=width, height=height, frames=values["frames"],
        local_workers=values["local_workers"], rounds=values["rounds"], live_runs=values["live_runs"],
        seed=values["seed"], json=values["json"],
    ))


async def bench_pipeline(values: Values) -> int:
    from pedsam.stream.bench.pipeline import PipelineBench
    from pedsam.stream.bench.pipeline import run as run_bench

    return await run_bench(PipelineBench.of(values))


def bench_propagation(values: Values) -> int:
    from pedsam.stream.bench.propagation import PropagationBench, run as run_bench

    def numbers(text: str, flag: str) -> tuple[int, ...]:
        try:
            return tuple(int(v) for v in text.split(","))
        except ValueError:
            raise ConfigError(f"{flag} takes numbers separated by commas, got {text!r}") from None

    settings = PropagationBench.of({
        **values, "intervals": numbers(values["intervals"], "--intervals"),
        "jumps": numbers(values["jumps"], "--jumps") if values["jumps"] else (),
        "methods": tuple(values["methods"].split(",")), "labelme": values["labelme"] or None,
        "out": values["out"] or None,
    })
    return run_bench(settings)


def bench_link(values: Values) -> int:
    from pedsam.stream.bench.links import LinkBench, run as run_bench

    return run_bench(LinkBench.of(values))
