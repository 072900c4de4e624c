"""The command line, in-process through main() and once through the installed console script."""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from nudging.cli import main
from tiny import byte_level_tokenizer


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_generate_json_prints_one_object(capsys, tiny_folders):
    code, out, _ = run_cli(
        capsys, "generate", "The cat reads", "--base", tiny_folders["base"], "--nudger", tiny_folders["nudger"],
        "--max-new-tokens", "24", "--gamma", "0.4", "--json",
    )
    assert code == 0
    lines = out.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["text"] == "".join(span["text"] for span in result["spans"])
    assert {span["source"] for span in result["spans"]} <= {"base", "nudger"}
    assert result["stop_reason"] in {"nudger_eos", "repetition", "length"}
    stats = result["stats"]
    for key in ("rounds", "nudged_words", "total_words", "nudged_word_fraction", "answer_base_tokens", "seconds"):
        assert key in stats
    assert set(stats["models"]) == {"base", "nudger"}
    assert stats["models"]["nudger"]["forward_passes"] > 0


def test_generate_takes_a_rule_and_a_cap(capsys, tiny_folders):
    """--max-nudged-fraction 0: after the first round that gives the nudger a word, the base writes the rest."""
    code, out, err = run_cli(
        capsys, "generate", "--base-prompt", "The cat reads\n", "--nudger-prompt", "The cat reads\n", "--base",
        tiny_folders["base"], "--nudger", tiny_folders["nudger"], "--max-new-tokens", "24", "--rule", "margin",
        "--gamma", "0.5", "--max-nudged-fraction", "0", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["trace"][-1]["takeover"] == "capped" and result["stop_reason"] in ("eos", "length")
    assert all(round_["takeover"] != "capped" for round_ in result["trace"][:-1])


def test_generate_raw_prompts_and_single_model_modes(capsys, tiny_folders):
    models = ["--base", tiny_folders["base"], "--nudger", tiny_folders["nudger"], "--max-new-tokens", "12", "--json"]
    code, out, _ = run_cli(capsys, "generate", "--base-prompt", "Zoë reads\n", "--nudger-prompt", "Zoë reads\n", *models)
    assert code == 0 and json.loads(out)["mode"] == "nudging"
    for mode in ("base", "nudger"):
        code, out, _ = run_cli(capsys, "generate", "The cat reads", "--mode", mode, *models)
        result = json.loads(out)
        assert code == 0 and result["stop_reason"] in {"eos", "length"}
        assert {span["source"] for span in result["spans"]} <= {mode}


def test_generate_human_output_shows_answer_and_stats(capsys, tiny_folders):
    code, out, _ = run_cli(
        capsys, "generate", "The cat reads", "--base", tiny_folders["base"], "--nudger", tiny_folders["nudger"],
        "--max-new-tokens", "16",
    )
    assert code == 0
    assert "stop: " in out and "rounds" in out and "answer tokens" in out


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--gamma", "1.5"], "gamma"),
        (["--gamma", "0"], "gamma"),
        (["--lookahead", "0"], "lookahead"),
        (["--rule", "top2"], "rule must be one of top1, entropy, margin, agreement, window, got 'top2'"),
        (["--agreement-k", "0"], "agreement_k must be an integer from 1 to 20"),
        (["--rule", "window", "--window", "0"], "window must be an integer from 1 to 256, got 0"),
        (["--max-nudged-fraction", "1.5"], "max_nudged_fraction must be a number from 0 to 1"),
        (["--max-new-tokens", "0"], "max_new_tokens"),
        (["--base", "/no/such/folder"], "not found"),
        (["--nudger", "missing-model.gguf"], "does not exist"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, tiny_folders, extra, message):
    models = {"--base": tiny_folders["base"], "--nudger": tiny_folders["nudger"]}
    for flag in extra[::2]:
        models.pop(flag, None)  # a flag given twice is an error of its own (--nudger: "takes one nudger")
    argv = ["generate", "hi", *[part for pair in models.items() for part in pair], *extra]
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and message in err and "Traceback" not in err


def test_prompt_longer_than_context(capsys, tiny_folders):
    code, _, err = run_cli(
        capsys, "generate", "The cat reads the question " * 20, "--base", tiny_folders["short"],
        "--nudger", tiny_folders["nudger"],
    )
    assert code == 2 and "context window" in err and len(err.strip().splitlines()) == 1


def test_not_a_causal_lm(capsys, tmp_path):
    from transformers import DistilBertConfig, DistilBertModel

    config = DistilBertConfig(vocab_size=50, dim=8, n_layers=1, n_heads=2, hidden_dim=8)
    DistilBertModel(config).save_pretrained(tmp_path)
    byte_level_tokenizer().save_pretrained(tmp_path)
    code, _, err = run_cli(capsys, "generate", "hi", "--base", str(tmp_path), "--mode", "base")
    assert code == 2 and "not a causal language model" in err


def bench_report(capsys, tmp_path, prompts: str, *argv: str) -> dict:
    """`nudging bench --json` on the given prompt file text; the parsed report."""
    path = tmp_path / "prompts.jsonl"
    path.write_text(prompts)
    code, out, err = run_cli(capsys, "bench", "--prompts", str(path), "--json", *argv)
    assert code == 0, err
    return json.loads(out)


def test_bench_json(capsys, tiny_folders, tmp_path):
    report = bench_report(capsys, tmp_path, '{"question": "The cat reads"}\nEvery student counts\n', "--base",
                          tiny_folders["base"], "--nudger", tiny_folders["nudger"], "--max-new-tokens", "16")
    assert report["prompts"] == 2 and report["base_only"]["answer_tokens"] > 0
    # every method these models can run, timed in the same run; the shared-vocabulary ones say why they did not
    variants = {"nudging-entropy", "nudging-margin", "nudging-agreement", "nudging-window", "nudging-capped"}
    assert set(report["methods"]) == {"nudging", "base", "nudger", "ensemble-text", "in-context", "blend"} | variants
    assert set(report["skipped"]) == {"proxy-tuning", "ensemble"} and "vocabulary" in report["skipped"]["ensemble"]
    nudging = report["methods"]["nudging"]
    assert nudging["time_ratio_vs_base"] > 0 and nudging["time_ratio_vs_nudging"] == 1.0
    assert nudging["work_per_answer_token"]["nudger"]["forward_passes"] > 0
    text = report["methods"]["ensemble-text"]["work_per_answer_token"]
    assert text["base"]["forward_passes"] > 0.5 and text["nudger"]["forward_passes"] > 0.5  # about one per token
    assert "nudger" not in report["methods"]["in-context"]["work_per_answer_token"]
    assert all(len(row) == 2 + len(report["methods"]) for row in report["rows"])
    # where the time went, per model: what its passes did, summed over the prompts
    for role in ("base", "nudger"):
        work = nudging["models"][role]
        assert work["forward_passes"] == sum(row["nudging"]["models"][role]["forward_passes"] for row in report["rows"])
        assert work["logit_rows"] >= work["forward_passes"] and work["tokens_processed"] >= work["forward_passes"]
        assert (work["seconds"] > 0) == (work["forward_passes"] > 0)
        assert work["seconds"] < report["methods"]["nudging"]["seconds"]
    assert nudging["models"]["nudger"]["forward_passes"] > 0


def test_console_script_entry_point(tiny_folders):
    completed = subprocess.run(
        [sys.executable, "-m", "nudging", "generate", "The cat", "--base", tiny_folders["base"], "--nudger",
         tiny_folders["nudger"], "--max-new-tokens", "8", "--json"],
        capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout)["stop_reason"] in {"nudger_eos", "repetition", "length"}


@pytest.mark.parametrize("mode", ["proxy-tuning", "ensemble", "ensemble-text", "in-context"])
def test_generate_runs_every_baseline(capsys, tiny_folders, mode):
    shared = ["--base", tiny_folders["byte-base"], "--nudger", tiny_folders["nudger"],
              "--anti-expert", tiny_folders["byte-anti"], "--alpha", "0.7"]
    code, out, err = run_cli(capsys, "generate", "The cat reads", "--mode", mode, "--max-new-tokens", "12", "--json",
                             *shared)
    assert code == 0, err
    result = json.loads(out)
    assert result["mode"] == mode and result["text"] == "".join(s["text"] for s in result["spans"])
    assert result["stop_reason"] in ("eos", "length", "stop")
    work = result["stats"]["models"]
    # only the models a method uses are loaded
    assert ("anti_expert" in work) == (mode == "proxy-tuning") and ("nudger" in work) == (mode != "in-context")
    assert all(w["forward_passes"] > 0 for w in work.values())


def test_generate_baseline_that_needs_one_vocabulary_names_the_methods_that_work(capsys, tiny_folders):
    code, _, err = run_cli(capsys, "generate", "The cat", "--mode", "ensemble", "--base", tiny_folders["base"],
                           "--nudger", tiny_folders["nudger"])
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "share one vocabulary" in err and "ensemble-text" in err and "in-context" in err
    code, _, err = run_cli(capsys, "generate", "The cat", "--mode", "proxy-tuning", "--base", tiny_folders["byte-base"],
                           "--nudger", tiny_folders["nudger"])
    assert code == 2 and "--anti-expert" in err


def test_bench_times_the_shared_vocabulary_baselines(capsys, tiny_folders, tmp_path):
    report = bench_report(capsys, tmp_path, "The cat reads\n", "--base", tiny_folders["byte-base"], "--nudger",
                          tiny_folders["nudger"], "--anti-expert", tiny_folders["byte-anti"], "--max-new-tokens", "8",
                          "--method", "all")
    assert list(report["methods"]) == ["nudging", "base", "nudger", "nudging-entropy", "nudging-margin",
                                       "nudging-agreement", "nudging-window", "nudging-capped", "proxy-tuning",
                                       "ensemble", "ensemble-text", "in-context", "blend"] and report["skipped"] == {}
    proxy = report["methods"]["proxy-tuning"]["work_per_answer_token"]
    assert set(proxy) == {"base", "nudger", "anti_expert"}  # one pass per model and token
    assert all(abs(work["forward_passes"] - 1.0) < 0.5 for work in proxy.values())


def test_bench_batch_compares_batched_with_one_at_a_time(capsys, tiny_folders, tmp_path):
    report = bench_report(capsys, tmp_path, "The cat reads\nEvery student counts\nA robot writes\nZoë finds\n",
                          "--base", tiny_folders["base"], "--nudger", tiny_folders["nudger"], "--max-new-tokens", "16",
                          "--method", "nudging", "--batch", "4")
    batched = report["batch"]
    assert batched["size"] == 4 and batched["prompts"] == 4 and batched["same_answers"] == 4
    assert batched["batched"]["answer_tokens"] == batched["one_at_a_time"]["answer_tokens"] > 0
    assert batched["speedup"] > 0
    assert batched["packed_passes"]["nudger"]["lanes_per_pass"] > 1


def test_bench_batch_needs_nudging_and_a_positive_size(capsys, tiny_folders, tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("The cat\n")
    models = ["--base", tiny_folders["base"], "--nudger", tiny_folders["nudger"]]
    code, _, err = run_cli(capsys, "bench", "--prompts", str(path), "--batch", "0", *models)
    assert code == 2 and "--batch must be at least 1" in err
    code, _, err = run_cli(capsys, "bench", "--prompts", str(path), "--batch", "2", "--method", "base", *models)
    assert code == 2 and "--batch times nudging" in err


def test_generate_several_questions_answers_them_batched_in_order(capsys, tiny_folders, tmp_path):
    models = ["--base", tiny_folders["base"], "--nudger", tiny_folders["nudger"], "--max-new-tokens", "12"]
    questions = ["The cat reads", "Every student counts", "A robot writes"]
    alone = []
    for question in questions:
        code, out, err = run_cli(capsys, "generate", question, "--json", *models)
        assert code == 0, err
        alone.append(json.loads(out))
    path = tmp_path / "more.txt"
    path.write_text("A robot writes\n")
    code, out, err = run_cli(capsys, "generate", *questions[:2], "--prompts", str(path), "--batch-size", "3", "--json",
                             *models)
    assert code == 0, err
    together = [json.loads(line) for line in out.splitlines()]
    assert [answer["question"] for answer in together] == questions
    assert [(a["text"], a["spans"], a["stop_reason"]) for a in together] == \
        [(a["text"], a["spans"], a["stop_reason"]) for a in alone]
    code, out, err = run_cli(capsys, "generate", *questions, *models)
    assert code == 0 and all(f"# {q}" in out for q in questions) and out.count("stop: ") == 3
    code, _, err = run_cli(capsys, "generate", *questions, "--batch-size", "0", *models)
    assert code == 2 and "--batch-size must be at least 1" in err


ROOT = Path(__file__).resolve().parent.parent
COMMANDS = ("generate", "bench", "eval", "serve", "calibrate", "setup")
MODEL_COMMANDS = COMMANDS[:-1]  # README's "# any command:" and "# baselines:" lines; setup loads no model
OPTION = r"(?<![\w-])--[a-z][a-z-]*"


def readme_blocks(languages: tuple[str, ...]) -> list[list[str]]:
    blocks: list[list[str]] = []
    block: list[str] | None = None
    language = ""
    for line in (ROOT / "README.md").read_text().splitlines():
        if not line.startswith("```"):
            if block is not None:
                block.append(line)
        elif block is None:
            block, language = [], line[3:].strip()
        else:
            if language in languages:
                blocks.append(block)
            block = None
    return blocks


def readme_usage_options() -> dict[str, set[str]]:
    """Options per command in README's usage blocks: `nudging CMD|CMD ... [--opt]` lines, their indented
    continuations, and the shared `# any command:` / `# baselines:` lines; comments after a command are prose."""
    shown: dict[str, set[str]] = {command: set() for command in COMMANDS}
    for block in readme_blocks(("", "bash")):
        commands: tuple[str, ...] = ()
        for line in block:
            shared = re.match(r"# (any command|baselines):", line)
            if line.startswith("nudging "):
                commands = tuple(line.split()[1].split("|"))
                line = line.split("#")[0]
            elif shared:
                commands, line = MODEL_COMMANDS, line[shared.end():]
            elif line.startswith("#") and commands == MODEL_COMMANDS:
                line = line[1:]
            elif not line.startswith(" "):
                commands = ()
            for command in commands:
                if command in shown:
                    shown[command].update(re.findall(OPTION, line.split("  #")[0]))
    return shown


def help_text(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def test_every_option_readme_shows_is_in_that_commands_help(capsys):
    shown = readme_usage_options()
    # the parse itself must find the usage lines, or the check below would pass on nothing
    assert {"--gamma", "--mode", "--batch-size", "--remote-protocol", "--alpha"} <= shown["generate"]
    assert {"--max-tokens-limit", "--host"} <= shown["serve"] and shown["setup"] == {"--all"}
    for command in COMMANDS:
        offered = set(re.findall(OPTION, help_text(capsys, command)))
        assert shown[command] <= offered, f"README shows {sorted(shown[command] - offered)} for nudging {command}"


def test_version_prints_the_installed_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"nudging {importlib.metadata.version('nudging')}"
    declared = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    assert importlib.metadata.version("nudging") == declared


def test_ci_runs_the_test_command_of_the_readme():
    commands = [line for block in readme_blocks(("bash",)) for line in block if "pytest" in line]
    assert commands == ["./scripts/setup.sh --tests && python3 -m pytest -q"]
    assert commands[0] in (ROOT / ".ci" / "run").read_text().splitlines()
