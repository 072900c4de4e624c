"""The other acceptance rules and the intervention cap (NUDGING_SPEC.md, "Other acceptance rules",
"Intervention cap"): the cached engine against the plain reference on the tiny pairs of test_engine_reference,
and the errors of bad settings."""

from __future__ import annotations

import itertools

import pytest

from nudging import Nudger
from nudging.config import CAPPED_FRACTION, NudgingConfig
from nudging.evals import runner
from nudging.methods import fitting
from nudging.errors import InvalidArgumentError
from agreement import assert_same_answer, assert_trace_matches
from reference import RefModel, reference_nudging
from test_engine_reference import PROMPTS, _chat, _pairs, tokenizers  # noqa: F401  (tokenizers: a fixture)
from tiny import local

# (rule, extra settings) -> gammas; each gamma lets the rule both hand over and keep the base writing somewhere
CASES = {
    ("entropy", ()): [0.05, 0.3],
    ("margin", ()): [0.1, 0.5],
    ("agreement", (("agreement_k", 20),)): [0.4],
    ("agreement", (("agreement_k", 3),)): [0.4],
    ("top1", (("max_nudged_fraction", 0.0),)): [0.4],
    ("top1", (("max_nudged_fraction", 0.5),)): [0.4],
    ("margin", (("max_nudged_fraction", 0.3),)): [0.3],
    ("window", (("window", 1),)): [0.5],
    ("window", (("window", 3),)): [0.3, 0.6],
}
LOOKAHEAD, BUDGET = 8, 40


@pytest.fixture(scope="module")
def outcomes(tokenizers):  # noqa: F811
    rows = []
    for name, (btok, bmodel, ntok, nmodel, same_prompt) in _pairs(tokenizers).items():
        engine = Nudger(local(bmodel, btok, "base"), local(nmodel, ntok, "nudger"))
        ref_base, ref_nudger = RefModel(bmodel, btok), RefModel(nmodel, ntok)
        for ((rule, extra), gammas), prompt in itertools.product(CASES.items(), PROMPTS):
            for gamma in gammas:
                base_prompt = prompt + "\n"
                nudger_prompt = base_prompt if same_prompt else _chat(ntok, prompt)
                settings = dict(extra)
                expected = reference_nudging(ref_base, ref_nudger, base_prompt, nudger_prompt, gamma, LOOKAHEAD,
                                             BUDGET, rule=rule, **settings)
                got = engine.generate(base_prompt=base_prompt, nudger_prompt=nudger_prompt, gamma=gamma,
                                      lookahead=LOOKAHEAD, max_new_tokens=BUDGET, rule=rule, **settings)
                rows.append((f"{name} {rule} {settings} gamma={gamma} prompt={prompt!r}", rule, settings, expected, got))
    return rows


def test_engine_matches_reference_for_every_rule(outcomes):
    for where, _, _, expected, got in outcomes:
        if expected.margin < 1e-9:
            continue  # a decision float rounding could flip (none in this grid; counted below)
        assert_same_answer(expected, got, where)
        assert_trace_matches(expected, got, where)
    assert sum(expected.margin < 1e-9 for *_, expected, _ in outcomes) <= len(outcomes) // 50


def test_each_rule_reaches_its_branches(outcomes):
    events = {}
    for _, rule, settings, expected, _ in outcomes:
        key = "cap" if "max_nudged_fraction" in settings else rule
        events.setdefault(key, set()).update(expected.events)
        events.setdefault(f"{key} stop", set()).add(expected.stop_reason)
    for rule in ("entropy", "margin"):
        assert {"takeover_confident", "word_accepted", "base_stage_unsure"} <= events[rule], (rule, events[rule])
    assert {"takeover_filtered", "word_accepted"} <= events["agreement"], events["agreement"]
    assert {"capped", "capped_eos", "capped_length"} <= events["cap"], events["cap"]
    assert {"window_switch", "window_switch_at_once", "window_no_switch", "window_eos",
            "window_length"} <= events["window"], events["window"]


def test_the_rules_change_the_answers(outcomes):
    """Each rule decides differently from top1 somewhere in the grid (else the comparison shows nothing)."""
    by_rule = {}
    for where, rule, settings, expected, _ in outcomes:
        by_rule.setdefault(rule if "max_nudged_fraction" not in settings else "cap", []).append(expected.text)
    for rule in ("entropy", "margin", "agreement", "cap", "window"):
        assert len(set(by_rule[rule])) > 1, rule


