"""Tables (markdown, CSV) and a grouped bar chart from result files."""

from __future__ import annotations

import csv
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nudging.errors import InvalidArgumentError
from nudging.evals import results, scoring
from nudging.evals.tasks import TASK_NAMES
from nudging.methods import METHODS
from nudging.names import short_names

METHOD_ORDER = ("base", "in-context", "nudger", "proxy-tuning", "ensemble", "ensemble-text", "blend", "nudging",
                "nudging-entropy", "nudging-margin", "nudging-agreement", "nudging-window", "nudging-capped")
Z95 = 1.959964


@dataclass
class Summary:
    task: str
    method: str  # column label: the method, plus the settings key when one folder holds several settings
    items: int
    scored: int  # items with a verdict (all, for rule-scored tasks)
    correct: int
    accuracy: float | None
    ci_low: float | None
    ci_high: float | None
    no_answer: int | None  # items in which the rules find no answer (None for open-ended tasks)
    no_answer_share: float | None
    mean_rating: float | None  # open-ended tasks with a judge
    ended_by_itself: int
    nudged_word_fraction: float | None
    mean_seconds: float
    base: str | None
    nudger: str | None
    max_new_tokens: int
    key: str


def wilson(correct: int, total: int) -> tuple[float, float]:
    """95% Wilson score interval of a proportion."""
    if total == 0:
        return (math.nan, math.nan)
    p = correct / total
    denominator = 1 + Z95**2 / total
    centre = (p + Z95**2 / (2 * total)) / denominator
    half = Z95 * math.sqrt(p * (1 - p) / total + Z95**2 / (4 * total**2)) / denominator
    return (max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half)))  # rounding may cut p off at 0 or 1


def extracted(row: dict[str, Any]) -> str | None:
    """The answer the current rules find in a row's prediction."""
    return scoring.extract(row["kind"], row.get("prediction", ""), tuple(row.get("options") or ()),
                           row.get("prompt", ""))


def verdict(row: dict[str, Any]) -> bool | None:
    """A row's correctness: the judge's where it judged, else the current extraction rules applied again, so a
    table never mixes answers scored by older rules with newer ones."""
    if "judge" in row or "kind" not in row or row.get("error"):
        return row.get("correct")
    return scoring.is_correct(row["kind"], extracted(row), row["gold"])


def answered(row: dict[str, Any]) -> bool | None:
    """Whether the current rules find an answer in a row (judged or not: a judge's verdict says nothing about
    that); None where no rule applies (open-ended tasks, rows without a kind). A row whose generation failed
    has none."""
    if row.get("kind", "open") == "open":
        return None
    return not row.get("error") and extracted(row) is not None


def load_runs(folder: Path, warn: results.Warn | None = None) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """(settings, rows) for every result file in a folder; a broken settings file or row is left out with a
    warning."""
    if not folder.is_dir():
        raise InvalidArgumentError(f"--report: {folder} is not a folder")
    warn = warn or (lambda message: print(f"nudging: warning: {message}", file=sys.stderr))
    runs = []
    for path in sorted(folder.glob("*.jsonl")):
        meta_path = path.with_suffix(".json")
        if not meta_path.is_file() or path.name == "judge_cache.jsonl":
            continue
        meta, reason = results.read_settings(meta_path)
        if meta is None:
            warn(f"{meta_path}: {reason}; its results are left out (rerunning `nudging eval` with the same "
                 "options rewrites it)")
            continue
        rows = list(results.read_rows(path, warn, "left out of the report"))
        if rows:
            runs.append((meta, rows))
    if not runs:
        raise InvalidArgumentError(f"--report: no result files (*.jsonl with settings *.json) in {folder}")
    return runs


