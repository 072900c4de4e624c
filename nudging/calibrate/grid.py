"""With labelled items: accuracy of nudging at a few gammas on one task (a small search, as MoCo does), run
through the eval runner, so its answers are kept, resumed and reported like any `nudging eval` run."""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, replace
from typing import Callable, Sequence

from nudging.evals import report, results, runner
from nudging.nudger import Nudger

BOOTSTRAP_SAMPLES = 1000


@dataclass
class GridRow:
    gamma: float
    items: int
    correct: int
    accuracy: float
    ci_low: float  # 95% Wilson interval
    ci_high: float
    nudged_word_fraction: float


@dataclass
class GridResult:
    rows: list[GridRow]
    gamma: float  # the most accurate gamma (ties: the one nearest the separation choice)
    interval: tuple[float, float]  # 95% bootstrap interval of that choice over the items

    def to_dict(self) -> dict:
        return asdict(self)


def most_accurate(gammas: Sequence[float], correct: dict[float, list[bool]], prefer: float) -> float:
    accuracy = {g: sum(correct[g]) / len(correct[g]) for g in gammas}
    best = max(accuracy.values())
    return min((g for g in gammas if accuracy[g] == best), key=lambda g: (abs(g - prefer), g))


def run_grid(
    nudger: Nudger,
    request: runner.EvalRequest,
    gammas: Sequence[float],
    prefer: float,
    *,
    on_progress: runner.Progress | None = None,
    warn: Callable[[str], None] | None = None,
    seed: int = 0,
) -> GridResult:
    """Nudging at each gamma on `request`'s one task (its items, budget and output folder); `prefer` breaks ties."""
    gammas = sorted(set(gammas))
    verdicts: dict[float, dict[str, bool]] = {}
    rows = []
    for gamma in gammas:
        request_g = replace(request, gamma=gamma, methods=["nudging"])
        show = None if on_progress is None else (
            lambda label, *counts, gamma=gamma: on_progress(f"{label} gamma={gamma:g}", *counts))
        [path] = runner.run(request_g, on_progress=show, warn=warn, loaded=nudger)
        answers = list(results.read_rows(path, lambda _: None, ""))  # runner.run warned of the lines left out
        verdicts[gamma] = {row["id"]: bool(report.verdict(row)) for row in answers}
        settings = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))  # just written by the run
        [summary] = report.summarize([(settings, answers)])  # as `nudging eval` tables it
        rows.append(GridRow(gamma, summary.items, summary.correct, summary.accuracy, summary.ci_low, summary.ci_high,
                            summary.nudged_word_fraction or 0.0))
    ids = sorted(set.intersection(*(set(v) for v in verdicts.values())))
    by_gamma = {g: [verdicts[g][i] for i in ids] for g in gammas}
    chosen = most_accurate(gammas, by_gamma, prefer)
    rng = random.Random(seed)
    picks = []
    for _ in range(BOOTSTRAP_SAMPLES):
        sample = [rng.randrange(len(ids)) for _ in ids]
        picks.append(most_accurate(gammas, {g: [by_gamma[g][i] for i in sample] for g in gammas}, prefer))
    picks.sort()
    interval = (picks[int(0.025 * BOOTSTRAP_SAMPLES)], picks[int(0.975 * BOOTSTRAP_SAMPLES) - 1])
    return GridResult(rows, chosen, interval)
