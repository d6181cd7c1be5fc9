"""Rotation policies: every policy with every scheme gives valid assignments that rotate as promised."""

from __future__ import annotations

import pytest

from pedsam.partitioner.assignment import check_assignment, default_cap
from pedsam.partitioner.errors import PartitionError
from pedsam.partitioner.geometry import WindowGrid
from pedsam.partitioner.rotation import ROTATIONS, SceneAnchoredRotation, make_rotation
from pedsam.partitioner.schemes import SCHEMES, partition

VIT_B = WindowGrid.for_encoder(1024, 16, 14)  # 5x5 windows, last row/column partly padding
TINY = WindowGrid.for_encoder(512, 16, 14)  # 3x3 windows
SERVERS = ("s0:1", "s1:1", "s2:1", "s3:1", "s4:1", "s5:1")


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("name", ROTATIONS)
@pytest.mark.parametrize("grid", [VIT_B, TINY], ids=["vit_b", "tiny"])
def test_every_policy_with_every_scheme_is_a_valid_assignment(grid: WindowGrid, name: str, scheme: str) -> None:
    servers = SERVERS[:4]
    policy = make_rotation(name, grid, servers, scheme=scheme, secret=b"edge secret")
    cap = default_cap(grid.num_windows, policy.slots)
    for frame in range(12):
        assignment = policy.propose(frame, (0.4 * frame, -2.3 * frame))
        assert assignment.frame_index == frame
        assert set(assignment.shares) <= set(servers)
        assert len(assignment.shares) == policy.slots
        check_assignment(assignment, grid.num_windows, cap)


def test_fixed_never_changes_and_equals_the_scheme() -> None:
    policy = make_rotation("fixed", VIT_B, SERVERS[:3], scheme="rows")
    shares = partition(VIT_B, 3, "rows")
    for frame in (0, 1, 17, 500):
        assert dict(policy.propose(frame).shares) == dict(zip(SERVERS[:3], shares))


def test_round_robin_moves_every_server_every_frame_and_covers_all_shares() -> None:
    k = 3
    policy = make_rotation("round-robin", VIT_B, SERVERS[:k], scheme="contiguous")
    shares = set(partition(VIT_B, k, "contiguous"))
    history = [policy.propose(frame) for frame in range(2 * k)]
    for server in SERVERS[:k]:
        got = [a.shares[server] for a in history]
        assert all(a != b for a, b in zip(got, got[1:]))  # never the same share twice in a row
        assert set(got[:k]) == shares  # every share within k frames


def test_keyed_random_depends_on_the_secret_and_reaches_every_share() -> None:
    one = make_rotation("keyed-random", VIT_B, SERVERS[:3], secret=b"alpha")
    again = make_rotation("keyed-random", VIT_B, SERVERS[:3], secret=b"alpha")
    other = make_rotation("keyed-random", VIT_B, SERVERS[:3], secret=b"beta")
    frames = range(40)
    mine = [dict(one.propose(f).shares) for f in frames]
    assert mine == [dict(again.propose(f).shares) for f in frames]  # the edge can replay it
    assert mine != [dict(other.propose(f).shares) for f in frames]  # ... nobody else can
    shares = set(partition(VIT_B, 3, "contiguous"))
    for server in SERVERS[:3]:
        assert {m[server] for m in mine} == shares
    # Not a fixed cycle: the sequence of one server's shares is not periodic with period 3.
    seq = [m[SERVERS[0]] for m in mine]
    assert any(seq[i] != seq[i + 3] for i in range(len(seq) - 3))


def test_keyed_random_with_the_random_scheme_redraws_windows_per_frame() -> None:
    policy = make_rotation("keyed-random", VIT_B, SERVERS[:3], scheme="random", secret=b"s")
    windows = {frozenset(policy.propose(f).shares.values()) for f in range(5)}
    assert len(windows) == 5


