"""The report from result rows written here (no models): accuracy by the current rules, and the share of
predictions in which the rules find no answer."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from nudging.evals import report

OPTIONS = ["bank", "library", "department store", "store", "mall"]
PROMPT = "Question: Where do you keep money?\n" + "\n".join(f"{l}. {o}" for l, o in zip("ABCDE", OPTIONS))
ECHO = (PROMPT.split("\n", 1)[1] + "\nAnswer:\n") * 10  # the demo base's echo of the options


def meta(task: str, method: str) -> dict:
    return {"task": task, "method": method, "key": f"{task}-{method}", "max_new_tokens": 16, "gamma": None,
            "base": "b", "nudger": "n"}


def row(index: int, kind: str, prediction: str, gold: str = "", **extra) -> dict:
    fields = {"id": str(index), "kind": kind, "prompt": PROMPT if kind == "choice" else "Question: ?",
              "options": OPTIONS if kind == "choice" else [], "gold": gold, "prediction": prediction,
              # as older rules scored it: an echo of the options read as "Answer: A"
              "extracted": "A" if prediction == ECHO else None, "correct": prediction == ECHO,
              "ended_by_itself": False, "stats": {"nudged_words": 0, "total_words": 1, "seconds": 1.0}}
    return {**fields, **extra}


RUNS = [
    (meta("csqa", "base"), [row(0, "choice", ECHO, "A"), row(1, "choice", ECHO, "A"),
                            row(2, "choice", "The answer is B.", "B"), row(3, "choice", "It is a mall.", "A")]),
    (meta("csqa", "nudger"), [row(0, "choice", "The answer is A.", "A"), row(1, "choice", "A. bank", "A"),
                              row(2, "choice", "", "B", error="prompt too long"),
                              row(3, "choice", "Hmm.", "A", judge={"model": "j", "reply": "correct"}, correct=True)]),
    (meta("coin_flip", "base"), [row(0, "yes_no", "Yes.\n" * 20, "yes"), row(1, "yes_no", "No.", "no")]),
    (meta("justeval", "base"), [row(0, "open", "Sure.", rating=4, correct=None, judge={"model": "j", "reply": "4"})]),
]


def by(summaries: list[report.Summary]) -> dict[tuple[str, str], report.Summary]:
    return {(s.task, s.method): s for s in summaries}


def test_echoed_options_score_as_no_answer_whatever_the_stored_verdict():
    summaries = by(report.summarize(RUNS))
    base = summaries[("csqa", "base")]
    assert (base.correct, base.accuracy) == (1, 0.25)  # the two echoes stored as correct no longer count
    assert (base.no_answer, base.no_answer_share) == (2, 0.5)


def test_no_answer_counts_failed_rows_and_judged_rows_by_the_rules():
    nudger = by(report.summarize(RUNS))[("csqa", "nudger")]
    assert nudger.correct == 3  # the judge's verdict stands for the judged row
    assert (nudger.no_answer, nudger.no_answer_share) == (2, 0.5)  # the failed row, and "Hmm." (judged or not)
    coin = by(report.summarize(RUNS))[("coin_flip", "base")]
    assert (coin.correct, coin.no_answer) == (1, 1)  # a loop of "Yes." states nothing


def test_open_tasks_have_no_no_answer_share():
    justeval = by(report.summarize(RUNS))[("justeval", "base")]
    assert justeval.no_answer is None and justeval.no_answer_share is None and justeval.mean_rating == 4


def test_markdown_has_a_no_answer_table_and_column():
    table = report.markdown(report.summarize(RUNS))
    section = table.split("## No answer (%)")[1].split("## ")[0]
    assert "| task | base | nudger |" in section
    assert "| csqa | 50 | 50 |" in section and "| coin_flip | 50 | - |" in section
    assert "| justeval | - | - |" in section
    assert "| **all** | **50** | **50** |" in section  # base: 3 of 6 rule-scored items; nudger: 2 of 4
    by_method = table.split("## By method")[1].split("## ")[0]
    assert "| no answer (%) |" in by_method and "| base | 3 | 7 | 37.5 | 50 |" in by_method


def test_csv_and_a_rescored_folder_hold_the_no_answer_counts(tmp_path: Path):
    for settings, rows in RUNS:
        stem = f"{settings['task']}__{settings['method']}__{settings['key']}"
        (tmp_path / f"{stem}.json").write_text(json.dumps(settings))
        (tmp_path / f"{stem}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    summaries = report.summarize(report.load_runs(tmp_path))
    report.write_csv(summaries, tmp_path / "summary.csv")
    with (tmp_path / "summary.csv").open() as handle:
        written = {(r["task"], r["method"]): r for r in csv.DictReader(handle)}
    assert written[("csqa", "base")]["no_answer"] == "2"
    assert float(written[("csqa", "base")]["no_answer_share"]) == pytest.approx(0.5)
    assert written[("justeval", "base")]["no_answer"] == ""


def test_a_prompt_that_is_not_text_is_left_out_with_a_warning(tmp_path: Path):
    settings, rows = RUNS[0]
    (tmp_path / "csqa__base__k.json").write_text(json.dumps(settings))
    (tmp_path / "csqa__base__k.jsonl").write_text(json.dumps({**rows[0], "prompt": 3}) + "\n"
                                                  + json.dumps(rows[2]) + "\n")
    warnings: list[str] = []
    [(_, kept)] = report.load_runs(tmp_path, warnings.append)
    assert len(kept) == 1 and "'prompt' is int" in warnings[0]
