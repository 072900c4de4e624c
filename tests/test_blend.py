"""Soft blending (NUDGING_SPEC.md, "Soft blending (mode blend)"): the engine against the plain reference on the
tiny pairs of test_engine_reference (one tokenizer and two, both ways), properties that follow from the
definition, batched lanes, and the errors of bad settings."""

from __future__ import annotations

import itertools
import json

import pytest

from nudging import Nudger
from nudging.cli import main
from nudging.config import BLEND_ALPHA, PROXY_TUNING_ALPHA, BaselineConfig
from nudging.errors import InvalidArgumentError
from nudging.loading import LoadSpec
from reference import RefModel, reference_blend
from test_engine_reference import PROMPTS, _chat, _pairs, tokenizers  # noqa: F401  (tokenizers: a fixture)
from tiny import local, tiny_llama

ALPHAS = [0.0, 0.3, 0.5, 1.0]
GAMMAS = [0.4, 0.8]
EXTRA = [("entropy", 5, 0.5, 0.3), ("margin", 5, 0.3, 0.5), ("top1", 1, 0.5, 0.8)]  # (rule, top_k, alpha, gamma)


def grid(number: int) -> list[tuple[str, int, float, float]]:
    """The settings of the pair `number`: every alpha, the gammas in turn (so each alpha meets each gamma over the
    pairs), and one of the other scores or one candidate per model."""
    return [("top1", 5, alpha, GAMMAS[(i + number) % 2]) for i, alpha in enumerate(ALPHAS)] + [EXTRA[number % 3]]


BUDGET = 20
CLOSE = 1e-6  # a decision closer than this could be flipped by float32 against float64 probabilities


def _blend(engine: Nudger, base_prompt: str, nudger_prompt: str, alpha: float, top_k: int = 5,
           budget: int = BUDGET, **settings):
    return engine.generate(base_prompt=base_prompt, nudger_prompt=nudger_prompt, mode="blend", alpha=alpha,
                           top_k=top_k, max_new_tokens=budget, **settings)


@pytest.fixture(scope="module")
def pairs(tokenizers):  # noqa: F811
    """test_engine_reference's pairs, and a nudger whose EOS is likely, so that the nudger ends answers."""
    meta, byte = tokenizers["meta"], tokenizers["byte"]
    eos_nudger = (meta, tiny_llama(meta, seed=2), byte, tiny_llama(byte, seed=5, eos_logit_scale=3.0), False)
    return {**_pairs(tokenizers), "eos-nudger": eos_nudger}


@pytest.fixture(scope="module")
def outcomes(pairs):
    """Each pair with each setting, on one of the prompts (in turn); the short context with room to fill it."""
    rows = []
    for number, (name, (btok, bmodel, ntok, nmodel, same_prompt)) in enumerate(pairs.items()):
        engine = Nudger(local(bmodel, btok, "base"), local(nmodel, ntok, "nudger"))
        ref_base, ref_nudger = RefModel(bmodel, btok), RefModel(nmodel, ntok)
        budget = 40 if name == "short-context" else BUDGET
        for turn, (rule, k, alpha, gamma) in enumerate(grid(number), start=number):
            prompt = PROMPTS[turn % len(PROMPTS)]
            base_prompt = prompt + "\n"
            nudger_prompt = base_prompt if same_prompt else _chat(ntok, prompt)
            expected = reference_blend(ref_base, ref_nudger, base_prompt, nudger_prompt, gamma, alpha, k, budget,
                                       rule=rule)
            got = _blend(engine, base_prompt, nudger_prompt, alpha, k, budget, gamma=gamma, rule=rule)
            rows.append((f"{name} {rule} k={k} alpha={alpha} gamma={gamma} {prompt!r}", name, alpha, expected, got))
    return rows


def test_blend_matches_reference(outcomes):
    for where, _, _, expected, got in outcomes:
        if expected.margin < CLOSE:
            continue
        assert got.text == expected.text, where
        assert [(s.text, s.source) for s in got.spans] == expected.spans, where
        assert got.stop_reason == expected.stop_reason, where
        rounds = expected.events.count("round")
        assert got.stats.rounds == rounds and sum(r.compared for r in got.trace) == sum(
            e in ("unsure", "base_eos") for e in expected.events), where
    assert sum(expected.margin < CLOSE for *_, expected, _ in outcomes) <= len(outcomes) // 50


def test_grid_reaches_every_branch(outcomes):
    events = set().union(*(expected.events for *_, expected, _ in outcomes))
    assert events >= {"confident", "unsure", "base_eos", "end_won", "end_won_by_the_nudger", "base_string_won",
                      "other_string_won", "context_full"}, events
    assert {expected.stop_reason for *_, expected, _ in outcomes} == {"eos", "length"}
    assert {s.source for *_, got in outcomes for s in got.spans} == {"base", "nudger"}
    by_alpha = {alpha: {got.text for where, _, a, _, got in outcomes if a == alpha and "top1 k=5" in where}
                for alpha in ALPHAS}
    assert len({frozenset(texts) for texts in by_alpha.values()}) == len(ALPHAS)  # alpha changes the answers


