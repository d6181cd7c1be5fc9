"""The ``whole-process`` row of ``pedsam bench``: one image, start to finish, as a user runs it.

What a user waits for when embedding one image is a whole process: starting Python, importing
torch, building the model and reading the checkpoint, then the encoder; for pedsam also
starting its local workers. Two commands on the same image and the same checkpoint (seeded
weights saved as a checkpoint file, read the way an official one is), alternated so that the
machine's drift falls on both alike:

- ``stock``: ``sam_model_registry[model](checkpoint=...)`` and ``SamPredictor.set_image``
  (a model the registry does not know, ``tiny``, is built by pedsam's builder);
- ``pedsam``: ``pedsam embed IMAGE --checkpoint CKPT --local-workers 2``.

Each is timed from process start to exit (wall seconds); the row reports the medians and their
ratio.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch

from pedsam.stream.errors import PedsamError
from pedsam.workers.models import build_sam

__all__ = ["WholeProcess", "measure"]

STOCK = """
import sys
import numpy as np
import PIL.Image
from segment_anything import SamPredictor, sam_model_registry

if sys.argv[1] in sam_model_registry:
    sam = sam_model_registry[sys.argv[1]](checkpoint=sys.argv[2])
else:  # a preset of pedsam's alone (tiny): SAM's modules from pedsam's builder
    from pedsam.workers.models import build_sam
    sam = build_sam(sys.argv[1], checkpoint=sys.argv[2])
sam.to(sys.argv[4])
SamPredictor(sam).set_image(np.asarray(PIL.Image.open(sys.argv[3]).convert("RGB")))
"""


@dataclass
class WholeProcess:
    """Wall seconds of each run of each command, in the order they ran."""

    model: str
    stock_s: list[float] = field(default_factory=list)
    pedsam_s: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return statistics.median(self.pedsam_s) / statistics.median(self.stock_s)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": "whole-process",
            "model": self.model,
            "stock_s": [round(v, 3) for v in self.stock_s],
            "pedsam_s": [round(v, 3) for v in self.pedsam_s],
            "stock_median_s": round(statistics.median(self.stock_s), 3),
            "pedsam_median_s": round(statistics.median(self.pedsam_s), 3),
            "ratio": round(self.ratio, 3),
        }


def _inputs(model: str, seed: int, folder: Path) -> tuple[Path, Path]:
    """A checkpoint file of the seeded weights and a 1024x768 photo-like image."""
    checkpoint = folder / f"{model}-seed{seed}.pth"
    torch.save(build_sam(model, seed=seed).state_dict(), checkpoint)
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:768, 0:1024]
    image = np.stack([x * 255 // 1023, y * 255 // 767, (x + y) * 127 // 1790], axis=-1)
    image = image + rng.integers(-20, 21, size=image.shape)
    path = folder / "image.png"
    PIL.Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(path)
    return checkpoint, path


def _timed(command: list[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise PedsamError(f"whole-process run failed: {' '.join(command[:4])} ...: {done.stderr.strip()[-300:]}")
    return seconds


def measure(model: str, seed: int, rounds: int, folder: Path, device: str = "cpu") -> WholeProcess:
    """Alternate stock and pedsam ``rounds`` times each, on inputs written into ``folder``, both
    computing on ``device``."""
    checkpoint, image = _inputs(model, seed, folder)
    stock = [sys.executable, "-c", STOCK, model, str(checkpoint), str(image), device]
    pedsam = [sys.executable, "-m", "pedsam.stream", "embed", str(image), "--checkpoint", str(checkpoint),
              "--local-workers", "2", "--save", str(folder / "embedding.npy"), "--device", device]
    result = WholeProcess(model=model)
    for _ in range(rounds):
        result.stock_s.append(_timed(stock))
        result.pedsam_s.append(_timed(pedsam))
    return result
