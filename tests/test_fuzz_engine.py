"""Differential fuzzing: the cached engine against the plain reference of the spec, on random tiny model pairs
(fuzz_pool.py), random prompts and random gamma, lookahead and budget. Exact text, spans, stop reason and trace.

The quick run (default suite) draws QUICK_CASES cases with a fixed seed; the long run (`-m fuzz_long`, see
docs/testing.md) draws LONG_CASES. Each asserts that every branch in BRANCHES was reached. A case whose closest
decision lies within TIE of flipping (a probability against gamma, or the two most likely tokens) could go
either way by float rounding between a cached and an uncached pass; it is set aside and counted.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass, replace
from typing import Iterator

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nudging.errors import PromptTooLongError

from agreement import assert_same_answer, assert_trace_matches
from fuzz_pool import ModelPool, PoolModel
from reference import reference_nudging

QUICK_CASES = 300
RULE_CASES = 200  # the other acceptance rules and the intervention cap (NUDGING_SPEC.md), quick run
LONG_CASES = int(os.environ.get("NUDGING_FUZZ_CASES", "5000"))
TIE = 1e-6
WORDS = ["The", "cat", "reads", "the", "question", "café", "Zoë", "naïvely", "adds", "12", "+", "7", "=", "19.",
         "step", "by", "answer:", "?", "a", "robot", "every", "student", "ï", "é"]
SEPARATORS = [" ", " ", " ", "  ", "\n", ""]
ENDINGS = ["\n", "\n", " ", "", ":\n", "  "]

# Every branch of the spec, as the reference's events and stop reasons name them.
BRANCHES = (
    "stop:nudger_eos", "stop:repetition", "stop:length",
    "nudger_eos_at_once", "nudger_eos_after_text",
    "lookahead_empty", "lookahead_one_word", "lookahead_only_spaces", "lookahead_leading_spaces",
    "lookahead_piece_held", "decoder_rewrote",
    "empty_word_skipped", "word_accepted", "no_takeover",
    "takeover_by_eos", "takeover_confident", "takeover_agrees", "empty_piece_agrees",
    "base_stage_unsure", "base_stage_eos", "stage_piece_held",
    "length_after_nudge", "length_in_base_stage", "context_full_base", "context_full_nudger",
    "prompt_too_long",  # not a branch of the spec: the engine refuses a prompt that leaves no room
)


@dataclass(frozen=True)
class Case:
    base: str
    nudger: str
    base_prompt: str
    nudger_prompt: str
    gamma: float
    lookahead: int
    budget: int
    rule: str = "top1"
    agreement_k: int = 5
    window: int = 4
    max_nudged_fraction: float | None = None


@pytest.fixture(scope="module")
def pool() -> Iterator[ModelPool]:
    # One thread: the models are tiny, and on a busy machine torch's worker threads wait on each other for
    # longer than the products take (measured: 16x slower with 2 threads on 2 loaded cores).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield ModelPool()
    finally:
        torch.set_num_threads(threads)


def cases(pool: ModelPool) -> st.SearchStrategy[Case]:
    @st.composite
    def draw_case(draw) -> Case:
        kind = draw(st.integers(0, 9))  # the agreeing pair in two cases of ten, the short base in one
        agree = kind < 2
        base = "base-agree" if agree else "base-byte-short" if kind == 2 else draw(st.sampled_from(pool.bases))
        nudger = "nudger-agree" if agree else draw(st.sampled_from(pool.nudgers))
        words = draw(st.lists(st.sampled_from(WORDS), min_size=1, max_size=12))
        text = words[0] + "".join(draw(st.sampled_from(SEPARATORS)) + word for word in words[1:])
        base_prompt = text + draw(st.sampled_from(ENDINGS))
        tokenizer = pool.models[nudger].tokenizer
        if tokenizer.chat_template and not agree and draw(st.booleans()):
            nudger_prompt = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                          add_generation_prompt=True)
        else:
            nudger_prompt = base_prompt
        gamma = draw(st.floats(0.02, 0.98))
        lookahead = draw(st.one_of(st.integers(1, 20), st.integers(2, 6), st.integers(8, 20)))
        budget = draw(st.one_of(st.integers(1, 64), st.integers(32, 64)))
        return Case(base, nudger, base_prompt, nudger_prompt, gamma, lookahead, budget)

    return draw_case()


def rule_cases(pool: ModelPool) -> st.SearchStrategy[Case]:
    """Cases with another acceptance rule, and the intervention cap in half of them."""
    rules = st.tuples(st.sampled_from(["entropy", "margin", "agreement", "window"]), st.sampled_from([3, 20]),
                      st.one_of(st.none(), st.floats(0.0, 0.8)), st.sampled_from([1, 2, 4]))
    return st.tuples(cases(pool), rules).map(
        lambda drawn: replace(drawn[0], rule=drawn[1][0], agreement_k=drawn[1][1], max_nudged_fraction=drawn[1][2],
                              window=drawn[1][3]))


def fits(model: PoolModel, prompt: str) -> bool:
    """Whether a prompt leaves room for a new token in the model's context (else the engine refuses it)."""
    return len(model.local.tokenize(prompt)) < model.reference.context


