"""The paper's baselines against plain references (tests/reference.py) on tiny models built here (float64).

Proxy tuning and the exact ensemble run on models that share one vocabulary; the text ensemble runs across two
different tokenizers. The cached implementations must give the same text, spans and stop reason as the
references, which recompute every forward pass from scratch.
"""

from __future__ import annotations

import itertools

import pytest

from nudging import InvalidArgumentError, Nudger, SamplingConfig
from nudging.backends.drafts import DRAFT_TOKENS
from nudging.baselines.in_context import STOP, in_context_prompt
from nudging.config import BaselineConfig
from reference import RefModel, reference_fused, reference_text_ensemble
from tiny import byte_level_tokenizer, local, metaspace_tokenizer, tiny_llama

PROMPTS = ["The cat reads the question", "Every student counts two numbers:"]


def _chat(tokenizer, text: str) -> str:
    if tokenizer.chat_template:
        return tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                             add_generation_prompt=True)
    return text + "\n"


@pytest.fixture(scope="module")
def tokenizers():
    return {"byte": byte_level_tokenizer(), "meta": metaspace_tokenizer()}


def _trios(tokenizers):
    """(tokenizer, base, expert, anti-expert) sharing one vocabulary; EOS made likely in some, so every stop
    reason shows up; one with a 40-token context."""
    byte, meta = tokenizers["byte"], tokenizers["meta"]
    return {
        "byte": (byte, tiny_llama(byte, seed=1), tiny_llama(byte, seed=4, eos_logit_scale=1.6), tiny_llama(byte, seed=9)),
        "meta": (meta, tiny_llama(meta, seed=2, eos_logit_scale=1.8), tiny_llama(meta, seed=5), tiny_llama(meta, seed=8)),
        "short-context": (byte, tiny_llama(byte, seed=6, max_positions=40), tiny_llama(byte, seed=3),
                          tiny_llama(byte, seed=7)),
    }


FUSED = [  # method, alpha, temperature
    ("proxy-tuning", 1.0, 0.0), ("proxy-tuning", 0.5, 0.0), ("proxy-tuning", 1.0, 0.8), ("ensemble", 1.0, 0.0),
    ("ensemble", 1.0, 0.8),
]


@pytest.fixture(scope="module")
def fused_outcomes(tokenizers):
    rows = []
    for name, (tok, base, expert, anti) in _trios(tokenizers).items():
        refs = [RefModel(m, tok) for m in (base, expert, anti)]
        for (method, alpha, temperature), prompt, budget in itertools.product(FUSED, PROMPTS, [12, 40]):
            sampling = SamplingConfig(temperature=temperature, seed=11)
            engine = Nudger(local(base, tok, "base"), local(expert, tok, "nudger"),
                            anti_expert=local(anti, tok, "anti_expert"), baselines=BaselineConfig(alpha=alpha))
            engine.base.sampling = sampling
            prompts = [prompt + "\n", _chat(tok, prompt), prompt + "\n"]
            models = refs if method == "proxy-tuning" else refs[:2]
            expected = reference_fused(models, prompts[: len(models)], method, budget, alpha, temperature, seed=11)
            got = engine.generate(base_prompt=prompts[0], nudger_prompt=prompts[1], mode=method, max_new_tokens=budget)
            rows.append((f"{name} {method} alpha={alpha} T={temperature} {prompt!r} M={budget}", expected, got))
    return rows


def assert_same_as_reference(outcomes) -> None:
    for where, expected, got in outcomes:
        assert got.text == expected.text, where
        assert [(s.text, s.source) for s in got.spans] == expected.spans, where
        assert got.stop_reason == expected.stop_reason, where


def test_fused_methods_match_reference(fused_outcomes):
    assert_same_as_reference(fused_outcomes)


def test_fused_grid_reaches_every_stop_and_source(fused_outcomes):
    assert {expected.stop_reason for _, expected, _ in fused_outcomes} == {"eos", "length"}
    assert {source for _, expected, _ in fused_outcomes for _, source in expected.spans} == {"base", "nudger"}
    sampled = [got.text for where, _, got in fused_outcomes if "T=0.8" in where]
    greedy = [got.text for where, _, got in fused_outcomes if "T=0.0" in where and "alpha=1.0" in where]
    assert sampled != greedy[: len(sampled)]  # sampling really sampled


def test_fused_methods_reuse_caches(fused_outcomes):
    """One new token per model per step (and the guessed tokens riding along): work grows with the answer, not
    with prompt x answer."""
    for where, _, got in fused_outcomes:
        if "short-context" in where:
            continue
        for role in ("base", "nudger"):
            work = got.stats.models[role]
            assert work["tokens_processed"] <= 60 + (1 + DRAFT_TOKENS) * work["forward_passes"], (where, role, work)


