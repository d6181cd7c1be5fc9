"""Attackers that learn facts about unseen windows from what a worker received.

Each attacker is fitted on some videos' frames and predicts others' (:func:`cross_predict`:
folds of whole videos, so no test frame shares a video with a training frame):

- :func:`ridge`: ridge regression in closed form (the dual, through one eigendecomposition of
  the training frames' kernel, so views with far more features than frames cost little); inputs
  standardised on the training frames, the penalty chosen per fact by leave-one-video-out
  cross-validation inside the training videos.
- :func:`mlp`: a two-hidden-layer perceptron (256 units, GELU, dropout) trained with Adam on
  standardised inputs and outputs, stopped early on a held-out training video.
- :func:`cnn`: a small convolutional network over the window grid, trained the same way. The
  view's pooled cells are put back where their windows lie (one channel group per tensor
  received, with a mask and coordinates), three 3x3 convolutions (dilated 1, 2, 4) and the
  grid's mean read every cell in context, and one head, shared by every window, predicts a
  window's facts from its cells. Sharing the head across windows is what the MLP lacks: each
  unseen window is a training example of the same mapping, where the MLP learns one mapping per
  window position from the same few frames. It needs the view's :class:`Layout`.

Inputs: ``X`` (frames, features) float; outputs ``Y`` (frames, outputs) float; ``groups``
(frames,) the video of each frame; ``columns``: per fact, the output columns it owns (the
penalty is chosen per fact).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ATTACKERS", "Attacker", "Layout", "cnn", "cross_predict", "mlp", "ridge"]


@dataclass(frozen=True, slots=True)
class Layout:
    """Where a view's input blocks and a truth's output blocks lie on the window grid (what
    :func:`cnn` needs beyond the numbers).

    Attributes:
        grid: (rows, cols) of windows; window ``wid`` lies at ``divmod(wid, cols)``.
        pool: an input block is one window's tokens pooled to pool x pool cells,
            ``(pool * pool * C,)`` values, cells row-major and C last.
        inputs: per input block, in the view's column order, ``(group, window id)``: one group
            per tensor received, so a window's blocks from different tensors stack as channels.
        outputs: per output block (equal widths), in the truth's column order, its window id.
    """

    grid: tuple[int, int]
    pool: int
    inputs: tuple[tuple[int, int], ...]
    outputs: tuple[int, ...]


class Attacker(Protocol):
    """(X_train, Y_train, groups_train, X_test, columns, seed, layout) -> Y_test predicted."""

    def __call__(
        self, x: np.ndarray, y: np.ndarray, groups: np.ndarray, x_test: np.ndarray,
        columns: Mapping[str, np.ndarray], seed: int = 0, *, layout: Layout | None = None,
    ) -> np.ndarray: ...

_ALPHAS = 10.0 ** np.linspace(-4.0, 3.0, 15)  # penalties, times the kernel's mean eigenvalue


def _standardise(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    std[std < 1e-8] = 1.0
    return (train - mean) / std, (test - mean) / std


def _ridge_paths(x: np.ndarray, y: np.ndarray, x_test: np.ndarray, penalties: np.ndarray) -> np.ndarray:
    """Centred ``y`` predicted at ``x_test`` for each penalty: (penalties, test, outputs)."""
    kernel = x @ x.T  # (n, n)
    eigen, basis = np.linalg.eigh(kernel)
    eigen = np.clip(eigen, 0.0, None)
    projected = basis.T @ y  # (n, m)
    cross = (x_test @ x.T) @ basis  # (t, n)
    return np.stack([cross @ (projected / (eigen + p)[:, None]) for p in penalties])


def ridge(
    x: np.ndarray, y: np.ndarray, groups: np.ndarray, x_test: np.ndarray, columns: Mapping[str, np.ndarray],
    seed: int = 0, *, layout: Layout | None = None,
) -> np.ndarray:
    """Ridge regression's predictions at ``x_test`` (see the module docstring; ``layout`` unused)."""
    x = np.asarray(x, np.float64)
    x_test = np.asarray(x_test, np.float64)
    y = np.asarray(y, np.float64)
    x, x_test = _standardise(x, x_test)
    y_mean = y.mean(axis=0)
    scale = max(float(np.einsum("ij,ij->", x, x)) / max(len(x), 1), 1e-12)
    penalties = _ALPHAS * scale
    chosen = np.full(y.shape[1], penalties[len(penalties) // 2])
    videos = np.unique(groups)
    if len(videos) >= 2:  # leave one training video out, per penalty
        errors = np.zeros((len(penalties), y.shape[1]))
        for video in videos:
            held = groups == video
            fit_mean = y[~held].mean(axis=0)
            paths = _ridge_paths(x[~held], y[~held] - fit_mean, x[held], penalties)
            errors += ((paths + fit_mean - y[held]) ** 2).sum(axis=1)
        for cols in columns.values():
            chosen[cols] = penalties[int(np.argmin(errors[:, cols].sum(axis=1)))]
    out = np.empty((len(x_test), y.shape[1]))
    for penalty in np.unique(chosen):
        cols = chosen == penalty
        out[:, cols] = _ridge_paths(x, y[:, cols] - y_mean[cols], x_test, np.array([penalty]))[0] + y_mean[cols]
    return out


def mlp(
    x: np.ndarray, y: np.ndarray, groups: np.ndarray, x_test: np.ndarray, columns: Mapping[str, np.ndarray],
    seed: int = 0, *, layout: Layout | None = None, hidden: int = 256, epochs: int = 300, patience: int = 30,
) -> np.ndarray:
    """A small perceptron's predictions at ``x_test`` (see the module docstring; ``layout`` unused)."""
    x, x_test = _standardise(np.asarray(x, np.float64), np.asarray(x_test, np.float64))

    def build() -> nn.Module:
        return nn.Sequential(
            nn.Dropout(0.1), nn.Linear(x.shape[1], hidden), nn.GELU(), nn.Dropout(0.2),
            nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, y.shape[1]),
        )

    return _fitted(build, x, y, groups, x_test, seed, epochs, patience)


def cnn(
    x: np.ndarray, y: np.ndarray, groups: np.ndarray, x_test: np.ndarray, columns: Mapping[str, np.ndarray],
    seed: int = 0, *, layout: Layout | None = None, hidden: int = 64, epochs: int = 300, patience: int = 30,
) -> np.ndarray:
    """A small CNN's predictions at ``x_test`` (see the module docstring).

    Raises:
        ValueError: no ``layout``, or one that does not divide the columns into its blocks.
    """
    if layout is None:
        raise ValueError("the cnn attacker needs the view's layout on the window grid")
    x, x_test = _standardise(np.asarray(x, np.float64), np.asarray(x_test, np.float64))
    if y.shape[1] % len(layout.outputs):
        raise ValueError(f"{y.shape[1]} output columns do not split into {len(layout.outputs)} windows")
    canvas, canvas_test = _canvas(x, layout), _canvas(x_test, layout)
    width = y.shape[1] // len(layout.outputs)
    return _fitted(lambda: _GridNet(canvas.shape[1], width, layout, hidden), canvas, y, groups, canvas_test, seed,
                   epochs, patience)


def _canvas(x: np.ndarray, layout: Layout) -> np.ndarray:
    """(frames, blocks * pool * pool * C) -> (frames, groups * (C + 1) + 2, rows * pool, cols * pool)
    float32: each block's cells where its window lies in its group's C channels, then a mask
    channel per group (1 where the group has a block) and two coordinate channels (-1 to 1)."""
    rows, cols = layout.grid
    p = layout.pool
    cell = x.shape[1] // max(len(layout.inputs), 1)
    c = cell // (p * p)
    if not layout.inputs or cell * len(layout.inputs) != x.shape[1] or c * p * p != cell:
        raise ValueError(f"{x.shape[1]} input columns do not split into {len(layout.inputs)} blocks of {p}x{p} cells")
    groups = 1 + max(g for g, _ in layout.inputs)
    out = np.zeros((len(x), groups * (c + 1) + 2, rows * p, cols * p), np.float32)
    for i, (g, wid) in enumerate(layout.inputs):
        r, q = divmod(wid, cols)
        where = (slice(r * p, (r + 1) * p), slice(q * p, (q + 1) * p))
        block = x[:, i * cell : (i + 1) * cell].reshape(-1, p, p, c)
        out[:, g * c : (g + 1) * c, where[0], where[1]] = block.transpose(0, 3, 1, 2)
        out[:, groups * c + g, where[0], where[1]] = 1.0
    out[:, -2] = np.linspace(-1.0, 1.0, rows * p, dtype=np.float32)[:, None]
    out[:, -1] = np.linspace(-1.0, 1.0, cols * p, dtype=np.float32)[None, :]
    return out


class _GridNet(nn.Module):
    """:func:`cnn`'s network: (N, channels, rows * pool, cols * pool) -> (N, outputs * width), the
    output windows' predictions side by side."""

    def __init__(self, channels: int, width: int, layout: Layout, hidden: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Dropout2d(0.1), nn.Conv2d(channels, hidden, 3, padding=1), nn.GELU(),
            nn.Conv2d(hidden, hidden, 3, padding=2, dilation=2), nn.GELU(),
            nn.Conv2d(hidden, hidden, 3, padding=4, dilation=4), nn.GELU(),
        )
        self.head = nn.Sequential(
            nn.Dropout(0.2), nn.Conv2d(2 * hidden, hidden, 1), nn.GELU(), nn.Conv2d(hidden, width, 1),
        )
        self.pool = layout.pool
        self.index: torch.Tensor
        self.register_buffer("index", torch.as_tensor(layout.outputs, dtype=torch.long))

    def forward(self, canvas: torch.Tensor) -> torch.Tensor:
        f: torch.Tensor = self.features(canvas)
        f = torch.cat([f, f.mean(dim=(2, 3), keepdim=True).expand_as(f)], dim=1)  # every cell sees the grid's mean
        windows: torch.Tensor = self.head(F.avg_pool2d(f, self.pool)).flatten(2)  # (N, width, rows * cols)
        return windows[:, :, self.index].transpose(1, 2).reshape(len(canvas), -1)


def _fitted(
    build: Callable[[], nn.Module], x: np.ndarray, y: np.ndarray, groups: np.ndarray, x_test: np.ndarray, seed: int,
    epochs: int, patience: int,
) -> np.ndarray:
    """``build()``'s network fitted to ``y`` standardised, stopped early on one training video
    (chosen by ``seed``); its predictions at ``x_test`` (inputs already standardised)."""
    y_mean, y_std = y.mean(axis=0), y.std(axis=0)
    y_std[y_std < 1e-8] = 1.0
    target = (y - y_mean) / y_std
    videos = np.unique(groups)
    held = groups == videos[seed % len(videos)] if len(videos) >= 2 else np.zeros(len(x), bool)
    fit = ~held if held.any() else np.ones(len(x), bool)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # batches this small run three times faster on one thread than on two
    try:
        return np.asarray(_train(build, x, target, held, fit, x_test, seed, epochs, patience) * y_std + y_mean)
    finally:
        torch.set_num_threads(threads)


def _train(
    build: Callable[[], nn.Module], x: np.ndarray, target: np.ndarray, held: np.ndarray, fit: np.ndarray,
    x_test: np.ndarray, seed: int, epochs: int, patience: int,
) -> np.ndarray:
    """``build()``'s network, fitted on the ``fit`` rows, stopped early on the ``held`` rows (if
    any); its standardised predictions at ``x_test``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build()
        optimiser = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-2)
        inputs = torch.as_tensor(x, dtype=torch.float32)
        outputs = torch.as_tensor(target, dtype=torch.float32)
        best, best_state, waited = float("inf"), None, 0
        for _ in range(epochs):
            net.train()
            order = torch.randperm(int(fit.sum()))
            rows = torch.as_tensor(np.flatnonzero(fit))[order]
            for start in range(0, len(rows), 64):
                batch = rows[start : start + 64]
                optimiser.zero_grad()
                loss = torch.nn.functional.mse_loss(net(inputs[batch]), outputs[batch])
                loss.backward()  # type: ignore[no-untyped-call]
                optimiser.step()
            if not held.any():
                continue
            net.eval()
            with torch.no_grad():
                score = float(torch.nn.functional.mse_loss(net(inputs[held]), outputs[held]))
            if score < best - 1e-4:
                best, waited = score, 0
                best_state = {k: v.clone() for k, v in net.state_dict().items()}
            else:
                waited += 1
                if waited >= patience:
                    break
        if best_state is not None:
            net.load_state_dict(best_state)
        net.eval()
        with torch.no_grad():
            predicted = net(torch.as_tensor(x_test, dtype=torch.float32)).numpy().astype(np.float64)
    return np.asarray(predicted)


ATTACKERS: dict[str, Attacker] = {"ridge": ridge, "mlp": mlp, "cnn": cnn}


def cross_predict(
    attacker: Attacker, x: np.ndarray, y: np.ndarray, groups: np.ndarray, columns: Mapping[str, np.ndarray],
    *, folds: int, seed: int, layout: Layout | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Every frame's outputs predicted by ``attacker`` trained on the other videos: the videos are
    dealt into ``folds`` folds in an order drawn from ``seed``, and each fold is predicted by a
    model fitted on the rest. Returns (frames, outputs) twice: the predictions, and chance's (each
    fold's training mean: what an attacker that learnt nothing from its view predicts).
    ``layout``: where ``x``'s and ``y``'s blocks lie, for an attacker that needs it (:func:`cnn`).

    Raises:
        ValueError: fewer than two videos, or ``folds`` outside ``2..videos``.
    """
    videos = np.unique(groups)
    if len(videos) < 2 or not 2 <= folds <= len(videos):
        raise ValueError(f"need at least two videos and 2..videos folds, got {len(videos)} videos, {folds} folds")
    dealt = np.random.default_rng(seed).permutation(videos)
    predicted = np.empty(y.shape, np.float64)
    chance = np.empty(y.shape, np.float64)
    for fold in range(folds):
        test = np.isin(groups, dealt[fold::folds])
        predicted[test] = attacker(x[~test], y[~test], groups[~test], x[test], columns, seed, layout=layout)
        chance[test] = y[~test].mean(axis=0)
    return predicted, chance


def fact_columns(facts: Mapping[str, slice], width: int, windows: int) -> dict[str, np.ndarray]:
    """Per fact, its columns in outputs that hold ``windows`` fact vectors of ``width`` side by side."""
    return {name: np.concatenate([np.arange(width)[s] + i * width for i in range(windows)]) for name, s in facts.items()}


def scores(
    truth: np.ndarray, predicted: np.ndarray, chance: np.ndarray, columns: Mapping[str, np.ndarray],
) -> dict[str, dict[str, float]]:
    """Per fact: ``sse`` and ``sst`` (squared error of the predictions, and of chance's), ``count``
    (values), summed over its columns; :func:`summarise` turns sums into PSNR and R2."""
    out = {}
    for name, cols in columns.items():
        t = truth[:, cols]
        out[name] = {"sse": float(((t - predicted[:, cols]) ** 2).sum()),
                     "sst": float(((t - chance[:, cols]) ** 2).sum()), "count": float(t.size)}
    return out


def summarise(sums: Sequence[Mapping[str, Mapping[str, float]]]) -> dict[str, dict[str, float]]:
    """Per fact, summed over ``sums``: ``r2`` (1 - SSE/SST: out of sample, against chance, so an
    attacker that learnt nothing scores 0 and one worse than chance below 0) and ``psnr_db``
    (10 log10(255^2 / MSE))."""
    out: dict[str, dict[str, float]] = {}
    for name in sums[0]:
        sse = sum(s[name]["sse"] for s in sums)
        sst = sum(s[name]["sst"] for s in sums)
        count = sum(s[name]["count"] for s in sums)
        mse = sse / count
        out[name] = {"r2": 1.0 - sse / sst if sst > 0 else 0.0,
                     "psnr_db": 10.0 * float(np.log10(255.0**2 / mse)) if mse > 0 else float("inf")}
    return out
