"""The CPU speed-ups keep answers exact: cpu_linear computes what nn.Linear does, and drafted passes change only
how many passes a run takes, never what it writes."""

from __future__ import annotations

import pytest
import torch

from nudging import Nudger
from nudging.backends import cpu_linear
from nudging.backends.drafts import Drafts
from nudging.backends.local import LocalModel
from nudging.config import SamplingConfig
from tiny import byte_level_tokenizer, tiny_llama

PROMPTS = ["The cat reads the question", "Every student counts two numbers:", "My friend writes a long letter"]


@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 9])
@pytest.mark.parametrize("bias", [True, False])
def test_skinny_linear_computes_what_nn_linear_does(rows, bias):
    torch.manual_seed(rows)
    stock = torch.nn.Linear(48, 80, bias=bias, dtype=torch.float64)
    skinny = torch.nn.Linear(48, 80, bias=bias, dtype=torch.float64)
    skinny.load_state_dict(stock.state_dict())
    assert cpu_linear.install(skinny) == 1 and type(skinny) is cpu_linear.SkinnyLinear
    wide = torch.randn(1, rows, 2 * 48, dtype=torch.float64)
    strided = wide[..., ::2]  # not contiguous, like act(gate) * up in a real MLP
    for inputs in (torch.randn(1, rows, 48, dtype=torch.float64), strided, torch.randn(rows, 48, dtype=torch.float64)):
        expected, got = stock(inputs), skinny(inputs)
        assert got.shape == expected.shape
        assert torch.allclose(got, expected, rtol=0, atol=1e-12), (rows, bias)


def test_install_swaps_only_plain_cpu_float_layers():
    class Custom(torch.nn.Linear):
        pass

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), Custom(4, 4), torch.nn.Linear(4, 4, dtype=torch.bfloat16),
                                torch.nn.Embedding(10, 4))
    assert cpu_linear.install(model) == 1
    assert [type(m).__name__ for m in model] == ["SkinnyLinear", "Custom", "Linear", "Embedding"]
    assert cpu_linear.install(model) == 0  # twice is once


def test_local_model_installs_it_and_drafts_change_passes_not_answers():
    """The same pair with guessed tokens (the default) and without: the same text, spans and stop reasons, and
    with guesses some positions come from a pass that fed them as a guess."""
    byte = byte_level_tokenizer()
    base_weights, nudger_weights = tiny_llama(byte, sharpness=6.0, seed=7), tiny_llama(byte, sharpness=25.0, seed=7)
    outcomes = {}
    for draft_tokens in (0, 1, 3):
        pair = Nudger(LocalModel(base_weights, byte, name="base", draft_tokens=draft_tokens),
                      LocalModel(nudger_weights, byte, name="nudger", draft_tokens=draft_tokens))
        answers = [pair.generate(base_prompt=p + "\n", nudger_prompt=p + "\n", gamma=0.4, max_new_tokens=48)
                   for p in PROMPTS]
        outcomes[draft_tokens] = (
            [(a.text, a.spans, a.stop_reason) for a in answers],
            sum(a.stats.models[role]["reused_positions"] for a in answers for role in ("base", "nudger")),
        )
    assert any(isinstance(m, cpu_linear.SkinnyLinear) for m in base_weights.modules())
    assert outcomes[1][0] == outcomes[0][0] and outcomes[3][0] == outcomes[0][0]
    assert any(span.source == "base" for _, spans, _ in outcomes[0][0] for span in spans)
    assert outcomes[3][1] > outcomes[0][1], outcomes


def test_drafts_guess_what_followed_the_latest_match():
    drafts = Drafts()
    earlier = [1, 2, 3, 4, 5, 6]
    drafts.add(earlier)
    run = [9, 2, 3]
    drafts.add(run)
    assert drafts.guess(run, 2) == [4, 5]  # the 2-gram (2, 3) in the earlier run
    run += [7, 2, 3]
    assert drafts.guess(run, 3) == [7, 2, 3]  # the run's own earlier (2, 3) is more recent than the other run's
    assert drafts.guess(run, 0) == [] and drafts.guess([], 3) == []
    assert drafts.guess([42], 3) == []  # nothing matches


