"""What the leakage measurement records: exactly what each worker was sent, placed by window."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pedsam.partitioner.geometry import WindowGrid
from pedsam.stream.core.shares import gather_windows
from pedsam.stream.privacy.context import FIRST, THUMB, collect, random_scene, scene_frames, window_facts
from pedsam.stream.privacy.inversion import prologue
from pedsam.workers.models import build_sam
from pedsam.workers.presets import get_preset

PRESET = get_preset("tiny")


@pytest.fixture(scope="module")
def sam():  # type: ignore[no-untyped-def]
    return build_sam(PRESET, seed=0)


def test_first_segment_views_are_each_windows_own_embedding(sam) -> None:  # type: ignore[no-untyped-def]
    """The recorded first-segment tokens of every window, pooled, are that window's prologue
    pooled: the recorder cuts each request into the right windows."""
    frames = list(scene_frames([1, 2], 2, 3, width=320, height=240))
    recording = collect(sam, PRESET, frames, pool=2)
    grid = WindowGrid.for_encoder(PRESET.img_size, PRESET.patch_size, PRESET.window_size)
    assert sorted(w for ids in recording.shares.values() for w in ids) == list(recording.picture)
    assert len(recording.picture) == 6  # 4:3 on the tiny grid: the bottom row of windows is padding
    for index, (_, image) in enumerate(frames):
        tokens, _ = prologue(sam, image)
        for wid in recording.picture:
            window = grid.window(wid)
            own = gather_windows(torch.as_tensor(tokens), [window]).reshape(window.height, window.width, -1)
            pooled = torch.nn.functional.adaptive_avg_pool2d(own.permute(2, 0, 1)[None], 2)[0].permute(1, 2, 0)
            np.testing.assert_allclose(recording.views[FIRST][wid][index], pooled.reshape(-1).numpy(), atol=1e-5)
    assert recording.keys == [(0, "tokens"), (1, "tokens")]
    assert recording.facts[0].shape == (len(frames), THUMB * THUMB * 3 + 4)


def test_offload_workers_also_receive_the_attention_output(sam) -> None:  # type: ignore[no-untyped-def]
    recording = collect(sam, PRESET, scene_frames([3], 2, 1, width=320, height=240), plan="offload")
    assert recording.keys == [(0, "tokens"), (1, "mixed"), (1, "tokens")]


@pytest.mark.parametrize("plan", ["default", "offload"])
def test_with_one_remote_segment_the_whole_view_is_the_first_segment(sam, plan: str) -> None:  # type: ignore[no-untyped-def]
    """``--remote-segments 1``: nothing but the first segment's input reaches a worker, the very
    tensors it gets with every segment remote."""
    frames = list(scene_frames([4, 5], 2, 2, width=320, height=240))
    everything = collect(sam, PRESET, frames, plan=plan)
    first_only = collect(sam, PRESET, frames, plan=plan, remote_segments=1)
    assert everything.keys != [FIRST] and first_only.keys == [FIRST]
    for wid in everything.picture:
        np.testing.assert_array_equal(first_only.views[FIRST][wid], everything.views[FIRST][wid])


def test_facts_of_a_window_are_its_pixels() -> None:
    grid = WindowGrid.for_encoder(PRESET.img_size, PRESET.patch_size, PRESET.window_size)
    pixels = np.zeros((384, 512, 3), np.uint8)
    pixels[:] = (200, 100, 50)  # flat: window 0 has no edges
    stripes = np.arange(224) // 4 % 2 * 255
    pixels[224:, 224:448, 1] = stripes.astype(np.uint8)  # window 4: green stripes, 4 px wide
    facts = window_facts(pixels, grid, PRESET.patch_size, [0, 4])
    np.testing.assert_allclose(facts[0][:192].reshape(8, 8, 3), np.broadcast_to([200, 100, 50], (8, 8, 3)))
    np.testing.assert_allclose(facts[0][192:195], [200, 100, 50])
    assert facts[0][195] < 0.01 and facts[4][195] > 100
    assert facts[4][193] == pytest.approx(127.5, abs=1)


def test_generated_scenes_differ_by_seed_and_repeat_by_seed() -> None:
    a, b = random_scene(7, width=96, height=64, frames=3), random_scene(8, width=96, height=64, frames=3)
    assert not np.array_equal(a.frame(1).image, b.frame(1).image)
    np.testing.assert_array_equal(a.frame(2).image, random_scene(7, width=96, height=64, frames=3).frame(2).image)