def test_keyed_random_with_fewer_slots_picks_servers_per_frame() -> None:
    policy = make_rotation("keyed-random", VIT_B, SERVERS, secret=b"s", slots=3)
    active = [frozenset(policy.propose(f).shares) for f in range(30)]
    assert all(len(a) == 3 for a in active)
    assert set().union(*active) == set(SERVERS)
    assert len(set(active)) > 3


def test_pooled_server_sees_one_slot_every_pool_size_frames() -> None:
    policy = make_rotation("pooled", VIT_B, SERVERS, scheme="interleaved")  # M=6 -> k=3, pools of 2
    assert policy.slots == 3
    shares = partition(VIT_B, 3, "interleaved")
    got: dict[str, list[tuple[int, tuple[int, ...]]]] = {s: [] for s in SERVERS}
    for frame in range(12):
        for server, ids in policy.propose(frame).shares.items():
            got[server].append((frame, ids))
    for index, server in enumerate(SERVERS):
        frames = [f for f, _ in got[server]]
        assert {ids for _, ids in got[server]} == {shares[index % 3]}  # one slot, always
        assert frames == list(range(index // 3, 12, 2))  # every second frame


def test_scene_anchored_follows_the_scene() -> None:
    grid = VIT_B
    size = grid.window_size
    policy = make_rotation("scene-anchored", grid, SERVERS[:3], scheme="contiguous")
    fixed = make_rotation("fixed", grid, SERVERS[:3], scheme="contiguous")
    assert isinstance(policy, SceneAnchoredRotation)
    frame0 = fixed.propose(0)
    # A still or jittering camera (under half a window): exactly fixed.
    for jitter in [(0.0, 0.0), (3.0, -6.9), (-6.9, 6.9)]:
        assert dict(policy.propose(1, jitter).shares) == dict(frame0.shares)
    # The camera moved right by one window and down by two: image window (r, c) shows the
    # scene window (r + 2, c + 1) showed on frame 0, so it goes to that window's server.
    moved = policy.propose(2, (2.0 * size + 3, 1.0 * size - 4))
    for window in grid.windows:
        if window.row + 2 < grid.rows and window.col + 1 < grid.cols:
            assert moved.executor_of(window.id) == frame0.executor_of(window.id + 2 * grid.cols + 1)
    # Every frame is a permutation of the frame-0 shares: the same share sizes.
    for offset in [(5.0, 9.0), (-30.0, 20.0), (2.0, -300.0)]:
        sizes = sorted(len(ids) for ids in policy.propose(3, offset).shares.values())
        assert sizes == sorted(len(ids) for ids in frame0.shares.values())


@pytest.mark.parametrize(
    ("name", "kwargs", "words"),
    [
        ("spin", {}, "unknown rotation policy"),
        ("fixed", {"slots": 2}, "--slots applies to pooled and keyed-random"),
        ("pooled", {"slots": 9}, "needs at least 9 servers"),
        ("keyed-random", {"secret": None}, "needs the edge's secret"),
        ("fixed", {"scheme": "random", "secret": None}, "needs the edge's secret"),
        ("pooled", {"slots": 0}, "positive int"),
    ],
)
def test_bad_requests_say_what_to_change(name: str, kwargs: dict[str, object], words: str) -> None:
    args: dict[str, object] = {"secret": b"k", **kwargs}
    with pytest.raises(PartitionError, match=words):
        make_rotation(name, VIT_B, SERVERS[:4], **args)  # type: ignore[arg-type]


def test_server_lists_are_checked() -> None:
    with pytest.raises(PartitionError, match="listed twice"):
        make_rotation("fixed", VIT_B, ["a", "a"])
    with pytest.raises(PartitionError, match="names the edge"):
        make_rotation("fixed", VIT_B, ["a", "edge"])
    with pytest.raises(PartitionError, match="single server"):
        make_rotation("keyed-random", VIT_B, ["a", "b"], secret=b"k", slots=1)
    single = make_rotation("keyed-random", VIT_B, ["a", "b"], secret=b"k", slots=1, allow_single=True)
    assert len(single.propose(0).shares) == 1
