"""The cached engine against the plain reference of the spec, on tiny models built here (float64)."""

from __future__ import annotations

import itertools
import re

import pytest

from nudging import Nudger, guesses
from nudging.backends.local import LocalModel
from nudging.config import MAX_LOOKAHEAD
from agreement import assert_same_answer, assert_trace_matches
from reference import RefModel, reference_nudging
from tiny import bigram_llama, byte_level_tokenizer, local, metaspace_tokenizer, single_token, stuck_llama, tiny_llama

PROMPTS = ["The cat reads the question", "Every student counts two numbers:"]
SETTINGS = list(itertools.product([0.1, 0.4, 0.8], [1, 4, 16], [8, 48]))  # gamma, lookahead, budget


def _chat(tokenizer, text: str) -> str:
    if tokenizer.chat_template:
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )
    return text + "\n"


@pytest.fixture(scope="module")
def tokenizers():
    return {"byte": byte_level_tokenizer(), "meta": metaspace_tokenizer()}


def _pairs(tokenizers):
    byte, meta = tokenizers["byte"], tokenizers["meta"]
    same_weights = dict(seed=7)
    return {
        # cross-tokenizer pairs: byte-level BPE base with a SentencePiece-style nudger, and the other way round
        "byte-base/meta-nudger": (byte, tiny_llama(byte, seed=1, eos_logit_scale=4.0), meta, tiny_llama(meta, seed=4), False),
        "meta-base/byte-nudger": (meta, tiny_llama(meta, seed=2), byte, tiny_llama(byte, seed=5, eos_logit_scale=1.4), False),
        # one set of weights, the base less sharp: the models agree, so the base takes over on agreement
        "agreeing": (byte, tiny_llama(byte, sharpness=6.0, **same_weights), byte, tiny_llama(byte, sharpness=25.0, **same_weights), True),
        # a nudger that writes " the" forever: the base writes between its words, then the repetition guard
        "stuck-nudger": (meta, tiny_llama(meta, seed=5), byte, stuck_llama(byte, single_token(byte, " the")), False),
        # a base with a 40-token context: generation ends when a run no longer fits
        "short-context": (byte, tiny_llama(byte, seed=6, max_positions=40), meta, tiny_llama(meta, seed=8), False),
    }


# how the nudger's lookahead is read: (guesses.LAZY_SIZE_RATIO, guesses.READ_FIRST_TOKENS) for the tiny pairs
READINGS = {
    "read lazily": (float("inf"), 0),  # as far as the nudge, as the demo pair
    "3 tokens first": (0.0, 3),  # 3 tokens at once, then as far as the nudge, as for a base many times the nudger
    "read whole": (0.0, MAX_LOOKAHEAD),
}
_GRIDS: dict[str, list] = {}
_EXPECTED: dict[tuple, object] = {}  # the reference's answers do not depend on how the engine reads: computed once


def outcomes_read(tokenizers, reading: str) -> list:
    """The grid read one of the READINGS ways, computed once per test session (test_lazy_lookahead compares them)."""
    if reading not in _GRIDS:
        ratio, first = READINGS[reading]
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(guesses, "LAZY_SIZE_RATIO", ratio)
            patch.setattr(guesses, "READ_FIRST_TOKENS", first)
            _GRIDS[reading] = _outcomes(tokenizers)
    return _GRIDS[reading]


@pytest.fixture(scope="module", params=list(READINGS))
def outcomes(tokenizers, request):
    return outcomes_read(tokenizers, request.param)


def _outcomes(tokenizers):
    rows = []
    for name, (btok, bmodel, ntok, nmodel, same_prompt) in _pairs(tokenizers).items():
        engine = Nudger(local(bmodel, btok, "base"), local(nmodel, ntok, "nudger"))
        ref_base, ref_nudger = RefModel(bmodel, btok), RefModel(nmodel, ntok)
        for prompt, (gamma, lookahead, budget) in itertools.product(PROMPTS, SETTINGS):
            base_prompt = prompt + "\n"
            nudger_prompt = base_prompt if same_prompt else _chat(ntok, prompt)
            key = (name, prompt, gamma, lookahead, budget)
            if key not in _EXPECTED:
                _EXPECTED[key] = reference_nudging(ref_base, ref_nudger, base_prompt, nudger_prompt, gamma,
                                                   lookahead, budget)
            expected = _EXPECTED[key]
            got = engine.generate(
                base_prompt=base_prompt, nudger_prompt=nudger_prompt, gamma=gamma, lookahead=lookahead,
                max_new_tokens=budget,
            )
            rows.append((name, prompt, gamma, lookahead, budget, expected, got))
    return rows


def test_engine_matches_reference(outcomes):
    for name, prompt, gamma, lookahead, budget, expected, got in outcomes:
        assert_same_answer(expected, got, f"{name} prompt={prompt!r} gamma={gamma} L={lookahead} M={budget}")


