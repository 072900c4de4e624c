"""Bad input, as a new user would send it, on the command line (main() in process) and to a real `nudging serve`
process on tiny models: each case gets one clear line (exit code 2) or a 4xx with OpenAI's error body, or a
sensible answer; never a traceback, a 5xx or a hang."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from nudging.cli import main
from servers import start_server

SURROGATE = "a\ud800b"
ARGV_BYTES = "\udced\udca0\udc80"  # how Python reads the bytes ED A0 80 (not UTF-8) in a command line


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code: int, err: str, expected: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("nudging: error: "), err
    assert expected in lines[0], lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("bad-input")

    def write(name: str, content: str | bytes) -> str:
        path = folder / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
        return str(path)

    def items(*rows: dict) -> str:
        return "".join(json.dumps(row) + "\n" for row in rows)

    eleven = [f"option {i}" for i in range(11)]
    return {
        "surrogate_prompts": write("surrogate.jsonl", '{"question": "a\\ud800b"}\n'),
        "binary": write("binary.dat", bytes(range(128, 256)) * 4),
        "options_5": write("options5.jsonl", items({"question": "q", "options": 5, "answer": 0})),
        "options_11": write("options11.jsonl", items({"question": "q", "options": eleven, "answer": 10})),
        "answer_27": write("answer27.jsonl", items({"question": "q", "options": ["x", "y"], "answer": 27})),
        "surrogate_data": write("surrogate-data.jsonl", '{"question": "a\\ud800b", "options": ["x", "y"], '
                                                        '"answer": 0}\n'),
        "a_file": write("a-file.txt", "not a folder"),
        "out": str(folder / "out"),
        "good_items": write("good.jsonl", items({"id": "one", "question": "The cat reads", "options": ["x", "y"],
                                                 "answer": 0},
                                                {"id": "two", "question": "Zoë writes", "options": ["x", "y"],
                                                 "answer": 1})),
    }


def models(tiny_folders) -> list[str]:
    return ["--base", tiny_folders["base"], "--nudger", tiny_folders["nudger"]]


# --- the command line: one line, exit code 2 ------------------------------------------------------------------
CLI_ERRORS = {
    "question-not-utf8": (["generate", ARGV_BYTES], "QUESTION is not valid Unicode: a byte that is not UTF-8 (0xED) "
                                                     "at character 1"),
    "base-prompt-surrogate": (["generate", "--mode", "base", "--base-prompt", SURROGATE],
                              "--base-prompt is not valid Unicode: a lone surrogate (U+D800) at character 2"),
    "prompts-file-surrogate": (["generate", "--prompts", "{surrogate_prompts}"],
                               "line 1 of {surrogate_prompts} is not valid Unicode"),
    "prompts-file-binary": (["generate", "--prompts", "{binary}"], "{binary} is not UTF-8 text (byte 0x80"),
    "seed-over-2**63": (["generate", "hi", "--seed", "1180591620717411303424", "--base-temperature", "1"],
                        "seed must be an integer from -2**63 to 2**63 - 1"),
    "lookahead-100000": (["generate", "hi", "--lookahead", "100000"], "lookahead must be at most 256"),
    "data-options-5": (["eval", "--task", "csqa", "--data", "csqa={options_5}"], "'options' must be a list"),
    "data-11-options": (["eval", "--task", "csqa", "--data", "csqa={options_11}"],
                        "has 11 options; at most 10 are lettered (A-J)"),
    "data-answer-27": (["eval", "--task", "csqa", "--data", "csqa={answer_27}"], "answer index 27 outside the 2"),
    "data-surrogate": (["eval", "--task", "csqa", "--data", "csqa={surrogate_data}"],
                       "item 1 'question' is not valid Unicode"),
    "out-is-a-file": (["eval", "--task", "coin_flip", "--limit", "1", "--out", "{a_file}"], "is a file, not a folder"),
    "out-cannot-be-made": (["eval", "--task", "coin_flip", "--limit", "1", "--out", "{a_file}/sub"],
                           "--out: cannot create the folder"),
    "report-not-a-folder": (["eval", "--report", "{a_file}"], "is not a folder"),
}


@pytest.mark.parametrize("case", list(CLI_ERRORS), ids=list(CLI_ERRORS))
def test_cli_refuses_with_one_line(case, capsys, tiny_folders, files):
    argv, expected = CLI_ERRORS[case]
    argv = [arg.format(**files) for arg in argv]
    extra = ["--method", "base", "--max-new-tokens", "2"] if argv[0] == "eval" and "--report" not in argv else []
    if extra and "--out" not in argv:
        extra += ["--out", files["out"]]
    code, _, err = run_cli(capsys, *argv, *extra, *models(tiny_folders))
    one_line_error(code, err, expected.format(**files))


# --- the command line: a sensible answer ------------------------------------------------------------------------
def generate_json(capsys, tiny_folders, *argv: str) -> dict:
    code, out, err = run_cli(capsys, "generate", *argv, "--json", "--max-new-tokens", "6", *models(tiny_folders))
    assert code == 0 and "Traceback" not in err, err
    return json.loads(out)


@pytest.mark.parametrize("mode", ["nudger", "nudging", "base"])
def test_an_empty_prompt_starts_at_the_beginning_of_a_document(mode, capsys, tiny_folders):
    """The tiny nudger's tokenizer adds no BOS (like SmolLM2): an empty prompt starts from its BOS token."""
    result = generate_json(capsys, tiny_folders, "--mode", mode, "--base-prompt", "", "--nudger-prompt", "")
    assert result["stop_reason"] in {"eos", "nudger_eos", "length", "repetition"}
    assert result["stats"]["answer_base_tokens"] > 0


