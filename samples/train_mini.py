"""Train pedsam-mini: the ``mini`` preset's weights, from composite scenes of photo textures.

    python samples/fetch_media.py --photos
    python samples/train_mini.py [--out out/mini] [--textures samples/media/photos] [--steps 1000] [--tune-steps 1400]

Two stages: ``--steps`` steps from scratch, then ``--tune-steps`` steps in which every prompt is
also drawn as the mask input, as pedsam's decoder gives prompts to this model (see
``pedsam.stream.mini.train``).

Seeded and resumable: run the same command again after a stop and it continues from the last
saved step (every 100) to the same weights. Writes into ``--out``: ``state.pt`` (to resume),
``log.csv`` (loss and IoU per step), ``plot.png`` (their curves, with matplotlib installed) and
``pedsam-mini.pth`` (the weights; pedsam ships this file as ``workers/trained/pedsam-mini.pth``).
The shipped weights are this command's output with its defaults; the README's model card says
at which commit, how long it took and what the result measures.

Exit status: 0 when the weights are written, 1 with one line on stderr when the textures cannot
be read.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from pedsam.stream.media.composites import TextureBank
from pedsam.stream.mini.train import TrainConfig, train

DEFAULT_TEXTURES = Path(__file__).resolve().parent / "media" / "photos"


def plot(log: Path, out: Path, *, window: int = 50) -> bool:
    """Loss and first-answer IoU (click, box) against step, smoothed over ``window`` steps, into
    ``out``; False when matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    with open(log, newline="") as handle:
        rows = list(csv.DictReader(handle))

    def smooth(key: str) -> tuple[list[int], list[float]]:
        steps, values, kept = [], [], []
        for row in rows:
            value = float(row[key])
            if value == value:  # not NaN
                kept.append(value)
            if len(kept) >= 1 and int(row["step"]) % 10 == 0:
                steps.append(int(row["step"]))
                values.append(sum(kept[-window:]) / len(kept[-window:]))
        return steps, values

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    left.plot(*smooth("loss"), color="tab:red")
    left.set(xlabel="step", ylabel="loss (cross-entropy + dice + IoU MSE)", title="training loss")
    for key, colour in (("click_iou", "tab:blue"), ("box_iou", "tab:green")):
        right.plot(*smooth(key), color=colour, label=key.replace("_iou", ""))
    right.set(xlabel="step", ylabel="IoU of first answer", ylim=(0, 1), title="training IoU")
    right.legend()
    figure.tight_layout()
    figure.savefig(out, dpi=90)
    plt.close(figure)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(prog="train_mini.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("out/mini"), help="output folder (default out/mini)")
    parser.add_argument("--textures", type=Path, default=DEFAULT_TEXTURES,
                        help="folder of photos to cut textures from (default samples/media/photos)")
    parser.add_argument("--steps", type=int, default=defaults.steps, help=f"steps (default {defaults.steps})")
    parser.add_argument("--tune-steps", type=int, default=defaults.tune_steps,
                        help=f"second-stage steps (default {defaults.tune_steps})")
    parser.add_argument("--batch", type=int, default=defaults.batch, help=f"scenes per step (default {defaults.batch})")
    parser.add_argument("--lr", type=float, default=defaults.lr, help=f"peak learning rate (default {defaults.lr})")
    parser.add_argument("--seed", type=int, default=defaults.seed, help=f"seed (default {defaults.seed})")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: all cores)")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.batch < 1 or args.tune_steps < 0:
        parser.error("--steps and --batch must be at least 1, --tune-steps at least 0")
    try:
        bank = TextureBank.from_folder(args.textures)
    except ValueError as exc:
        print(f"train_mini: error: {exc} (fetch it with: python samples/fetch_media.py --photos)", file=sys.stderr)
        return 1
    if args.threads:
        torch.set_num_threads(args.threads)
    config = TrainConfig(steps=args.steps, tune_steps=args.tune_steps, batch=args.batch, lr=args.lr, seed=args.seed)
    bar = tqdm(total=config.total_steps, unit="step", dynamic_ncols=True)
    recent: dict[str, list[float]] = {"loss": [], "click_iou": [], "box_iou": []}

    def progress(step: int, total: int, row: dict[str, float]) -> None:
        if bar.n == 0 and step > 1:  # resumed: the steps before are done, and not in the rate
            bar.initial = bar.n = step - 1
        for key, values in recent.items():
            if row[key] == row[key]:
                values[:] = [*values[-49:], row[key]]
        bar.set_postfix({k.replace("_iou", ""): f"{sum(v) / len(v):.3f}" for k, v in recent.items() if v})
        bar.update(1)

    weights = train(config, bank, args.out, progress)
    bar.close()
    plotted = plot(args.out / "log.csv", args.out / "plot.png")
    print(f"weights: {weights} ({weights.stat().st_size} bytes)" + ("" if plotted else
          "; no plot.png (pip install matplotlib)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