def test_grid_reaches_every_stop_reason_and_branch(outcomes):
    reasons = {expected.stop_reason for *_, expected, _ in outcomes}
    assert reasons == {"nudger_eos", "repetition", "length"}
    events = set().union(*(expected.events for *_, expected, _ in outcomes))
    assert events >= {
        "takeover_by_eos", "takeover_confident", "takeover_agrees", "word_accepted", "no_takeover",
        "base_stage_unsure", "base_stage_eos", "context_full",
    }, events
    sources = {span.source for *_, got in outcomes for span in got.spans}
    assert sources == {"base", "nudger"}
    stuck = [(expected, got) for name, *_, expected, got in outcomes if name == "stuck-nudger"]
    # the stuck nudger writes a real word, so the base writes between its words before the repetition guard ends it
    assert all(re.fullmatch("( the)+", span.text) for _, got in stuck for span in got.spans if span.source == "nudger")
    assert any(span.source == "base" for _, got in stuck for span in got.spans)
    assert {expected.stop_reason for expected, _ in stuck} >= {"repetition"}
    eos_pairs = {name for name, *_, expected, _ in outcomes if "takeover_by_eos" in expected.events}
    assert len(eos_pairs) >= 2, eos_pairs


def test_cache_is_reused(outcomes, tokenizers):
    """The engine processes far fewer tokens than a recompute-everything loop would."""
    long_runs = [got for name, *_, got in outcomes if name == "agreeing" and got.stats.answer_base_tokens >= 30]
    assert long_runs
    for got in long_runs:
        base = got.stats.models["base"]
        assert base["tokens_processed"] < 3 * (got.stats.answer_base_tokens + 20), base


class WithoutReuse(LocalModel):
    """The KV cache alone: every position's logits come from a new pass."""

    def _known_rows(self, ids, first_position):
        return None


def test_base_verifies_the_lookahead_and_nudger_reuses_its_own(tokenizers):
    """Where the models agree, the base's stage reads logits computed in the pass that checked the word
    boundaries (the lookahead as a draft), and the nudger's next lookahead reuses positions of its last one:
    fewer passes than with the KV cache alone, and the same answers."""
    byte = tokenizers["byte"]
    bmodel, nmodel = tiny_llama(byte, sharpness=6.0, seed=7), tiny_llama(byte, sharpness=25.0, seed=7)
    work = {}
    for kind in (LocalModel, WithoutReuse):
        engine = Nudger(kind(bmodel, byte, name="base"), kind(nmodel, byte, name="nudger"))
        answers = [engine.generate(base_prompt=p + "\n", nudger_prompt=p + "\n", gamma=0.4, max_new_tokens=48)
                   for p in PROMPTS]
        work[kind] = answers, {role: {key: sum(a.stats.models[role][key] for a in answers)
                                      for key in ("forward_passes", "reused_positions")} for role in ("base", "nudger")}
    (reusing, with_reuse), (plain, without) = work[LocalModel], work[WithoutReuse]
    assert [(a.text, a.spans, a.stop_reason) for a in reusing] == [(a.text, a.spans, a.stop_reason) for a in plain]
    assert any(span.source == "base" for a in reusing for span in a.spans)
    for role in ("base", "nudger"):
        assert with_reuse[role]["reused_positions"] > 0 and without[role]["reused_positions"] == 0
        assert with_reuse[role]["forward_passes"] < without[role]["forward_passes"], (role, with_reuse, without)


def test_the_trace_records_the_reference_decisions(outcomes):
    for name, prompt, gamma, lookahead, budget, expected, got in outcomes:
        assert_trace_matches(expected, got, f"{name} prompt={prompt!r} gamma={gamma} L={lookahead} M={budget}")


def test_an_empty_piece_counts_as_agreement(tokenizers):
    """NUDGING_SPEC.md, "An empty piece": at a word boundary the base's top token is the first byte of "é"
    (probability 0.2, below gamma), whose piece is empty; `" " + W[i]` starts with it, so the base takes over,
    appends that byte (no text yet) and then the byte that completes "é". The nudger writes " the" forever."""
    byte, meta = tokenizers["byte"], tokenizers["meta"]
    first, second = (meta.convert_tokens_to_ids(f"<0x{b:02X}>") for b in "é".encode())
    base = bigram_llama(meta, {single_token(meta, " the"): {first: 0.2}, first: {second: 0.9}})
    nudger = stuck_llama(byte, single_token(byte, " the"))
    prompt = "The cat reads the question\n"
    settings = dict(gamma=0.5, lookahead=3, budget=32)
    expected = reference_nudging(RefModel(base, meta), RefModel(nudger, byte), prompt, prompt, **settings)
    assert expected.text == " theé theé theé" and expected.stop_reason == "repetition"
    assert expected.spans == [(" the", "nudger"), ("é", "base")] * 3
    # four agreements (the fourth round's nudge then repeats the last three) and three stages
    assert expected.events.count("empty_piece_agrees") == 4 and expected.events.count("stage_piece_held") == 3
    got = Nudger(local(base, meta, "base"), local(nudger, byte, "nudger")).generate(
        base_prompt=prompt, nudger_prompt=prompt, gamma=settings["gamma"], lookahead=settings["lookahead"],
        max_new_tokens=settings["budget"])
    assert_same_answer(expected, got, "empty piece")
    assert_trace_matches(expected, got, "empty piece")


def test_stuck_llama_refuses_a_token_that_is_not_one():
    byte = byte_level_tokenizer()
    with pytest.raises(ValueError, match="stuck_llama: token must be an id of the tokenizer .* got None"):
        stuck_llama(byte, byte.convert_tokens_to_ids("the"))
