"""The leakage harness on a case built to leak, and attackers that would be mis-wired.

Frames of blocks of random flat colours, each block exactly one tiny window
(:func:`~pedsam.stream.privacy.context.block_frames`): a window's colour says nothing of
another's, so inpainting from the first segment is at chance, and anything above it is context
a global block mixed into the worker's later tokens.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from pedsam.stream.privacy.attackers import ATTACKERS, Layout, _canvas, _GridNet, cross_predict
from pedsam.stream.privacy.context import FIRST, Recording, block_frames, collect
from pedsam.stream.privacy.leakage import interval, view_scores, worker_layout, worker_view
from pedsam.workers.models import build_sam
from pedsam.workers.presets import get_preset

PRESET = get_preset("tiny")


@pytest.fixture(scope="module")
def leaky() -> Recording:
    frames = block_frames(range(6), 20, width=512, height=384, preset=PRESET)
    return collect(build_sam(PRESET, seed=0), PRESET, list(frames), pool=1)


def _r2(recording: Recording, view, attacker: str = "ridge") -> float:  # type: ignore[no-untyped-def]
    return view_scores(recording, view, attacker, folds=3, seed=0)["mean colour"]["r2"]


def test_blocks_are_the_windows() -> None:
    [(_, frame)] = block_frames([0], 1, width=640, height=480, preset=PRESET)  # a window: 280 px here
    assert frame.shape == (480, 640, 3)
    assert (frame[4:276, 4:276] == frame[10, 10]).all() and (frame[284:, 284:556] == frame[290, 290]).all()
    assert not (frame[4:276, 284:556] == frame[10, 10]).all()
    assert (frame[:4] == 128).all() and (frame[:, 277:284] == 128).all()  # seams: no colour bleeds across


def test_later_segments_leak_what_the_first_cannot_inpaint(leaky: Recording) -> None:
    first = _r2(leaky, lambda w, _: worker_view(leaky, w, [FIRST]))
    everything = _r2(leaky, lambda w, _: worker_view(leaky, w, leaky.keys))
    assert abs(first) < 0.03  # independent colours: nothing to inpaint from
    assert everything > first + 0.04  # measured 0.077 against -0.002


def test_the_attacker_reads_a_window_it_is_given_and_nothing_from_nothing(leaky: Recording) -> None:
    """Mis-wiring guards: given the target windows' own first-segment tokens the attacker reads
    their colour back almost perfectly; given a constant it does exactly as well as chance."""
    def own(worker: str, unseen: tuple[int, ...]) -> np.ndarray:
        return np.concatenate([leaky.views[FIRST][w] for w in unseen], axis=1)

    def nothing(worker: str, unseen: tuple[int, ...]) -> np.ndarray:
        return np.zeros((len(leaky.groups), 1))

    assert _r2(leaky, own) > 0.95
    assert _r2(leaky, nothing) == pytest.approx(0.0, abs=1e-9)
    assert _r2(leaky, own, "mlp") > 0.5


def test_the_cnn_reads_each_window_where_its_layout_puts_it(leaky: Recording) -> None:
    """Given the target windows' own first-segment tokens, the CNN reads each one's colour back,
    and its read-out of a window is the one the layout names (a mis-wired layout would otherwise
    pass silently: the network learns a neighbour's colour nearly as well)."""
    unseen = tuple(w for w in leaky.picture if w not in leaky.shares["w0"])  # four windows
    x = np.concatenate([leaky.views[FIRST][w] for w in unseen], axis=1)
    truth = np.concatenate([leaky.facts[w][:, 192:195] for w in unseen], axis=1).astype(np.float64)  # mean colour
    columns = {"mean colour": np.arange(truth.shape[1])}

    layout = Layout(leaky.grid, leaky.pool, tuple((0, w) for w in unseen), unseen)
    predicted, chance = cross_predict(ATTACKERS["cnn"], x, truth, leaky.groups, columns, folds=2, seed=0,
                                      layout=layout)
    error = ((truth - predicted) ** 2).reshape(len(truth), len(unseen), 3).sum(axis=(0, 2))
    assert (1 - error / ((truth - chance) ** 2).reshape(len(truth), len(unseen), 3).sum(axis=(0, 2)) > 0.8).all()

    canvas = torch.as_tensor(_canvas(x, layout))
    net = _GridNet(canvas.shape[1], 3, layout, 8).eval()
    reordered = _GridNet(canvas.shape[1], 3, replace(layout, outputs=unseen[::-1]), 8).eval()
    reordered.load_state_dict(net.state_dict() | {"index": reordered.index})
    with torch.no_grad():
        assert torch.equal(reordered(canvas).reshape(-1, 4, 3), net(canvas).reshape(-1, 4, 3).flip(1))
    with pytest.raises(ValueError, match="layout"):
        ATTACKERS["cnn"](x, truth, leaky.groups, x, columns, 0)


def test_the_canvas_puts_every_block_where_its_window_lies(leaky: Recording) -> None:
    keys = leaky.keys
    view = worker_view(leaky, "w1", keys)
    layout = worker_layout(leaky, "w1", keys, (0,))
    canvas = _canvas(view, layout)
    channels = view.shape[1] // len(layout.inputs)  # pool 1: one cell of C channels per block
    assert canvas.shape == (len(view), len(keys) * (channels + 1) + 2, 3, 3)
    for i, (group, wid) in enumerate(layout.inputs):
        row, col = divmod(wid, 3)
        assert np.array_equal(canvas[:, group * channels : (group + 1) * channels, row, col],
                              view[:, i * channels : (i + 1) * channels])
    masks = canvas[0, len(keys) * channels : len(keys) * (channels + 1)]
    assert sorted(map(tuple, np.argwhere(masks[0] == 1))) == [divmod(w, 3) for w in leaky.shares["w1"]]
    assert masks.sum() == len(layout.inputs)


def test_cross_prediction_never_trains_on_a_test_video() -> None:
    seen: list[set[int]] = []

    def spy(x, y, groups, x_test, columns, seed, layout=None):  # type: ignore[no-untyped-def]
        seen.append(set(groups.tolist()))
        return np.zeros((len(x_test), y.shape[1]))

    groups = np.repeat(np.arange(4), 5)
    x = groups[:, None].astype(float)
    predicted, chance = cross_predict(spy, x, x, groups, {"all": np.arange(1)}, folds=2, seed=1)
    assert len(seen) == 2 and seen[0].isdisjoint(seen[1]) and seen[0] | seen[1] == {0, 1, 2, 3}
    for train in seen:  # chance is the training mean: from the other fold only
        test = ~np.isin(groups, list(train))
        assert np.allclose(chance[test], np.mean(list(train)))
    assert set(ATTACKERS) == {"ridge", "mlp", "cnn"}


def test_interval_is_students_t_over_seeds() -> None:
    mean, low, high = interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and high - mean == pytest.approx(4.303 / np.sqrt(3))
    assert interval([0.5]) == (0.5, 0.5, 0.5)


def test_a_steering_worker_changes_only_its_first_result_and_verify_catches_it() -> None:
    """The active worker adds its delta to segment 0's result alone; with every window checked
    (``--verify 1``) the edge catches it on the first frame."""
    import asyncio

    import torch

    from pedsam.partitioner.geometry import WindowGrid
    from pedsam.stream.privacy.steering import SteeringExecutor, _frames_until_caught, _shares

    class Echo:
        name = "w0"

        async def run(self, frame_id, segment, tokens, extents):  # type: ignore[no-untyped-def]
            return tokens

    steering = SteeringExecutor(Echo(), torch.ones(3, 2))  # type: ignore[arg-type]
    zeros = torch.zeros(3, 2)
    assert torch.equal(asyncio.run(steering.run(0, 0, zeros, [(1, 3)])), torch.ones(3, 2))
    assert torch.equal(asyncio.run(steering.run(0, 1, zeros, [(1, 3)])), zeros)

    sam = build_sam(PRESET, seed=0)
    grid = WindowGrid.for_encoder(PRESET.img_size, PRESET.patch_size, PRESET.window_size)
    shares = _shares(PRESET, grid, 512, 384, 3)
    delta = torch.full((sum(grid.window(w).height * grid.window(w).width for w in shares["w0"]), PRESET.embed_dim), 0.1)
    frames = [f for _, f in block_frames([0], 2, width=512, height=384, preset=PRESET)]
    assert asyncio.run(_frames_until_caught(sam, PRESET, shares, delta, frames, 1.0, 0)) == 0
    assert asyncio.run(_frames_until_caught(sam, PRESET, shares, delta * 0, frames, 1.0, 0)) is None
