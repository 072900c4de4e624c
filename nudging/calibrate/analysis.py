"""From measured positions to a gamma: how the base's top-1 probability separates the positions where the base
disagrees with the nudger from those where it agrees (Fei et al., section 3: below 0.1 the base disagrees with
the aligned model about 90% of the time; positions below 0.5 hold over 80% of the disagreements while being
about 11% of all positions).

Nudging a position means handing it to the nudger, so the best gamma nudges as many disagreement positions and
as few agreement positions as it can: it maximises Youden's J = (share of disagreement positions below gamma)
- (share of agreement positions below gamma). Where a range of gammas ties, the middle of the range is taken.
Its 95% interval comes from resampling the prompts (bootstrap).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from nudging.calibrate.measure import AnswerPositions
from nudging.errors import NudgingError

STEP = 0.01
CANDIDATES = [round(STEP * i, 2) for i in range(1, round(1 / STEP))]  # 0.01 .. 0.99
TABLE_GAMMAS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
BINS = 20
BOOTSTRAP_SAMPLES = 1000


@dataclass
class GammaRow:
    """What one gamma would do on the measured positions."""

    gamma: float
    nudged_share: float  # positions whose top-1 probability is below gamma
    disagreements_caught: float  # disagreement positions below gamma, as a share of all disagreements
    agreements_nudged: float  # agreement positions below gamma, as a share of all agreements
    disagreement_rate_below: float | None  # among positions below gamma, the share where the base disagrees
    separation: float  # disagreements_caught - agreements_nudged (Youden's J)


@dataclass
class Calibration:
    """The chosen gamma and the evidence for it."""

    gamma: float
    interval: tuple[float, float]  # 95% bootstrap interval over prompts
    prompts: int
    positions: int
    disagreements: int
    table: list[GammaRow]
    histogram_agree: list[int]  # counts per bin of width 1/BINS over [0, 1]
    histogram_disagree: list[int]
    paper: dict[str, float | None]  # the paper's three figures on these positions

    def to_dict(self) -> dict:
        return asdict(self)


def row_for(gamma: float, top1: Sequence[float], agree: Sequence[bool]) -> GammaRow:
    below = [p < gamma for p in top1]
    disagreements = sum(not a for a in agree)
    agreements = len(agree) - disagreements
    caught = sum(b and not a for b, a in zip(below, agree))
    nudged_agreements = sum(b and a for b, a in zip(below, agree))
    count_below = sum(below)
    caught_share = caught / disagreements if disagreements else 0.0
    agreements_share = nudged_agreements / agreements if agreements else 0.0
    return GammaRow(
        gamma=gamma,
        nudged_share=count_below / len(top1) if top1 else 0.0,
        disagreements_caught=caught_share,
        agreements_nudged=agreements_share,
        disagreement_rate_below=caught / count_below if count_below else None,
        separation=caught_share - agreements_share,
    )


def share_below(values: Sequence[float]) -> np.ndarray:
    """For every candidate gamma, the share of `values` below it (zeros where there are none)."""
    ordered = np.sort(np.asarray(values, dtype=float))
    return np.searchsorted(ordered, np.asarray(CANDIDATES), side="left") / max(1, len(ordered))


def separations(top1: Sequence[float], agree: Sequence[bool]) -> np.ndarray:
    """Youden's J of every candidate gamma."""
    probs, agreeing = np.asarray(top1, dtype=float), np.asarray(agree, dtype=bool)
    return share_below(probs[~agreeing]) - share_below(probs[agreeing])


def best_gamma(top1: Sequence[float], agree: Sequence[bool]) -> float:
    """The candidate gamma with the highest separation; the middle of the longest run of tied candidates."""
    scores = separations(top1, agree)
    tied = np.flatnonzero(scores >= scores.max() - 1e-12)
    runs = np.split(tied, np.flatnonzero(np.diff(tied) > 1) + 1)
    longest = max(runs, key=len)
    return CANDIDATES[int(longest[(len(longest) - 1) // 2])]


def flatten(records: Sequence[AnswerPositions]) -> tuple[list[float], list[bool]]:
    top1 = [p for r in records for p in r.top1]
    agree = [a for r in records for a in r.agree]
    return top1, agree


def histogram(values: Sequence[float]) -> list[int]:
    counts = [0] * BINS
    for value in values:
        counts[min(int(value * BINS), BINS - 1)] += 1
    return counts


def paper_figures(top1: Sequence[float], agree: Sequence[bool]) -> dict[str, float | None]:
    low = row_for(0.1, top1, agree)
    half = row_for(0.5, top1, agree)
    return {
        "disagreement_rate_below_0.1": low.disagreement_rate_below,  # paper: about 0.9
        "disagreements_below_0.5": half.disagreements_caught,  # paper: over 0.8
        "positions_below_0.5": half.nudged_share,  # paper: about 0.11
    }


def calibrate(records: Sequence[AnswerPositions], seed: int = 0) -> Calibration:
    """The gamma that best separates disagreement from agreement positions, with its bootstrap interval."""
    records = [r for r in records if r.top1]
    top1, agree = flatten(records)
    if not top1:
        raise NudgingError("no answer positions to calibrate on: every answer was empty (try a larger --max-new-tokens "
                           "or other prompts)")
    gamma = best_gamma(top1, agree)
    rng = random.Random(seed)
    resampled = sorted(
        best_gamma(*flatten([records[rng.randrange(len(records))] for _ in records]))
        for _ in range(BOOTSTRAP_SAMPLES)
    )
    interval = (resampled[int(0.025 * BOOTSTRAP_SAMPLES)], resampled[int(0.975 * BOOTSTRAP_SAMPLES) - 1])
    return Calibration(
        gamma=gamma,
        interval=interval,
        prompts=len(records),
        positions=len(top1),
        disagreements=sum(not a for a in agree),
        table=[row_for(g, top1, agree) for g in sorted(set(TABLE_GAMMAS) | {gamma})],
        histogram_agree=histogram([p for p, a in zip(top1, agree) if a]),
        histogram_disagree=histogram([p for p, a in zip(top1, agree) if not a]),
        paper=paper_figures(top1, agree),
    )
