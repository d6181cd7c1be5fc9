"""The exposure ledger and the budgeted scheduler, driven by synthetic camera motion.

The property tests recompute every exposure figure by brute force (sets of scene cells) from
what the scheduler sent, and check every cap on every frame.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pedsam.partitioner.assignment import EDGE, Assignment
from pedsam.partitioner.balance import share_bound
from pedsam.partitioner.errors import BudgetError, PartitionError
from pedsam.partitioner.exposure import ExposureLedger, ServerExposure
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
    content = (48, 64)  # a 4:3 frame: the bottom 16 token rows, the last row of windows, are padding
    for frame in range(5):
        scheduled = scheduler.schedule(frame, content=content)
    total = content[0] * content[1]
    assert scheduled.padding == (20, 21, 22, 23, 24)
    assert set(scheduled.padding) <= set(scheduled.assignment.shares[EDGE]) and not scheduled.to_edge
    assert scheduled.exposure.edge_windows == 0  # padding is no extra work for the edge
    for name, ids in scheduled.assignment.shares.items():
        if name == EDGE:
            continue
        mine = len(scene_cells(grid, ids, (0, 0), content))
        e = scheduled.exposure.servers[name]
        assert e.frame_share == pytest.approx(mine / total) and e.frame_share <= 1 / 3 + 196 / total
        assert e.scene_share == e.run_scene_share == pytest.approx(mine / total)
        assert e.distinct_windows == len(ids)
        assert e.run == 5
    assert scheduler.summary()["exposure"][SERVERS[0]]["longest_run"] == 5
    assert scheduler.summary()["edge_share"] == 0.0


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
    scheduler = Scheduler(make_rotation("round-robin", VIT_B, SERVERS[:3]), VIT_B, Budget(horizon_cap=0.5, horizon=20))
    moved = 0
    for frame in range(6):
        scheduled = scheduler.schedule(frame)
        for server, ids in scheduled.assignment.shares.items():
            if server != EDGE:
                assert set(ids) <= set(scheduled.proposed.shares[server])
        assert sorted(scheduled.assignment.shares.get(EDGE, ())) == sorted(
            w for ids in scheduled.to_edge.values() for w in ids
        )
        assert all("frames' worth" in why for why in scheduled.reasons.values())
        moved += len(scheduled.assignment.shares.get(EDGE, ()))
        assert all(e.scene_share <= e.scene_frames <= 0.5 for e in scheduled.exposure.servers.values())
    assert moved > 0
    assert scheduler.summary()["edge_windows"] == moved


def test_stop_setting_raises_before_anything_is_sent() -> None:
    scheduler = Scheduler(
        make_rotation("round-robin", VIT_B, SERVERS[:3]), VIT_B, Budget(horizon_cap=0.5, on_exceed="stop")
    )
    scheduler.schedule(0)
    with pytest.raises(BudgetError, match=r"frame 1: the cap of 0.5 frames' worth of scene over 50 frames .* a:1"):
        scheduler.schedule(1)
    assert scheduler.ledger.frames == 1


def test_the_auto_scene_cap_never_holds_back_a_still_camera_and_stops_rotation() -> None:
    content = (48, 64)
    for scheme in ("interleaved", "contiguous", "rows"):
        still = Scheduler(make_rotation("fixed", VIT_B, SERVERS[:3], scheme=scheme), VIT_B, Budget(scene_cap="auto"))
        for frame in range(20):
            assert not still.schedule(frame, content=content).to_edge
    rotating = Scheduler(make_rotation("round-robin", VIT_B, SERVERS[:3]), VIT_B, Budget(scene_cap="auto"))
    limit = share_bound(VIT_B.picture_tokens(content)[:20], 3)
    for frame in range(20):
        scheduled = rotating.schedule(frame, content=content)
        assert scheduled.limits.scene == pytest.approx(limit)
        assert all(e.run_scene_share <= limit + 1e-9 for e in scheduled.exposure.servers.values())
    assert rotating.summary()["edge_share"] > 0.5  # rotating a still scene is what the cap refuses


def test_the_scene_cap_counts_the_whole_run_not_the_horizon() -> None:
    # Round-robin with a horizon of 2 frames: the horizon forgets, the whole run does not.
    scheduler = Scheduler(make_rotation("round-robin", VIT_B, SERVERS[:3]), VIT_B, Budget(scene_cap=0.6, horizon=2))
    for frame in range(9):
        scheduled = scheduler.schedule(frame)
        for e in scheduled.exposure.servers.values():
            assert e.run_scene_share <= 0.6 + 1e-9
    summary = scheduler.summary()["exposure"]
    assert max(s["run_scene_share"] for s in summary.values()) > 0.5


def test_the_run_cap_rests_a_piece_of_scene_on_the_edge_for_a_frame() -> None:
    scheduler = Scheduler(make_rotation("fixed", VIT_B, SERVERS[:3]), VIT_B, Budget(run_cap=4))
    rested = []
    for frame in range(12):
        scheduled = scheduler.schedule(frame, content=(48, 64))
        rested.append(bool(scheduled.to_edge))
        assert all(e.run <= 4 for e in scheduled.exposure.servers.values())
        if scheduled.to_edge:
            assert all("run cap of 4" in why for why in scheduled.reasons.values())
    assert rested == [False] * 4 + [True] + [False] * 4 + [True] + [False] * 2
    assert scheduler.summary()["exposure"][SERVERS[0]]["longest_run"] == 4


def test_runs_follow_the_scene_not_the_window() -> None:
    # Scene-anchored on a pan: a server holds the same piece of scene while its window ids change.
    grid = VIT_B
    scheduler = Scheduler(make_rotation("scene-anchored", grid, SERVERS[:3], scheme="columns"), grid, Budget())
    for frame in range(8):
        scheduled = scheduler.schedule(frame, offset=(0.0, 14.0 * frame))  # one window a frame
    assert max(e.run for e in scheduled.exposure.servers.values()) >= 4
    assert max(e.distinct_windows for e in scheduled.exposure.servers.values()) > 9


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"frame_cap": 0.0}, "in \\(0, 1\\]"),
        ({"scene_cap": 1.5}, "in \\(0, 1\\] or 'auto'"),
        ({"scene_cap": "most"}, "or 'auto'"),
        ({"horizon_cap": 0.0}, "horizon_cap"),
        ({"run_cap": 0}, "run_cap"),
        ({"coalition": 0}, "coalition"),
        ({"coalition_cap": 2.0}, "coalition_cap"),
        ({"horizon": 0}, "horizon"),
        ({"on_exceed": "ignore"}, "on_exceed"),
    ],
)
def test_bad_budgets_are_refused(kwargs: dict[str, object], words: str) -> None:
    with pytest.raises(PartitionError, match=words):
        Budget(**kwargs)  # type: ignore[arg-type]


@st.composite
def runs(draw: st.DrawFn, coalition: int = 1) -> dict[str, object]:
    window = draw(st.integers(2, 6))
    low = window if coalition == 1 else 2 * window
    grid = WindowGrid(draw(st.integers(low, 4 * window)), draw(st.integers(low + 1, 4 * window)), window)
    content = (draw(st.integers(1, grid.grid_h)), draw(st.integers(1, grid.grid_w)))
    if len(grid.picture_windows(content)) < coalition + 1:
        content = (grid.grid_h, grid.grid_w)  # at least 2x2 windows: room for coalition + 1 servers
    pictured = len(grid.picture_windows(content))
    servers = max(coalition + 1, min(draw(st.integers(2, 5)), pictured))
    rotation = draw(st.sampled_from(ROTATIONS))
    scheme = draw(st.sampled_from(SCHEMES))
    frames = draw(st.integers(1, 14))
    # Camera motion: a random walk with occasional jumps, in tokens.
    steps = draw(st.lists(st.tuples(st.floats(-3, 3), st.floats(-3, 3)), min_size=frames, max_size=frames))
    offsets, y, x = [], 0.0, 0.0
    for dy, dx in steps:
        offsets.append((y, x))
        y, x = y + dy, x + dx
    budget = Budget(
        frame_cap=draw(st.none() | st.floats(0.05, 1.0)),
        scene_cap=draw(st.none() | st.just("auto") | st.floats(0.05, 1.0)),
        horizon_cap=draw(st.none() | st.floats(0.05, 1.0)),
        run_cap=draw(st.none() | st.integers(1, 4)),
        coalition=coalition,
        coalition_cap=draw(st.none() | st.just("auto") | st.floats(0.05, 1.0)) if coalition > 1 else None,
        horizon=draw(st.integers(1, 6)),
    )
    return {"grid": grid, "servers": tuple(f"w{i}" for i in range(servers)), "rotation": rotation,
            "scheme": scheme, "offsets": offsets, "content": content, "budget": budget}


def longest_run(sent: list[tuple[Assignment, tuple[float, float]]], grid: WindowGrid, server: str,
                content: tuple[int, int]) -> int:
    """Brute force: the longest run of consecutive frames, up to the last, holding one scene cell."""
    held = [scene_cells(grid, a.shares.get(server, ()), o, content) for a, o in sent]
    best = 0
    for cell in held[-1]:
        length = 0
        for cells in reversed(held):
            if cell not in cells:
                break
            length += 1
        best = max(best, length)
    return best


def drive(run: dict[str, object]) -> None:
    """Schedule a run (and the same run with on_exceed="stop"), checking every figure and cap
    against a brute-force recount from what was sent."""
    grid: WindowGrid = run["grid"]  # type: ignore[assignment]
    servers: tuple[str, ...] = run["servers"]  # type: ignore[assignment]
    budget: Budget = run["budget"]  # type: ignore[assignment]
    offsets: list[tuple[float, float]] = run["offsets"]  # type: ignore[assignment]
    content: tuple[int, int] = run["content"]  # type: ignore[assignment]
    policy = make_rotation(str(run["rotation"]), grid, servers, scheme=str(run["scheme"]), secret=b"k")
    twin = make_rotation(str(run["rotation"]), grid, servers, scheme=str(run["scheme"]), secret=b"k")
    scheduler = Scheduler(policy, grid, budget)
    stopper = Scheduler(twin, grid, dataclasses.replace(budget, on_exceed="stop"))
    stopped = False
    sent: list[tuple[Assignment, tuple[float, float]]] = []
    picture = grid.picture_tokens(content)
    total = content[0] * content[1]
    parties = [p for size in range(1, budget.coalition + 1) for p in itertools.combinations(servers, size)]
    for frame, offset in enumerate(offsets):
        scheduled = scheduler.schedule(frame, offset=offset, content=content)
        limits = scheduled.limits
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
        # Coverage, padding on the edge, and nothing handed from one server to another.
        owners = sorted(w for ids in assignment.shares.values() for w in ids)
        assert owners == list(range(grid.num_windows))
        assert set(scheduled.padding) == {w for w in range(grid.num_windows) if not picture[w]}
        assert set(scheduled.padding) <= set(assignment.shares.get(EDGE, ()))
        for server, ids in assignment.shares.items():
            if server != EDGE:
                assert set(ids) <= set(scheduled.proposed.shares[server])
                assert picture[list(ids)].sum() <= limits.frame * total + 1e-9
        # Brute force over the horizon and the whole run.
        window = sent[-budget.horizon :]
        scene = set().union(*(scene_cells(grid, range(grid.num_windows), o, content) for _, o in window))
        whole = set().union(*(scene_cells(grid, range(grid.num_windows), o, content) for _, o in sent))
        for party in parties:
            def cells_of(a: Assignment, o: tuple[float, float]) -> set[tuple[int, int]]:
                return set().union(*(scene_cells(grid, a.shares.get(s, ()), o, content) for s in party))

            now = cells_of(assignment, offset)
            seen = set().union(*(cells_of(a, o) for a, o in window))
            ever = set().union(*(cells_of(a, o) for a, o in sent))
            e = (scheduled.exposure.servers[party[0]] if len(party) == 1
                 else scheduled.exposure.coalitions["+".join(party)])
            assert e.frame_share == pytest.approx(len(now) / total)
            assert e.scene_share == pytest.approx(len(seen) / len(scene))
            assert e.run_scene_share == pytest.approx(len(ever) / len(whole))
            assert e.scene_frames == pytest.approx(len(seen) / total)
            if len(party) > 1:
                if limits.coalition is not None:
                    assert len(ever) / len(whole) <= limits.coalition + 1e-9
                continue
            server = party[0]
            assert isinstance(e, ServerExposure)
            assert e.distinct_windows == len({w for a, _ in window for w in a.shares.get(server, ())})
            assert e.run == longest_run(sent, grid, server, content)
            if limits.scene is not None:
                assert len(ever) / len(whole) <= limits.scene + 1e-9
            if limits.horizon is not None:
                assert len(seen) / total <= limits.horizon + 1e-9
            if limits.run is not None:
                assert e.run <= limits.run


@settings(max_examples=150, deadline=None)
@given(runs())
def test_caps_hold_and_the_ledger_matches_brute_force(run: dict[str, object]) -> None:
    drive(run)


@settings(max_examples=60, deadline=None)
@given(runs(coalition=2))
def test_coalitions_of_two_match_brute_force_and_their_cap_holds(run: dict[str, object]) -> None:
    drive(run)


@settings(max_examples=25, deadline=None)
@given(runs(coalition=3))
def test_coalitions_of_three_match_brute_force_and_their_cap_holds(run: dict[str, object]) -> None:
    drive(run)


def test_a_coalition_sees_the_union_and_its_cap_holds_back_rotation() -> None:
    servers = SERVERS[:3]
    free = Scheduler(make_rotation("round-robin", VIT_B, servers), VIT_B, Budget(coalition=2))
    for frame in range(3):
        scheduled = free.schedule(frame, content=(48, 64))
    pair = scheduled.exposure.coalitions["a:1+b:1"]
    assert pair.run_scene_share == pytest.approx(1.0)  # round-robin: two workers pool the whole scene
    assert set(free.summary()["coalitions"]) == {"a:1+b:1", "a:1+c:1", "b:1+c:1"}
    capped = Scheduler(make_rotation("round-robin", VIT_B, servers), VIT_B, Budget(coalition=2, coalition_cap="auto"))
    for frame in range(6):
        scheduled = capped.schedule(frame, content=(48, 64))
        assert all(c.run_scene_share <= scheduled.limits.coalition + 1e-9 for c in scheduled.exposure.coalitions.values())
    assert scheduled.limits.coalition == pytest.approx(2 * share_bound(VIT_B.picture_tokens((48, 64))[:20], 3))
    with pytest.raises(PartitionError, match="coalition of 3 of 3 workers"):
        Scheduler(make_rotation("fixed", VIT_B, servers), VIT_B, Budget(coalition=3))


def test_two_streams_keep_their_own_rotation_and_share_the_budgets() -> None:
    # Two calls whose frames alternate, over one ledger: pooled rotates within each call's own
    # frame sequence (a shared counter would give each call every other frame: a fixed pool slot).
    servers = ("a:1", "b:1", "c:1", "d:1")
    budget = Budget(horizon_cap=0.6, horizon=10)
    first = Scheduler(make_rotation("pooled", VIT_B, servers), VIT_B, budget, stream="A")
    second = first.for_stream(make_rotation("pooled", VIT_B, servers), "B")
    assert second.ledger is first.ledger
    for frame in range(10):
        for scheduler in (first, second):
            scheduled = scheduler.schedule(frame, content=(48, 64))
            assert scheduled.exposure.stream == scheduler.stream
            for e in scheduled.exposure.servers.values():
                assert e.scene_frames <= 0.6 + 1e-9  # both calls' horizons, together
    summary = first.summary()
    assert summary["streams"] == 2 and summary["frames"] == 20
    assert {s["longest_run"] for s in summary["exposure"].values()} == {1}
    # A server's intake across both calls is what the cap held back: one call alone is under it.
    assert summary["edge_windows"] > 0
    alone = Scheduler(make_rotation("pooled", VIT_B, servers), VIT_B, budget)
    for frame in range(10):
        assert not alone.schedule(frame, content=(48, 64)).to_edge


def test_kept_windows_go_to_the_edge_and_no_server_is_charged_for_them() -> None:
    """``keep``: the windows go to the edge before any budget, whatever the policy proposed; the
    ledger charges no server for them and counts them kept; padding in ``keep`` is just padding."""
    grid = VIT_B
    content = (48, 64)  # windows 20..24 are padding
    plain = Scheduler(make_rotation("fixed", grid, SERVERS[:3], scheme="interleaved"), grid)
    keeping = Scheduler(make_rotation("fixed", grid, SERVERS[:3], scheme="interleaved"), grid)
    keep = {0, 6, 12, 21}
    for frame in range(3):
        sent = plain.schedule(frame, content=content)
        kept = keeping.schedule(frame, content=content, keep=keep)
        assert kept.kept == (0, 6, 12)
        assert set(kept.kept) <= set(kept.assignment.shares[EDGE])
        for name in SERVERS[:3]:
            assert set(kept.assignment.shares[name]) == set(sent.assignment.shares[name]) - keep
            assert kept.exposure.servers[name].windows == len(kept.assignment.shares[name])
        assert any(set(sent.assignment.shares[name]) & keep for name in SERVERS[:3])  # would have been sent
        assert kept.to_json()["kept"] == [0, 6, 12] and sent.to_json()["kept"] == []
    assert keeping.summary()["kept_windows"] == 9 and plain.summary()["kept_windows"] == 0
    assert keeping.summary()["edge_windows"] == 9
    with pytest.raises(PartitionError, match="windows to keep"):
        keeping.schedule(3, content=content, keep={25})
