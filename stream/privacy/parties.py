"""Who attacks: each worker of a policy alone, and each coalition of up to ``t`` of them.

A :class:`Party` collects one attacker's measurements frame by frame (coverage, PSNR and SSIM of
its view of the current frame, detections it matched, its panorama so far). At the end of a video
:func:`worst` picks, per figure, the *one* party with the highest whole-run figure (the same party
on every frame of the run) and :func:`figure` states it with its 95% interval (bootstrap over
frames, :mod:`pedsam.stream.privacy.intervals`). Picking the best party separately on every frame
would describe an attacker who is a different worker on each frame, which none is.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pedsam.stream.privacy.intervals import ratio_interval

__all__ = ["Party", "figure", "parties_of", "worst"]


@dataclass
class Party:
    """One attacker: a worker (one member) or a coalition, and its measurements in frame order.

    ``coverage``/``psnr``/``ssim``/``panorama`` have one entry per evaluated frame,
    ``people``/``faces`` (reference boxes matched) one per detection frame.
    """

    members: tuple[str, ...]
    coverage: list[float] = field(default_factory=list)
    psnr: list[float | None] = field(default_factory=list)
    ssim: list[float | None] = field(default_factory=list)
    panorama: list[float] = field(default_factory=list)
    people: list[int] = field(default_factory=list)
    faces: list[int] = field(default_factory=list)
    view: np.ndarray | None = None  # its view of the last evaluated frame, (H, W, 3) uint8 RGB

    @property
    def name(self) -> str:
        return "+".join(self.members)


def parties_of(servers: Sequence[str], coalitions: int) -> tuple[list[Party], list[Party]]:
    """The single workers, and every coalition of 2 up to ``coalitions`` of them (fewer than all)."""
    singles = [Party((s,)) for s in servers]
    groups = [Party(c) for size in range(2, min(coalitions, len(servers) - 1) + 1)
              for c in itertools.combinations(servers, size)]
    return singles, groups


def worst(parties: Sequence[Party], key: Callable[[Party], float]) -> Party | None:
    """The party with the highest whole-run ``key`` (the first of equals), None if there is none."""
    return max(parties, key=key, default=None)


def _mean(values: Sequence[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return round(statistics.fmean(defined), 4) if defined else None


def _ratio(hit: Sequence[int], total: Sequence[int]) -> float | None:
    return round(sum(hit) / sum(total), 4) if sum(total) else None


def _recall(party: Party, found: Sequence[int], reference: Sequence[int], seed: int) -> dict[str, Any]:
    """One detector's figure: ``party``'s matches ``found`` of ``reference`` per detection frame."""
    return {
        "party": party.name,
        "recall": _ratio(found, reference),
        "ci": ratio_interval(found, reference, seed=seed),
        "reference": int(sum(reference)),
        "frames": len(reference),
    }


def figure(parties: Sequence[Party], people_reference: Sequence[int], faces_reference: Sequence[int],
           seed: int) -> dict[str, Any] | None:
    """The worst of ``parties`` on each attack, one fixed party per figure, with 95% intervals.

    ``people_reference``/``faces_reference``: reference detections per detection frame (on the
    true frames). Keys: ``coverage`` (of the current frame, mean over evaluated frames; PSNR and
    SSIM are that party's), ``panorama`` (share of the scene the party's mosaic holds at the end
    of the run), ``people`` and ``faces`` (recall); each names its party.
    """
    if not parties:
        return None
    by_cover = worst(parties, lambda p: statistics.fmean(p.coverage) if p.coverage else 0.0)
    by_pano = worst(parties, lambda p: p.panorama[-1] if p.panorama else 0.0)
    by_people = worst(parties, lambda p: sum(p.people))
    by_faces = worst(parties, lambda p: sum(p.faces))
    assert by_cover and by_pano and by_people and by_faces
    return {
        "coverage": {
            "party": by_cover.name,
            "mean": _mean(by_cover.coverage),
            "ci": ratio_interval(by_cover.coverage, seed=seed),
            "final": round(by_cover.coverage[-1], 4) if by_cover.coverage else None,
            "frames": len(by_cover.coverage),
            "psnr_db": _mean(by_cover.psnr),
            "ssim": _mean(by_cover.ssim),
        },
        "panorama": {
            "party": by_pano.name,
            "share": round(by_pano.panorama[-1], 4) if by_pano.panorama else None,
        },
        "people": _recall(by_people, by_people.people, people_reference, seed),
        "faces": _recall(by_faces, by_faces.faces, faces_reference, seed),
    }