def test_the_cap_ends_with_the_base(outcomes):
    """With F = 0 the nudger writes one round only (the first nudge with a word puts it above 0); the capped
    round is the last, and the base writes all of it."""
    capped = [(where, got) for where, _, settings, expected, got in outcomes
              if settings.get("max_nudged_fraction") == 0.0 and "capped" in expected.events]
    assert capped
    for where, got in capped:
        assert len(got.trace) == 2 and got.trace[-1].takeover == "capped", where
        assert got.stop_reason in ("eos", "length"), where
        assert got.trace[-1].stage_tokens == 0 or got.spans[-1].source == "base", where


@pytest.mark.parametrize("setting, message", [
    ({"rule": "top2"}, "rule must be one of top1, entropy, margin, agreement, window, got 'top2'"),
    ({"window": 0}, "window must be an integer from 1 to 256, got 0"),
    ({"window": 2.5}, "window must be an integer from 1 to 256, got 2.5"),
    ({"agreement_k": 0}, "agreement_k must be an integer from 1 to 20, got 0"),
    ({"max_nudged_fraction": 1.5}, "max_nudged_fraction must be a number from 0 to 1, got 1.5"),
    ({"max_nudged_fraction": "half"}, "max_nudged_fraction must be a number from 0 to 1, got 'half'"),
])
def test_bad_rule_settings_are_refused(setting, message):
    with pytest.raises(InvalidArgumentError, match=message):
        NudgingConfig(**setting)


# --- the rules as methods of their own (nudging eval --method all compares them side by side) -------------------

def test_each_variant_is_nudging_with_its_rule(tokenizers):  # noqa: F811
    distinct = 0
    for btok, bmodel, ntok, nmodel, same_prompt in _pairs(tokenizers).values():
        engine = Nudger(local(bmodel, btok, "base"), local(nmodel, ntok, "nudger"))
        prompt = "The cat reads\n"
        prompts = dict(base_prompt=prompt, nudger_prompt=prompt if same_prompt else _chat(ntok, "The cat reads"),
                       gamma=0.4, lookahead=LOOKAHEAD, max_new_tokens=BUDGET)
        answers = {"top1": engine.generate(**prompts).text}
        for rule in ("entropy", "margin", "agreement", "window"):
            variant = engine.generate(mode=f"nudging-{rule}", **prompts)
            plain = engine.generate(rule=rule, **prompts)
            assert (variant.text, variant.stop_reason) == (plain.text, plain.stop_reason), rule
            answers[rule] = variant.text
        capped = engine.generate(mode="nudging-capped", **prompts)
        assert capped.text == engine.generate(max_nudged_fraction=CAPPED_FRACTION, **prompts).text
        own_cap = engine.generate(mode="nudging-capped", max_nudged_fraction=0.0, **prompts)
        assert own_cap.text == engine.generate(max_nudged_fraction=0.0, **prompts).text
        distinct = max(distinct, len(set(answers.values())))
    assert distinct > 2  # the variants' rules were applied, not the run's top1


def test_a_rule_is_part_of_an_eval_result_key():
    request = runner.EvalRequest(tasks=["coin_flip"], methods=["nudging"], base="b", nudger="n")
    plain = request.settings("coin_flip", "nudging")
    assert plain.rule is None  # the paper's rule: the key of result folders written before rules existed
    other = runner.EvalRequest(tasks=["coin_flip"], methods=["nudging"], base="b", nudger="n",
                               load_options={"rule": "window", "window": 2})
    assert other.settings("coin_flip", "nudging").rule == "window w=2"
    assert other.settings("coin_flip", "nudging").key != plain.key
    assert request.settings("coin_flip", "nudging-capped").rule == f"top1 cap={CAPPED_FRACTION:g}"
    assert request.settings("coin_flip", "nudging-agreement").rule == "agreement k=5"
    assert request.settings("coin_flip", "base").rule is None


def test_the_variants_that_read_the_whole_distribution_need_a_local_base():
    kept, skipped = fitting(["nudging-entropy", "nudging-margin", "nudging-agreement", "nudging-window"],
                            "openai:base@http://127.0.0.1:9/v1", "openai:chat@http://127.0.0.1:9/v1")
    assert kept == ["nudging-agreement", "nudging-window"]
    assert set(skipped) == {"nudging-entropy", "nudging-margin"}
    assert "whole next-token distribution" in skipped["nudging-entropy"]
