"""Remote models against vLLM itself: two vLLM servers (the CPU build, its own environment built by
`scripts/setup.sh --tests`) serve the demo base and the demo nudger, and nudging over them must give the local
engine's answers with every remote protocol."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from nudging import Nudger
from nudging.backends.remote.client import ClientSettings
from nudging.backends.remote.probe import connect
from nudging.errors import RemoteError
from nudging.evals.report import load_runs
from nudging.prompts import DEFAULT_PROMPTS
from test_remote import same
from vllm_servers import TEST_KEY, start_vllm_servers, stop_vllm

TOKENS = 32  # the demo prompts then end both ways: two by the nudger's EOS, two by the budget


@pytest.fixture(scope="module")
def vllm_pair():
    # eager: no graph compilation at start (about 1 minute to ready, not 2 to 4); the scripts that measure vLLM keep it
    servers = start_vllm_servers(["demo-base", "demo-nudger"], "--api-key", TEST_KEY, "--enforce-eager")
    (base, base_url), (nudger, nudger_url) = servers
    yield {"base": base, "base_url": base_url, "nudger_url": nudger_url}
    stop_vllm(base)
    stop_vllm(nudger)


@pytest.fixture(scope="module")
def local_answers():
    local = Nudger.from_pretrained("demo-base", "demo-nudger", max_new_tokens=TOKENS,
                                   methods=["nudging", "ensemble-text", "in-context"])
    return {(mode, question): local.generate(question, mode=mode)
            for mode, questions in (("nudging", DEFAULT_PROMPTS), ("ensemble-text", DEFAULT_PROMPTS[1:2]),
                                    ("in-context", DEFAULT_PROMPTS[:2]))
            for question in questions}


def remote_pair(vllm_pair, **options) -> Nudger:
    return Nudger.from_pretrained(f"openai:demo-base@{vllm_pair['base_url']}",
                                  f"openai:demo-nudger@{vllm_pair['nudger_url']}", api_key=TEST_KEY,
                                  max_new_tokens=TOKENS, **options)


def test_the_probe_reads_vllm(vllm_pair):
    """vLLM streams logprobs, and its echo is aligned with and without a BOS (gemma adds one, SmolLM2 does not);
    its text_offset counts gemma's "<bos>", which the echoed text leaves out."""
    for alias, url in (("demo-base", vllm_pair["base_url"]), ("demo-nudger", vllm_pair["nudger_url"])):
        caps = connect(f"openai:{alias}@{url}", role="base", api_key=TEST_KEY).capabilities
        assert (caps.owned_by, caps.context_length, caps.logprobs, caps.stream_logprobs, caps.echo_layout) == (
            "vllm", 2048, True, True, "aligned"), (alias, caps)
        assert caps.echo_seconds_per_token < 1.0


@pytest.mark.parametrize("protocol", ["per-word", "echo", "chunked", "auto"])
def test_nudging_over_vllm_gives_the_local_answers(vllm_pair, local_answers, protocol):
    pair = remote_pair(vllm_pair, remote_protocol=protocol)
    reasons, work = set(), {"echo_requests": 0, "chunked_requests": 0}
    for question in DEFAULT_PROMPTS:
        expected = local_answers[("nudging", question)]
        got = pair.generate(question)
        assert same(got, expected), (protocol, question, got.text, expected.text)
        reasons.add(got.stop_reason)
        for counter in work:
            work[counter] += got.stats.models["base"][counter]
    assert reasons == {"nudger_eos", "length"}
    assert (work["echo_requests"] > 0) == (protocol in ("echo", "auto")), work  # auto: echo is cheap on vLLM
    assert (work["chunked_requests"] > 0) == (protocol == "chunked"), work


def test_the_baselines_over_vllm_give_the_local_answers(vllm_pair, local_answers):
    pair = remote_pair(vllm_pair, methods=["ensemble-text", "in-context"])
    for (mode, question), expected in local_answers.items():
        if mode != "nudging":
            got = pair.generate(question, mode=mode)
            assert same(got, expected), (mode, question, got.text, expected.text)


def test_a_refused_key_and_a_wrong_model_name_are_clear_errors(vllm_pair):
    url = vllm_pair["base_url"]
    with pytest.raises(RemoteError, match=f"^{url} refused the API key"):
        connect(f"openai:demo-base@{url}", role="base", api_key="wrong")
    with pytest.raises(RemoteError, match=f"^{url} does not serve model 'gpt-9'; it serves: demo-base$"):
        connect(f"openai:gpt-9@{url}", role="base", api_key=TEST_KEY)


def test_eval_over_vllm_gives_the_same_predictions_at_any_concurrency(vllm_pair, tmp_path):
    """`nudging eval --concurrency 4` sends four items' requests at once, which vLLM batches."""
    predictions = {}
    for concurrency in (1, 4):
        out = tmp_path / f"c{concurrency}"
        subprocess.run([sys.executable, "-m", "nudging.cli", "eval", "--task", "coin_flip", "--limit", "4",
                        "--method", "nudging", "--max-new-tokens", "24", "--base",
                        f"openai:demo-base@{vllm_pair['base_url']}", "--nudger",
                        f"openai:demo-nudger@{vllm_pair['nudger_url']}", "--api-key", TEST_KEY, "--concurrency",
                        str(concurrency), "--out", str(out)], check=True, capture_output=True, timeout=600)
        rows = [row for _, rows in load_runs(out) for row in rows]
        predictions[concurrency] = {row["id"]: row["prediction"] for row in rows}
    assert len(predictions[1]) == 4 and all(predictions[1].values())
    assert predictions[4] == predictions[1]


def test_a_vllm_server_stopped_mid_answer_is_an_error_not_a_hang(vllm_pair):
    """Runs last: it stops the base's server."""
    pair = remote_pair(vllm_pair, client_settings=ClientSettings(timeout=5, retries=2, backoff=0.05))
    pieces = pair.stream(DEFAULT_PROMPTS[2])  # ends by the budget: several base stages
    next(pieces)
    stop_vllm(vllm_pair["base"])
    started = time.monotonic()
    with pytest.raises(RemoteError, match="gave up after 3 tries|broke off"):
        for _ in pieces:
            pass
    assert time.monotonic() - started < 30


def test_the_token_vllm_stopped_at_is_no_token_of_the_run():
    """vLLM lists the EOS it stopped at as the last logprobs entry, its text left out of the response's text."""
    from nudging.backends.remote.model import tokens_of

    logprobs = {"tokens": [" 90", "<|im_end|>"], "token_logprobs": [-0.1, -0.2],
                "top_logprobs": [{" 90": -0.1}, {"<|im_end|>": -0.2, "\n": -3.0}]}
    assert [t.piece for t in tokens_of(" 90", logprobs, ["<|im_end|>"])] == [" 90"]
    assert [t.piece for t in tokens_of(" 90", logprobs)] == ["", " 90"]  # not stopped: kept, text to the last
    alone = {"tokens": ["<|im_end|>"], "token_logprobs": [-0.2], "top_logprobs": [{"<|im_end|>": -0.2}]}
    assert tokens_of("", alone, ["<|im_end|>"]) == []
    written = {"tokens": ["<|im_end|>"], "token_logprobs": [-0.2], "top_logprobs": [None]}
    assert [t.piece for t in tokens_of("<|im_end|>", written, ["<|im_end|>"])] == ["<|im_end|>"]  # its text
