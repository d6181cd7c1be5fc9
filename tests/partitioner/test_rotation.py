"""Rotation policies: every policy with every scheme gives valid assignments that rotate as promised."""

from __future__ import annotations

import pytest

from pedsam.partitioner.assignment import EDGE, Assignment, check_assignment
from pedsam.partitioner.balance import share_bound
from pedsam.partitioner.errors import PartitionError
from pedsam.partitioner.geometry import WindowGrid
from pedsam.partitioner.rotation import ROTATIONS, AdaptiveRotation, SceneAnchoredRotation, make_rotation
from pedsam.partitioner.schemes import SCHEMES, partition

VIT_B = WindowGrid.for_encoder(1024, 16, 14)  # 5x5 windows, last row/column partly padding
TINY = WindowGrid.for_encoder(512, 16, 14)  # 3x3 windows
SERVERS = ("s0:1", "s1:1", "s2:1", "s3:1", "s4:1", "s5:1")


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("name", ROTATIONS)
@pytest.mark.parametrize(("grid", "content"), [(VIT_B, None), (VIT_B, (48, 64)), (VIT_B, (36, 64)), (TINY, None)],
                         ids=["vit_b", "vit_b-4:3", "vit_b-16:9", "tiny"])
def test_every_policy_with_every_scheme_is_a_valid_assignment(
    grid: WindowGrid, content: tuple[int, int] | None, name: str, scheme: str
) -> None:
    servers = SERVERS[:4]
    policy = make_rotation(name, grid, servers, scheme=scheme, secret=b"edge secret")
    picture = grid.picture_tokens(content)
    padding = tuple(w for w in range(grid.num_windows) if not picture[w])
    # Every share within the schemes' bound; scene-anchored rearranges windows of unequal picture.
    cap = 1.0 if name == "scene-anchored" else share_bound(picture[picture > 0], policy.slots)
    for frame in range(12):
        assignment = policy.propose(frame, (0.4 * frame, -2.3 * frame), content)
        assert assignment.frame_index == frame
        assert set(assignment.shares) <= set(servers)
        assert len(assignment.shares) == policy.slots
        check_assignment(Assignment(frame, {**assignment.shares, EDGE: padding}), picture, cap)


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
    one = make_rotation("keyed-random", VIT_B, SERVERS[:3], scheme="contiguous", secret=b"alpha")
    again = make_rotation("keyed-random", VIT_B, SERVERS[:3], scheme="contiguous", secret=b"alpha")
    other = make_rotation("keyed-random", VIT_B, SERVERS[:3], scheme="contiguous", secret=b"beta")
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


def test_scene_anchored_wraps_over_the_picture_only() -> None:
    # A 16:9 frame: 3 rows of picture windows; the lattice wraps with that period, never onto
    # the padding rows.
    policy = make_rotation("scene-anchored", VIT_B, SERVERS[:3], scheme="columns")
    content = (36, 64)
    frame0 = policy.propose(0, (0.0, 0.0), content)
    for offset in [(14.0, 0.0), (28.0, 14.0), (-14.0, 42.0)]:
        moved = policy.propose(1, offset, content)
        assert sorted(w for ids in moved.shares.values() for w in ids) == list(range(15))
        dr = round(offset[0] / 14)
        dc = round(offset[1] / 14)
        for w in range(15):
            r, c = divmod(w, 5)
            assert moved.executor_of(w) == frame0.executor_of(((r + dr) % 3) * 5 + (c + dc) % 5)


def pan(policy: AdaptiveRotation, steps: list[tuple[float, float]], content: tuple[int, int] = (48, 64)) -> list[str]:
    """Feed camera offsets (tokens) in order; the policy's mode after each."""
    modes = []
    for frame, offset in enumerate(steps):
        policy.propose(frame, offset, content)
        modes.append(policy.mode)
    return modes


def test_adaptive_is_fixed_over_the_scheme_while_the_camera_is_still() -> None:
    policy = make_rotation("adaptive", VIT_B, SERVERS[:3], scheme="interleaved")
    assert isinstance(policy, AdaptiveRotation)
    shares = partition(VIT_B, 3, "interleaved", content=(48, 64))
    jitter = [(((-1) ** f) * 3.0, 0.5 * (f % 5)) for f in range(60)]  # a handheld camera, a few tokens
    for frame, offset in enumerate(jitter):
        assert dict(policy.propose(frame, offset, (48, 64)).shares) == dict(zip(SERVERS[:3], shares))
        assert policy.mode == "still"


def test_adaptive_turns_to_bands_along_the_travel_and_back() -> None:
    policy = make_rotation("adaptive", VIT_B, SERVERS[:3], scheme="interleaved")
    assert isinstance(policy, AdaptiveRotation)
    sideways = [(0.0, 1.2 * f) for f in range(40)]  # 1.2 tokens a frame to the right
    modes = pan(policy, sideways)
    assert modes[:12] == ["still"] * 12 and set(modes[12:]) == {"travel-rows"}  # a window's width: 14 tokens
    assert dict(policy.propose(40, (0.0, 48.0), (48, 64)).shares) == dict(
        zip(SERVERS[:3], partition(VIT_B, 3, "rows", content=(48, 64))))
    # It stops: still again once it moved under a quarter window over 25 frames.
    modes = pan(policy, [(0.0, 48.0)] * 30)
    assert modes[:20] == ["travel-rows"] * 20 and modes[-1] == "still"
    # Up and down: columns.
    modes = pan(policy, [(48.0 + 1.5 * f, 48.0) for f in range(20)])
    assert modes[-1] == "travel-columns"


def test_adaptive_turns_its_bands_when_the_travel_turns() -> None:
    policy = make_rotation("adaptive", VIT_B, SERVERS[:3])
    assert isinstance(policy, AdaptiveRotation)
    offsets = [(0.0, 1.5 * f) for f in range(20)] + [(1.5 * f, 30.0) for f in range(1, 40)]
    modes = pan(policy, offsets)
    assert "travel-rows" in modes and modes[-1] == "travel-columns"


def test_a_cut_is_a_new_still_scene_for_adaptive() -> None:
    policy = make_rotation("adaptive", VIT_B, SERVERS[:3])
    assert isinstance(policy, AdaptiveRotation)
    modes = pan(policy, [(0.0, 0.0), (0.0, 4 * 64.0), (0.0, 4 * 64.0 + 1)])  # the estimator's cut: 4 widths
    assert modes == ["still", "still", "still"]


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