def summarize(runs: list[tuple[dict[str, Any], list[dict[str, Any]]]]) -> list[Summary]:
    summaries = []
    labels = _labels([meta for meta, _ in runs])
    for (meta, rows), label in zip(runs, labels):
        verdicts = [v for v in (verdict(row) for row in rows) if v is not None]
        ratings = [row["rating"] for row in rows if row.get("rating") is not None]
        correct = sum(bool(v) for v in verdicts)
        answers = [a for a in (answered(row) for row in rows) if a is not None]
        no_answer = answers.count(False) if answers else None
        low, high = wilson(correct, len(verdicts)) if verdicts else (None, None)
        nudged = None
        if meta["method"] in METHODS and METHODS[meta["method"]].nudges and rows:
            words = sum(row["stats"]["nudged_words"] for row in rows if row.get("stats"))
            total = sum(row["stats"]["total_words"] for row in rows if row.get("stats"))
            nudged = words / total if total else 0.0
        seconds = [row["stats"]["seconds"] for row in rows if row.get("stats")]
        summaries.append(Summary(
            task=meta["task"], method=label, items=len(rows), scored=len(verdicts), correct=correct,
            accuracy=correct / len(verdicts) if verdicts else None, ci_low=low, ci_high=high,
            no_answer=no_answer, no_answer_share=no_answer / len(answers) if answers else None,
            mean_rating=sum(ratings) / len(ratings) if ratings else None,
            ended_by_itself=sum(bool(row.get("ended_by_itself")) for row in rows),
            nudged_word_fraction=nudged,
            mean_seconds=sum(seconds) / len(seconds) if seconds else 0.0,
            base=meta.get("base"), nudger=meta.get("nudger"), max_new_tokens=meta["max_new_tokens"], key=meta["key"],
        ))
    return summaries


def _labels(metas: list[dict[str, Any]]) -> list[str]:
    """Column labels: the method; where the folder holds a method with several nudgers, also the nudger's short
    name ("nudging · SmolLM2-135M-Instruct"); where it holds several settings of one method (and nudger) for a
    task, also its gamma when that is what tells them apart (e.g. a grid over gamma), else its settings key."""
    nudgers_of: dict[str, set[str | None]] = {}
    groups: dict[tuple[str, str, str | None], list[dict[str, Any]]] = {}
    for meta in metas:
        nudgers_of.setdefault(meta["method"], set()).add(meta.get("nudger"))
        groups.setdefault((meta["task"], meta["method"], meta.get("nudger")), []).append(meta)
    names = short_names(sorted({meta["nudger"] for meta in metas if meta.get("nudger")}))
    labels = []
    for meta in metas:
        label = meta["method"]
        if meta.get("nudger") and len(nudgers_of[meta["method"]]) > 1:
            label += f" · {names[meta['nudger']]}"
        group = groups[(meta["task"], meta["method"], meta.get("nudger"))]
        gammas = [m.get("gamma") for m in group]
        if len(group) == 1:
            labels.append(label)
        elif None not in gammas and len(set(gammas)) == len(gammas):
            labels.append(f"{label} gamma={meta['gamma']:g}")
        else:
            labels.append(f"{label} {meta['key']}")
    return labels


def _ordered(summaries: list[Summary]) -> tuple[list[str], list[str]]:
    tasks = sorted({s.task for s in summaries}, key=lambda t: TASK_NAMES.index(t) if t in TASK_NAMES else 99)
    methods = sorted({s.method for s in summaries},
                     key=lambda m: (METHOD_ORDER.index(m.split()[0]) if m.split()[0] in METHOD_ORDER else 9, m))
    return tasks, methods


def _cell(summary: Summary | None, items: int) -> str:
    if summary is None:
        return "-"
    suffix = f" (n={summary.items})" if summary.items != items else ""
    if summary.accuracy is not None:
        return f"{100 * summary.accuracy:.1f} [{100 * summary.ci_low:.0f}–{100 * summary.ci_high:.0f}]{suffix}"
    if summary.mean_rating is not None:
        return f"{summary.mean_rating:.2f}/5{suffix}"
    return "needs --judge-url"


