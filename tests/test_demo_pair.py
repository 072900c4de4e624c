"""The real demo pair (gemma-3-270m base, SmolLM2-135M-Instruct nudger: two families, two tokenizers).

Most tests run both in float64, where the cached engine and the uncached reference agree to ~1e-12 and a
threshold test cannot flip on a near-tie. Users and the server run float32: there the engine is compared with a
float32 reference wherever every decision's margin is far above float32 noise (docs/fidelity.md).
"""

from __future__ import annotations

import pytest

from nudging import LocalModel, Nudger, guesses, models, prompts
from nudging.baselines.in_context import STOP, in_context_prompt
from reference import RefModel, margins, reference_blend, reference_nudging, reference_text_ensemble

pytestmark = pytest.mark.demo

QUESTIONS = [
    'Take the last letters of each word in "Ada Lovelace" and concatenate them.',
    "What is 12 * 7?",
    "Is a tomato a fruit or a vegetable? Answer with reasons.",
]


@pytest.fixture(scope="module")
def pair():
    base = models.load("demo-base", dtype="float64", device="cpu")
    nudger = models.load("demo-nudger", dtype="float64", device="cpu")
    return base, nudger


@pytest.fixture(scope="module")
def engine(pair):
    (base_model, base_tok), (nudger_model, nudger_tok) = pair
    return Nudger(LocalModel(base_model, base_tok, name="base"), LocalModel(nudger_model, nudger_tok, name="nudger"))


def test_nudger_eos_is_chat_end_of_turn(engine):
    assert engine.nudger.tokenizer.convert_tokens_to_ids("<|im_end|>") in engine.nudger.eos_ids
    assert engine.base.tokenizer.convert_tokens_to_ids("<eos>") in engine.base.eos_ids


_REFERENCES: dict[tuple, object] = {}


def _reference(pair, question: str, gamma: float, lookahead: int, budget: int):
    """The plain reference's nudging answer, computed once per question and settings in this module."""
    key = (question, gamma, lookahead, budget)
    if key not in _REFERENCES:
        (base_model, base_tok), (nudger_model, nudger_tok) = pair
        _REFERENCES[key] = reference_nudging(
            RefModel(base_model, base_tok), RefModel(nudger_model, nudger_tok), prompts.base_prompt(question),
            prompts.chat_prompt(nudger_tok, question), gamma, lookahead, budget,
        )
    return _REFERENCES[key]


@pytest.mark.parametrize("question", QUESTIONS)
@pytest.mark.parametrize("gamma, lookahead, budget", [(0.3, 16, 48), (0.6, 6, 24)])
def test_engine_matches_reference_on_demo_pair(pair, engine, question, gamma, lookahead, budget):
    expected = _reference(pair, question, gamma, lookahead, budget)
    got = engine.generate(question, gamma=gamma, lookahead=lookahead, max_new_tokens=budget)
    assert got.text == expected.text
    assert [(span.text, span.source) for span in got.spans] == expected.spans
    assert got.stop_reason == expected.stop_reason


@pytest.mark.parametrize("question", QUESTIONS)
def test_engine_reading_the_first_tokens_at_once_matches_reference_on_demo_pair(pair, engine, question,
                                                                                  monkeypatch):
    """The demo pair read as a base many times the nudger's size is: guesses.READ_FIRST_TOKENS of each lookahead
    before the base's first check, then lazily."""
    monkeypatch.setattr(guesses, "LAZY_SIZE_RATIO", 0.0)
    expected = _reference(pair, question, 0.3, 16, 48)
    got = engine.generate(question, gamma=0.3, lookahead=16, max_new_tokens=48)
    assert guesses.tokens_read_first(engine.base, engine.nudger) == guesses.READ_FIRST_TOKENS
    assert got.text == expected.text
    assert [(span.text, span.source) for span in got.spans] == expected.spans
    assert got.stop_reason == expected.stop_reason


@pytest.mark.parametrize("settings", [
    {"rule": "entropy"}, {"rule": "margin", "max_nudged_fraction": 0.2}, {"rule": "agreement", "agreement_k": 5},
    {"rule": "window", "window": 2, "gamma": 0.7},
], ids=lambda settings: " ".join(f"{k}={v}" for k, v in settings.items()))
def test_other_rules_match_reference_on_demo_pair(pair, engine, settings):
    """The acceptance rules after the paper and the intervention cap (NUDGING_SPEC.md) on the real models."""
    (base_model, base_tok), (nudger_model, nudger_tok) = pair
    question = "Is a tomato a fruit or a vegetable? Answer with reasons."
    settings = {"gamma": 0.4, **settings}
    expected = reference_nudging(
        RefModel(base_model, base_tok), RefModel(nudger_model, nudger_tok), prompts.base_prompt(question),
        prompts.chat_prompt(nudger_tok, question), lookahead=6, budget=24, **settings)
    got = engine.generate(question, lookahead=6, max_new_tokens=24, **settings)
    assert (got.text, [(span.text, span.source) for span in got.spans], got.stop_reason) == (
        expected.text, expected.spans, expected.stop_reason)


