"""The worst worker is one worker over the whole run, not the best worker of each frame."""

from __future__ import annotations

from pedsam.stream.privacy.parties import Party, figure, parties_of


def test_worst_worker_is_one_worker_over_the_run() -> None:
    # s0 sees most on frame 0, s1 on every later frame: the best of each frame would claim
    # (0.9 + 0.5 + 0.5) / 3 = 0.63 and 1 + 2 + 2 = 5 of 6 people, which no single worker saw.
    s0 = Party(("s0",), coverage=[0.9, 0.1, 0.1], panorama=[0.3, 0.3, 0.35], people=[1, 0, 0])
    s1 = Party(("s1",), coverage=[0.2, 0.5, 0.5], panorama=[0.2, 0.4, 0.5], people=[0, 2, 2])
    people_reference = [1, 2, 3]
    worst = figure([s0, s1], people_reference, [0, 0, 0], seed=0)
    assert worst is not None
    assert worst["coverage"]["party"] == "s1" and worst["coverage"]["mean"] == 0.4
    assert worst["panorama"]["party"] == "s1" and worst["panorama"]["share"] == 0.5
    assert worst["people"]["party"] == "s1" and worst["people"]["recall"] == round(4 / 6, 4)
    assert worst["people"]["reference"] == 6 and worst["people"]["frames"] == 3
    low, high = worst["people"]["ci"]
    assert low <= 4 / 6 <= high
    assert worst["faces"]["recall"] is None and worst["faces"]["ci"] is None and worst["faces"]["reference"] == 0


def test_coalitions_are_the_sets_of_two_up_to_t_but_never_all() -> None:
    singles, groups = parties_of(("s0", "s1", "s2"), 2)
    assert [p.name for p in singles] == ["s0", "s1", "s2"]
    assert [p.name for p in groups] == ["s0+s1", "s0+s2", "s1+s2"]
    assert parties_of(("s0", "s1", "s2"), 3)[1] == groups  # all three together is the whole frame
    assert parties_of(("s0", "s1"), 2)[1] == [] and parties_of(("s0", "s1", "s2"), 0)[1] == []
    assert figure([], [1], [1], seed=0) is None