def markdown(summaries: list[Summary]) -> str:
    tasks, methods = _ordered(summaries)
    by = {(s.task, s.method): s for s in summaries}
    items = {t: max(s.items for s in summaries if s.task == t) for t in tasks}
    bases = sorted({s.base for s in summaries if s.base})
    nudgers = sorted({s.nudger for s in summaries if s.nudger})
    budgets = sorted({s.max_new_tokens for s in summaries})
    lines = [f"Base: {', '.join(bases) or '-'} · nudger: {', '.join(nudgers) or '-'} · "
             f"max new tokens: {', '.join(map(str, budgets))}", "", *_by_method(summaries, methods), "",
             "## Accuracy (%) with 95% Wilson interval", "",
             "| task | items | " + " | ".join(methods) + " | nudged words |",
             "|---|---:|" + "---|" * len(methods) + "---:|"]
    for task in tasks:
        nudged = [by[(task, m)].nudged_word_fraction for m in methods
                  if (task, m) in by and by[(task, m)].nudged_word_fraction is not None]
        nudged_text = " / ".join(f"{100 * share:.0f}%" for share in nudged) or "-"  # one per nudging column
        cells = [_cell(by.get((task, m)), items[task]) for m in methods]
        lines.append(f"| {task} | {items[task]} | " + " | ".join(cells) + f" | {nudged_text} |")
    averages = []
    for method in methods:
        scores = [by[(t, method)].accuracy for t in tasks if (t, method) in by and by[(t, method)].accuracy is not None]
        averages.append(f"**{100 * sum(scores) / len(scores):.1f}**" if scores else "-")
    lines.append("| **average** | | " + " | ".join(averages) + " | |")
    lines += ["", "## No answer (%): predictions in which the rules find no answer", "",
              "| task | " + " | ".join(methods) + " |", "|---|" + "---:|" * len(methods)]
    for task in tasks:
        cells = [_share(by.get((task, m))) for m in methods]
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    lines.append("| **all** | " + " | ".join(f"**{_pooled_share([by[(t, m)] for t in tasks if (t, m) in by])}**"
                                           for m in methods) + " |")
    lines += ["", "## Answers that ended by themselves (EOS before the token budget)", "",
              "| task | " + " | ".join(methods) + " |", "|---|" + "---:|" * len(methods)]
    totals = {m: [0, 0] for m in methods}
    for task in tasks:
        cells = []
        for method in methods:
            summary = by.get((task, method))
            if summary is None:
                cells.append("-")
                continue
            totals[method][0] += summary.ended_by_itself
            totals[method][1] += summary.items
            cells.append(f"{summary.ended_by_itself}/{summary.items}")
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    lines.append("| **all** | " + " | ".join(f"**{a}/{b}**" for a, b in totals.values()) + " |")
    lines += ["", "## Mean seconds per item", "", "| task | " + " | ".join(methods) + " |",
              "|---|" + "---:|" * len(methods)]
    for task in tasks:
        cells = [f"{by[(task, m)].mean_seconds:.1f}" if (task, m) in by else "-" for m in methods]
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _share(summary: Summary | None) -> str:
    if summary is None or summary.no_answer_share is None:
        return "-"
    return f"{100 * summary.no_answer_share:.0f}"


def _pooled_share(summaries: list[Summary]) -> str:
    """The no-answer share over all the items of rule-scored tasks."""
    scored = [s for s in summaries if s.no_answer is not None]
    items = sum(s.items for s in scored)
    return f"{100 * sum(s.no_answer for s in scored) / items:.0f}" if items else "-"


