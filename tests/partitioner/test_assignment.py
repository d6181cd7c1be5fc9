"""partitioner.assignment: per-frame window -> executor maps and the privacy checks."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pedsam.partitioner import (
    EDGE,
    SCHEMES,
    Assignment,
    AssignmentError,
    WindowGrid,
    check_assignment,
    default_cap,
    fixed_assignment,
    partition,
)

SERVERS = ("10.0.0.1:50051", "10.0.0.2:50051", "10.0.0.3:50051")
VIT_B = WindowGrid.for_encoder(1024, 16, 14)


def test_fixed_assignment_gives_share_s_to_server_s() -> None:
    shares = partition(VIT_B, 3)
    assignment = fixed_assignment(4, shares, SERVERS)
    assert assignment.frame_index == 4
    assert list(assignment.shares) == list(SERVERS)
    assert tuple(assignment.shares.values()) == shares
    for server, share in zip(SERVERS, shares):
        assert all(assignment.executor_of(wid) == server for wid in share)
    check_assignment(assignment, VIT_B.num_windows)


def test_shares_are_read_only_and_detached_from_the_input() -> None:
    source = {"a:1": [0, 1], "b:1": [2, 3]}
    assignment = Assignment(frame_index=0, shares=source)  # type: ignore[arg-type]
    source["a:1"].append(9)
    source["c:1"] = [5]
    assert dict(assignment.shares) == {"a:1": (0, 1), "b:1": (2, 3)}
    with pytest.raises(TypeError):
        assignment.shares["a:1"] = (7,)  # type: ignore[index]
    assert assignment == Assignment(0, {"a:1": (0, 1), "b:1": (2, 3)})
    assert hash(assignment) == hash(Assignment(0, {"a:1": (0, 1), "b:1": (2, 3)}))


def test_to_json_is_the_audit_record() -> None:
    assignment = fixed_assignment(7, [(0, 2), (1, 3)], ["s1", "s2"])
    record = assignment.to_json()
    assert record == {"frame": 7, "shares": {"s1": [0, 2], "s2": [1, 3]}}
    assert json.loads(json.dumps(record)) == record


def test_executor_of_unassigned_window() -> None:
    with pytest.raises(AssignmentError, match="window 5 is not assigned to any executor in frame 2"):
        fixed_assignment(2, [(0, 1)], ["s1"]).executor_of(5)


def test_fixed_assignment_errors() -> None:
    with pytest.raises(AssignmentError, match="3 shares for 2 servers"):
        fixed_assignment(0, partition(VIT_B, 3), SERVERS[:2])
    with pytest.raises(AssignmentError, match="listed twice"):
        fixed_assignment(0, partition(VIT_B, 2), ["s1", "s1"])
    with pytest.raises(AssignmentError, match="names the edge itself"):
        fixed_assignment(0, partition(VIT_B, 2), ["s1", EDGE])


@pytest.mark.parametrize(("windows", "servers", "cap"), [(25, 1, 25), (25, 2, 13), (25, 3, 9), (25, 5, 5), (25, 25, 1), (0, 3, 0)])
def test_default_cap_is_ceil(windows: int, servers: int, cap: int) -> None:
    assert default_cap(windows, servers) == cap


def test_default_cap_needs_a_server() -> None:
    with pytest.raises(AssignmentError, match="at least one server"):
        default_cap(25, 0)


@pytest.mark.parametrize("scheme", SCHEMES)
@settings(max_examples=30, deadline=None)
@given(rows=st.integers(1, 12), cols=st.integers(1, 12), data=st.data())
def test_every_partition_passes_the_default_check(scheme: str, rows: int, cols: int, data: st.DataObject) -> None:
    grid = WindowGrid(rows, cols, 1)
    k = data.draw(st.integers(1, grid.num_windows))
    servers = [f"s{i}:1" for i in range(k)]
    assignment = fixed_assignment(0, partition(grid, k, scheme, secret=b"k", allow_single=True), servers)
    check_assignment(assignment, grid.num_windows)


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 12), cols=st.integers(2, 12), data=st.data())
def test_moving_a_window_onto_a_full_server_is_caught(rows: int, cols: int, data: st.DataObject) -> None:
    grid = WindowGrid(rows, cols, 1)
    n = grid.num_windows
    k = data.draw(st.integers(2, n))
    shares = [list(s) for s in partition(grid, k, "rows")]
    full = next(i for i, s in enumerate(shares) if len(s) == -(-n // k))
    donor = next(i for i in range(k) if i != full)
    shares[full].append(shares[donor].pop())
    assignment = Assignment(0, {f"s{i}": tuple(s) for i, s in enumerate(shares)})
    with pytest.raises(AssignmentError, match=rf"server s{full} got {-(-n // k) + 1} of {n} windows, over the per-frame cap"):
        check_assignment(assignment, n)


def test_window_given_twice() -> None:
    with pytest.raises(AssignmentError, match="frame 3: window 2 given to b and a"):
        check_assignment(Assignment(3, {"a": (0, 1, 2), "b": (2, 3)}), 4)
    with pytest.raises(AssignmentError, match="window 1 given to a twice"):
        check_assignment(Assignment(3, {"a": (0, 1, 1), "b": (2, 3)}), 4)


def test_window_missing() -> None:
    with pytest.raises(AssignmentError, match=r"windows \[2, 5\] are assigned to no executor"):
        check_assignment(Assignment(0, {"a": (0, 1), "b": (3, 4)}), 6)


@pytest.mark.parametrize("bad", [-1, 4, 100])
def test_window_out_of_range(bad: int) -> None:
    with pytest.raises(AssignmentError, match=rf"got window {bad}, but ids are 0\.\.3"):
        check_assignment(Assignment(0, {"a": (0, 1), "b": (2, 3, bad)}), 4)


def test_over_the_cap() -> None:
    over = Assignment(0, {"a": (0, 1, 2), "b": (3,)})
    with pytest.raises(AssignmentError, match="server a got 3 of 4 windows, over the per-frame cap of 2"):
        check_assignment(over, 4)
    check_assignment(over, 4, max_per_server=3)
    with pytest.raises(AssignmentError, match="over the per-frame cap of 1"):
        check_assignment(Assignment(0, {"a": (0, 1), "b": (2, 3)}), 4, max_per_server=1)


def test_one_server_with_every_window_is_refused_even_under_a_loose_cap() -> None:
    whole = Assignment(0, {"a": (0, 1, 2, 3), "b": ()})
    with pytest.raises(AssignmentError, match="server a got every window of the frame"):
        check_assignment(whole, 4, max_per_server=100)
    # One window, two servers: whoever gets it sees the whole frame; the edge must take it.
    with pytest.raises(AssignmentError, match="got every window"):
        check_assignment(Assignment(0, {"a": (0,), "b": ()}), 1)
    check_assignment(Assignment(0, {"a": (), "b": (), EDGE: (0,)}), 1)


def test_a_single_server_may_hold_everything_when_it_is_the_only_one() -> None:
    check_assignment(Assignment(0, {"a": (0, 1, 2, 3)}), 4)


def test_edge_windows_are_uncapped_and_do_not_count_as_a_server() -> None:
    # Two servers: cap ceil(6 / 2) = 3 each; the edge takes the rest without a cap.
    check_assignment(Assignment(0, {"a": (0,), "b": (1,), EDGE: (2, 3, 4, 5)}), 6)
    check_assignment(Assignment(0, {EDGE: (0, 1, 2)}), 3)
    with pytest.raises(AssignmentError, match="server a got 4 of 6 windows, over the per-frame cap of 3"):
        check_assignment(Assignment(0, {"a": (0, 1, 2, 3), "b": (4,), EDGE: (5,)}), 6)


def test_negative_cap_is_refused() -> None:
    with pytest.raises(AssignmentError, match="max_per_server must be >= 0"):
        check_assignment(Assignment(0, {"a": (0,), "b": (1,)}), 2, max_per_server=-1)


def test_executor_names_must_be_strings() -> None:
    with pytest.raises(AssignmentError, match="non-empty strings"):
        Assignment(0, {"": (0,)})
