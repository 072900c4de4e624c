"""EOS ids, prompts, config validation, sampling and the Nudger's argument errors, on tiny models."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from nudging import prompts
from nudging.backends.local import LocalModel, eos_token_ids
from nudging.config import NudgingConfig, SamplingConfig
from nudging.errors import InvalidArgumentError, PromptTooLongError
from nudging.nudger import Nudger
from tiny import CHATML, byte_level_tokenizer, metaspace_tokenizer, stuck_llama, tiny_llama

NO_SYSTEM_CHATML = (
    "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def byte_tok():
    return byte_level_tokenizer()


@pytest.fixture(scope="module")
def meta_tok():
    return metaspace_tokenizer()


def ids_of(tokenizer, *tokens: str) -> list[int]:
    return [tokenizer.convert_tokens_to_ids(t) for t in tokens]


# --- EOS ----------------------------------------------------------------------------------------------------
def test_eos_ids_are_the_union_of_generation_config_and_tokenizer(byte_tok):
    im_end, endoftext = ids_of(byte_tok, "<|im_end|>", "<|endoftext|>")
    model = tiny_llama(byte_tok, seed=0)
    model.generation_config.eos_token_id = [im_end, endoftext]
    assert eos_token_ids(model, byte_tok) == {im_end, endoftext}
    model.generation_config.eos_token_id = endoftext
    assert eos_token_ids(model, byte_tok) == {im_end, endoftext}
    model.generation_config.eos_token_id = None
    assert eos_token_ids(model, byte_tok) == {im_end}
    assert LocalModel(model, byte_tok).eos_ids == {im_end}


def test_eos_ids_without_a_tokenizer_eos():
    model = SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=[5, 7]))
    assert eos_token_ids(model, SimpleNamespace(eos_token_id=None)) == {5, 7}
    assert eos_token_ids(SimpleNamespace(), SimpleNamespace(eos_token_id=3)) == {3}


def test_end_of_turn_token_stops_greedy(byte_tok):
    im_end, endoftext = ids_of(byte_tok, "<|im_end|>", "<|endoftext|>")
    assert LocalModel(stuck_llama(byte_tok, im_end), byte_tok).greedy("The cat", 5) == ("", True)

    model = stuck_llama(byte_tok, endoftext)
    model.generation_config.eos_token_id = im_end
    assert LocalModel(model, byte_tok).greedy("The cat", 3) == ("<|endoftext|>" * 3, False)
    model.generation_config.eos_token_id = [im_end, endoftext]
    assert LocalModel(model, byte_tok).greedy("The cat", 3) == ("", True)


# --- prompts ------------------------------------------------------------------------------------------------
def test_base_prompt_format():
    assert prompts.base_prompt("What is 2+2?") == "What is 2+2?\nAnswer:\n"
    assert prompts.base_prompt("What is 2+2?", "Be brief.") == "Be brief.\nWhat is 2+2?\nAnswer:\n"
    assert prompts.base_prompt("Q", "", answer_prefix="A: ") == "Q\nA: "


def test_chat_prompt_puts_system_in_a_system_turn(byte_tok):
    assert prompts.chat_prompt(byte_tok, "Hi?", "Be brief.") == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert prompts.chat_prompt(byte_tok, "Hi?") == "<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\n"


def test_chat_prompt_folds_system_into_user_turn_when_template_has_no_system_role():
    tokenizer = byte_level_tokenizer()
    tokenizer.chat_template = NO_SYSTEM_CHATML
    with pytest.raises(Exception, match="System role not supported"):
        tokenizer.apply_chat_template([{"role": "system", "content": "S"}], tokenize=False)
    assert prompts.chat_prompt(tokenizer, "Hi?", "Be brief.") == (
        "<|im_start|>user\nBe brief.\n\nHi?<|im_end|>\n<|im_start|>assistant\n"
    )


def test_chat_prompt_drops_template_bos_when_tokenizer_adds_one():
    tokenizer = metaspace_tokenizer()
    tokenizer.chat_template = "{{ bos_token }}" + CHATML
    text = prompts.chat_prompt(tokenizer, "Hi?")
    assert text == "<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\n"
    ids = tokenizer(text)["input_ids"]
    assert ids.count(tokenizer.bos_token_id) == 1 and ids[0] == tokenizer.bos_token_id


def test_chat_prompt_keeps_template_bos_when_tokenizer_adds_none():
    tokenizer = byte_level_tokenizer()
    tokenizer.chat_template = "{{ bos_token }}" + CHATML
    assert prompts.chat_prompt(tokenizer, "Hi?").startswith("<|im_start|><|im_start|>user\n")


def test_chat_prompt_without_template_uses_base_format(meta_tok):
    assert not meta_tok.chat_template
    assert prompts.chat_prompt(meta_tok, "Hi?", "Be brief.") == prompts.base_prompt("Hi?", "Be brief.")


# --- configs ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(gamma=0), "gamma"),
        (dict(gamma=1), "gamma"),
        (dict(gamma=-0.1), "gamma"),
        (dict(gamma="a"), "gamma"),
        (dict(lookahead=0), "lookahead"),
        (dict(lookahead=1.5), "lookahead"),
        (dict(lookahead=True), "lookahead"),
        (dict(max_new_tokens=0), "max_new_tokens"),
        (dict(max_new_tokens="8"), "max_new_tokens"),
    ],
)
def test_nudging_config_rejects(kwargs, name):
    with pytest.raises(InvalidArgumentError, match=name):
        NudgingConfig(**kwargs)


@pytest.mark.parametrize(
    "kwargs, name",
    [(dict(temperature=-1), "temperature"), (dict(temperature="hot"), "temperature"), (dict(top_p=0), "top_p"),
     (dict(top_p=1.5), "top_p"),
     (dict(temperature=float("nan")), "temperature")],
)
def test_sampling_config_rejects(kwargs, name):
    with pytest.raises(InvalidArgumentError, match=name):
        SamplingConfig(**kwargs)


def test_valid_configs():
    assert NudgingConfig(gamma=0.5, lookahead=1, max_new_tokens=1).gamma == 0.5
    assert SamplingConfig().greedy and not SamplingConfig(temperature=0.7).greedy


# --- sampling -----------------------------------------------------------------------------------------------
QUESTIONS = ["The cat reads", "Every student counts two numbers", "Zoë finds the answer"]


def sampled_texts(byte_tok, meta_tok, base_seed: int | None, nudger_seed: int | None, temperature=1.0):
    def sampling(seed):
        return SamplingConfig(temperature=temperature, seed=seed)

    base = LocalModel(tiny_llama(meta_tok, seed=2), meta_tok, sampling=sampling(base_seed))
    nudger = LocalModel(tiny_llama(byte_tok, seed=5), byte_tok, sampling=sampling(nudger_seed))
    nudger_obj = Nudger(base, nudger, NudgingConfig(gamma=0.3, lookahead=4, max_new_tokens=24))
    return [nudger_obj.generate(q).text for q in QUESTIONS], [nudger_obj.generate(q).text for q in QUESTIONS]


def test_sampling_is_reproducible_per_seed(byte_tok, meta_tok):
    first, again = sampled_texts(byte_tok, meta_tok, 3, 3)
    assert first == again
    assert sampled_texts(byte_tok, meta_tok, 3, 3)[0] == first
    assert sampled_texts(byte_tok, meta_tok, 4, 4)[0] != first
    assert sampled_texts(byte_tok, meta_tok, None, None, temperature=0.0)[0] != first


# --- Nudger errors ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def short_nudger(byte_tok, meta_tok):
    base = LocalModel(tiny_llama(meta_tok, seed=1, max_positions=16), meta_tok, name="base")
    nudger = LocalModel(tiny_llama(byte_tok, seed=2), byte_tok, name="nudger")
    return Nudger(base, nudger, NudgingConfig(max_new_tokens=4))


def test_generate_needs_a_question_or_prompts(short_nudger):
    with pytest.raises(InvalidArgumentError):
        short_nudger.generate()
    with pytest.raises(InvalidArgumentError, match="nudger_prompt"):
        short_nudger.generate(base_prompt="Hi\n")


def test_generate_rejects_unknown_mode(short_nudger):
    with pytest.raises(InvalidArgumentError, match="mode"):
        short_nudger.generate("Hi", mode="x")


def test_generate_rejects_a_mode_without_its_model(byte_tok):
    only_nudger = Nudger(None, LocalModel(tiny_llama(byte_tok, seed=2), byte_tok, name="nudger"))
    with pytest.raises(InvalidArgumentError, match="base"):
        only_nudger.generate("Hi", mode="base")


def test_prompt_longer_than_context(short_nudger):
    short_nudger.generate("Hi", max_new_tokens=2)
    long_question = "the cat reads the question " * 4
    assert len(short_nudger.base.tokenize(prompts.base_prompt(long_question))) > 16
    with pytest.raises(PromptTooLongError, match="base"):
        short_nudger.generate(long_question)
    with pytest.raises(PromptTooLongError):
        short_nudger.generate(long_question, mode="base")
    assert short_nudger.generate(long_question, mode="nudger", max_new_tokens=2).mode == "nudger"


def test_logits_of_earlier_passes_are_reused_only_while_their_ids_stand(byte_tok):
    """A run that follows ids already fed through the model reads their logits without a pass; once another
    pass changes those ids, the stale logits are not used."""
    model = LocalModel(tiny_llama(byte_tok, seed=3), byte_tok, name="m")
    fresh = LocalModel(tiny_llama(byte_tok, seed=3), byte_tok, name="fresh")
    first = byte_tok("The cat reads the question")["input_ids"]
    other = first[:4] + byte_tok(" every student", add_special_tokens=False)["input_ids"]
    model.logits_from(first, 2)  # one pass: logits after first[:3] ... first[:n]
    passes = model.counters.forward_passes
    for end in range(3, len(first) + 1):  # a run extending first[:3] one token at a time
        got = model.logits_from(first[:end], end - 1)
        assert torch.allclose(got, fresh.logits_from(first[:end], end - 1), atol=1e-5)
    assert model.counters.forward_passes == passes
    assert model.counters.reused_positions == len(first) - 2
    model.logits_from(other, len(other) - 1)  # diverges from `first` after 4 tokens
    for end in (4, len(first)):
        before = model.counters.forward_passes
        got = model.logits_from(first[:end], end - 1)
        assert model.counters.forward_passes == before + (end > 4)  # position 3 still stands; later ones don't
        assert torch.allclose(got, fresh.logits_from(first[:end], end - 1), atol=1e-5)


# --- trace, load specs, the lane pool ---------------------------------------------------------------------------
def test_authors_requests_are_counted_from_the_trace():
    from nudging.trace import RoundTrace, authors_requests

    rounds = [RoundTrace(boundaries_checked=2, takeover="base", stage_tokens=17), RoundTrace(takeover="end")]
    assert authors_requests("nudging", rounds) == (1 + 2 + 2) + 1  # 17 stage tokens: two 16-token requests
    assert authors_requests("ensemble-text", [RoundTrace(compared=16), RoundTrace(compared=17)]) == 2 + 4
    assert authors_requests("base", rounds) == 0


def test_load_spec_routes_each_option_to_the_dataclass_that_owns_it():
    from nudging.loading import LoadSpec

    default = LoadSpec.build()
    assert default.config == NudgingConfig() and default.models.base == "demo-base" and default.methods == ("nudging",)
    spec = LoadSpec.build("b", None, gamma="auto", lookahead=None, max_new_tokens=7, dtype="float64", alpha=2.0,
                          remote_protocol="chunked", mode="base")
    assert (spec.models.base, spec.models.nudger) == ("b", "demo-nudger")
    assert spec.gamma_auto and spec.config == NudgingConfig(max_new_tokens=7)
    assert (spec.local.dtype, spec.baselines.alpha, spec.remote.remote_protocol, spec.methods) == (
        "float64", 2.0, "chunked", ("base",))
    with pytest.raises(InvalidArgumentError, match="unknown option 'gama'"):
        LoadSpec.build(gama=0.3)
    with pytest.raises(InvalidArgumentError, match="lookahead must be at most 256"):
        LoadSpec.build(lookahead=257)
    with pytest.raises(InvalidArgumentError, match="mode must be one of"):
        LoadSpec.build(mode="beam")


def test_command_line_defaults_are_the_config_defaults():
    from nudging.cli import build_parser
    from nudging.commands import load_spec
    from nudging.loading import LoadSpec

    for argv in (["generate", "q"], ["eval", "--task", "gsm8k"], ["serve"], ["bench"], ["calibrate"]):
        args = build_parser().parse_args(argv)
        spec = load_spec(args, getattr(args, "max_new_tokens", None) if argv[0] != "serve" else args.max_tokens)
        built = LoadSpec.build()
        assert (spec.config.gamma, spec.config.lookahead, spec.models, spec.local, spec.baselines) == (
            built.config.gamma, built.config.lookahead, built.models, built.local, built.baselines), argv
        assert spec.remote == built.remote, argv


def test_sampling_given_for_one_generation_leaves_the_models_as_they_were(byte_tok, meta_tok):
    sampled = SamplingConfig(temperature=1.0, seed=3)
    base = LocalModel(tiny_llama(meta_tok, seed=2), meta_tok)
    nudger = LocalModel(tiny_llama(byte_tok, seed=5), byte_tok)
    pair = Nudger(base, nudger, NudgingConfig(gamma=0.3, lookahead=4, max_new_tokens=24))
    greedy = pair.generate(QUESTIONS[0]).text
    once = pair.generate(QUESTIONS[0], sampling={"base": sampled, "nudger": sampled}).text
    assert base.sampling == nudger.sampling == SamplingConfig()  # nothing was set on the shared models
    assert pair.generate(QUESTIONS[0]).text == greedy != once
    default_sampled = Nudger(LocalModel(base.model, meta_tok, sampling=sampled),
                             LocalModel(nudger.model, byte_tok, sampling=sampled), pair.config)
    assert default_sampled.generate(QUESTIONS[0]).text == once


def test_the_lane_pool_lends_each_lane_to_one_generation_and_reports_errors():
    import threading
    import time

    from nudging.pool import LanePool

    class Source:
        def __init__(self):
            self.busy = set()

        def lanes(self, count):
            return [f"lane{i}" for i in range(count)]

        def replica(self):
            return "replica"

    source, lock, seen = Source(), threading.Lock(), []

    def work(lane, item):
        with lock:
            assert lane not in source.busy
            source.busy.add(lane)
        time.sleep(0.01)
        with lock:
            source.busy.discard(lane)
            seen.append(lane)
        if item == "boom":
            raise RuntimeError("boom")
        return item * 2

    pool = LanePool(source, 3)
    results = dict(pool.imap(list(range(10)), work))
    assert results == {i: 2 * i for i in range(10)} and set(seen) == {"lane0", "lane1", "lane2"}
    assert LanePool(source, 1).lanes == ["replica"]
    with pytest.raises(RuntimeError, match="boom"):
        list(LanePool(source, 2).imap(["boom", 1, 2, 3], work))
    with pytest.raises(InvalidArgumentError, match="size of at least 1"):
        LanePool(source, 0)


def test_counters_say_what_each_pass_computed(byte_tok):
    model = LocalModel(tiny_llama(byte_tok, seed=3), byte_tok)
    ids = model.tokenize("The cat reads a book")
    model.logits_from(ids, 2)
    counters = model.counters
    assert (counters.forward_passes, counters.tokens_processed, counters.logit_rows) == (1, len(ids), len(ids) - 2)
    model.logits_from(ids + [5], len(ids))  # one more token on the cached ones: one row
    assert (counters.forward_passes, counters.tokens_processed, counters.logit_rows) == (2, len(ids) + 1, len(ids) - 1)
    assert counters.seconds > 0 and counters.to_dict()["logit_rows"] == len(ids) - 1
