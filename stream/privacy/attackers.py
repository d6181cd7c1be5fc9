"""Attackers that learn facts about unseen windows from what a worker received.

Each attacker is fitted on some videos' frames and predicts others' (:func:`cross_predict`:
folds of whole videos, so no test frame shares a video with a training frame):

- :func:`ridge`: ridge regression in closed form (the dual, through one eigendecomposition of
  the training frames' kernel, so views with far more features than frames cost little); inputs
  standardised on the training frames, the penalty chosen per fact by leave-one-video-out
  cross-validation inside the training videos.
- :func:`mlp`: a two-hidden-layer perceptron (256 units, GELU, dropout) trained with Adam on
  standardised inputs and outputs, stopped early on a held-out training video.

Inputs: ``X`` (frames, features) float; outputs ``Y`` (frames, outputs) float; ``groups``
(frames,) the video of each frame; ``columns``: per fact, the output columns it owns (the
penalty is chosen per fact).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

__all__ = ["ATTACKERS", "Attacker", "cross_predict", "mlp", "ridge"]

Attacker = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Mapping[str, np.ndarray], int], np.ndarray]
"""(X_train, Y_train, groups_train, X_test, columns, seed) -> Y_test predicted."""

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
    seed: int = 0,
) -> np.ndarray:
    """Ridge regression's predictions at ``x_test`` (see the module docstring)."""
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
    seed: int = 0, *, hidden: int = 256, epochs: int = 300, patience: int = 30,
) -> np.ndarray:
    """A small perceptron's predictions at ``x_test`` (see the module docstring)."""
    x, x_test = _standardise(np.asarray(x, np.float64), np.asarray(x_test, np.float64))
    y_mean, y_std = y.mean(axis=0), y.std(axis=0)
    y_std[y_std < 1e-8] = 1.0
    target = (y - y_mean) / y_std
    videos = np.unique(groups)
    held = groups == videos[seed % len(videos)] if len(videos) >= 2 else np.zeros(len(x), bool)
    fit = ~held if held.any() else np.ones(len(x), bool)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # batches this small run three times faster on one thread than on two
    try:
        return np.asarray(_train(x, target, held, fit, x_test, seed, hidden, epochs, patience) * y_std + y_mean)
    finally:
        torch.set_num_threads(threads)


def _train(
    x: np.ndarray, target: np.ndarray, held: np.ndarray, fit: np.ndarray, x_test: np.ndarray, seed: int,
    hidden: int, epochs: int, patience: int,
) -> np.ndarray:
    """:func:`mlp`'s network, fitted on the ``fit`` rows, stopped early on the ``held`` rows (if
    any); its standardised predictions at ``x_test``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = torch.nn.Sequential(
            torch.nn.Dropout(0.1), torch.nn.Linear(x.shape[1], hidden), torch.nn.GELU(), torch.nn.Dropout(0.2),
            torch.nn.Linear(hidden, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, target.shape[1]),
        )
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


ATTACKERS: dict[str, Attacker] = {"ridge": ridge, "mlp": mlp}


def cross_predict(
    attacker: Attacker, x: np.ndarray, y: np.ndarray, groups: np.ndarray, columns: Mapping[str, np.ndarray],
    *, folds: int, seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Every frame's outputs predicted by ``attacker`` trained on the other videos: the videos are
    dealt into ``folds`` folds in an order drawn from ``seed``, and each fold is predicted by a
    model fitted on the rest. Returns (frames, outputs) twice: the predictions, and chance's (each
    fold's training mean: what an attacker that learnt nothing from its view predicts).

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
        predicted[test] = attacker(x[~test], y[~test], groups[~test], x[test], columns, seed)
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