def test_alpha_zero_is_the_base_alone_at_every_choice(outcomes, pairs):
    """With alpha 0 a string's score is the base's probability and the end's is the base's top-1 where that is
    EOS, so the base's own top-1 wins everywhere: every span is the base's, the answer ends only at the base's
    EOS (or the budget), and the nudger cannot change it, whichever nudger and tokenizer it is."""
    zero = [(where, name, got) for where, name, alpha, _, got in outcomes if alpha == 0.0]
    assert zero
    for where, _, got in zero:
        assert {s.source for s in got.spans} <= {"base"} and got.stop_reason in ("eos", "length"), where
    btok, bmodel, *_ = pairs["byte-base/meta-nudger"]
    nudgers = [(ntok, nmodel) for _, _, ntok, nmodel, _ in pairs.values()]  # both tokenizers, stuck, EOS-prone
    for prompt, gamma in itertools.product(PROMPTS, GAMMAS):
        answers = [_blend(Nudger(local(bmodel, btok, "base"), local(nmodel, ntok, "nudger")), prompt + "\n",
                          _chat(ntok, prompt), 0.0, gamma=gamma) for ntok, nmodel in nudgers]
        assert len({json.dumps(a.to_dict()["spans"]) for a in answers}) == 1, (prompt, gamma)
        assert any(r.compared for r in answers[0].trace), (prompt, gamma)  # the nudger was asked somewhere


