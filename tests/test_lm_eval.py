"""EleutherAI's lm-evaluation-harness with the model type `nudging`, on the real demo pair, offline: local YAML
tasks over a small local JSONL, run through lm-eval's own command line (`python -m nudging.lm_eval`, which is
lm-eval's `cli_evaluate` with the model registered), give the predictions `nudging generate` gives on the same
prompts with the same stop strings and token budget."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

pytest.importorskip("lm_eval", reason='lm-eval is not installed (pip install "nudging[lm-eval]")')

from nudging import models  # noqa: E402
from nudging.errors import InvalidArgumentError  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = ["What is 2 + 3?", "Name a colour of the sky on a clear day.", "How many legs does a cat have?"]
UNTIL = ["\n\n", "Question:"]
BUDGET = 32
PAIR = "base=demo-base,nudger=demo-nudger,gamma=0.3"


def context(question: str) -> str:
    return f"Question: {question}\nAnswer:"


def write_tasks(folder: Path) -> Path:
    """Three tasks over one JSONL: generation with a plain-text prompt, generation with the question alone (for
    --apply_chat_template), and a multiple-choice task (log-likelihood requests)."""
    folder.mkdir()
    data = folder / "qa.jsonl"
    data.write_text("".join(json.dumps({"question": q, "answer": "x"}) + "\n" for q in QUESTIONS))
    common = {"dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data)}}, "test_split": "test",
              "doc_to_target": "{{answer}}"}
    generation = {"output_type": "generate_until", "metric_list": [{"metric": "exact_match"}],
                  "generation_kwargs": {"until": UNTIL, "max_gen_toks": BUDGET, "do_sample": False}}
    tasks = {
        "nudge_plain": {**common, **generation, "doc_to_text": "Question: {{question}}\nAnswer:"},
        "nudge_chat": {**common, **generation, "doc_to_text": "{{question}}"},
        "nudge_choice": {**common, "output_type": "multiple_choice", "doc_to_text": "Question: {{question}}\nAnswer:",
                         "doc_to_choice": ["{{answer}}", "no"], "doc_to_target": 0, "metric_list": [{"metric": "acc"}]},
    }
    for name, fields in tasks.items():  # JSON is YAML
        (folder / f"{name}.yaml").write_text(json.dumps({"task": name, **fields}, indent=1))
    return folder


def lm_eval(tasks: Path, task: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "nudging.lm_eval", "--model", "nudging", "--model_args", PAIR, "--tasks", task,
         "--include_path", str(tasks), "--batch_size", "3", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def finish(process: subprocess.Popen) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=900)
    return process.returncode, out, err


def responses(out: Path, task: str) -> dict[int, tuple[str, str]]:
    """(context, response) by document, from lm-eval's --log_samples file."""
    samples = [json.loads(line) for file in out.rglob(f"samples_{task}_*.jsonl") for line in file.open()]
    return {s["doc_id"]: (s["arguments"]["gen_args_0"]["arg_0"], s["resps"][0][0]) for s in samples}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """lm-eval on both generation tasks, and `nudging generate` once on the same prompts (raw ones and questions)."""
    root = tmp_path_factory.mktemp("lm-eval")
    tasks = write_tasks(root / "tasks")
    lines = [{"base_prompt": context(q), "nudger_prompt": context(q)} for q in QUESTIONS]
    lines += [{"question": q} for q in QUESTIONS]
    (root / "prompts.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    stops = [arg for stop in UNTIL for arg in ("--stop", stop)]
    running = {  # the three load the pair at the same time
        task: lm_eval(tasks, task, "--log_samples", "--output_path", str(root / task), *extra)
        for task, extra in (("nudge_plain", ()), ("nudge_chat", ("--apply_chat_template",)))
    }
    running["generate"] = subprocess.Popen(
        [sys.executable, "-m", "nudging", "generate", "--prompts", str(root / "prompts.jsonl"), "--gamma", "0.3",
         "--max-new-tokens", str(BUDGET), *stops, "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    outputs = {}
    for name, process in running.items():
        code, outputs[name], err = finish(process)
        assert code == 0, f"{name}: {err[-3000:]}"
    found = {task: responses(root / task, task) for task in ("nudge_plain", "nudge_chat")}
    results = [json.loads(line) for line in outputs["generate"].splitlines()]
    return found, results[: len(QUESTIONS)], results[len(QUESTIONS):]


@pytest.mark.demo
def test_a_generation_task_gives_what_nudging_generate_gives_on_its_contexts(runs):
    found, plain, _ = runs
    assert sorted(found["nudge_plain"]) == list(range(len(QUESTIONS)))
    for doc, (question, expected) in enumerate(zip(QUESTIONS, plain)):
        given, response = found["nudge_plain"][doc]
        assert given == context(question)  # the context both models got, as `--base-prompt/--nudger-prompt`
        assert response == expected["text"]
    answers = plain + runs[2]
    assert any(result["stop_reason"] == "stop" for result in answers)  # a stop string ended at least one answer
    assert not any(stop in result["text"] for result in answers for stop in UNTIL)


@pytest.mark.demo
def test_with_the_chat_template_a_question_gets_nudgings_own_prompts(runs):
    found, _, asked = runs
    for doc, (question, expected) in enumerate(zip(QUESTIONS, asked)):
        given, response = found["nudge_chat"][doc]
        assert given == f"{question}\nAnswer:\n"  # the base's prompt; the nudger got its chat template
        assert response == expected["text"]


@pytest.mark.demo
def test_a_loglikelihood_task_fails_with_how_to_score_one_model(tmp_path):
    code, _, err = finish(lm_eval(write_tasks(tmp_path / "tasks"), "nudge_choice"))
    assert code == 2
    last = err.strip().splitlines()[-1]
    assert last.startswith("nudging: error: ") and "decoding method" in last
    assert f"lm_eval --model hf --model_args pretrained={models.resolve('demo-base')}" in last
    assert f"pretrained={models.resolve('demo-nudger')}" in last
    assert "Traceback" not in err


@pytest.mark.parametrize("model_args, named", [
    ({"gama": 0.3}, "'gama'"),
    ({"gamma": 1.5}, "gamma must be a number strictly between 0 and 1"),
    ({"lookahead": 0}, "lookahead must be an integer >= 1"),
    ({"mode": "beam"}, "beam"),
    ({"batch_size": "many"}, "--batch_size"),
    ({"device": "tpu"}, "--device"),
])
def test_bad_model_args_are_refused_before_any_model_loads(model_args, named):
    from nudging.lm_eval.model import NudgingLM

    with pytest.raises(InvalidArgumentError, match=named.replace("(", r"\(")):
        NudgingLM(base="demo-base", nudger="demo-nudger", **model_args)


def test_a_request_with_an_unsupported_setting_is_refused():
    from lm_eval.api.instance import Instance

    from nudging.lm_eval.model import NudgingLM

    model = NudgingLM(base="demo-base", nudger="demo-nudger")
    request = Instance("generate_until", {}, ("Question: 1 + 1?\nAnswer:", {"until": ["\n"], "num_beams": 4}), 0)
    with pytest.raises(InvalidArgumentError, match="'num_beams' is not supported"):
        model.generate_until([request])
    assert model._nudger is None  # refused before the weights load


def test_the_entry_point_names_the_registered_model_type():
    from lm_eval.api.registry import get_model

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["lm_eval.models"]
    module, _, name = declared["nudging"].partition(":")
    target = getattr(__import__(module, fromlist=[name]), name)
    assert get_model("nudging") is target
    assert get_model("hf").__name__ == "HFLM"  # lm-eval's own models are still there
