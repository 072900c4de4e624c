"""Remote models (`openai:MODEL@URL`) against real OpenAI-compatible server processes that the tests start:
`nudging serve --mode base|nudger` on the same weights as the local engine (answers must be equal), a fault
proxy in front of it, and llama-cpp-python's server on the demo GGUFs (test_remote_llama_cpp.py)."""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from nudging import Nudger, models, prompts
from nudging.cli import main
from nudging.errors import InvalidArgumentError, RemoteError
from nudging.backends.remote.client import ClientSettings
from nudging.backends.remote.model import tokens_of
from nudging.backends.remote.probe import RemoteWarning, connect
from nudging.backends.remote.spec import parse
from nudging.trace import AUTHORS_CHUNK
from reference import RefModel, reference_nudging
from servers import free_port, start_server

QUESTIONS = ["the cat reads the question", "Zoë counts two numbers", "every student finds a long letter"]
FAST = ClientSettings(timeout=5, retries=2, backoff=0.05)


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="module")
def servers(tiny_folders):
    """The tiny base and nudger, each behind its own `nudging serve` process."""
    base, base_url = start_server(tiny_folders["base"], tiny_folders["nudger"], "--mode", "base",
                                  "--model-name", "tiny-base", "--max-concurrency", "2")
    nudger, nudger_url = start_server(tiny_folders["base"], tiny_folders["nudger"], "--mode", "nudger",
                                      "--model-name", "tiny-nudger", "--max-concurrency", "2")
    yield {"base": base_url + "/v1", "nudger": nudger_url + "/v1"}
    stop(base)
    stop(nudger)


@pytest.fixture(scope="module")
def local(tiny_folders):
    return Nudger.from_pretrained(tiny_folders["base"], tiny_folders["nudger"], max_new_tokens=48)


def remote(servers, tiny_folders, protocol="auto", base=True, nudger=True, base_url=None, **options) -> Nudger:
    """The tiny pair with a remote base and/or nudger; `base_url` puts the base behind another URL (a proxy)."""
    return Nudger.from_pretrained(
        f"openai:tiny-base@{base_url or servers['base']}" if base else tiny_folders["base"],
        f"openai:tiny-nudger@{servers['nudger']}" if nudger else tiny_folders["nudger"],
        base_tokenizer=tiny_folders["base"], nudger_tokenizer=tiny_folders["nudger"], max_new_tokens=48,
        remote_protocol=protocol, **options,
    )


def same(a, b) -> bool:
    return (a.text, a.spans, a.stop_reason) == (b.text, b.spans, b.stop_reason)


def start_proxy(upstream: str, fault: str, count: int = 1) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, str(Path(__file__).parent / "fault_proxy.py"), str(port),
                                upstream.removesuffix("/v1"), fault, str(count)])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process, f"http://127.0.0.1:{port}/v1"
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("proxy did not start")


# --- equal to local ---------------------------------------------------------------------------------------------
def test_a_remote_base_under_the_rules_it_can_run_gives_the_local_answers(servers, tiny_folders, local):
    """agreement (the word checks carry top-k strings) and window (one switch, then a stage to the end) read
    only what a server's top logprobs give."""
    pair = remote(servers, tiny_folders, "auto")
    for question in QUESTIONS:
        for settings in ({"rule": "agreement", "agreement_k": 3, "gamma": 0.6},
                         {"rule": "window", "window": 2, "gamma": 0.5},
                         {"rule": "window", "window": 4, "gamma": 0.8, "max_nudged_fraction": 0.5}):
            expected = local.generate(question, lookahead=9, **settings)
            got = pair.generate(question, lookahead=9, **settings)
            assert same(got, expected), (question, settings, got.text, expected.text)