def test_alpha_one_writes_the_nudgers_choice_where_the_base_is_unsure(pairs):
    """With alpha 1 the nudger's top-1 wins where the base is unsure: against a nudger that writes " the"
    forever, every string the base did not choose is " the", and at gamma above every top-1 probability it is
    the whole answer."""
    btok, bmodel, ntok, nmodel, _ = pairs["stuck-nudger"]
    engine = Nudger(local(bmodel, btok, "base"), local(nmodel, ntok, "nudger"))
    for prompt in PROMPTS:
        mixed = _blend(engine, prompt + "\n", prompt + "\n", 1.0, gamma=0.8)
        nudged = [s.text for s in mixed.spans if s.source == "nudger"]
        assert nudged and all(text == " the" * (len(text) // 4) for text in nudged), mixed.spans
        alone = _blend(engine, prompt + "\n", prompt + "\n", 1.0, gamma=0.999999)
        assert alone.text == " the" * (len(alone.text) // 4) and alone.stop_reason == "length", alone.text


def test_batched_lanes_give_the_answers_one_at_a_time(pairs):
    btok, bmodel, ntok, nmodel, _ = pairs["byte-base/meta-nudger"]
    engine = Nudger(local(bmodel, btok, "base"), local(nmodel, ntok, "nudger"), baselines=BaselineConfig(alpha=0.3))
    questions = ["The cat reads", "Every student counts", "A robot writes", "Zoë finds"]
    alone = [engine.generate(q, mode="blend", gamma=0.8, max_new_tokens=BUDGET) for q in questions]
    together = engine.generate_batch(questions, batch_size=4, mode="blend", gamma=0.8, max_new_tokens=BUDGET)
    assert [(r.text, r.spans, r.stop_reason) for r in together] == [(r.text, r.spans, r.stop_reason) for r in alone]
    assert any(s.source == "nudger" for r in alone for s in r.spans)
    # alpha and top_k given to one call (and to a batch) apply to it only, and equal a Nudger built with them
    own = Nudger(local(bmodel, btok, "base"), local(nmodel, ntok, "nudger"),
                 baselines=BaselineConfig(alpha=1.0, top_k=2))
    wanted = [own.generate(q, mode="blend", gamma=0.8, max_new_tokens=BUDGET) for q in questions]
    per_call = engine.generate_batch(questions, batch_size=4, mode="blend", gamma=0.8, max_new_tokens=BUDGET,
                                     alpha=1.0, top_k=2)
    assert [(r.text, r.spans) for r in per_call] == [(r.text, r.spans) for r in wanted]
    assert [r.text for r in wanted] != [r.text for r in alone]
    assert engine.baselines == BaselineConfig(alpha=0.3)
    assert engine.generate(questions[0], mode="blend", gamma=0.8, max_new_tokens=BUDGET).text == alone[0].text


def test_alpha_defaults_are_each_methods_own():
    assert BaselineConfig().blend_alpha() == BLEND_ALPHA == 0.5
    assert BaselineConfig().proxy_tuning_alpha == PROXY_TUNING_ALPHA == 1.0
    assert BaselineConfig(alpha=2.0).proxy_tuning_alpha == 2.0  # any finite strength for proxy tuning
    assert LoadSpec.build(mode="proxy-tuning", alpha=-3.0).baselines.alpha == -3.0


@pytest.mark.parametrize("alpha", [1.5, -0.1])
def test_bad_alpha_for_blend_is_refused(pairs, alpha):
    message = f"mode blend needs alpha (--alpha) from 0 to 1, got {alpha}"
    with pytest.raises(InvalidArgumentError, match=message.replace("(", r"\(").replace(")", r"\)")):
        LoadSpec.build(mode="blend", alpha=alpha)  # before any model loads
    btok, bmodel, ntok, nmodel, _ = pairs["byte-base/meta-nudger"]
    engine = Nudger(local(bmodel, btok, "base"), local(nmodel, ntok, "nudger"), baselines=BaselineConfig(alpha=alpha))
    with pytest.raises(InvalidArgumentError, match="--alpha"):
        engine.generate("The cat", mode="blend", max_new_tokens=4)
    assert engine.generate("The cat", mode="ensemble-text", max_new_tokens=4).text  # other modes ignore it
    fine = Nudger(local(bmodel, btok, "base"), local(nmodel, ntok, "nudger"))
    with pytest.raises(InvalidArgumentError, match=message.replace("(", r"\(").replace(")", r"\)")):
        fine.generate("The cat", mode="blend", alpha=alpha, max_new_tokens=4)  # given to one call
    with pytest.raises(InvalidArgumentError, match="^top_k must be an integer from 1 to 20, got 0$"):
        fine.generate("The cat", mode="blend", top_k=0, max_new_tokens=4)


@pytest.mark.parametrize("alpha, expected", [("1.5", "mode blend needs alpha (--alpha) from 0 to 1, got 1.5"),
                                             ("nan", "alpha (--alpha) must be a finite number, got nan")])
def test_bad_alpha_on_the_command_line_is_one_line(capsys, alpha, expected):
    for argv in (["generate", "The cat", "--mode", "blend"], ["eval", "--task", "coin_flip", "--method", "blend"]):
        code = main([*argv, "--alpha", alpha])
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2 and lines == [f"nudging: error: {expected}"], err


def test_a_rule_that_is_not_a_score_is_refused(monkeypatch):
    from nudging import rules

    monkeypatch.setattr(rules, "SCORED_RULES", ("top1",))
    with pytest.raises(InvalidArgumentError, match="mode blend compares the rule's score .* rule margin is not"):
        LoadSpec.build(mode="blend", rule="margin")


def test_generate_eval_and_bench_run_blend(capsys, tiny_folders, tmp_path):
    models = ["--base", tiny_folders["base"], "--nudger", tiny_folders["nudger"]]
    code = main(["generate", "The cat reads", "--mode", "blend", "--alpha", "0.7", "--gamma", "0.8",
                 "--max-new-tokens", "12", "--json", *models])
    out, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads(out)
    assert result["mode"] == "blend" and result["stop_reason"] in ("eos", "length")
    assert result["text"] == "".join(s["text"] for s in result["spans"]) and result["trace"]
    code = main(["eval", "--task", "coin_flip", "--method", "blend", "--limit", "1", "--max-new-tokens", "6",
                 "--out", str(tmp_path), *models])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "blend" in (tmp_path / "summary.md").read_text()  # its column in the table
    settings = json.loads(next(tmp_path.glob("coin_flip__blend__*.json")).read_text())
    assert (settings["alpha"], settings["top_k"], settings["gamma"]) == (BLEND_ALPHA, 5, 0.3)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("The cat reads\n")
    code = main(["bench", "--prompts", str(prompts), "--method", "blend", "--max-new-tokens", "8", "--json", *models])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert list(json.loads(out)["methods"]) == ["blend"]


def test_blend_needs_local_models(tiny_folders):
    """A server's stream ends at EOS without its probability, which the end's score needs: refused before any
    connection or weights, naming the methods that work; `--method all` skips it with the reason."""
    from nudging.methods import fitting

    served = "openai:tiny-base@http://127.0.0.1:9/v1"
    with pytest.raises(InvalidArgumentError) as error:
        Nudger.from_pretrained(served, tiny_folders["nudger"], mode="blend")
    message = str(error.value)
    assert message.startswith("blend needs local models (") and message.endswith(
        "use one of: nudging, base, nudger, nudging-agreement, nudging-window, nudging-capped, ensemble-text, "
        "in-context"), message
    kept, skipped = fitting(["nudging", "ensemble-text", "blend"], served, tiny_folders["nudger"])
    assert kept == ["nudging", "ensemble-text"] and "local models" in skipped["blend"]