@pytest.fixture(scope="module")
def text_outcomes(tokenizers):
    byte, meta = tokenizers["byte"], tokenizers["meta"]
    pairs = {  # cross-tokenizer, both ways; an EOS-prone base; a short context
        "byte-base/meta-nudger": (byte, tiny_llama(byte, seed=1, eos_logit_scale=4.0), meta, tiny_llama(meta, seed=4)),
        "meta-base/byte-nudger": (meta, tiny_llama(meta, seed=2), byte, tiny_llama(byte, seed=5, eos_logit_scale=3.0)),
        "agreeing": (byte, tiny_llama(byte, seed=7, sharpness=6.0), byte, tiny_llama(byte, seed=7, sharpness=25.0)),
        "short-context": (byte, tiny_llama(byte, seed=6, max_positions=40), meta, tiny_llama(meta, seed=8)),
    }
    rows = []
    for name, (btok, bmodel, ntok, nmodel) in pairs.items():
        for prompt, k, budget in itertools.product(PROMPTS, [1, 5], [10, 40]):
            engine = Nudger(local(bmodel, btok, "base"), local(nmodel, ntok, "nudger"), baselines=BaselineConfig(top_k=k))
            base_prompt, nudger_prompt = prompt + "\n", _chat(ntok, prompt)
            expected = reference_text_ensemble(RefModel(bmodel, btok), RefModel(nmodel, ntok), base_prompt,
                                               nudger_prompt, k, budget)
            got = engine.generate(base_prompt=base_prompt, nudger_prompt=nudger_prompt, mode="ensemble-text",
                                  max_new_tokens=budget)
            rows.append((f"{name} {prompt!r} k={k} M={budget}", expected, got))
    return rows


def test_text_ensemble_matches_reference(text_outcomes):
    assert_same_as_reference(text_outcomes)


def test_text_ensemble_grid_reaches_every_branch(text_outcomes):
    events = set().union(*(expected.events for _, expected, _ in text_outcomes))
    assert events >= {"agree", "disagree", "nudger_string_won", "nudger_eos", "base_eos", "context_full"}, events
    assert {expected.stop_reason for _, expected, _ in text_outcomes} == {"eos", "length"}
    runs = [got.stats.rounds for _, _, got in text_outcomes]
    assert max(runs) > 1 and all(got.stats.paper_requests >= 2 * got.stats.rounds for _, _, got in text_outcomes)


def test_in_context_prompt_and_stop(tokenizers):
    """The base alone after the example dialogues; text up to the next '# Query' (none of it after)."""
    tok = tokenizers["byte"]
    model = tiny_llama(tok, seed=3, max_positions=4096)
    engine = Nudger(local(model, tok, "base"), None)
    prompt = in_context_prompt("What is 2 + 2?", "Be brief.")
    assert prompt.count("# Query:") == 4 and prompt.endswith("# Query:\nBe brief.\nWhat is 2 + 2?\n\n# Answer:\n")
    got = engine.generate("What is 2 + 2?", system="Be brief.", mode="in-context", max_new_tokens=20)
    expected, _ = RefModel(model, tok).greedy(prompt, 20)
    assert got.text == expected.split(STOP)[0] and got.stop_reason == ("stop" if STOP in expected else "length")
    # Raw prompts are used as given: a prompt that makes the stop marker likely ends the answer there.
    raw = engine.generate(base_prompt=prompt, mode="in-context", max_new_tokens=20)
    assert raw.text == got.text


def test_methods_that_need_one_vocabulary_say_which_work(tokenizers):
    byte, meta = tokenizers["byte"], tokenizers["meta"]
    engine = Nudger(local(tiny_llama(byte, seed=1), byte, "base"), local(tiny_llama(meta, seed=2), meta, "nudger"))
    for method in ("ensemble", "proxy-tuning"):
        with pytest.raises(InvalidArgumentError) as error:
            engine.generate("The cat", mode=method, max_new_tokens=4)
        message = str(error.value)
        assert method in message and ("vocabulary" in message or "anti-expert" in message), message
    with pytest.raises(InvalidArgumentError, match="ensemble-text, in-context"):
        engine.generate("The cat", mode="ensemble", max_new_tokens=4)
    assert engine.generate("The cat", mode="ensemble-text", max_new_tokens=4).text
    with pytest.raises(InvalidArgumentError, match="anti-expert"):
        Nudger.from_pretrained("demo-base", "demo-nudger", mode="proxy-tuning")
    with pytest.raises(InvalidArgumentError, match="alpha"):
        BaselineConfig(alpha=float("nan"))
    with pytest.raises(InvalidArgumentError, match="top_k"):
        BaselineConfig(top_k=0)
