"""Remote models with the real demo pair: `nudging serve --mode base|nudger` on the same weights as the local
engine (same answers), and llama-cpp-python's server on the demo GGUFs (built from source by setup.sh --tests)."""

from __future__ import annotations

import numpy as np
import pytest

from nudging import Nudger, models, prompts
from nudging.prompts import DEFAULT_PROMPTS
from reference import reference_nudging
from llama_servers import start_llama_server
from servers import start_server
from test_remote import same, stop


@pytest.fixture(scope="module")
def demo_local():
    return Nudger.from_pretrained("demo-base", "demo-nudger", max_new_tokens=32)


def test_demo_pair_served_by_nudging_serve_gives_the_local_answers(demo_local):
    base, base_url = start_server("demo-base", "demo-nudger", "--mode", "base", "--model-name", "demo-base")
    nudger, nudger_url = start_server("demo-base", "demo-nudger", "--mode", "nudger", "--model-name", "demo-nudger")
    try:
        # the served names are demo aliases, so the tokenizers load from them
        pair = Nudger.from_pretrained(f"openai:demo-base@{base_url}/v1", f"openai:demo-nudger@{nudger_url}/v1",
                                      max_new_tokens=32)
        for question in DEFAULT_PROMPTS:
            expected = demo_local.generate(question)
            got = pair.generate(question)
            assert same(got, expected), (question, got.text, expected.text)
            assert got.stats.models["base"]["requests"] <= got.stats.paper_requests
    finally:
        stop(base)
        stop(nudger)


@pytest.fixture(scope="module")
def llama_servers():
    base, base_url = start_llama_server(str(models.demo_gguf("demo-base")), "demo-base")
    nudger, nudger_url = start_llama_server(str(models.demo_gguf("demo-nudger")), "demo-nudger")
    yield base_url, nudger_url
    stop(base)
    stop(nudger)


def test_llama_cpp_servers_nudge_the_demo_pair(llama_servers):
    base_url, nudger_url = llama_servers
    per_word = Nudger.from_pretrained(f"openai:demo-base@{base_url}", f"openai:demo-nudger@{nudger_url}",
                                      max_new_tokens=24, remote_protocol="per-word")
    caps = per_word.base.capabilities
    assert caps.owned_by == "me" and caps.stream_logprobs and caps.echo_layout == "aligned"
    assert per_word.base.extra_body == {"repeat_penalty": 1.0}  # llama.cpp's default 1.1 is not greedy
    question = DEFAULT_PROMPTS[1]
    streamed = per_word.generate(question)
    assert streamed.text and streamed.stop_reason in ("nudger_eos", "length", "repetition")
    assert {s.source for s in streamed.spans} == {"base", "nudger"}
    # Exact protocols agree with each other: one echo request for several words gives the same answer.
    echo = Nudger.from_pretrained(f"openai:demo-base@{base_url}", f"openai:demo-nudger@{nudger_url}",
                                  max_new_tokens=24, remote_protocol="echo").generate(question)
    assert same(echo, streamed)
    assert echo.stats.models["base"]["echo_requests"] > 0


@pytest.fixture(scope="module")
def llama_reference():
    """The plain reference on llama.cpp in this process, on the servers' GGUF files and settings."""
    from llama_reference import LlamaRefModel

    pair = tuple(LlamaRefModel(str(models.demo_gguf(alias)), models.load_tokenizer(alias))
                 for alias in ("demo-base", "demo-nudger"))
    yield pair
    for model in pair:
        model.llm.close()  # now, not in a destructor at interpreter exit


# (question, gamma, lookahead), 24 tokens: one answer ends with the nudger's EOS, one at the budget
LLAMA_CASES = [(DEFAULT_PROMPTS[1], 0.3, 16), (DEFAULT_PROMPTS[2], 0.6, 6)]


def test_llama_cpp_servers_give_the_answers_of_llama_cpp_in_process(llama_servers, llama_reference):
    """The remote engine over llama-cpp-python's servers against the plain reference driving llama_cpp.Llama on
    the same GGUF files: identical answers."""
    base, nudger = llama_reference
    ids = base.tokens(prompts.base_prompt(DEFAULT_PROMPTS[1]))
    fresh = base.logits(ids, fresh=True)
    base.logits(base.tokens("Question: What is the capital of France?"))
    assert np.array_equal(base.logits(ids), fresh)  # n_batch 1: what was evaluated before changes nothing
    base_url, nudger_url = llama_servers
    pair = Nudger.from_pretrained(f"openai:demo-base@{base_url}", f"openai:demo-nudger@{nudger_url}",
                                  max_new_tokens=24, remote_protocol="per-word")
    sources = set()
    for question, gamma, lookahead in LLAMA_CASES:
        expected = reference_nudging(base, nudger, prompts.base_prompt(question),
                                     prompts.chat_prompt(nudger.tokenizer, question), gamma, lookahead, 24)
        got = pair.generate(question, gamma=gamma, lookahead=lookahead)
        assert (got.text, [(s.text, s.source) for s in got.spans], got.stop_reason) == (
            expected.text, expected.spans, expected.stop_reason), (question, got.text, expected.text)
        sources |= {source for _, source in expected.spans}
    assert sources == {"base", "nudger"}


def test_llama_cpp_shifted_echo_layout_without_bos(llama_servers):
    """SmolLM2's tokenizer adds no BOS, and llama-cpp-python then returns echo logprobs shifted by one; the
    probe finds it, and answers with echo equal the per-word ones."""
    _, nudger_url = llama_servers
    answers = {}
    for protocol in ("per-word", "echo"):
        pair = Nudger.from_pretrained(f"openai:demo-nudger@{nudger_url}", f"openai:demo-nudger@{nudger_url}",
                                      max_new_tokens=24, remote_protocol=protocol, gamma=0.5)
        if protocol == "echo":
            assert pair.base.capabilities.echo_layout == "shifted"
        answers[protocol] = pair.generate("Name three colours.")
    assert same(answers["echo"], answers["per-word"])
    assert answers["echo"].stats.models["base"]["echo_requests"] > 0


def test_llama_cpp_servers_run_the_cross_tokenizer_baselines(llama_servers):
    """The text ensemble reads top-5 logprobs from two llama.cpp servers (one stream per run and model), and
    in-context alignment is one plain stream cut at the next '# Query'."""
    base_url, nudger_url = llama_servers
    pair = Nudger.from_pretrained(f"openai:demo-base@{base_url}", f"openai:demo-nudger@{nudger_url}",
                                  max_new_tokens=24, methods=["ensemble-text", "in-context"])
    result = pair.generate(DEFAULT_PROMPTS[1], mode="ensemble-text")
    assert result.text and result.stop_reason in ("eos", "length") and result.stats.rounds >= 2
    for role in ("base", "nudger"):
        work = result.stats.models[role]
        assert work["requests"] == work["streamed_requests"] == result.stats.rounds, (role, work)
    assert same(pair.generate(DEFAULT_PROMPTS[1], mode="ensemble-text"), result)  # greedy: reproducible
    answer = pair.generate("What is the capital of France?", mode="in-context")
    assert answer.stop_reason == "stop" and "Paris" in answer.text and "# Query" not in answer.text
    assert answer.stats.models["base"]["requests"] == 1
