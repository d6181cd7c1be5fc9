"""``pedsam bench-verify``: what watching workers (``--verify``) costs the edge, per frame.

One edge session with local workers (child processes, so this process's CPU is the edge's alone)
embeds generated 4:3 frames one at a time, the setting changing every frame so that the machine's
drift and the load of other work fall on every setting alike:

- ``off``: no check at all: workers' results are taken as they come (pedsam before ``--verify``);
- ``0``: ``--verify 0``: impossible values refused (one pass over each result), nothing recomputed;
- each of ``--fractions``: that share of each worker's windows recomputed on the edge as well.

Reported per setting: the edge's CPU seconds per frame (this process: its compute thread, event
loop and gRPC threads), wall seconds per frame and windows recomputed per frame, as medians over
the measured frames, and each median's ratio to ``off``'s. Seeded random weights; the frames'
content does not change the cost.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from pedsam.stream.bench.modes import bench_image
from pedsam.stream.errors import ConfigError
from pedsam.workers.presets import DEFAULT_SEED, get_preset

__all__ = ["VerifyBench", "run"]


@dataclass(frozen=True, kw_only=True, slots=True)
class VerifyBench:
    """The settings of one ``pedsam bench-verify`` run (see the command's --help)."""

    model: str = "tiny"
    seed: int = DEFAULT_SEED
    local_workers: int = 3
    fractions: str = "0.05"
    frames: int = 6
    warmup: int = 1
    json: str | None = None

    @classmethod
    def of(cls, values: Mapping[str, Any]) -> VerifyBench:
        return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values and values[f.name] is not None})


@dataclass
class Setting:
    """One setting's measured frames: edge CPU seconds, wall seconds, windows recomputed."""

    name: str
    fraction: float | None  # None: no check at all
    cpu: list[float] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)
    verified: list[int] = field(default_factory=list)


def _fractions(text: str) -> list[float]:
    try:
        found = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--fractions takes numbers separated by commas, got {text!r}") from None
    if not found or not all(0 < f <= 1 for f in found):
        raise ConfigError(f"--fractions {text!r}: give shares of windows in (0, 1]")
    return found


async def run(args: VerifyBench) -> int:
    from pedsam.stream.core.session import EdgeConfig, EdgeSession
    from pedsam.workers.models import ModelSource

    if args.frames < 1 or args.warmup < 0:
        raise ConfigError("--frames must be at least 1 and --warmup at least 0")
    settings = [Setting("off", None), Setting("0", 0.0), *(Setting(f"{f:g}", f) for f in _fractions(args.fractions))]
    size = get_preset(args.model).img_size
    images = [bench_image(size, seed)[: size * 3 // 4] for seed in range(4)]  # 4:3, as cameras give
    config = EdgeConfig(model=ModelSource(preset=args.model, seed=args.seed), local_workers=args.local_workers,
                        verify=0.0)
    async with EdgeSession(config) as session:
        encoder, watch = session.encoder, session.watch
        assert watch is not None
        bounds = encoder.bounds
        for step in range(len(settings) * (args.warmup + args.frames)):
            setting = settings[step % len(settings)]
            encoder.shares.watch = None if setting.fraction is None else watch
            encoder.bounds = None if setting.fraction is None else bounds
            watch.fraction = setting.fraction or 0.0
            verified = watch.windows_verified
            cpu, wall = time.process_time(), time.perf_counter()
            await session.embed(images[step % len(images)])
            if step >= len(settings) * args.warmup:
                setting.cpu.append(time.process_time() - cpu)
                setting.wall.append(time.perf_counter() - wall)
                setting.verified.append(watch.windows_verified - verified)
        caught = watch.caught
    base_cpu, base_wall = statistics.median(settings[0].cpu), statistics.median(settings[0].wall)
    rows = []
    print(f"{args.model}, {args.local_workers} local workers, {args.frames} frames per setting after {args.warmup} "
          f"warm-up, settings alternating frame by frame (seeded random weights)\n")
    print(f"{'verify':>8} {'edge CPU s/frame':>17} {'x off':>6} {'wall s/frame':>13} {'x off':>6} {'windows/frame':>14}")
    for setting in settings:
        cpu, wall = statistics.median(setting.cpu), statistics.median(setting.wall)
        row = {"verify": setting.name, "edge_cpu_s": round(cpu, 4), "cpu_ratio": round(cpu / base_cpu, 3),
               "wall_s": round(wall, 4), "wall_ratio": round(wall / base_wall, 3),
               "windows_verified": statistics.mean(setting.verified)}
        rows.append(row)
        print(f"{setting.name:>8} {cpu:>17.3f} {row['cpu_ratio']:>6.3f} {wall:>13.3f} {row['wall_ratio']:>6.3f} "
              f"{row['windows_verified']:>14.2f}")
    if caught:
        print(f"\nworkers caught (should be none): {sorted(caught)}")
    if args.json:
        document = {"settings": {f.name: getattr(args, f.name) for f in fields(args)}, "rows": rows,
                    "frames": {s.name: {"cpu": s.cpu, "wall": s.wall} for s in settings}}
        Path(args.json).write_text(json.dumps(document, indent=2))
    return 0
