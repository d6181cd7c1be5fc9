"""``pedsam bench-pipeline``: what keeping several frames in flight buys, measured in one run.

A video file goes through the live pipeline (:func:`pedsam.stream.runs.engine.run_frames` over a
:class:`~pedsam.stream.media.sources.FileSource`, so no frame is dropped) once with 1 frame in flight and
once with N, alternating, ``--repeat`` times each; the command prints frames per second of
each and their ratio. With one frame in flight the edge and the workers take turns; with N,
the edge runs the global blocks and mask decoding of one frame while the workers run the
windowed segments of others, so the ratio approaches (edge + workers) / max(edge, workers).

To make that a statement about pipelining and not about a scheduler sharing cores, the edge
(this process, every thread of it) is pinned to one core and the workers, started here as
child processes, to another (``taskset -a -p``: every thread of each); torch uses one thread
on each side. It is a CPU bench: edge and workers compute on the CPU whatever GPU is present.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from pedsam.stream.core.prompts import ObjectPrompt
from pedsam.stream.core.session import EdgeConfig, EdgeSession
from pedsam.stream.errors import ConfigError
from pedsam.stream.fleet.local import LocalWorkers
from pedsam.stream.media.sources import FileSource
from pedsam.stream.media.synthetic import make_clip
from pedsam.stream.media.video import probe_video
from pedsam.stream.runs.engine import run_frames
from pedsam.stream.runs.stats import RunStats, percentile
from pedsam.workers.models import ModelSource

__all__ = ["PipelineBench", "run"]


@dataclass(frozen=True, kw_only=True, slots=True)
class PipelineBench:
    """The settings of one ``pedsam bench-pipeline`` run (see the command's --help)."""

    video: str | None = None
    frames: int = 60
    size: str = "640x480"
    in_flight: int = 3
    repeat: int = 5
    model: str = "tiny"
    seed: int = 0
    local_workers: int = 3
    plan: str = "default"
    edge_core: int = 0
    worker_core: int = 1
    no_pin: bool = False
    json: str | None = None

    @classmethod
    def of(cls, values: Mapping[str, Any]) -> PipelineBench:
        return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})



@dataclass
class Trial:
    in_flight: int
    frames: int
    seconds: float
    latency_p50: float | None
    edge_cpu: float  # CPU seconds of this process (every thread) during the trial
    worker_cpu: float  # CPU seconds of all worker processes during the trial

    @property
    def fps(self) -> float:
        return self.frames / self.seconds