def test_drafts_match_whole_tokens_only():
    """Ids are searched as 8-byte words: a byte pattern that straddles two tokens is no match."""
    drafts = Drafts()
    drafts.add([256, 0, 77])  # bytes 00 01 00.. 00 | 00..: token 1's bytes (01 00 .. 00) appear one byte in
    assert drafts.guess([5, 1], 1) == []
    assert drafts.guess([5, 256], 1) == [0]
    drafts.add([3, 1, 99])
    assert drafts.guess([5, 1], 1) == [99]
    drafts.clear()
    assert drafts.guess([5, 1], 1) == []


def test_nudger_guesses_change_base_passes_not_answers(monkeypatch):
    """The nudger guessing the base's next tokens in base stages, forced on for the tiny pairs of the reference
    grid (one size, so off by default): every answer equals the plain reference of the spec, and the base reads
    positions that were fed as the nudger's guesses."""
    import itertools

    from reference import RefModel, reference_nudging
    from test_engine_reference import _chat, _pairs

    from nudging import guesses
    from tiny import metaspace_tokenizer

    monkeypatch.setattr(guesses, "GUESS_SIZE_RATIO", 0.0)
    offered, lengths = [], []
    real_guesser = guesses.nudger_guesser

    def counting_guesser(nudger, *args):
        guess = real_guesser(nudger, *args)

        def counted(text: str) -> str:
            offered.append(guess(text))
            lengths.append(len(nudger.tokenizer(offered[-1], add_special_tokens=False)["input_ids"]))
            return offered[-1]

        return counted

    monkeypatch.setattr(guesses, "nudger_guesser", counting_guesser)
    tokenizers = {"byte": byte_level_tokenizer(), "meta": metaspace_tokenizer()}
    compared = 0
    for name, (btok, bmodel, ntok, nmodel, same_prompt) in _pairs(tokenizers).items():
        pair = Nudger(LocalModel(bmodel, btok, name="base"), LocalModel(nmodel, ntok, name="nudger"))
        for prompt, gamma, lookahead in itertools.product(PROMPTS[:2], (0.4, 0.8), (2, 16)):
            base_prompt = prompt + "\n"
            nudger_prompt = base_prompt if same_prompt else _chat(ntok, prompt)
            expected = reference_nudging(RefModel(bmodel, btok), RefModel(nmodel, ntok), base_prompt, nudger_prompt,
                                         gamma, lookahead, 40)
            got = pair.generate(base_prompt=base_prompt, nudger_prompt=nudger_prompt, gamma=gamma,
                                lookahead=lookahead, max_new_tokens=40)
            assert (got.text, [(s.text, s.source) for s in got.spans], got.stop_reason) == (
                expected.text, expected.spans, expected.stop_reason), (name, prompt, gamma, lookahead)
            compared += 1
    assert compared == len(_pairs(tokenizers)) * 8
    assert sum(bool(guess) for guess in offered) >= 20, offered
    assert max(lengths) > 1  # the nudger's token and what followed it before


def test_guesses_are_offered_only_where_they_pay():
    from nudging import guesses

    byte = byte_level_tokenizer()
    base = LocalModel(tiny_llama(byte, seed=2), byte, name="base")
    nudger = LocalModel(tiny_llama(byte, seed=1), byte, name="nudger")
    assert not guesses.offer_nudger_guesses(base, nudger, "q\n", "q\n")  # one size: no
    assert guesses.offer_nudger_guesses(base, nudger, "q\n", "q\n", min_ratio=1.0) and base.guesser is not None
    assert base.guesser("elsewhere") == ""  # a text that does not start with the base prompt gets no guess
    assert isinstance(base.guesser("q\nThe"), str)
    base.start_generation(None, 8)
    assert base.guesser is None  # one generation's guesser ends with it
    nudger.start_generation(SamplingConfig(temperature=0.7, seed=1), 8)
    assert not guesses.offer_nudger_guesses(base, nudger, "q\n", "q\n", min_ratio=0.0)  # its draws stay its own

    class Served:  # a model on a server: no parameter count, no guesser
        full_distribution = False

    assert not guesses.offer_nudger_guesses(Served(), nudger, "q\n", "q\n", min_ratio=0.0)
