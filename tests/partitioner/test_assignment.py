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
    check_assignment(assignment, VIT_B.picture_tokens())


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


@pytest.mark.parametrize(("windows", "servers", "cap"), [(25, 1, 1.04), (25, 2, 0.54), (25, 3, 1 / 3 + 0.04), (4, 2, 0.75)])
def test_default_cap_is_a_share_plus_one_window(windows: int, servers: int, cap: float) -> None:
    assert default_cap(windows, servers) == pytest.approx(cap)


def test_default_cap_counts_picture_not_windows() -> None:
    # A 4:3 frame at ViT-B: 3072 picture tokens, the largest window holds 196 of them.
    picture = VIT_B.picture_tokens((48, 64))
    assert default_cap(picture, 3) == pytest.approx(1 / 3 + 196 / 3072)
    assert default_cap([0, 0], 2) == 0.5


def test_default_cap_needs_a_server() -> None:
    with pytest.raises(AssignmentError, match="at least one server"):
        default_cap(25, 0)


@pytest.mark.parametrize("scheme", SCHEMES)
@settings(max_examples=30, deadline=None)
@given(rows=st.integers(1, 12), cols=st.integers(1, 12), data=st.data())
def test_every_partition_passes_the_default_check(scheme: str, rows: int, cols: int, data: st.DataObject) -> None:
    grid = WindowGrid(rows * 3, cols * 3, 3)
    content = (data.draw(st.integers(1, grid.grid_h)), data.draw(st.integers(1, grid.grid_w)))
    picture = grid.picture_tokens(content)
    k = data.draw(st.integers(1, int((picture > 0).sum())))
    servers = [f"s{i}:1" for i in range(k)]
    assignment = fixed_assignment(0, partition(grid, k, scheme, content=content, secret=b"k", allow_single=True), servers)
    padding = [w for w in range(grid.num_windows) if not picture[w]]
    check_assignment(Assignment(0, {**assignment.shares, EDGE: tuple(padding)}), picture)


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(2, 12), cols=st.integers(3, 12), data=st.data())
def test_moving_windows_onto_the_fullest_server_is_caught(rows: int, cols: int, data: st.DataObject) -> None:
    grid = WindowGrid(rows, cols, 1)
    n = grid.num_windows
    k = data.draw(st.integers(2, n // 3))
    shares = [list(s) for s in partition(grid, k, "rows")]
    full = max(range(k), key=lambda i: len(shares[i]))
    cap = 1 / k + 1 / n
    while len(shares[full]) * k <= n + k:  # take windows from the others until it is over 1/k + 1/n
        donor = next(i for i in range(k) if i != full and len(shares[i]) > 1)
        shares[full].append(shares[donor].pop())
    assignment = Assignment(0, {f"s{i}": tuple(s) for i, s in enumerate(shares)})
    with pytest.raises(AssignmentError, match=rf"server s{full} got [0-9.]+ of the picture \({len(shares[full])} of {n} "
                                              rf"windows\), over the per-frame cap of {cap:.3f}"):
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
    over = Assignment(0, {"a": (0, 1, 2, 3, 4), "b": (5,)})
    with pytest.raises(AssignmentError, match=r"server a got 0.833 of the picture \(5 of 6 windows\), over the "
                                              r"per-frame cap of 0.667"):
        check_assignment(over, 6)
    check_assignment(over, 6, cap=0.9)
    even = Assignment(0, {"a": (0, 1, 2), "b": (3, 4, 5)})
    check_assignment(even, 6, cap=0.5)
    with pytest.raises(AssignmentError, match="over the per-frame cap of 0.400"):
        check_assignment(even, 6, cap=0.4)


def test_the_cap_counts_picture_tokens_not_windows() -> None:
    # Three full windows and six slivers of picture: fewer windows can be more of the frame.
    picture = [6, 6, 6, 1, 1, 1, 1, 1, 1]
    check_assignment(Assignment(0, {"a": (0, 3, 4, 5), "b": (1, 2, 6, 7, 8)}), picture)
    with pytest.raises(AssignmentError, match=r"server a got 0.792 of the picture \(4 of 9 windows\), over the "
                                              r"per-frame cap of 0.750"):
        check_assignment(Assignment(0, {"a": (0, 1, 2, 3), "b": (4, 5, 6, 7, 8)}), picture)


def test_padding_stays_on_the_edge() -> None:
    picture = [5, 5, 0, 0]
    check_assignment(Assignment(0, {"a": (0,), "b": (1,), EDGE: (2, 3)}), picture)
    with pytest.raises(AssignmentError, match=r"server b got windows \[2\], which are pure padding"):
        check_assignment(Assignment(0, {"a": (0,), "b": (1, 2), EDGE: (3,)}), picture)


def test_one_server_with_every_window_is_refused_even_under_a_loose_cap() -> None:
    whole = Assignment(0, {"a": (0, 1, 2, 3), "b": ()})
    with pytest.raises(AssignmentError, match="server a got every picture window of the frame"):
        check_assignment(whole, 4, cap=1.0)
    # One window, two servers: whoever gets it sees the whole frame; the edge must take it.
    with pytest.raises(AssignmentError, match="got every picture window"):
        check_assignment(Assignment(0, {"a": (0,), "b": ()}), 1, cap=1.0)
    check_assignment(Assignment(0, {"a": (), "b": (), EDGE: (0,)}), 1)
    # Every picture window is every window that counts: padding does not hide a whole frame.
    with pytest.raises(AssignmentError, match="got every picture window"):
        check_assignment(Assignment(0, {"a": (0, 1), "b": (), EDGE: (2,)}), [3, 3, 0], cap=1.0)


def test_a_single_server_may_hold_everything_when_it_is_the_only_one() -> None:
    check_assignment(Assignment(0, {"a": (0, 1, 2, 3)}), 4)


def test_edge_windows_are_uncapped_and_do_not_count_as_a_server() -> None:
    # Two servers: cap 1/2 + 1/6 of the picture each; the edge takes the rest without a cap.
    check_assignment(Assignment(0, {"a": (0,), "b": (1,), EDGE: (2, 3, 4, 5)}), 6)
    check_assignment(Assignment(0, {EDGE: (0, 1, 2)}), 3)
    with pytest.raises(AssignmentError, match=r"server a got 0.833 of the picture \(5 of 6 windows\)"):
        check_assignment(Assignment(0, {"a": (0, 1, 2, 3, 4), "b": (), EDGE: (5,)}), 6)


@pytest.mark.parametrize("cap", [0.0, -0.5, 1.5])
def test_a_cap_outside_zero_to_one_is_refused(cap: float) -> None:
    with pytest.raises(AssignmentError, match=r"share of the picture in \(0, 1\]"):
        check_assignment(Assignment(0, {"a": (0,), "b": (1,)}), 2, cap=cap)


def test_executor_names_must_be_strings() -> None:
    with pytest.raises(AssignmentError, match="non-empty strings"):
        Assignment(0, {"": (0,)})