def test_blend_matches_reference_on_demo_pair(pair, engine):
    (base_model, base_tok), (nudger_model, nudger_tok) = pair
    question = "What is 12 * 7?"
    expected = reference_blend(RefModel(base_model, base_tok), RefModel(nudger_model, nudger_tok),
                               prompts.base_prompt(question), prompts.chat_prompt(nudger_tok, question), gamma=0.4,
                               alpha=engine.baselines.blend_alpha(), k=engine.baselines.top_k, budget=24)
    got = engine.generate(question, mode="blend", gamma=0.4, max_new_tokens=24)
    assert (got.text, [(span.text, span.source) for span in got.spans], got.stop_reason) == (
        expected.text, expected.spans, expected.stop_reason)


# --- float32, as users and the server run it -------------------------------------------------------------------
# A decision can flip between two float32 computations (cached engine, full-pass reference) only where its margin,
# |p - gamma| or the top-1/top-2 logit gap, is within their difference: measured below at about 1e-5.
NOISE = 1e-3
FLOAT32_CASES = [(QUESTIONS[1], 0.3, 16, 24), (QUESTIONS[2], 0.3, 16, 24), (QUESTIONS[2], 0.6, 6, 24)]


@pytest.fixture(scope="module")
def float32_pair():
    engine = Nudger.from_pretrained("demo-base", "demo-nudger", dtype="float32", device="cpu")
    reference = tuple(RefModel(*models.load(alias, dtype="float32", device="cpu")) for alias in ("demo-base", "demo-nudger"))
    return engine, reference


def test_float32_engine_and_reference_numbers_differ_far_below_the_margin_asked(float32_pair):
    engine, reference = float32_pair
    question = QUESTIONS[2]
    for model, ref, prompt in ((engine.base, reference[0], prompts.base_prompt(question)),
                               (engine.nudger, reference[1], prompts.chat_prompt(reference[1].tokenizer, question))):
        run, ids = model.start_run(prompt), ref.tokens(prompt)
        for _ in range(6):  # the engine's cached passes (prefill, one token, a guessed token) against full passes
            choice = run.next_choice()
            token, p = ref.top1(ids)
            assert choice.token == token and abs(choice.top1_prob - p) < NOISE / 10
            run.append(choice)
            ids.append(token)


def test_float32_engine_matches_the_reference_where_decisions_are_clear(float32_pair):
    engine, (base, nudger) = float32_pair
    clear = []
    for question, gamma, lookahead, budget in FLOAT32_CASES:
        base.decisions.clear()
        nudger.decisions.clear()
        expected = reference_nudging(base, nudger, prompts.base_prompt(question),
                                     prompts.chat_prompt(nudger.tokenizer, question), gamma, lookahead, budget)
        got = engine.generate(question, gamma=gamma, lookahead=lookahead, max_new_tokens=budget)
        if margins(base, nudger, gamma).above(NOISE):
            assert got.text == expected.text and got.stop_reason == expected.stop_reason, question
            assert [(span.text, span.source) for span in got.spans] == expected.spans
            clear.append(got)
    assert len(clear) >= len(FLOAT32_CASES) - 1  # so the comparison cannot quietly become empty
    assert {span.source for r in clear for span in r.spans} == {"base", "nudger"}
    prompt_tokens = min(len(engine.base.tokenize(engine.prompts_for(q)[0])) for q, *_ in FLOAT32_CASES)
    for result in clear:
        work = result.stats.models["base"]
        # Recomputing from scratch would feed at least the whole prompt on every pass.
        assert work["tokens_processed"] < work["forward_passes"] * prompt_tokens / 2 or work["forward_passes"] <= 2


# --- the paper's baselines that work across tokenizers ------------------------------------------------------------
@pytest.mark.parametrize("question", QUESTIONS[1:])
def test_text_ensemble_matches_reference_on_demo_pair(pair, engine, question):
    (base_model, base_tok), (nudger_model, nudger_tok) = pair
    expected = reference_text_ensemble(
        RefModel(base_model, base_tok), RefModel(nudger_model, nudger_tok), prompts.base_prompt(question),
        prompts.chat_prompt(nudger_tok, question), 5, 24,
    )
    got = engine.generate(question, mode="ensemble-text", max_new_tokens=24)
    assert got.text == expected.text
    assert [(span.text, span.source) for span in got.spans] == expected.spans
    assert got.stop_reason == expected.stop_reason
    assert "disagree" in expected.events and "agree" in expected.events  # two tokenizers: both branches


def test_in_context_on_demo_pair_stops_at_the_next_query(pair, engine):
    (base_model, base_tok), _ = pair
    question = "What is the capital of France?"
    got = engine.generate(question, mode="in-context", max_new_tokens=16)  # the next query starts by token 12
    expected, _ = RefModel(base_model, base_tok).greedy(in_context_prompt(question), 16)
    assert STOP in expected  # the base answers, then starts the next turn
    assert got.text == expected.split(STOP)[0] and got.stop_reason == "stop"
    assert "Paris" in got.text and got.stats.models["nudger"]["forward_passes"] == 0


def test_batched_answers_equal_one_at_a_time(engine):
    """The three questions answered together (their passes packed into one per model, across two tokenizers
    and gemma's sliding-window layers) give the answers each gets alone."""
    alone = [engine.generate(q, max_new_tokens=40) for q in QUESTIONS]
    lanes = engine.lanes(3)
    together = engine.generate_batch(QUESTIONS, lanes=lanes, max_new_tokens=40)
    assert [(r.text, r.spans, r.stop_reason) for r in together] == [(r.text, r.spans, r.stop_reason) for r in alone]
    assert lanes[0].nudger.packed.stats.lane_passes > lanes[0].nudger.packed.stats.passes