@pytest.mark.parametrize("protocol", ["per-word", "echo", "auto"])
def test_remote_pair_gives_the_local_answers(servers, tiny_folders, local, protocol):
    pair = remote(servers, tiny_folders, protocol)
    for question in QUESTIONS:
        for gamma, lookahead in ((0.3, 16), (0.6, 5), (0.45, 9)):
            expected = local.generate(question, gamma=gamma, lookahead=lookahead)
            got = pair.generate(question, gamma=gamma, lookahead=lookahead)
            assert same(got, expected), (protocol, question, gamma, got.text, expected.text)
            assert got.stats.word_checks == expected.stats.word_checks
    work = got.stats.models["base"]
    assert work["requests"] >= 1 and work["resumed_streams"] == 0 and work["echo_mismatches"] == 0
    assert work["prompt_tokens_sent"] > work["requests"]
    if protocol == "per-word":
        assert work["echo_requests"] == 0
    if protocol == "echo":
        assert pair.base.capabilities.echo_layout == "aligned"
        assert sum(pair.generate(q).stats.models["base"]["echo_requests"] for q in QUESTIONS) > 0


def test_mixed_local_and_remote_models_and_single_model_modes(servers, tiny_folders, local):
    remote_base = remote(servers, tiny_folders, nudger=False)
    remote_nudger = remote(servers, tiny_folders, base=False)
    for question in QUESTIONS[:2]:
        expected = local.generate(question, gamma=0.4)
        assert same(remote_base.generate(question, gamma=0.4), expected)
        assert same(remote_nudger.generate(question, gamma=0.4), expected)
        for mode in ("base", "nudger"):
            plain = remote(servers, tiny_folders).generate(question, mode=mode, max_new_tokens=12)
            assert same(plain, local.generate(question, mode=mode, max_new_tokens=12)), mode
            assert plain.stop_reason in ("eos", "length")


def test_nudging_serve_in_front_of_remote_models(servers, tiny_folders, local):
    """`nudging serve` whose base and nudger are themselves served elsewhere: chat page and API users get the
    same answers as from local models."""
    process, url = start_server(f"openai:tiny-base@{servers['base']}", f"openai:tiny-nudger@{servers['nudger']}",
                                "--base-tokenizer", tiny_folders["base"], "--nudger-tokenizer", tiny_folders["nudger"],
                                "--max-concurrency", "2")
    try:
        body = {"model": "nudging", "prompt": QUESTIONS[0], "max_tokens": 30, "gamma": 0.4}
        answer = httpx.post(url + "/v1/completions", json=body, timeout=120).json()
        expected = local.generate(base_prompt=QUESTIONS[0], nudger_prompt=QUESTIONS[0], gamma=0.4, max_new_tokens=30)
        assert answer["choices"][0]["text"] == expected.text
        assert answer["nudging"]["stats"]["models"]["base"]["requests"] >= 1
        refused = httpx.post(url + "/v1/completions", json={**body, "nudging": False, "logprobs": 1}, timeout=60)
        assert refused.status_code == 422 and "local model" in refused.json()["error"]["message"]
    finally:
        stop(process)


# (question, gamma, lookahead): answers that end with a nudger EOS, the repetition guard, the budget (64 tokens)
STOPS = [("The cat reads the question.", 0.3, 16), ("A robot writes the answer: 12 + 7 = 19.", 0.6, 5),
         ("A robot reads two numbers.", 0.3, 16)]


@pytest.mark.parametrize("protocol", ["per-word", "echo"])
def test_remote_answers_end_for_every_reason_as_local_ones_do(servers, tiny_folders, local, protocol):
    pair = remote(servers, tiny_folders, protocol)
    reasons = set()
    for question, gamma, lookahead in STOPS:
        expected = local.generate(question, gamma=gamma, lookahead=lookahead, max_new_tokens=64)
        got = pair.generate(question, gamma=gamma, lookahead=lookahead, max_new_tokens=64)
        assert same(got, expected), (protocol, question, got.text, got.stop_reason, expected.text, expected.stop_reason)
        reasons.add(got.stop_reason)
    assert reasons == {"nudger_eos", "repetition", "length"}


@pytest.fixture(scope="module")
def reference_pair(tiny_folders):
    """The plain reference on the tiny pair, in the dtype the servers run (float32)."""
    return tuple(RefModel(*models.load(tiny_folders[role], dtype="float32", device="cpu")) for role in ("base", "nudger"))


