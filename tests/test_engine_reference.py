"""The cached engine against the plain reference of the spec, on tiny models built here (float64)."""

from __future__ import annotations

import itertools
import re

import pytest

from nudging import Nudger
from nudging.backends.local import LocalModel
from reference import RefModel, reference_nudging
from tiny import byte_level_tokenizer, local, metaspace_tokenizer, single_token, stuck_llama, tiny_llama

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


@pytest.fixture(scope="module")
def outcomes(tokenizers):
    rows = []
    for name, (btok, bmodel, ntok, nmodel, same_prompt) in _pairs(tokenizers).items():
        engine = Nudger(local(bmodel, btok, "base"), local(nmodel, ntok, "nudger"))
        ref_base, ref_nudger = RefModel(bmodel, btok), RefModel(nmodel, ntok)
        for prompt, (gamma, lookahead, budget) in itertools.product(PROMPTS, SETTINGS):
            base_prompt = prompt + "\n"
            nudger_prompt = base_prompt if same_prompt else _chat(ntok, prompt)
            expected = reference_nudging(ref_base, ref_nudger, base_prompt, nudger_prompt, gamma, lookahead, budget)
            got = engine.generate(
                base_prompt=base_prompt, nudger_prompt=nudger_prompt, gamma=gamma, lookahead=lookahead,
                max_new_tokens=budget,
            )
            rows.append((name, prompt, gamma, lookahead, budget, expected, got))
    return rows


def test_engine_matches_reference(outcomes):
    for name, prompt, gamma, lookahead, budget, expected, got in outcomes:
        where = f"{name} prompt={prompt!r} gamma={gamma} L={lookahead} M={budget}"
        assert got.text == expected.text, where
        assert [(s.text, s.source) for s in got.spans] == expected.spans, where
        assert got.stop_reason == expected.stop_reason, where


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


def _rounds(events: list[str]) -> list[list[str]]:
    """The reference's events split into rounds (each round starts with a "round" event)."""
    rounds: list[list[str]] = []
    for event in events:
        if event == "round":
            rounds.append([])
        else:
            rounds[-1].append(event)
    return rounds


def test_the_trace_records_the_reference_decisions(outcomes):
    """Each round's trace says what the spec's decisions were: boundaries checked and who took over (a round
    that ends the answer, at the nudger's EOS or the repetition guard, says "end")."""
    checks = {"takeover_by_eos", "takeover_confident", "takeover_agrees", "word_accepted"}
    for name, prompt, gamma, lookahead, budget, expected, got in outcomes:
        where = f"{name} prompt={prompt!r} gamma={gamma} L={lookahead} M={budget}"
        trace, rounds = got.trace, _rounds(expected.events)
        assert got.stats.rounds == len(trace) and got.stats.word_checks == sum(r.boundaries_checked for r in trace)
        assert len(trace) == len(rounds), where
        for number, (round_, events) in enumerate(zip(trace, rounds)):
            at = f"{where} round {number}"
            assert round_.boundaries_checked == sum(e in checks for e in events), at
            if "takeover_by_eos" in events:
                taken = "eos"
            elif "takeover_confident" in events or "takeover_agrees" in events:
                taken = "base"
            else:
                taken = "none"
            ended = number == len(trace) - 1 and got.stop_reason in ("nudger_eos", "repetition")
            assert round_.takeover == ("end" if ended else taken), at
            if round_.takeover != "base":
                assert round_.stage_tokens == 0, at