@pytest.mark.parametrize("setting", [["--top-p", "1e-300", "--base-temperature", "1"],
                                     ["--base-temperature", "1e-300"]], ids=["top-p-1e-300", "temperature-1e-300"])
def test_extreme_sampling_settings_answer_as_greedy(setting, capsys, tiny_folders):
    """top_p that keeps only the most likely token, or a temperature near 0, is greedy decoding."""
    greedy = generate_json(capsys, tiny_folders, "The cat reads", "--mode", "base")
    sampled = generate_json(capsys, tiny_folders, "The cat reads", "--mode", "base", "--seed", "3", *setting)
    assert sampled["text"] == greedy["text"] and greedy["text"]


def test_a_huge_budget_costs_no_more_work_per_token(capsys, tiny_folders):
    """--max-new-tokens 1000000000 answers until the context is full (the "short" model holds 24 tokens), with
    exactly the passes and tokens of a budget just large enough: nothing is sized by the budget."""
    def answer(budget: str) -> dict:
        code, out, err = run_cli(capsys, "generate", "--mode", "base", "--base-prompt", "The cat", "--json",
                                 "--max-new-tokens", budget, "--base", tiny_folders["short"])
        assert code == 0, err
        return json.loads(out)

    huge, enough = answer("1000000000"), answer("100")
    work = lambda result: {key: value for key, value in result["stats"]["models"]["base"].items() if key != "seconds"}
    assert huge["stop_reason"] == enough["stop_reason"] == "length"
    assert huge["text"] == enough["text"] and work(huge) == work(enough) and work(huge)["forward_passes"] > 10


# --- result files ---------------------------------------------------------------------------------------------
def run_eval(capsys, tiny_folders, files, out: Path, *extra: str) -> tuple[int, str, str]:
    return run_cli(capsys, "eval", "--task", "csqa", "--data", f"csqa={files['good_items']}", "--method", "base",
                   "--max-new-tokens", "2", "--out", str(out), *extra, *models(tiny_folders))


