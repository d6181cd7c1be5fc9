"""partitioner.scheduler under failover: down servers' windows go to standbys within budget or to
the edge, never to an active server, never past a cap."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pedsam.partitioner import EDGE, Budget, Scheduler, WindowGrid, check_assignment
from pedsam.partitioner.errors import FailoverError, PartitionError
from pedsam.partitioner.rotation import ROTATIONS, make_rotation

VIT_B = WindowGrid.for_encoder(1024, 16, 14)  # 25 windows
ACTIVE = ("a:1", "b:1", "c:1")
STANDBY = ("s:1", "t:1")


def scheduler(policy: str = "fixed", *, failover: str = "edge", budget: Budget | None = None,
              standby: tuple[str, ...] = STANDBY) -> Scheduler:
    rotation = make_rotation(policy, VIT_B, ACTIVE, scheme="contiguous", secret=b"k")
    return Scheduler(rotation, VIT_B, budget, standby=standby, failover=failover)


def test_edge_failover_keeps_other_servers_shares() -> None:
    s = scheduler(failover="edge")
    frame = s.schedule(0, down={"b:1"})
    proposed = frame.proposed.shares
    assert frame.assignment.shares["a:1"] == proposed["a:1"]
    assert frame.assignment.shares["c:1"] == proposed["c:1"]
    assert "b:1" not in frame.assignment.shares
    assert frame.assignment.shares[EDGE] == proposed["b:1"]
    assert dict(frame.failover) == {"b:1": {EDGE: proposed["b:1"]}}
    assert frame.exposure.servers["b:1"].windows == 0
    assert frame.to_json()["failover"] == {"b:1": {EDGE: list(proposed["b:1"])}}


def test_standby_takes_a_down_servers_share() -> None:
    s = scheduler(failover="standby")
    frame = s.schedule(0, down={"a:1"})
    proposed = frame.proposed.shares["a:1"]
    assert frame.assignment.shares["s:1"] == proposed
    assert EDGE not in frame.assignment.shares
    assert frame.exposure.servers["s:1"].windows == len(proposed)
    # Two servers down: each standby takes at most one share's worth (the per-frame cap).
    frame = s.schedule(1, down={"a:1", "b:1"})
    for standby in ("s:1", "t:1"):
        assert frame.exposure.servers[standby].frame_share <= frame.limits.frame + 1e-9
    assert set(frame.assignment.shares["s:1"]) | set(frame.assignment.shares["t:1"]) == set(
        frame.proposed.shares["a:1"]) | set(frame.proposed.shares["b:1"])


def test_standby_budget_sends_the_rest_to_the_edge() -> None:
    # A standby may see at most 20% of the scene: it cannot take a whole third of the frame.
    s = scheduler(failover="standby", budget=Budget(scene_cap=0.2, horizon=10), standby=("s:1",))
    frame = s.schedule(0, down={"c:1"})
    taken = frame.assignment.shares.get("s:1", ())
    assert 0 < len(taken) < len(frame.proposed.shares["c:1"])
    assert frame.exposure.servers["s:1"].run_scene_share <= 0.2 + 1e-9
    moved = frame.failover["c:1"]
    assert moved["s:1"] == taken and set(moved[EDGE]) <= set(frame.assignment.shares[EDGE])
    assert sorted(taken + moved[EDGE]) == sorted(frame.proposed.shares["c:1"])


def test_stop_raises_and_sends_nothing() -> None:
    s = scheduler(failover="stop")
    s.schedule(0)
    with pytest.raises(FailoverError, match="worker a:1 is down"):
        s.schedule(1, down={"a:1"})
    assert s.ledger.frames == 1


def test_standby_must_not_be_active_or_the_edge() -> None:
    with pytest.raises(PartitionError, match="standby"):
        scheduler(standby=("a:1",))
    with pytest.raises(PartitionError, match="standby"):
        scheduler(standby=(EDGE,))
    with pytest.raises(PartitionError, match="failover"):
        scheduler(failover="elsewhere")


@settings(max_examples=150, deadline=None)
@given(
    policy=st.sampled_from(ROTATIONS),
    failover=st.sampled_from(["edge", "standby"]),
    downs=st.lists(st.sets(st.sampled_from(ACTIVE + STANDBY)), min_size=1, max_size=8),
    scene_cap=st.one_of(st.none(), st.just("auto"), st.floats(0.1, 1.0)),
    frame_cap=st.one_of(st.none(), st.floats(0.1, 1.0)),
    content=st.sampled_from([None, (48, 64), (36, 64)]),
)
def test_failover_never_breaks_coverage_caps_or_budgets(
    policy: str, failover: str, downs: list[set[str]], scene_cap: float | str | None, frame_cap: float | None,
    content: tuple[int, int] | None,
) -> None:
    s = scheduler(policy, failover=failover, budget=Budget(scene_cap=scene_cap, frame_cap=frame_cap, horizon=4))
    for index, down in enumerate(downs):
        frame = s.schedule(index, down=down, offset=(index * 3.0, -index * 2.0), content=content)
        shares = frame.assignment.shares
        check_assignment(frame.assignment, frame.picture, frame.limits.frame)
        for server, ids in shares.items():
            if server == EDGE:
                continue
            assert server not in down  # a down server gets nothing
            if server in ACTIVE:  # an active server never takes more than the policy gave it
                assert set(ids) <= set(frame.proposed.shares.get(server, ()))
            else:
                assert failover == "standby"
        for name, exposure in frame.exposure.servers.items():
            assert exposure.frame_share <= frame.limits.frame + 1e-9
            if frame_cap is not None:
                assert exposure.frame_share <= frame_cap + 1e-9
            if frame.limits.scene is not None:
                assert exposure.run_scene_share <= frame.limits.scene + 1e-9