# (question, gamma, lookahead): two answers with base stages past 16 tokens, where re-tokenizing the text between
# chunks changes the answer (and, once, gives the same ids), then a nudger EOS and a repetition
CHUNKED = [("The cat writes three apples: 12 + 7 = 19.", 0.1, 16), ("The cat reads the answer quickly.", 0.05, 8),
           ("The cat reads the question.", 0.1, 16), ("The cat finds a long letter\n", 0.2, 4)]


def test_the_authors_chunked_protocol_matches_a_chunked_reference(servers, tiny_folders, local, reference_pair):
    base, nudger = reference_pair
    pair = remote(servers, tiny_folders, "chunked")
    assert pair.base.stage_protocol == "chunked"
    changed, events, reasons = 0, [], set()
    for question, gamma, lookahead in CHUNKED:
        expected = reference_nudging(base, nudger, prompts.base_prompt(question),
                                     prompts.chat_prompt(nudger.tokenizer, question), gamma, lookahead, 48,
                                     chunk=AUTHORS_CHUNK)
        got = pair.generate(question, gamma=gamma, lookahead=lookahead)
        assert (got.text, [(s.text, s.source) for s in got.spans], got.stop_reason) == (
            expected.text, expected.spans, expected.stop_reason), (question, got.text, expected.text)
        work = got.stats.models["base"]
        assert work["streamed_requests"] == 0
        # each base request brings back up to 16 tokens whether they are used or not
        assert work["tokens_received"] >= 16 * work["requests"] // 2
        # a request that continues a stage from the text so far, one per chunk the reference re-tokenized
        assert work["retokenized_chunks"] == sum(e in ("chunk", "chunk_retokenized") for e in expected.events)
        changed += got.text != local.generate(question, gamma=gamma, lookahead=lookahead).text
        events += expected.events
        reasons.add(got.stop_reason)
    assert changed >= 2  # the spec's answer differs: the comparison tells the chunked protocol apart
    assert {"chunk", "chunk_retokenized"} <= set(events)
    assert reasons == {"nudger_eos", "repetition", "length"}


def test_stats_count_requests_and_the_papers_protocol(servers, tiny_folders):
    result = remote(servers, tiny_folders, "per-word").generate(QUESTIONS[0], gamma=0.6, lookahead=5)
    base, nudger = result.stats.models["base"], result.stats.models["nudger"]
    assert nudger["requests"] == result.stats.rounds  # one lookahead request per round
    # per word: a takeover check is also its base stage, so we never need more than the paper's protocol
    assert base["requests"] <= result.stats.word_checks + 1
    assert result.stats.paper_requests >= result.stats.rounds + result.stats.word_checks