def _by_method(summaries: list[Summary], methods: list[str]) -> list[str]:
    """One row per method over all its tasks: mean accuracy, no answer, answers that ended by themselves, time."""
    lines = ["## By method", "", "| method | tasks | items | mean accuracy (%) | no answer (%) | ended by itself "
             "| seconds per item | all scored items: accuracy (%) [95%] | nudged words |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for method in methods:
        mine = [s for s in summaries if s.method == method]
        scores = [s.accuracy for s in mine if s.accuracy is not None]
        items = sum(s.items for s in mine)
        seconds = sum(s.mean_seconds * s.items for s in mine) / items if items else 0.0
        accuracy = f"{100 * sum(scores) / len(scores):.1f}" if scores else "-"
        ended = sum(s.ended_by_itself for s in mine)
        correct, scored = sum(s.correct for s in mine), sum(s.scored for s in mine)
        low, high = wilson(correct, scored) if scored else (0.0, 0.0)
        pooled = f"{100 * correct / scored:.1f} [{100 * low:.0f}–{100 * high:.0f}]" if scored else "-"
        shares = [(s.nudged_word_fraction, s.items) for s in mine if s.nudged_word_fraction is not None]
        nudged = f"{100 * sum(f * n for f, n in shares) / sum(n for _, n in shares):.0f}%" if shares else "-"
        lines.append(f"| {method} | {len(mine)} | {items} | {accuracy} | {_pooled_share(mine)} | {ended}/{items} "
                     f"| {seconds:.1f} | {pooled} | {nudged} |")
    return lines


def write_csv(summaries: list[Summary], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(asdict(summaries[0])))
        writer.writeheader()
        for summary in summaries:
            writer.writerow(asdict(summary))


def chart(summaries: list[Summary], path: Path) -> None:
    """Two grouped bar panels per task: accuracy (with its interval) and answers that ended by themselves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks, methods = _ordered(summaries)
    by = {(s.task, s.method): s for s in summaries}
    scored = [t for t in tasks if any(s.task == t and s.accuracy is not None for s in summaries)]
    width = 0.8 / max(1, len(methods))
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(max(7.0, 1.0 * len(tasks) + 3), 7.5))
    for index, method in enumerate(methods):
        offset = (index - (len(methods) - 1) / 2) * width
        xs, heights, errors = [], [], [[], []]
        for position, task in enumerate(scored):
            summary = by.get((task, method))
            if summary is None or summary.accuracy is None:
                continue
            xs.append(position + offset)
            heights.append(100 * summary.accuracy)
            errors[0].append(100 * (summary.accuracy - summary.ci_low))
            errors[1].append(100 * (summary.ci_high - summary.accuracy))
        color = f"C{index}" if len(methods) <= 10 else plt.get_cmap("tab20")(index % 20)  # one color per method
        top.bar(xs, heights, width, yerr=errors, capsize=2, label=method, color=color,
                error_kw={"linewidth": 0.8})
        xs, heights = [], []
        for position, task in enumerate(tasks):
            summary = by.get((task, method))
            if summary is not None and summary.items:
                xs.append(position + offset)
                heights.append(100 * summary.ended_by_itself / summary.items)
        bottom.bar(xs, heights, width, label=method, color=color)
    top.set_xticks(range(len(scored)), scored, rotation=30, ha="right")
    top.set_ylabel("accuracy (%)")
    top.set_title("Accuracy per task (error bars: 95% Wilson interval)")
    bottom.set_xticks(range(len(tasks)), tasks, rotation=30, ha="right")
    bottom.set_ylabel("answers (%)")
    bottom.set_title("Answers that ended by themselves before the token budget")
    for axes in (top, bottom):
        axes.set_ylim(0, 105)
        axes.spines[["top", "right"]].set_visible(False)
    _legend(top, figure, len(methods))
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _legend(axes, figure, count: int) -> None:
    """The legend in one row where it fits the figure's width, else in one column beside the panels (long labels:
    several nudgers, gammas; many methods), where it covers no bar."""
    renderer = figure.canvas.get_renderer()
    legend = axes.legend(frameon=False, ncols=count, loc="upper right")
    if legend.get_window_extent(renderer).width <= figure.bbox.width:
        return
    legend.remove()
    legend = axes.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.set_figwidth(figure.get_figwidth() + legend.get_window_extent(renderer).width / figure.dpi)


def build(folder: Path, warn: results.Warn | None = None) -> tuple[list[Summary], dict[str, Path]]:
    """Write summary.md, summary.csv and summary.png into the folder from its result files."""
    summaries = summarize(load_runs(folder, warn))
    files = {"markdown": folder / "summary.md", "csv": folder / "summary.csv", "chart": folder / "summary.png"}
    files["markdown"].write_text(markdown(summaries), encoding="utf-8")
    write_csv(summaries, files["csv"])
    chart(summaries, files["chart"])
    return summaries, files