def test_a_result_line_without_id_is_reported_and_its_item_runs_again(capsys, tiny_folders, files, tmp_path):
    code, _, err = run_eval(capsys, tiny_folders, files, tmp_path)
    assert code == 0, err
    [results] = tmp_path.glob("csqa__base__*.jsonl")
    first, second = results.read_text(encoding="utf-8").splitlines()
    broken = {key: value for key, value in json.loads(first).items() if key != "id"}
    results.write_text(json.dumps(broken) + "\n" + second + "\n", encoding="utf-8")

    code, _, err = run_eval(capsys, tiny_folders, files, tmp_path)
    assert code == 0 and "Traceback" not in err, err
    assert f"{results} line 1: no 'id'; skipped: its item runs again" in " ".join(err.split())
    lines = [json.loads(line) for line in results.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 3 and lines[0] == broken  # nothing is lost; the item is answered again
    assert sorted(row["id"] for row in lines[1:]) == ["one", "two"]


def test_the_report_leaves_out_broken_settings_and_rows_with_a_warning(capsys, tiny_folders, files, tmp_path):
    for method in ("base", "nudger"):
        code, _, err = run_eval(capsys, tiny_folders, files, tmp_path, "--method", method)
        assert code == 0, err
    [base_rows] = tmp_path.glob("csqa__base__*.jsonl")
    [nudger_rows] = tmp_path.glob("csqa__nudger__*.jsonl")
    nudger_rows.with_suffix(".json").write_text("{not json", encoding="utf-8")
    first, second = base_rows.read_text(encoding="utf-8").splitlines()
    wrong = {**json.loads(first), "stats": {"seconds": "slow", "nudged_words": 0, "total_words": 1}}
    base_rows.write_text(json.dumps(wrong) + "\n" + second + "\n", encoding="utf-8")

    code, out, err = run_cli(capsys, "eval", "--report", str(tmp_path))
    assert code == 0 and "Traceback" not in err, err
    warnings = " ".join(err.split())
    assert f"{nudger_rows.with_suffix('.json')}: cannot be read" in warnings
    assert f"{base_rows} line 1: 'stats.seconds' is not a number; left out of the report" in warnings
    table = (tmp_path / "summary.md").read_text(encoding="utf-8")
    assert "| csqa | 1 |" in table and "nudger" not in table.split("## Accuracy")[1]

    for path in tmp_path.glob("*.json"):
        path.write_text("[]", encoding="utf-8")
    code, _, err = run_cli(capsys, "eval", "--report", str(tmp_path))
    one_line_error(code, " ".join(line for line in err.splitlines() if not line.startswith("warning")),
                   "no result files")


# --- the server -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tiny_folders):
    """The tiny pair served as in the issue (`--mode nudger`: the nudger's tokenizer adds no BOS), one generation
    at a time and none waiting, so that a second request at once gets 429."""
    process, url = start_server(tiny_folders["base"], tiny_folders["nudger"], "--mode", "nudger",
                                "--max-concurrency", "1", "--max-queue", "0")
    yield url
    process.terminate()
    process.wait(timeout=30)


def post(url: str, path: str, body: dict) -> httpx.Response:
    return httpx.post(url + path, content=json.dumps(body), headers={"Content-Type": "application/json"}, timeout=60)


def events(response: httpx.Response) -> list[str]:
    return [line[len("data: "):] for line in response.text.splitlines() if line.startswith("data: ")]


CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
SERVER_ERRORS = {
    "prompt-surrogate": (COMPLETIONS, {"prompt": SURROGATE}, "prompt", "a lone surrogate (U+D800) at character 2"),
    "chat-surrogate": (CHAT, {"messages": [{"role": "user", "content": SURROGATE}]}, "messages.0.content",
                       "a lone surrogate (U+D800)"),
    "chat-part-surrogate": (CHAT, {"messages": [{"role": "user", "content": [{"type": "text", "text": SURROGATE}]}]},
                            "messages.0.content", "a lone surrogate (U+D800)"),
    "chat-part-text-5": (CHAT, {"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
                         "messages.0.content", "part 0 is a text part whose 'text' is not a string"),
    "chat-part-text-null": (CHAT, {"messages": [{"role": "user", "content": [{"type": "text", "text": None}]}]},
                            "messages.0.content", "part 0 is a text part whose 'text' is not a string"),
    "tokenize-surrogate": ("/tokenize", {"prompt": SURROGATE}, "prompt", "a lone surrogate"),
    "seed-over-2**63": (COMPLETIONS, {"prompt": "hi", "seed": 2**70, "temperature": 1}, "seed",
                        "seed must be an integer from -2**63 to 2**63 - 1"),
    "seed-over-2**63-stream": (COMPLETIONS, {"prompt": "hi", "seed": 2**70, "temperature": 1, "stream": True}, "seed",
                               "seed must be an integer"),
    "seed-over-2**63-logprobs-stream": (COMPLETIONS, {"prompt": "hi", "seed": 2**70, "temperature": 1, "logprobs": 1,
                                                      "stream": True}, "seed", "seed must be an integer"),
    "lookahead-100000": (COMPLETIONS, {"prompt": "hi", "lookahead": 100000}, "lookahead",
                         "lookahead must be at most 256"),
    "max-tokens-1000000000": (COMPLETIONS, {"prompt": "hi", "max_tokens": 1000000000}, "max_tokens",
                              "max_tokens may be at most 2000"),
}


@pytest.mark.parametrize("case", list(SERVER_ERRORS), ids=list(SERVER_ERRORS))
def test_server_refuses_with_a_4xx_and_openais_error_body(case, server):
    path, body, param, expected = SERVER_ERRORS[case]
    response = post(server, path, {"max_tokens": 4, **body})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["param"] == param and error["code"] == "invalid_value"
    assert expected in error["message"]


@pytest.mark.parametrize("extra", [{}, {"echo": True}, {"echo": True, "logprobs": 2}, {"stream": True},
                                   {"logprobs": 1, "stream": True}],
                         ids=["plain", "echo", "echo-logprobs", "stream", "logprobs-stream"])
def test_an_empty_prompt_is_answered_from_the_start_token(extra, server):
    response = post(server, COMPLETIONS, {"prompt": "", "max_tokens": 4, **extra})
    assert response.status_code == 200, response.text
    if extra.get("stream"):
        chunks = events(response)
        assert chunks[-1] == "[DONE]" and all("error" not in json.loads(c) for c in chunks[:-1])
        assert json.loads(chunks[-2])["choices"][0]["finish_reason"] in ("stop", "length")
        return
    answer = response.json()
    assert answer["usage"]["prompt_tokens"] == 1  # the start token (the tiny nudger's BOS)
    assert answer["choices"][0]["text"]
    if "logprobs" in extra:
        scores = answer["choices"][0]["logprobs"]
        assert scores["tokens"][0] == "" and scores["token_logprobs"][0] is None  # the start token, not prompt text
        assert "".join(scores["tokens"]) == answer["choices"][0]["text"]
    tokens = post(server, "/tokenize", {"prompt": ""}).json()
    assert tokens["count"] == 1


@pytest.mark.parametrize("extra", [{"top_p": 1e-300, "temperature": 1, "seed": 1}, {"temperature": 1e-300}],
                         ids=["top-p-1e-300", "temperature-1e-300"])
def test_extreme_sampling_requests_answer_as_greedy(extra, server):
    body = {"prompt": "The cat reads", "max_tokens": 6}
    greedy = post(server, COMPLETIONS, body)
    sampled = post(server, COMPLETIONS, {**body, **extra})
    assert greedy.status_code == sampled.status_code == 200, sampled.text
    assert sampled.json()["choices"][0]["text"] == greedy.json()["choices"][0]["text"]


def health(url: str) -> dict:
    return httpx.get(url + "/health", timeout=10).json()


def test_health_counts_real_disconnects_only(server):
    before = health(server)["stopped_by_disconnect"]
    long = {"prompt": "The cat reads", "max_tokens": 2000, "stream": True}
    refused: list[int] = []
    with httpx.stream("POST", server + COMPLETIONS, json=long, timeout=60) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")  # this one holds the only slot
        for stream in (False, True, False):
            refused.append(post(server, COMPLETIONS, {"prompt": "hi", "max_tokens": 2, "stream": stream}).status_code)
        refused.append(post(server, COMPLETIONS, {"prompt": "hi", "seed": 2**70}).status_code)  # a bad request
        assert health(server)["stopped_by_disconnect"] == before
    assert refused == [429, 429, 429, 422]
    wait_for_count(server, before + 1)  # leaving mid-stream is a disconnect
    with pytest.raises(httpx.TimeoutException):  # and so is giving up on a plain request
        httpx.post(server + COMPLETIONS, json={**long, "stream": False}, timeout=0.5)
    wait_for_count(server, before + 2)
    assert health(server)["running"] == 0  # both generations were stopped


def wait_for_count(url: str, count: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and health(url)["stopped_by_disconnect"] < count:
        time.sleep(0.1)
    assert health(url)["stopped_by_disconnect"] == count


@pytest.fixture(scope="module")
def front(server, tiny_folders):
    """A server whose nudger is `server`, which refuses budgets over 2000: asked for more, a generation here fails
    (502) after it was admitted."""
    process, url = start_server(None, f"openai:nudging@{server}/v1", "--mode", "nudger", "--nudger-tokenizer",
                                tiny_folders["nudger"], "--retries", "0", "--max-tokens-limit", "3000")
    yield url
    process.terminate()
    process.wait(timeout=30)


def test_failed_generations_are_not_disconnects(front):
    before = health(front)["stopped_by_disconnect"]
    for stream in (False, True):  # the stream fails before its first piece: it still gets its status line
        failed = post(front, COMPLETIONS, {"prompt": "The cat reads", "max_tokens": 2500, "stream": stream})
        assert failed.status_code == 502 and failed.json()["error"]["code"] == "upstream_error"
    assert health(front)["stopped_by_disconnect"] == before
