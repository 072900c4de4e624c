"""`nudging eval` end to end on tiny models: result files, resume after a kill, the report, the judge."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nudging.cli import main
from nudging.nudger import Nudger

TASKS = ["--task", "coin_flip", "--task", "last_letter_concat"]


def models(tiny_folders) -> list[str]:
    return ["--base", tiny_folders["base"], "--nudger", tiny_folders["nudger"]]


def run_eval(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["eval", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def result_files(folder: Path) -> dict[str, Path]:
    return {path.stem.split("__")[0] + "/" + path.stem.split("__")[1]: path for path in folder.glob("*__*.jsonl")}


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_eval_writes_rows_table_and_chart(capsys, tiny_folders, tmp_path):
    code, out, _ = run_eval(capsys, *TASKS, *models(tiny_folders), "--limit", "3", "--max-new-tokens", "12",
                            "--out", str(tmp_path))
    assert code == 0
    files = result_files(tmp_path)
    assert sorted(files) == sorted(f"{t}/{m}" for t in ("coin_flip", "last_letter_concat")
                                   for m in ("base", "nudger", "nudging"))
    for name, path in files.items():
        task, method = name.split("/")
        answers = rows(path)
        assert len(answers) == 3 and len({a["id"] for a in answers}) == 3
        for answer in answers:
            assert answer["task"] == task and answer["method"] == method
            assert answer["prompt"].startswith("Question: ")
            assert answer["prediction"] == "".join(span["text"] for span in answer["spans"])
            assert {span["source"] for span in answer["spans"]} <= ({"base", "nudger"} if method == "nudging" else {method})
            assert answer["correct"] == (answer["extracted"] == answer["gold"])
            assert answer["ended_by_itself"] == (answer["stop_reason"] in ("eos", "nudger_eos"))
        settings = json.loads(path.with_suffix(".json").read_text())
        assert settings["task"] == task and settings["method"] == method and settings["max_new_tokens"] == 12
        assert (settings["gamma"] is not None) == (method == "nudging")
    assert (tmp_path / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (tmp_path / "summary.md").read_text()
    assert "| coin_flip | 3 |" in table and "| last_letter_concat | 3 |" in table and "**average**" in table
    assert "coin_flip" in out and "Accuracy" in out


def test_report_matches_the_rows(capsys, tiny_folders, tmp_path):
    run_eval(capsys, "--task", "coin_flip", *models(tiny_folders), "--limit", "4", "--max-new-tokens", "10",
             "--out", str(tmp_path))
    for name in ("summary.md", "summary.csv", "summary.png"):
        (tmp_path / name).unlink()
    code, _, _ = run_eval(capsys, "--report", str(tmp_path))
    assert code == 0
    with (tmp_path / "summary.csv").open() as handle:
        summaries = {row["method"]: row for row in csv.DictReader(handle)}
    for name, path in result_files(tmp_path).items():
        method = name.split("/")[1]
        answers = rows(path)
        correct = sum(a["correct"] for a in answers)
        assert int(summaries[method]["correct"]) == correct
        assert float(summaries[method]["accuracy"]) == pytest.approx(correct / len(answers))
        assert int(summaries[method]["ended_by_itself"]) == sum(a["ended_by_itself"] for a in answers)
        low, high = float(summaries[method]["ci_low"]), float(summaries[method]["ci_high"])
        assert 0 <= low <= correct / len(answers) <= high <= 1
    nudging = [a for name, p in result_files(tmp_path).items() if name.endswith("/nudging") for a in rows(p)]
    words = sum(a["stats"]["nudged_words"] for a in nudging) / sum(a["stats"]["total_words"] for a in nudging)
    assert float(summaries["nudging"]["nudged_word_fraction"]) == pytest.approx(words)
    assert summaries["base"]["nudged_word_fraction"] == ""


def test_rerun_skips_finished_items_and_a_larger_limit_adds_only_new_ones(capsys, tiny_folders, tmp_path, monkeypatch):
    argv = [*TASKS, *models(tiny_folders), "--max-new-tokens", "10", "--out", str(tmp_path)]
    assert run_eval(capsys, *argv, "--limit", "3")[0] == 0
    before = {name: path.read_text() for name, path in result_files(tmp_path).items()}

    def no_loading(*args, **kwargs):
        raise AssertionError("a finished run must not load models")

    monkeypatch.setattr(Nudger, "from_pretrained", no_loading)
    assert run_eval(capsys, *argv, "--limit", "3")[0] == 0
    assert {name: path.read_text() for name, path in result_files(tmp_path).items()} == before

    monkeypatch.undo()
    assert run_eval(capsys, *argv, "--limit", "5")[0] == 0
    for name, path in result_files(tmp_path).items():
        text = path.read_text()
        assert text.startswith(before[name])
        assert len(rows(path)) == 5


def test_a_killed_run_loses_nothing_and_resumes_to_the_same_answers(capsys, tiny_folders, tmp_path):
    argv = ["eval", *TASKS, *models(tiny_folders), "--limit", "8", "--max-new-tokens", "24"]
    killed = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "nudging.cli", *argv, "--out", str(killed)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        files = list(killed.glob("coin_flip__base__*.jsonl"))
        if files and len(files[0].read_text().splitlines()) >= 2:
            break
        time.sleep(0.02)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    partial = list(killed.glob("coin_flip__base__*.jsonl"))[0]
    written = partial.read_text()
    assert 2 <= len(written.splitlines()) < 8
    with partial.open("a") as handle:  # a kill in the middle of writing a line
        handle.write('{"id": "coin_flip-0-9", "prediction": "cut sh')

    assert run_eval(capsys, *argv[1:], "--out", str(killed))[0] == 0
    assert partial.read_text().startswith(written)
    whole = tmp_path / "whole"
    assert run_eval(capsys, *argv[1:], "--out", str(whole))[0] == 0
    resumed, reference = result_files(killed), result_files(whole)
    assert sorted(resumed) == sorted(reference)
    for name in reference:
        got = {a["id"]: (a["prediction"], a["spans"], a["stop_reason"], a["correct"]) for a in rows(resumed[name])}
        want = {a["id"]: (a["prediction"], a["spans"], a["stop_reason"], a["correct"]) for a in rows(reference[name])}
        assert len(rows(resumed[name])) == 8
        assert got == want


def test_prompt_too_long_is_recorded_not_fatal(capsys, tiny_folders, tmp_path):
    code, _, _ = run_eval(capsys, "--task", "coin_flip", "--base", tiny_folders["short"], "--method", "base",
                          "--limit", "2", "--max-new-tokens", "4", "--out", str(tmp_path))
    assert code == 0
    answers = rows(next(tmp_path.glob("coin_flip__base__*.jsonl")))
    assert [a["stop_reason"] for a in answers] == ["prompt_too_long"] * 2
    assert all(a["correct"] is False and "context" in a["error"] for a in answers)


@pytest.fixture
def judge_url():
    server = subprocess.Popen([sys.executable, str(Path(__file__).parent / "judge_server.py")],
                              stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline())
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.kill()
        server.wait()


def judge_requests(url: str) -> int:
    import urllib.request

    with urllib.request.urlopen(url.removesuffix("/v1") + "/stats", timeout=10) as response:
        return json.loads(response.read())["answered"]


def test_judge_scores_through_a_real_server_and_verdicts_are_cached(capsys, tiny_folders, tmp_path, judge_url):
    open_items = tmp_path / "open.jsonl"
    open_items.write_text("".join(json.dumps({"id": f"o{i}", "instruction": f"Write a line about cat {i}."}) + "\n"
                                  for i in range(3)))
    argv = ["--task", "coin_flip", "--task", "justeval", "--data", f"justeval={open_items}", "--method", "nudger",
            *models(tiny_folders), "--limit", "3", "--max-new-tokens", "12", "--out", str(tmp_path / "run"),
            "--judge-url", judge_url, "--judge-model", "test-judge"]
    code, _, err = run_eval(capsys, *argv)
    assert code == 0, err
    assert judge_requests(judge_url) == 6
    files = result_files(tmp_path / "run")
    for answer in rows(files["coin_flip/nudger"]):
        assert answer["judge"]["model"] == "test-judge"
        assert answer["correct"] == (answer["gold"] in answer["prediction"].lower())
    assert [a["rating"] for a in rows(files["justeval/nudger"])] == [4, 4, 4]
    assert "4.00/5" in (tmp_path / "run" / "summary.md").read_text()

    for path in files.values():  # answers again, judged from the cache
        path.unlink()
    assert run_eval(capsys, *argv)[0] == 0
    assert judge_requests(judge_url) == 6


def test_open_tasks_without_a_judge_say_so(capsys, tiny_folders, tmp_path):
    items = tmp_path / "open.csv"
    items.write_text("id,question\na,Say hi.\nb,Say bye.\n")
    code, _, _ = run_eval(capsys, "--task", "justeval_safe", "--data", f"justeval_safe={items}", "--method", "nudger",
                          *models(tiny_folders), "--max-new-tokens", "6", "--out", str(tmp_path / "run"))
    assert code == 0
    assert "needs --judge-url" in (tmp_path / "run" / "summary.md").read_text()


@pytest.mark.parametrize("argv, message", [
    (["--task", "gsm9k"], "--task must be one of"),
    (["--task", "coin_flip", "--limit", "0"], "--limit must be at least 1"),
    (["--task", "coin_flip", "--max-new-tokens", "0"], "--max-new-tokens must be at least 1"),
    (["--task", "coin_flip", "--data", "coin_flip"], "--data must look like TASK=FILE"),
    (["--task", "coin_flip", "--data", "nope=x.jsonl"], "--data names unknown task 'nope'"),
    (["--task", "csqa", "--data", "csqa=missing.jsonl"], "missing.jsonl is not a file"),
    (["--task", "coin_flip", "--judge-url", "http://127.0.0.1:9/v1"], "needs both --judge-url and --judge-model"),
    (["--task", "coin_flip", "--judge-url", "localhost:8000", "--judge-model", "m"], "must start with http"),
    (["--task", "svamp"], "--data svamp=FILE"),
    (["--report", "no/such/folder"], "is not a folder"),
])
def test_bad_input_is_one_clear_line(capsys, tmp_path, monkeypatch, argv, message):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    code, out, err = run_eval(capsys, *argv)
    assert code == 2
    assert err.startswith("nudging: error: ") and message in err and len(err.strip().splitlines()) == 1


def test_an_unreachable_judge_is_a_clear_error(capsys, tiny_folders, tmp_path):
    code, _, err = run_eval(capsys, "--task", "coin_flip", "--method", "nudger", *models(tiny_folders), "--limit", "1",
                            "--max-new-tokens", "4", "--out", str(tmp_path), "--judge-url", "http://127.0.0.1:9/v1",
                            "--judge-model", "m")
    assert code == 2 and "could not be reached" in err


def test_task_all_skips_tasks_without_data_with_a_warning(capsys, tiny_folders, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from nudging.evals import runner

    warnings = []
    request = runner.EvalRequest(
        tasks=runner.expand_tasks(["all"]), methods=["nudger"], base=tiny_folders["base"],
        nudger=tiny_folders["nudger"], max_new_tokens=2, limit=1, out=tmp_path,
    )
    request.tasks = [t for t in request.tasks if t in ("svamp", "coin_flip", "justeval")]
    runner.run(request, warn=warnings.append)
    assert [w.split(":")[0] for w in warnings] == ["skipping svamp", "skipping justeval"]
    assert [p.name.split("__")[0] for p in tmp_path.glob("*.jsonl")] == ["coin_flip"]


def test_report_scores_rows_with_the_current_rules(capsys, tiny_folders, tmp_path):
    run_eval(capsys, "--task", "coin_flip", "--method", "nudger", *models(tiny_folders), "--limit", "2",
             "--max-new-tokens", "4", "--out", str(tmp_path))
    path = next(tmp_path.glob("coin_flip__nudger__*.jsonl"))
    answers = rows(path)
    answers[0].update(prediction="So the answer is yes.", gold="yes", correct=False)  # as older rules had scored it
    answers[1].update(prediction="No, it is tails up.", gold="no", correct=False)
    path.write_text("".join(json.dumps(a) + "\n" for a in answers))
    assert run_eval(capsys, "--report", str(tmp_path))[0] == 0
    assert "| coin_flip | 2 | 100.0 [" in (tmp_path / "summary.md").read_text()


def test_data_for_a_task_not_in_the_run_is_a_warning(tiny_folders, tmp_path):
    from nudging.evals import runner

    warnings = []
    request = runner.EvalRequest(tasks=["coin_flip"], methods=["nudger"], nudger=tiny_folders["nudger"],
                                 max_new_tokens=2, limit=1, out=tmp_path, data={"gsm8k": "items.csv"})
    runner.run(request, warn=warnings.append)
    assert warnings == ["--data gsm8k=... is not used: gsm8k is not among the tasks of this run"]


def test_method_all_runs_every_method_the_models_can_and_says_why_not_the_others(capsys, tiny_folders, tmp_path):
    code, _, err = run_eval(capsys, "--task", "coin_flip", "--method", "all", *models(tiny_folders), "--limit", "2",
                              "--max-new-tokens", "8", "--out", str(tmp_path))
    assert code == 0
    methods = {"base", "nudger", "nudging", "ensemble-text", "in-context", "nudging-entropy", "nudging-margin",
               "nudging-agreement", "nudging-window", "nudging-capped", "blend"}
    assert set(result_files(tmp_path)) == {f"coin_flip/{m}" for m in methods}
    assert "skipping proxy-tuning" in err and "skipping ensemble," in err
    table = (tmp_path / "summary.md").read_text()
    by_method = table.split("## By method")[1].split("## ")[0]
    for method in methods:  # one row per method: 1 task, 2 items
        assert f"| {method} | 1 | 2 |" in by_method, by_method
    for path in result_files(tmp_path).values():
        for row in rows(path):
            assert row["ended_by_itself"] == (row["stop_reason"] in ("eos", "nudger_eos", "stop"))


def test_proxy_tuning_settings_are_part_of_the_result_key(capsys, tiny_folders, tmp_path):
    shared = ["--base", tiny_folders["byte-base"], "--nudger", tiny_folders["nudger"], "--anti-expert",
              tiny_folders["byte-anti"], "--task", "coin_flip", "--limit", "2", "--max-new-tokens", "6",
              "--out", str(tmp_path)]
    assert run_eval(capsys, "--method", "proxy-tuning", "--method", "ensemble", *shared)[0] == 0
    assert run_eval(capsys, "--method", "proxy-tuning", "--alpha", "0.5", *shared)[0] == 0
    proxy = sorted(tmp_path.glob("coin_flip__proxy-tuning__*.jsonl"))
    assert len(proxy) == 2 and len(list(tmp_path.glob("coin_flip__ensemble__*.jsonl"))) == 1
    alphas = sorted(json.loads(p.with_suffix(".json").read_text())["alpha"] for p in proxy)
    assert alphas == [0.5, 1.0]
    settings = json.loads(next(tmp_path.glob("coin_flip__ensemble__*.json")).read_text())
    assert settings["anti_expert"] is None and settings["gamma"] is None and settings["nudger"]


def test_concurrent_items_on_local_models_run_batched_with_the_same_rows(capsys, tiny_folders, tmp_path, monkeypatch):
    """--concurrency 4 on local models answers four items at once on lanes of one batch (their forward passes
    packed together): the same rows as one at a time, and the passes really were shared."""
    from nudging.backends import batch

    packed_passes = []
    forward = batch.PackedModel.forward
    monkeypatch.setattr(batch.PackedModel, "forward",
                        lambda self, requests: packed_passes.append(len(requests)) or forward(self, requests))
    outcomes = {}
    for concurrency in ("1", "4"):
        out = tmp_path / concurrency
        code, _, err = run_eval(capsys, "--task", "coin_flip", *models(tiny_folders), "--method", "nudging",
                                "--limit", "8", "--max-new-tokens", "16", "--out", str(out), "--concurrency", concurrency)
        assert code == 0, err
        (path,) = result_files(out).values()
        outcomes[concurrency] = sorted((r["id"], r["prediction"], r["spans"], r["stop_reason"]) for r in rows(path))
    assert outcomes["4"] == outcomes["1"] and len(outcomes["1"]) == 8
    assert max(packed_passes) > 1  # several lanes in one pass (and none with concurrency 1)


# --- several nudgers --------------------------------------------------------------------------------------------

def answers_by_item(folder: Path) -> dict[tuple[str, str | None], dict[str, tuple]]:
    """(method, nudger) -> item id -> what was answered and how it scored."""
    found = {}
    for path in folder.glob("*__*.jsonl"):
        meta = json.loads(path.with_suffix(".json").read_text())
        found[(meta["method"], meta["nudger"])] = {
            a["id"]: (a["prediction"], a["spans"], a["stop_reason"], a["correct"]) for a in rows(path)}
    return found


def csv_rows(folder: Path) -> dict[tuple[str, str], dict]:
    with (folder / "summary.csv").open() as handle:
        return {(r["method"].split(" · ")[0], r["nudger"]): r for r in csv.DictReader(handle)}


def test_several_nudgers_resume_after_an_interruption_and_equal_single_nudger_runs(capsys, tiny_folders, tmp_path,
                                                                                   monkeypatch):
    """Two nudgers: base runs once, nudger and nudging once per nudger; the base loads once and each nudger after
    the previous one's work, whose weights are let go first. A run interrupted in the second nudger's work resumes
    to the answers (and report rows) of a run with each nudger alone."""
    import gc
    import weakref

    from nudging import loading
    from nudging.evals import runner

    first, second = tiny_folders["nudger"], tiny_folders["byte-anti"]
    shared = ["--task", "coin_flip", "--base", tiny_folders["base"], "--limit", "3", "--max-new-tokens", "8"]
    argv = [*shared, "--nudger", first, "--nudger", second, "--out", str(tmp_path / "both")]
    loads, alive_at_load = [], []
    weights: dict[str, weakref.ref] = {}
    load = loading.LocalOptions.load

    def recording_load(self, source):
        gc.collect()
        alive_at_load.append(sorted(name for name, ref in weights.items() if ref() is not None))
        model, tokenizer = load(self, source)
        loads.append(Path(source).name)
        weights[Path(source).name] = weakref.ref(model)
        return model, tokenizer

    answered = []
    answer = runner.answer_row

    def interrupted(task, example, method, nudger, request):
        if request.nudger == second:
            answered.append(example.id)
            if len(answered) == 2:
                raise KeyboardInterrupt
        return answer(task, example, method, nudger, request)

    monkeypatch.setattr(loading.LocalOptions, "load", recording_load)
    monkeypatch.setattr(runner, "answer_row", interrupted)
    code, _, err = run_eval(capsys, *argv)
    assert code == 130 and "interrupted" in err
    assert loads == ["base", "nudger", "byte-anti"]  # the base once, kept for the second nudger
    assert alive_at_load == [[], ["base"], ["base"]]  # the first nudger was let go before the second loaded
    written = {p.name: p.read_text() for p in (tmp_path / "both").glob("*.jsonl")}

    monkeypatch.setattr(runner, "answer_row", answer)
    loads.clear()
    code, _, err = run_eval(capsys, *argv)
    assert code == 0, err
    assert loads == ["base", "byte-anti"]  # the first nudger's work was done: nothing of it loads again
    for name, text in written.items():
        assert (tmp_path / "both" / name).read_text().startswith(text)

    singles = {}
    for nudger in (first, second):
        out = tmp_path / Path(nudger).name
        assert run_eval(capsys, *shared, "--nudger", nudger, "--out", str(out))[0] == 0
        singles[nudger] = out
    both = answers_by_item(tmp_path / "both")
    assert sorted(both, key=str) == sorted([("base", None), ("nudger", first), ("nudger", second),
                                            ("nudging", first), ("nudging", second)], key=str)
    for nudger, out in singles.items():
        for key, answers in answers_by_item(out).items():
            assert both[key] == answers and len(answers) == 3, key
    table_rows = csv_rows(tmp_path / "both")
    for nudger, out in singles.items():
        for (method, spec), row in csv_rows(out).items():
            mine = table_rows[(method, spec)]
            assert (mine["correct"], mine["accuracy"], mine["items"], mine["no_answer"], mine["ended_by_itself"]) == (
                row["correct"], row["accuracy"], row["items"], row["no_answer"], row["ended_by_itself"])
    table = (tmp_path / "both" / "summary.md").read_text()
    assert ("| task | items | base | nudger · byte-anti | nudger · nudger | nudging · byte-anti | nudging · nudger "
            "| nudged words |") in table
    assert f"nudger: {', '.join(sorted([first, second]))}" in table
    # a single-nudger folder reports as it did: plain method labels
    assert "| task | items | base | nudger | nudging | nudged words |" in (singles[first] / "summary.md").read_text()

    def no_loading(*args, **kwargs):
        raise AssertionError("a finished run must not load models")

    monkeypatch.setattr(Nudger, "from_pretrained", no_loading)
    assert run_eval(capsys, *argv)[0] == 0


@pytest.mark.parametrize("command", [["generate", "q"], ["bench"], ["serve"]])
def test_commands_that_take_one_nudger_refuse_several(capsys, command):
    code = main([*command, "--nudger", "a", "--nudger", "b"])
    err = capsys.readouterr().err
    assert code == 2
    assert err == "nudging: error: --nudger takes one nudger; several are for eval and calibrate (got 2)\n"


def test_several_nudgers_name_a_missing_one_before_any_work(capsys, tiny_folders, tmp_path):
    missing = str(tmp_path / "missing")
    code, _, err = run_eval(capsys, "--task", "coin_flip", "--base", tiny_folders["base"], "--nudger",
                            tiny_folders["nudger"], "--nudger", missing, "--out", str(tmp_path / "o"))
    assert code == 2 and f"model {missing!r} not found" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
    code, _, err = run_eval(capsys, "--task", "coin_flip", "--nudger", "x", "--nudger", "x")
    assert code == 2 and "--nudger x is given twice" in err