@dataclass
class BenchResult:
    trials: list[Trial] = field(default_factory=list)

    def fps(self, in_flight: int) -> float:
        """Median frames per second over the trials with ``in_flight`` frames in flight."""
        return statistics.median(t.fps for t in self.trials if t.in_flight == in_flight)


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of a process so far (all its threads), from /proc."""
    if pid is None:
        return time.process_time()
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def pin_process(cores: set[int]) -> None:
    """Pin every thread of this process (what ``taskset -a -p`` does) to ``cores``."""
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), cores)
        except (ProcessLookupError, PermissionError):
            pass  # a thread that just ended


async def pin_workers(pids: list[int], core: int) -> None:
    """Pin every thread of each worker process to ``core`` with ``taskset -a -p``."""
    for pid in pids:
        for attempt in range(3):  # a thread ending while taskset walks the list makes it fail
            process = await asyncio.create_subprocess_exec(
                "taskset", "-a", "-p", "-c", str(core), str(pid),
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            )
            _, err = await process.communicate()
            if process.returncode == 0:
                break
        else:
            raise ConfigError(f"taskset could not pin worker {pid}: {err.decode().strip()}")


def _check(args: PipelineBench) -> bool:
    """Validate the flags; returns whether to pin."""
    if args.in_flight < 2:
        raise ConfigError("--in-flight must be at least 2 (it is compared with 1)")
    if args.repeat < 1 or args.frames < 2 or args.local_workers < 2:
        raise ConfigError("--repeat must be at least 1, --frames and --local-workers at least 2")
    if args.no_pin:
        return False
    available = os.sched_getaffinity(0)
    if args.edge_core == args.worker_core or not {args.edge_core, args.worker_core} <= available:
        raise ConfigError(
            f"--edge-core and --worker-core must be two different cores of {sorted(available)}; "
            "or give --no-pin"
        )
    if shutil.which("taskset") is None:
        raise ConfigError("taskset is not installed (util-linux); give --no-pin to run unpinned")
    return True


async def _trial(
    session: EdgeSession, video: str, prompt: ObjectPrompt, in_flight: int, worker_pids: list[int]
) -> Trial:
    stats = RunStats()
    frames = 0
    edge_cpu, worker_cpu = cpu_seconds(), sum(cpu_seconds(pid) for pid in worker_pids)
    started = time.perf_counter()
    async for _ in run_frames(session, FileSource(video), [prompt], in_flight=in_flight, stats=stats):
        frames += 1
    seconds = time.perf_counter() - started
    return Trial(
        in_flight=in_flight, frames=frames, seconds=seconds, latency_p50=percentile(stats.latencies, 50),
        edge_cpu=cpu_seconds() - edge_cpu,
        worker_cpu=sum(cpu_seconds(pid) for pid in worker_pids) - worker_cpu,
    )


async def run(args: PipelineBench) -> int:
    """The ``pedsam bench-pipeline`` command."""
    pin = _check(args)
    if pin:
        pin_process({args.edge_core})
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="pedsam-bench-") as tmp:
        if args.video:
            info = probe_video(args.video)
            video = args.video
            prompt = ObjectPrompt(points=((info.width / 2, info.height / 2),), labels=(1,))
        else:
            try:
                width, height = (int(v) for v in args.size.lower().split("x"))
            except ValueError:
                raise ConfigError(f"--size {args.size!r} is not WxH, e.g. 640x480") from None
            clip = make_clip(Path(tmp) / "clip.mp4", frames=args.frames, width=width, height=height)
            video = str(clip.path)
            prompt = ObjectPrompt(points=(clip.objects[0].centres[0],), labels=(1,))
        source = ModelSource(preset=args.model, seed=args.seed)
        where = f"edge on core {args.edge_core}, workers on core {args.worker_core}" if pin else "unpinned"
        print(f"bench-pipeline: {video}, {source.describe()}, {args.local_workers} local workers, "
              f"{args.plan} plan, {where}", flush=True)
        result = BenchResult()
        async with LocalWorkers(args.local_workers, source, threads=1) as workers:
            config = EdgeConfig(model=source, workers=tuple(workers.addresses), edge_threads=1, plan=args.plan,
                                device="cpu")
            pids = [w.process.pid for w in workers.workers]
            if pin:
                await pin_workers(pids, args.worker_core)
            async with EdgeSession(config) as session:
                await _trial(session, video, prompt, args.in_flight, pids)  # warm-up: connections, caches
                for _ in range(args.repeat):
                    for in_flight in (1, args.in_flight):
                        trial = await _trial(session, video, prompt, in_flight, pids)
                        result.trials.append(trial)
                        p50 = f"{trial.latency_p50 * 1000:.0f} ms" if trial.latency_p50 is not None else "-"
                        print(f"  {in_flight} in flight: {trial.frames} frames in {trial.seconds:.2f} s, "
                              f"{trial.fps:.2f} fps, latency p50 {p50}; CPU per frame: edge "
                              f"{trial.edge_cpu / trial.frames * 1000:.0f} ms, workers "
                              f"{trial.worker_cpu / trial.frames * 1000:.0f} ms", flush=True)
    one, many = result.fps(1), result.fps(args.in_flight)
    ratio = many / one
    edge = statistics.median(t.edge_cpu / t.frames for t in result.trials)
    work = statistics.median(t.worker_cpu / t.frames for t in result.trials)
    bound = (edge + work) / max(edge, work)
    print(f"1 frame in flight: {one:.2f} fps; {args.in_flight} in flight: {many:.2f} fps; "
          f"ratio {ratio:.2f}x (median of {args.repeat})")
    print(f"CPU per frame: edge {edge * 1000:.0f} ms, workers {work * 1000:.0f} ms; with one core each, "
          f"overlap can give at most {bound:.2f}x")
    if args.json:
        figures: dict[str, Any] = {
            "video": video if args.video else f"generated {args.size} x {args.frames} frames",
            "model": source.describe(),
            "workers": args.local_workers,
            "plan": args.plan,
            "pinned": pin,
            "edge_core": args.edge_core if pin else None,
            "worker_core": args.worker_core if pin else None,
            "cpu_count": os.cpu_count(),
            "load_average": list(os.getloadavg()),
            "in_flight": args.in_flight,
            "fps_1": round(one, 3),
            "fps_n": round(many, 3),
            "ratio": round(ratio, 3),
            "edge_cpu_per_frame_s": round(edge, 4),
            "worker_cpu_per_frame_s": round(work, 4),
            "ratio_bound": round(bound, 3),
            "trials": [
                {"in_flight": t.in_flight, "frames": t.frames, "seconds": round(t.seconds, 4),
                 "edge_cpu_s": round(t.edge_cpu, 4), "worker_cpu_s": round(t.worker_cpu, 4)}
                for t in result.trials
            ],
        }
        try:
            Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
        except OSError as exc:
            raise ConfigError(f"cannot write {args.json!r}: {exc.strerror}") from None
    sys.stdout.flush()
    return 0
