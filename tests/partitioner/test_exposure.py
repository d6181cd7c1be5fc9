"""The exposure ledger and the budgeted scheduler, driven by synthetic camera motion.

The property tests recompute every exposure figure by brute force (sets of scene cells) from
what the scheduler sent, and check every cap on every frame.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pedsam.partitioner.assignment import EDGE, Assignment
from pedsam.partitioner.errors import BudgetError, PartitionError
from pedsam.partitioner.exposure import ExposureLedger
from pedsam.partitioner.geometry import WindowGrid
from pedsam.partitioner.rotation import ROTATIONS, make_rotation
from pedsam.partitioner.scheduler import Budget, Scheduler
from pedsam.partitioner.schemes import SCHEMES

VIT_B = WindowGrid.for_encoder(1024, 16, 14)
SERVERS = ("a:1", "b:1", "c:1", "d:1")


def scene_cells(grid: WindowGrid, ids: Sequence[int], offset: tuple[float, float], content: tuple[int, int]) -> set[tuple[int, int]]:
    """Brute force: the scene cells of the content tokens of windows ``ids``."""
    oy, ox = (int(round(v)) for v in offset)
    cells = set()
    for wid in ids:
        w = grid.window(wid)
        for y in range(w.top, min(w.top + w.height, content[0])):
            for x in range(w.left, min(w.left + w.width, content[1])):
                cells.add((y + oy, x + ox))
    return cells


def test_static_fixed_camera_exposure_is_the_share() -> None:
    grid = VIT_B
    scheduler = Scheduler(make_rotation("fixed", grid, SERVERS[:3], scheme="rows"), grid, Budget(horizon=10))
    content = (48, 64)  # a 4:3 frame: the bottom 16 token rows are padding
    for frame in range(5):
        scheduled = scheduler.schedule(frame, content=content)
    total = content[0] * content[1]
    for name, ids in scheduled.assignment.shares.items():
        mine = len(scene_cells(grid, ids, (0, 0), content))
        e = scheduled.exposure.servers[name]
        assert e.frame_share == pytest.approx(mine / total)
        assert e.scene_share == pytest.approx(mine / total)
        assert e.distinct_windows == len(ids)
        assert e.run == 5
    # The last band is rows 3-4 of windows: token rows 42-63, of which only 42-47 hold pixels.
    # Rows: the last share is windows 17-24; of those only row 3 (token rows 42-47) holds pixels.
    assert scheduled.exposure.servers[SERVERS[2]].frame_share == pytest.approx(6 * (64 - 28) / total)
    assert scheduler.summary()["exposure"][SERVERS[0]]["longest_run"] == 5


def test_round_robin_on_a_still_camera_shows_every_server_the_whole_scene() -> None:
    scheduler = Scheduler(make_rotation("round-robin", VIT_B, SERVERS[:3]), VIT_B, Budget(horizon=10))
    shares = [scheduler.schedule(f).exposure.servers[SERVERS[0]].scene_share for f in range(3)]
    assert shares[0] < 0.5 < shares[1] < shares[2] == pytest.approx(1.0)
    fixed = Scheduler(make_rotation("fixed", VIT_B, SERVERS[:3]), VIT_B, Budget(horizon=10))
    assert max(fixed.schedule(f).exposure.servers[SERVERS[0]].scene_share for f in range(3)) < 0.5


def test_a_pan_sweeps_the_scene_through_fixed_slots_but_not_scene_anchored_ones() -> None:
    def scene_shares(rotation: str) -> list[float]:
        scheduler = Scheduler(make_rotation(rotation, VIT_B, SERVERS[:3], scheme="columns"), VIT_B, Budget(horizon=100))
        for frame in range(100):
            scheduler.schedule(frame, offset=(0.0, 1.5 * frame))  # pans right 1.5 tokens a frame
        return [s["max_scene_share"] for s in scheduler.summary()["exposure"].values()]

    fixed, anchored = scene_shares("fixed"), scene_shares("scene-anchored")
    assert min(fixed) > 0.7  # every band has swept over most of what the camera saw
    # Anchored servers see their own part of the world plus what windows straddling a region
    # border show of the neighbours' (window quantisation), and no more.
    assert sum(anchored) / 3 < sum(fixed) / 3 - 0.15


def test_the_horizon_forgets_old_frames() -> None:
    grid = VIT_B
    ledger = ExposureLedger(grid, ["a", "b"], horizon=3)
    cells = ledger.frame_cells()
    first = ledger.record(0, {"a": tuple(range(13)), "b": tuple(range(13, 25))}, cells)
    assert first.servers["a"].distinct_windows == 13
    for frame in (1, 2):
        later = ledger.record(frame, {"a": (), "b": tuple(range(25))}, cells)
        assert later.servers["a"].distinct_windows == 13  # frame 0 is still in the horizon
        assert later.servers["a"].run == 0
    gone = ledger.record(3, {"a": (), "b": tuple(range(25))}, cells)
    assert gone.servers["a"].distinct_windows == 0
    assert gone.servers["a"].scene_share == 0.0
    assert gone.servers["b"].scene_share == 1.0
    assert ledger.summary()["servers"]["b"]["longest_run"] == 4  # windows 13-24, frames 0-3
    with pytest.raises(PartitionError, match="does not know servers"):
        ledger.record(4, {"z": (0,)}, cells)


def test_pooled_servers_never_see_a_window_two_frames_running() -> None:
    scheduler = Scheduler(make_rotation("pooled", VIT_B, SERVERS), VIT_B)
    for frame in range(10):
        scheduler.schedule(frame)
    assert {s["longest_run"] for s in scheduler.summary()["exposure"].values()} == {1}


def test_budget_moves_windows_to_the_edge_never_to_another_server() -> None:
    scheduler = Scheduler(make_rotation("round-robin", VIT_B, SERVERS[:3]), VIT_B, Budget(scene_cap=0.5, horizon=20))
    moved = 0
    for frame in range(6):
        scheduled = scheduler.schedule(frame)
        for server, ids in scheduled.assignment.shares.items():
            if server != EDGE:
                assert set(ids) <= set(scheduled.proposed.shares[server])
        assert sorted(scheduled.assignment.shares.get(EDGE, ())) == sorted(
            w for ids in scheduled.to_edge.values() for w in ids
        )
        moved += len(scheduled.assignment.shares.get(EDGE, ()))
        assert all(e.scene_share <= e.scene_frames <= 0.5 for e in scheduled.exposure.servers.values())
    assert moved > 0
    assert scheduler.summary()["edge_windows"] == moved


def test_stop_setting_raises_before_anything_is_sent() -> None:
    scheduler = Scheduler(
        make_rotation("round-robin", VIT_B, SERVERS[:3]), VIT_B, Budget(scene_cap=0.5, on_exceed="stop")
    )
    scheduler.schedule(0)
    with pytest.raises(BudgetError, match=r"frame 1: the cap of 0.5 frames' worth of scene over 50 frames .* a:1"):
        scheduler.schedule(1)
    assert scheduler.ledger.frames == 1


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"frame_cap": 0.0}, "in \\(0, 1\\]"),
        ({"scene_cap": 1.5}, "in \\(0, 1\\]"),
        ({"horizon": 0}, "horizon"),
        ({"on_exceed": "ignore"}, "on_exceed"),
    ],
)
def test_bad_budgets_are_refused(kwargs: dict[str, object], words: str) -> None:
    with pytest.raises(PartitionError, match=words):
        Budget(**kwargs)  # type: ignore[arg-type]


@st.composite
def runs(draw: st.DrawFn) -> dict[str, object]:
    window = draw(st.integers(2, 6))
    grid = WindowGrid(draw(st.integers(window, 4 * window)), draw(st.integers(window + 1, 4 * window)), window)
    servers = draw(st.integers(2, 5))
    servers = min(servers, grid.num_windows)
    rotation = draw(st.sampled_from(ROTATIONS))
    scheme = draw(st.sampled_from(SCHEMES))
    frames = draw(st.integers(1, 14))
    # Camera motion: a random walk with occasional jumps, in tokens.
    steps = draw(st.lists(st.tuples(st.floats(-3, 3), st.floats(-3, 3)), min_size=frames, max_size=frames))
    offsets, y, x = [], 0.0, 0.0
    for dy, dx in steps:
        offsets.append((y, x))
        y, x = y + dy, x + dx
    content = (draw(st.integers(1, grid.grid_h)), draw(st.integers(1, grid.grid_w)))
    budget = Budget(
        frame_cap=draw(st.none() | st.floats(0.05, 1.0)),
        scene_cap=draw(st.none() | st.floats(0.05, 1.0)),
        horizon=draw(st.integers(1, 6)),
    )
    return {"grid": grid, "servers": tuple(f"w{i}" for i in range(servers)), "rotation": rotation,
            "scheme": scheme, "offsets": offsets, "content": content, "budget": budget}


@settings(max_examples=150, deadline=None)
@given(runs())
def test_caps_hold_and_the_ledger_matches_brute_force(run: dict[str, object]) -> None:
    grid: WindowGrid = run["grid"]  # type: ignore[assignment]
    servers: tuple[str, ...] = run["servers"]  # type: ignore[assignment]
    budget: Budget = run["budget"]  # type: ignore[assignment]
    offsets: list[tuple[float, float]] = run["offsets"]  # type: ignore[assignment]
    content: tuple[int, int] = run["content"]  # type: ignore[assignment]
    policy = make_rotation(str(run["rotation"]), grid, servers, scheme=str(run["scheme"]), secret=b"k")
    scheduler = Scheduler(policy, grid, budget)
    stopper = Scheduler(policy, grid, Budget(frame_cap=budget.frame_cap, scene_cap=budget.scene_cap,
                                             horizon=budget.horizon, on_exceed="stop"))
    stopped = False
    sent: list[tuple[Assignment, tuple[float, float]]] = []
    for frame, offset in enumerate(offsets):
        scheduled = scheduler.schedule(frame, offset=offset, content=content)
        moved = bool(scheduled.to_edge)
        if not stopped:
            if moved:
                with pytest.raises(BudgetError):
                    stopper.schedule(frame, offset=offset, content=content)
                stopped = True
            else:
                assert stopper.schedule(frame, offset=offset, content=content).assignment == scheduled.assignment
        assignment = scheduled.assignment
        sent.append((assignment, offset))
        # Coverage, and nothing handed from one server to another.
        owners = sorted(w for ids in assignment.shares.values() for w in ids)
        assert owners == list(range(grid.num_windows))
        for server, ids in assignment.shares.items():
            if server != EDGE:
                assert set(ids) <= set(scheduled.proposed.shares[server])
                assert len(ids) <= -(-grid.num_windows // policy.slots)
        # Brute force over the horizon.
        window = sent[-budget.horizon :]
        scene = set().union(*(scene_cells(grid, range(grid.num_windows), o, content) for _, o in window))
        total = content[0] * content[1]
        for server in servers:
            now = scene_cells(grid, assignment.shares.get(server, ()), offset, content)
            seen = set().union(*(scene_cells(grid, a.shares.get(server, ()), o, content) for a, o in window))
            e = scheduled.exposure.servers[server]
            assert e.frame_share == pytest.approx(len(now) / total)
            assert e.scene_share == pytest.approx(len(seen) / len(scene))
            assert e.scene_frames == pytest.approx(len(seen) / total)
            assert e.distinct_windows == len({w for a, _ in window for w in a.shares.get(server, ())})
            if budget.frame_cap is not None:
                assert len(now) / total <= budget.frame_cap + 1e-9
            if budget.scene_cap is not None:
                assert len(seen) / len(scene) <= len(seen) / total <= budget.scene_cap + 1e-9
            run_length = 0
            for w in assignment.shares.get(server, ()):
                length = 0
                for a, _ in reversed(sent):
                    if w not in a.shares.get(server, ()):
                        break
                    length += 1
                run_length = max(run_length, length)
            assert e.run == run_length
