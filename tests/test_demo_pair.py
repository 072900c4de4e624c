"""The real demo pair (gemma-3-270m base, SmolLM2-135M-Instruct nudger: two families, two tokenizers).

Both run in float64 here so that the cached engine and the uncached reference agree to ~1e-12 and a threshold
test cannot flip on a near-tie; users run float32 (or bf16 on a GPU), where the same code runs.
"""

from __future__ import annotations

import pytest

from nudging import LocalModel, Nudger, models, prompts
from nudging.baselines.in_context import STOP, in_context_prompt
from reference import RefModel, reference_nudging, reference_text_ensemble

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


@pytest.mark.parametrize("question", QUESTIONS)
@pytest.mark.parametrize("gamma, lookahead, budget", [(0.3, 16, 48), (0.6, 6, 24)])
def test_engine_matches_reference_on_demo_pair(pair, engine, question, gamma, lookahead, budget):
    (base_model, base_tok), (nudger_model, nudger_tok) = pair
    base_prompt = prompts.base_prompt(question)
    nudger_prompt = prompts.chat_prompt(nudger_tok, question)
    expected = reference_nudging(
        RefModel(base_model, base_tok), RefModel(nudger_model, nudger_tok), base_prompt, nudger_prompt, gamma,
        lookahead, budget,
    )
    got = engine.generate(question, gamma=gamma, lookahead=lookahead, max_new_tokens=budget)
    assert got.text == expected.text
    assert [(span.text, span.source) for span in got.spans] == expected.spans
    assert got.stop_reason == expected.stop_reason


def test_demo_pair_nudges_and_reuses_caches():
    """The public API on the demo aliases, in float32 as users run it."""
    nudger = Nudger.from_pretrained("demo-base", "demo-nudger", max_new_tokens=48, device="cpu")
    results = [nudger.generate(q) for q in QUESTIONS]
    assert {span.source for r in results for span in r.spans} == {"base", "nudger"}
    prompt_tokens = min(len(nudger.base.tokenize(nudger.prompts_for(q)[0])) for q in QUESTIONS)
    for result in results:
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
    got = engine.generate(question, mode="in-context", max_new_tokens=40)
    expected, _ = RefModel(base_model, base_tok).greedy(in_context_prompt(question), 40)
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
