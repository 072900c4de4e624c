"""Several nudgers calibrated for one base (`nudging calibrate --nudger A --nudger B ...`): one table over them
and, where labelled items scored each pair at its own chosen gamma, the most accurate pair.

Ties in accuracy go to the nudger named first on the command line. Separation alone picks no best nudger: it
says where each pair's models disagree, not which nudger answers better.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nudging.calibrate.saved import BestNudger, SavedGamma

NO_BEST = ("No best nudger is picked: separation says where each pair's models disagree, not which nudger answers "
           "better. `--task T` with labelled items (and a grid) compares them by accuracy.")


@dataclass
class PairOutcome:
    """One nudger's calibration: its full report (what calibration.json holds for one pair), its choice, and the
    folder its files are in."""

    nudger: str
    name: str  # the short name shown in tables
    folder: str  # where its own calibration.md, .json, .png and positions.jsonl are
    report: dict[str, Any]
    choice: SavedGamma

    @property
    def chosen_row(self) -> dict[str, Any] | None:
        """The grid row of the chosen gamma (None without a grid)."""
        grid = self.report.get("grid")
        if not grid:
            return None
        return next(row for row in grid["rows"] if row["gamma"] == grid["gamma"])


def best(outcomes: list[PairOutcome], source: str) -> BestNudger | None:
    """The pair whose chosen gamma is the most accurate (ties: the first in `outcomes`); None without accuracies."""
    rows = [outcome.chosen_row for outcome in outcomes]
    if any(row is None for row in rows):
        return None
    accuracies = {outcome.nudger: row["accuracy"] for outcome, row in zip(outcomes, rows)}
    top = max(accuracies.values())
    winner = next(outcome for outcome in outcomes if accuracies[outcome.nudger] == top)
    return BestNudger(winner.nudger, winner.choice.gamma, top, [o.nudger for o in outcomes], accuracies, source,
                      winner.choice.base, rule=winner.choice.rule)


def report(outcomes: list[PairOutcome], chosen: BestNudger | None) -> dict[str, Any]:
    """calibration.json of a comparison: each pair's report (with its folder), and the best pair or why none."""
    first = outcomes[0].report
    return {"base": first["base"], "nudgers": [o.nudger for o in outcomes], "rule": first["rule"], "on": first["on"],
            "max_new_tokens": first["max_new_tokens"],
            "pairs": [{**o.report, "folder": o.folder} for o in outcomes],
            "best": None if chosen is None else asdict(chosen), "note": None if chosen else NO_BEST}


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def markdown(outcomes: list[PairOutcome], chosen: BestNudger | None) -> str:
    first = outcomes[0].report
    lines = [f"# Calibration: base {first['base']}, {len(outcomes)} nudgers", "",
             f"On {first['on']} (answers up to {first['max_new_tokens']} tokens); each nudger's own tables and plot "
             "are in its folder.", "",
             "| nudger | positions | base disagrees | separation gamma | chosen gamma | by | accuracy at it | folder |",
             "|---|---:|---:|---:|---:|---|---:|---|"]
    for outcome in outcomes:
        c, row = outcome.report["calibration"], outcome.chosen_row
        accuracy = "-" if row is None else f"{_percent(row['accuracy'])} [{100 * row['ci_low']:.0f}-" \
                                           f"{100 * row['ci_high']:.0f}]"
        mark = " **(best)**" if chosen is not None and chosen.nudger == outcome.nudger else ""
        lines.append(f"| {outcome.name}{mark} | {c['positions']} | {_percent(c['disagreements'] / c['positions'])} | "
                     f"{c['gamma']:g} | {outcome.choice.gamma:g} | {outcome.choice.method} | {accuracy} | "
                     f"{Path(outcome.folder).name} |")
    if all(outcome.chosen_row is not None for outcome in outcomes):
        lines += ["", "Accuracy of nudging per nudger and gamma (95% Wilson interval):", "",
                  "| nudger | gamma | accuracy | items | nudged words |", "|---|---:|---:|---:|---:|"]
        for outcome in outcomes:
            grid = outcome.report["grid"]
            for row in grid["rows"]:
                mark = " **(chosen)**" if row["gamma"] == grid["gamma"] else ""
                lines.append(f"| {outcome.name} | {row['gamma']:g}{mark} | {_percent(row['accuracy'])} "
                             f"[{100 * row['ci_low']:.0f}-{100 * row['ci_high']:.0f}] | {row['items']} | "
                             f"{_percent(row['nudged_word_fraction'])} |")
    lines.append("")
    if chosen is None:
        lines.append(NO_BEST)
    else:
        name = next(o.name for o in outcomes if o.nudger == chosen.nudger)
        lines.append(f"**Best: nudger {name} with gamma {chosen.gamma:g}** ({_percent(chosen.accuracy)} on "
                     f"{chosen.source}; ties go to the nudger named first).")
    return "\n".join(lines) + "\n"