def check_case(pool: ModelPool, case: Case, counts: Counter) -> None:
    base, nudger = pool.models[case.base], pool.models[case.nudger]
    engine = pool.engine(case.base, case.nudger)
    counts["cases"] += 1
    if not all(fits(model, prompt) for model, prompt in ((base, case.base_prompt), (nudger, case.nudger_prompt))):
        with pytest.raises(PromptTooLongError, match="prompt is .* tokens long"):
            engine.generate(base_prompt=case.base_prompt, nudger_prompt=case.nudger_prompt, gamma=case.gamma)
        counts["prompt_too_long"] += 1
        return
    rule = dict(rule=case.rule, agreement_k=case.agreement_k, window=case.window,
                max_nudged_fraction=case.max_nudged_fraction)
    expected = reference_nudging(base.reference, nudger.reference, case.base_prompt, case.nudger_prompt,
                                 case.gamma, case.lookahead, case.budget, **rule)
    if expected.margin < TIE:
        counts["set aside (near tie)"] += 1
        return
    got = engine.generate(
        base_prompt=case.base_prompt, nudger_prompt=case.nudger_prompt, gamma=case.gamma,
        lookahead=case.lookahead, max_new_tokens=case.budget, **rule)
    assert_same_answer(expected, got, repr(case))
    assert_trace_matches(expected, got, repr(case))
    counts.update(set(expected.events) - {"round"})
    counts[f"stop:{expected.stop_reason}"] += 1
    counts["answers with base text"] += any(source == "base" for _, source in expected.spans)


def fuzz(pool: ModelPool, examples: int, derandomize: bool) -> Counter:
    counts: Counter = Counter()

    @settings(max_examples=examples, derandomize=derandomize, deadline=None, database=None,
              suppress_health_check=list(HealthCheck), print_blob=True)
    @given(cases(pool))
    def run(case: Case) -> None:
        check_case(pool, case, counts)

    run()
    return counts


def fuzz_rules(pool: ModelPool, examples: int) -> Counter:
    """As fuzz, on rule_cases. (A derandomized run's cases follow from its test function's source.)"""
    counts: Counter = Counter()

    @settings(max_examples=examples, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck), print_blob=True)
    @given(rule_cases(pool))
    def run_rules(case: Case) -> None:
        check_case(pool, case, counts)

    run_rules()
    return counts


def branch_table(counts: Counter, seconds: float) -> str:
    """The run as a markdown table: cases in which each branch was taken at least once."""
    lines = [f"{counts['cases']} cases in {seconds:.0f} s; {counts['set aside (near tie)']} set aside as near ties; "
             f"{counts['answers with base text']} answers with text by the base", "",
             "| branch | cases |", "|---|---|"]
    lines += [f"| {branch} | {counts[branch]} |" for branch in BRANCHES]
    return "\n".join(lines)


def assert_every_branch(counts: Counter) -> None:
    missing = [branch for branch in BRANCHES if counts[branch] == 0]
    assert not missing, f"branches never reached: {missing}\n{branch_table(counts, 0)}"
    assert counts["set aside (near tie)"] <= counts["cases"] // 100, branch_table(counts, 0)


# Cases the fuzzer found, shrunk. Both were reference bugs (see test_pieces.py): a byte-fallback decoder rewrote
# a character already written (the reference asserted), and a prompt ending in a literal U+FFFD was held back
# as if it were a cut character (the reference repeated it in the next piece).
FOUND = [
    Case("base-agree", "nudger-meta-bytes", "reads 19. ", "reads 19. ", 0.5, 4, 4),
    Case("base-agree", "nudger-meta-bytes", "reads\n19. the  a cat ", "reads\n19. the  a cat ", 0.5, 4, 9),
]


@pytest.mark.parametrize("case", FOUND, ids=["decoder-rewrites", "prompt-ends-in-replacement-char"])
def test_found_cases(pool, case):
    counts: Counter = Counter()
    check_case(pool, case, counts)
    assert counts["lookahead_piece_held"] == 1


def test_quick_fuzz_engine_matches_reference(pool):
    started = time.perf_counter()
    counts = fuzz(pool, QUICK_CASES, derandomize=True)
    print(branch_table(counts, time.perf_counter() - started))
    assert_every_branch(counts)


def test_quick_fuzz_other_rules_match_reference(pool):
    counts = fuzz_rules(pool, RULE_CASES)
    reached = {"takeover_confident", "word_accepted", "base_stage_unsure", "takeover_filtered", "capped",
               "window_switch", "window_no_switch"}
    assert all(counts[event] for event in reached), {event: counts[event] for event in reached}
    assert counts["set aside (near tie)"] <= counts["cases"] // 20, counts


@pytest.mark.fuzz_long
def test_long_fuzz_engine_matches_reference(pool):
    started = time.perf_counter()
    counts = fuzz(pool, LONG_CASES, derandomize=os.environ.get("NUDGING_FUZZ_RANDOM") is None)
    table = branch_table(counts, time.perf_counter() - started)
    print(table)
    if report := os.environ.get("NUDGING_FUZZ_REPORT"):
        with open(report, "w", encoding="utf-8") as file:
            file.write(table + "\n")
    assert_every_branch(counts)