def test_concurrent_generations_on_replicas(servers, tiny_folders, local):
    pair = remote(servers, tiny_folders, "per-word")
    replicas = [pair.replica() for _ in range(3)]
    results: dict[int, object] = {}

    def answer(index: int) -> None:
        results[index] = replicas[index].generate(QUESTIONS[index], gamma=0.5)

    threads = [threading.Thread(target=answer, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for index in range(3):
        assert same(results[index], local.generate(QUESTIONS[index], gamma=0.5))


# --- faults -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fault", ["fail", "busy"])
def test_500s_and_429s_are_retried(servers, tiny_folders, local, fault):
    proxy, url = start_proxy(servers["base"], fault, count=2)
    try:
        pair = remote(servers, tiny_folders, base_url=url, client_settings=FAST)
        assert same(pair.generate(QUESTIONS[1]), local.generate(QUESTIONS[1]))
        assert pair.base.client.retries_made == 2
    finally:
        stop(proxy)


def test_a_stream_cut_mid_answer_is_resumed(servers, tiny_folders, local):
    proxy, url = start_proxy(servers["base"], "cut", count=3)
    try:
        pair = remote(servers, tiny_folders, "per-word", base_url=url,
                      client_settings=ClientSettings(timeout=5, retries=8, backoff=0.01))
        # a low gamma makes long base stages; the proxy cuts the first three that get to five events
        for question in QUESTIONS:
            assert same(pair.generate(question, gamma=0.05), local.generate(question, gamma=0.05))
        assert pair.base.counters.resumed_streams == 3
    finally:
        stop(proxy)


def test_a_served_name_that_is_no_tokenizer_asks_for_one(servers):
    with pytest.raises(RemoteError, match="cannot load its tokenizer.*give one with --base-tokenizer"):
        connect(f"openai:tiny-base@{servers['base']}", role="base")


def test_a_server_that_cannot_stream_logprobs_gets_chunked_stages(servers, tiny_folders, local):
    proxy, url = start_proxy(servers["base"], "plain-stream")
    try:
        with pytest.warns(RemoteWarning, match="does not stream logprobs"):
            pair = remote(servers, tiny_folders, "per-word", base_url=url)
        assert pair.base.stage_protocol == "chunked"
        result = pair.generate(QUESTIONS[0], gamma=0.1)
        assert result.stats.models["base"]["chunked_requests"] > 0
        assert result.stats.models["base"]["streamed_requests"] == 0
        # on these prompts re-tokenizing between chunks happens to change nothing
        assert same(result, local.generate(QUESTIONS[0], gamma=0.1))
    finally:
        stop(proxy)


def test_a_stalled_server_times_out_with_a_clear_error(servers, tiny_folders):
    proxy, url = start_proxy(servers["base"], "stall")
    try:
        started = time.monotonic()
        with pytest.raises(RemoteError, match="gave up after 2 tries .*no answer within 1 s"):
            connect(f"openai:tiny-base@{url}", role="base", tokenizer=tiny_folders["base"],
                    client_settings=ClientSettings(timeout=1, retries=1, backoff=0.01))
        assert time.monotonic() - started < 20
    finally:
        stop(proxy)


def test_a_server_killed_mid_answer_is_an_error_not_a_hang(tiny_folders):
    process, url = start_server(tiny_folders["base"], tiny_folders["nudger"], "--mode", "base")
    pair = Nudger.from_pretrained(f"openai:nudging@{url}/v1", tiny_folders["nudger"],
                                  base_tokenizer=tiny_folders["base"], max_new_tokens=2000,
                                  client_settings=ClientSettings(timeout=5, retries=2, backoff=0.05))
    pieces = pair.stream(QUESTIONS[0], config=None)
    next(pieces)
    process.kill()
    process.wait()
    started = time.monotonic()
    with pytest.raises(RemoteError, match="gave up after 3 tries|broke off"):
        for _ in pieces:
            pass
    assert time.monotonic() - started < 30


def test_a_refused_key_and_a_wrong_model_name_are_clear_errors(tiny_folders):
    process, url = start_server(tiny_folders["base"], tiny_folders["nudger"], "--mode", "base", "--api-key", "k1")
    try:
        with pytest.raises(RemoteError, match="refused the API key"):
            connect(f"openai:nudging@{url}/v1", role="base", api_key="wrong", tokenizer=tiny_folders["base"])
        # the server is asked before the tokenizer is looked up by the (wrong) name
        with pytest.raises(RemoteError, match="does not serve model 'gpt-9'; it serves: nudging"):
            connect(f"openai:gpt-9@{url}/v1", role="base", api_key="k1")
        with pytest.raises(RemoteError, match="usually ends in /v1"):
            connect(f"openai:nudging@{url}", role="base", api_key="k1")
        with pytest.raises(RemoteError, match="cannot load its tokenizer"):
            connect(f"openai:nudging@{url}/v1", role="base", api_key="k1", tokenizer="./no-such-model")
        model = connect(f"openai:nudging@{url}/v1", role="base", api_key="k1", tokenizer=tiny_folders["base"])
        assert model.capabilities.logprobs
    finally:
        stop(process)


def test_a_server_without_logprobs_cannot_be_the_base(tiny_folders):
    # a nudging-mode server answers completions but has no single model to give logprobs for
    process, url = start_server(tiny_folders["base"], tiny_folders["nudger"])
    try:
        with pytest.raises(RemoteError, match="no logprobs"):
            connect(f"openai:nudging@{url}/v1", role="base", tokenizer=tiny_folders["base"])
        assert connect(f"openai:nudging@{url}/v1", role="nudger", tokenizer=tiny_folders["nudger"]) is not None
    finally:
        stop(process)


def test_an_unreachable_server_and_bad_specs(tiny_folders):
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(RemoteError, match="gave up after 2 tries"):
        connect(f"openai:m@{url}", role="base", tokenizer=tiny_folders["base"],
                client_settings=ClientSettings(timeout=2, retries=1, backoff=0.01))
    for bad in ({"timeout": 0}, {"timeout": "1"}, {"retries": -1}, {"retries": 1.5}, {"backoff": -1}):
        with pytest.raises(InvalidArgumentError, match=next(iter(bad))):
            ClientSettings(**bad)
    for spec in ("openai:", "openai:model", "openai:model@localhost:8000", "openai:@http://x/v1"):
        with pytest.raises(InvalidArgumentError, match="openai:MODEL@http"):
            parse(spec)


# --- what servers send back --------------------------------------------------------------------------------------
def test_tokens_of_reads_the_servers_quirks():
    # llama-cpp-python puts the chosen token into top_logprobs too: two entries, take the max
    [token] = tokens_of(" a", {"tokens": [" a"], "token_logprobs": [-0.5], "top_logprobs": [{"a": -0.5, " a": -0.5}]})
    assert token.piece == " a" and token.top1_prob == pytest.approx(math.exp(-0.5))
    # a character held back and sent with the next token: the text goes to the last token of the chunk
    tokens = tokens_of("é", {"tokens": ["", ""], "token_logprobs": [-0.1, -0.2], "top_logprobs": [None, None]})
    assert [t.piece for t in tokens] == ["", "é"] and tokens[1].top1_prob == pytest.approx(math.exp(-0.2))
    assert [t.piece for t in tokens_of("ab", None)] == ["ab"] and math.isnan(tokens_of("ab", None)[0].top1_prob)
    assert tokens_of("", None) == []


def test_streamed_logprobs_and_tokenize_from_a_single_model_server(servers, tiny_folders):
    body = {"model": "tiny-base", "prompt": "The cat reads", "max_tokens": 10, "logprobs": 1, "temperature": 0}
    whole = httpx.post(servers["base"] + "/completions", json=body, timeout=60).json()["choices"][0]
    chunks = []
    with httpx.stream("POST", servers["base"] + "/completions", json={**body, "stream": True}, timeout=60) as r:
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunks.append(json.loads(line[6:])["choices"][0])
    tokens = [c for c in chunks if c["logprobs"]]
    assert "".join(c["text"] for c in chunks) == whole["text"]
    # float32 on lanes of one batch (--max-concurrency 2): passes of other shapes round differently (~1e-6)
    assert [c["logprobs"]["token_logprobs"][0] for c in tokens] == pytest.approx(whole["logprobs"]["token_logprobs"],
                                                                                 rel=1e-5, abs=1e-5)
    assert chunks[-1]["finish_reason"] == whole["finish_reason"]
    root = servers["base"].removesuffix("/v1")
    counted = httpx.post(root + "/tokenize", json={"prompt": "The cat reads"}, timeout=30).json()
    from transformers import AutoTokenizer

    assert counted["tokens"] == AutoTokenizer.from_pretrained(tiny_folders["base"])("The cat reads")["input_ids"]


# --- the command line -------------------------------------------------------------------------------------------
def test_cli_generate_eval_and_bench_with_remote_models(servers, tiny_folders, local, tmp_path, capsys):
    models = ["--base", f"openai:tiny-base@{servers['base']}", "--nudger", f"openai:tiny-nudger@{servers['nudger']}",
              "--base-tokenizer", tiny_folders["base"], "--nudger-tokenizer", tiny_folders["nudger"]]
    assert main(["generate", QUESTIONS[0], "--max-new-tokens", "48", "--json", *models]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["text"] == local.generate(QUESTIONS[0]).text and printed["stats"]["models"]["base"]["requests"] > 0

    assert main(["eval", "--task", "coin_flip", "--limit", "4", "--method", "nudging", "--concurrency", "2",
                 "--max-new-tokens", "24", "--out", str(tmp_path), *models]) == 0
    rows = [json.loads(line) for line in next(tmp_path.glob("coin_flip__nudging__*.jsonl")).read_text().splitlines()]
    assert len(rows) == 4 and len({row["id"] for row in rows}) == 4
    for row in rows:
        assert row["prediction"] == local.generate(row["prompt"], system=_system(), max_new_tokens=24).text
    capsys.readouterr()

    assert main(["bench", "--max-new-tokens", "16", "--json", "--method", "nudging", *models]) == 0
    report = json.loads(capsys.readouterr().out)
    nudging = report["methods"]["nudging"]
    assert nudging["work_per_answer_token"]["base"]["requests"] > 0 and nudging["paper_requests_per_answer_token"] > 0


def _system() -> str:
    from nudging.evals.examples import SYSTEM_PROMPT

    return SYSTEM_PROMPT


def test_cli_remote_errors_are_one_line(capsys):
    url = f"http://127.0.0.1:{free_port()}/v1"
    assert main(["generate", "hi", "--base", "openai:x", "--nudger", "demo-nudger"]) == 2
    assert "openai:MODEL@http" in capsys.readouterr().err
    assert main(["generate", "hi", "--base", f"openai:demo-base@{url}", "--mode", "base", "--retries", "0",
                 "--timeout", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nudging: error:") and "gave up after 1 tries" in err and err.count("\n") == 1
    assert main(["generate", "hi", "--timeout", "0"]) == 2
    assert "--timeout" in capsys.readouterr().err


# --- the paper's baselines over the API -------------------------------------------------------------------------
def test_remote_text_ensemble_and_in_context_give_the_local_answers(servers, tiny_folders, local):
    pair = remote(servers, tiny_folders, methods=["ensemble-text", "in-context"])
    runs = 0
    for question, k in [(q, k) for q in QUESTIONS for k in (1, 5)]:
        expected = local.generate(question, mode="ensemble-text", top_k=k, max_new_tokens=32)
        got = pair.generate(question, mode="ensemble-text", top_k=k, max_new_tokens=32)
        assert same(got, expected), (question, k, got.text, expected.text)
        for role in ("base", "nudger"):  # one stream per run and model, each read only up to the disagreement
            work = got.stats.models[role]
            assert work["requests"] == work["streamed_requests"] == got.stats.rounds, (role, work)
        runs += got.stats.rounds
    assert runs > 2 * len(QUESTIONS)  # disagreements happened: new runs from the re-tokenized text
    for question in QUESTIONS:
        expected = local.generate(question, mode="in-context", max_new_tokens=24)
        got = pair.generate(question, mode="in-context", max_new_tokens=24)
        assert same(got, expected) and got.stats.models["base"]["requests"] == 1


def test_methods_that_combine_distributions_need_local_models(servers, tiny_folders):
    with pytest.raises(InvalidArgumentError) as error:
        remote(servers, tiny_folders, methods=["ensemble"])
    assert "remote" in str(error.value) and "ensemble-text" in str(error.value)


def test_served_logprobs_give_the_top_k_strings(servers):
    body = {"model": "tiny-base", "prompt": "the cat reads", "max_tokens": 3, "temperature": 0, "logprobs": 5}
    choice = httpx.post(servers["base"] + "/completions", json=body, timeout=30).json()["choices"][0]
    tops = choice["logprobs"]["top_logprobs"]
    assert len(tops) == 3 and all(1 <= len(top) <= 5 for top in tops)
    for token, top in zip(choice["logprobs"]["tokens"], tops):
        assert max(top, key=top.get) == token  # greedy: the chosen string is the most likely
    body["logprobs"] = 21
    assert httpx.post(servers["base"] + "/completions", json=body, timeout=30).status_code == 422
