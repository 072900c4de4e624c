"""The nudger's lookahead read only as far as its nudge, its rest computed alongside the nudger's later passes
(nudging.backends.lookahead, nudging.engine): the answers are the plain reference's, every path of the held rounds
is taken, a lane forked from the trunk computes what the model computes alone, and where reading lazily cannot be
exact or cannot pay, the lookahead is read whole. Tiny models built here."""

from __future__ import annotations

import collections
import types

import pytest
import torch

from nudging import Nudger, engine, guesses
from nudging.backends import batch, lookahead, packed
from nudging.backends.interface import Lookahead
from nudging.backends.local import LocalModel
from nudging.config import NudgingConfig, SamplingConfig
from nudging.engine import EngineState
from nudging.errors import ContextWindowFull
from agreement import assert_same_answer, assert_trace_matches
from reference import RefModel, reference_nudging
from test_batch import tiny_gemma3
from test_calibrate import chain_pair
from test_engine_reference import READINGS, _outcomes, outcomes_read
from tiny import byte_level_tokenizer, local, metaspace_tokenizer, tiny_llama


@pytest.fixture(scope="module")
def tokenizers():
    return {"byte": byte_level_tokenizer(), "meta": metaspace_tokenizer()}


def _spied_grid(tokenizers, settle_rounds: int):
    """Every tiny pair over the reference grid, read lazily, with the paths the held rounds took counted."""
    paths: collections.Counter = collections.Counter()
    went_back, keep_trunk, took = engine._went_back, lookahead.Trunk._keep_trunk, lookahead.Trunk._took
    trunk_settle = lookahead.Trunk.settle
    inside_settle = []

    def spy_went_back(waiting, state, held, released):
        ended = went_back(waiting, state, held, released)
        paths["went back to a round whose rest held the EOS"] += ended
        return ended

    def spy_keep_trunk(self, keep):
        needing = sum(self.packed.lane_offset(lane) > keep for lane in self.rests.values())
        paths["trunk cropped below several rests' forks"] += needing > 1
        paths["trunk cropped below a rest's fork"] += needing == 1
        return keep_trunk(self, keep)

    def spy_took(self, rests, outputs):
        took(self, rests, outputs)
        completed = sum(rest not in self.rests for rest in rests)
        paths["rest tokens" + (" in passes of their own" if inside_settle else " riding along")] += len(rests)
        paths["rests completed" + (" in passes of their own" if inside_settle else " riding along")] += completed

    def spy_trunk_settle(self, rests):
        inside_settle.append(True)
        try:
            trunk_settle(self, rests)
        finally:
            inside_settle.pop()

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(guesses, "LAZY_SIZE_RATIO", float("inf"))
        patch.setattr(engine, "SETTLE_ROUNDS", settle_rounds)
        patch.setattr(engine, "_went_back", spy_went_back)
        patch.setattr(lookahead.Trunk, "_keep_trunk", spy_keep_trunk)
        patch.setattr(lookahead.Trunk, "_took", spy_took)
        patch.setattr(lookahead.Trunk, "settle", spy_trunk_settle)
        rows = _outcomes(tokenizers)
    return rows, paths


@pytest.mark.parametrize("settle_rounds", [2, engine.SETTLE_ROUNDS])
def test_lazy_reading_gives_the_reference_answers_on_every_path(tokenizers, settle_rounds):
    rows, paths = _spied_grid(tokenizers, settle_rounds)
    for name, prompt, gamma, lookahead_tokens, budget, expected, got in rows:
        label = f"{name} {prompt!r} gamma={gamma} L={lookahead_tokens} M={budget}"
        assert_same_answer(expected, got, label)
        assert_trace_matches(expected, got, label)
    for path in ("rests completed riding along", "rests completed in passes of their own",
                 "went back to a round whose rest held the EOS", "trunk cropped below a rest's fork"):
        assert paths[path] > 0, (path, paths)


@pytest.mark.parametrize("make", [tiny_llama, tiny_gemma3], ids=["llama", "gemma3-sliding-window"])
def test_a_trunk_cropped_below_several_forks_keeps_every_rest_riding(tokenizers, make):
    """Two rests forked after the position the trunk keeps (a re-tokenization that reaches back): the newer takes
    over the positions between, the older gets copies of them, no pass of the rests alone is made, and both are
    the model's greedy runs."""
    meta = tokenizers["meta"]
    weights = make(meta, seed=4)
    model = local(weights, meta, "nudger")
    model.start_generation(None, 32)
    texts = ["The cat reads the question", "The cat reads the question and"]
    rests = []
    for text in texts:
        rest = model.lookahead(text, 10, lazy=True)
        rest.extend()
        model.defer(rest)
        rests.append(rest)
    assert model._trunk is not None and len(model._trunk.rests) == 2
    written = [rest.written for rest in rests]
    passes = model.counters.forward_passes
    model.logits_from(meta("The")["input_ids"], 0)  # keeps one position: below both forks
    assert model.counters.forward_passes == passes + 1  # the trunk's own pass, nothing settled
    assert [rest.written for rest in rests] == [count + 1 for count in written]  # both rode along
    model.settle(rests)
    alone = local(weights, meta, "alone")
    for text, rest in zip(texts, rests):
        assert (rest.text, rest.ended) == alone.greedy(text, 10)


@pytest.mark.parametrize("make", [tiny_llama, tiny_gemma3], ids=["llama", "gemma3-sliding-window"])
def test_a_lane_forked_from_the_trunk_computes_what_the_model_computes_alone(tokenizers, make):
    byte = tokenizers["byte"]
    weights = make(byte, seed=3)
    alone = LocalModel(weights, byte)
    text = byte("The cat reads the question today, and then it reads another one.")["input_ids"]
    trunk_model = LocalModel(weights, byte)
    trunk_model.logits_from(text, len(text) - 1)
    trunk = lookahead.Trunk.from_cache(weights, trunk_model._cache, len(text), trunk_model.counters)
    assert trunk is not None
    fork = len(text) - 9
    lane = trunk.packed.new_lane(offset=fork)
    sequence = text[:fork] + [41, 42, 43]
    got = trunk.packed.forward([packed.PassRequest(lane, 0, sequence[fork:], 3)])[0]
    assert torch.allclose(got, alone.logits_from(sequence, fork), rtol=1e-5, atol=1e-5)
    # the trunk keeps fewer positions than the lane forked after: the lane takes over the ones between
    trunk.packed.hand_over(lane, fork - 4)
    trunk_ids = text[: fork - 4] + [50, 51]
    lane_ids = sequence + [44]
    trunk_logits, lane_logits = trunk.packed.forward([
        packed.PassRequest(packed.TRUNK, fork - 4, trunk_ids[fork - 4:], 2),
        packed.PassRequest(lane, trunk.packed.lane_length(lane), [44], 1),
    ])
    assert torch.allclose(trunk_logits, alone.logits_from(trunk_ids, len(trunk_ids) - 2), rtol=1e-5, atol=1e-5)
    assert torch.allclose(lane_logits, alone.logits_from(lane_ids, len(lane_ids) - 1), rtol=1e-5, atol=1e-5)


def test_the_lookahead_is_read_whole_where_lazily_would_not_be_exact_or_pay(tokenizers):
    byte, meta = tokenizers["byte"], tokenizers["meta"]
    greedy = local(tiny_llama(byte, seed=4), byte, "nudger")
    assert isinstance(greedy.lookahead("The cat", 8, lazy=True), lookahead.RunLookahead)
    assert type(greedy.lookahead("The cat", 8)) is Lookahead  # not asked to
    sampling = LocalModel(tiny_llama(byte, seed=4), byte, sampling=SamplingConfig(temperature=0.7, seed=1))
    assert type(sampling.lookahead("The cat", 8, lazy=True)) is Lookahead  # its draws keep the spec's order
    short = local(tiny_llama(byte, seed=6, max_positions=12), byte, "short")
    room = 12 - len(short.tokenize("The cat reads"))
    assert isinstance(short.lookahead("The cat reads", room, lazy=True), lookahead.RunLookahead)
    try:  # a run that could reach the end of the context is read whole: a full context ends it at step 1
        whole = short.lookahead("The cat reads", room + 1, lazy=True)
    except ContextWindowFull:
        whole = None
    assert not isinstance(whole, lookahead.RunLookahead)
    _, lanes = batch.make_lanes({"nudger": greedy}, 1)
    assert type(lanes[0]["nudger"].lookahead("The cat", 8, lazy=True)) is Lookahead  # a batch carries no rests
    small, large = local(tiny_llama(meta, seed=1), meta, "small"), local(tiny_llama(meta, seed=1), meta, "large")
    large.__dict__["parameter_count"] = guesses.LAZY_SIZE_RATIO * small.parameter_count
    assert guesses.tokens_read_first(small, small) == 0  # lazily from the first token
    assert guesses.tokens_read_first(large, small) == guesses.READ_FIRST_TOKENS
    assert guesses.tokens_read_first(large, types.SimpleNamespace(name="remote")) is None  # no size: read whole


def test_a_failed_pass_drops_the_trunk_and_the_next_answer_is_right(tokenizers, monkeypatch):
    byte, meta = tokenizers["byte"], tokenizers["meta"]
    bmodel, nmodel = tiny_llama(byte, seed=1, eos_logit_scale=4.0), tiny_llama(meta, seed=4)
    pair = Nudger(local(bmodel, byte, "base"), local(nmodel, meta, "nudger"))
    question = dict(base_prompt="The cat reads the question\n", nudger_prompt="The cat reads the question\n",
                    gamma=0.4, lookahead=16, max_new_tokens=48)
    expected = reference_nudging(RefModel(bmodel, byte), RefModel(nmodel, meta), question["base_prompt"],
                                 question["nudger_prompt"], 0.4, 16, 48)
    assert_same_answer(expected, pair.generate(**question), "before")
    assert pair.nudger._trunk is not None
    forward = packed.PackedModel.forward

    def failing(self, requests):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(packed.PackedModel, "forward", failing)
    with pytest.raises(RuntimeError, match="out of memory"):
        pair.generate(**question)
    assert pair.nudger._trunk is None
    monkeypatch.setattr(packed.PackedModel, "forward", forward)
    assert_same_answer(expected, pair.generate(**question), "after")


def test_rests_left_by_an_answer_that_failed_are_dropped(tokenizers, monkeypatch):
    """The base fails while rounds wait for their rests: the nudger's trunk still carries them, and the next
    answer starts without them and is right."""
    byte, meta = tokenizers["byte"], tokenizers["meta"]
    pair = Nudger(local(tiny_llama(byte, seed=1, eos_logit_scale=4.0), byte, "base"),
                  local(tiny_llama(meta, seed=4), meta, "nudger"))
    question = dict(base_prompt="The cat reads the question\n", nudger_prompt="The cat reads the question\n",
                    gamma=0.4, lookahead=16, max_new_tokens=48)
    full = pair.generate(**question)
    logits_from = LocalModel.logits_from

    def failing_in_a_stage(self, ids, first_position, guess=None):
        if self.name == "base" and pair.nudger._trunk is not None and pair.nudger._trunk.rests:
            raise RuntimeError("the base's device is gone")
        return logits_from(self, ids, first_position, guess)

    monkeypatch.setattr(LocalModel, "logits_from", failing_in_a_stage)
    with pytest.raises(RuntimeError, match="device is gone"):
        pair.generate(**question)
    assert pair.nudger._trunk.rests
    monkeypatch.setattr(LocalModel, "logits_from", logits_from)
    again = pair.generate(**question)
    assert (again.text, again.spans, again.stop_reason) == (full.text, full.spans, full.stop_reason)
    assert not pair.nudger._trunk.rests


def test_the_answer_streams_while_later_rounds_wait(tokenizers):
    """A round's pieces are given out once its rest and every earlier one are computed, not at the end."""
    byte, meta = tokenizers["byte"], tokenizers["meta"]
    pair = Nudger(local(tiny_llama(byte, seed=1, eos_logit_scale=4.0), byte, "base"),
                  local(tiny_llama(meta, seed=4), meta, "nudger"))
    state = EngineState()
    rounds_seen = [len(state.trace) for _ in pair.stream(base_prompt="The cat reads the question\n",
                                                          nudger_prompt="The cat reads the question\n",
                                                          config=NudgingConfig(gamma=0.4, max_new_tokens=48),
                                                          state=state)]
    assert len(state.trace) >= 3 and rounds_seen[0] < len(state.trace), (rounds_seen, len(state.trace))


def test_reading_lazily_or_whole_records_the_same_rounds(tokenizers):
    """The trace of every answer in the grid (each round's lookahead length, word checks, takeover and stage) is
    the same whether the lookahead was read lazily or whole."""
    traces = {reading: [[round_.to_dict() for round_ in got.trace] for *_, got in outcomes_read(tokenizers, reading)]
              for reading in READINGS}
    assert traces["read lazily"] == traces["read whole"] == traces["3 tokens first"]


def test_reading_the_first_tokens_ends_a_last_round_before_the_base_writes(tokenizers):
    """The nudger answers " the answer two" and ends; the base would take over after " the". Read lazily, the base
    writes a stage that the rest's EOS then takes back; with the first tokens read at once, the round ends at the
    EOS and the base makes no pass. The same answer either way, the reference's."""
    byte = tokenizers["byte"]
    bmodel, nmodel = chain_pair(byte, agree_p=0.9, disagree_p=0.6)
    prompt = "The cat reads the question\n"
    expected = reference_nudging(RefModel(bmodel, byte), RefModel(nmodel, byte), prompt, prompt, 0.5, 16, 32)
    assert expected.stop_reason == "nudger_eos" and expected.text == " the answer two"
    base_passes = {}
    for first in (0, guesses.READ_FIRST_TOKENS):
        pair = Nudger(local(bmodel, byte, "base"), local(nmodel, byte, "nudger"))
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(guesses, "LAZY_SIZE_RATIO", float("inf") if first == 0 else 0.0)
            got = pair.generate(base_prompt=prompt, nudger_prompt=prompt, gamma=0.5, lookahead=16,
                                max_new_tokens=32)
        assert_same_answer(expected, got, f"{first} tokens read first")
        base_passes[first] = pair.base.counters.forward_passes
    assert base_passes[0] > 0 and base_passes[guesses.READ_FIRST_TOKENS] == 0, base_passes


def test_a_ratio_pair_reads_its_first_tokens_before_the_base_checks_a_word(tokenizers):
    """With READ_FIRST_TOKENS, step 2 starts on that many tokens of the lookahead (or all of it, where it is shorter
    or ends sooner), and still reads on lazily where the nudge goes on; the answers are the reference's."""
    first, seen = 8, collections.Counter()
    accept_words = engine._accept_words

    def spy_accept_words(base, prefix, look, rule, gamma, trace):
        assert isinstance(look, lookahead.RunLookahead) or look.complete
        if isinstance(look, lookahead.RunLookahead):
            assert look.complete or look.written == first, (look.written, look.max_tokens)
            seen["read lazily after the first tokens"] += not look.complete
        else:
            seen["read whole (the lookahead is no longer than the first tokens)"] += 1
        return accept_words(base, prefix, look, rule, gamma, trace)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(guesses, "LAZY_SIZE_RATIO", 0.0)
        patch.setattr(guesses, "READ_FIRST_TOKENS", first)
        patch.setattr(engine, "_accept_words", spy_accept_words)
        rows = _outcomes(tokenizers)
    for name, prompt, gamma, lookahead_tokens, budget, expected, got in rows:
        assert_same_answer(expected, got, f"{name} {prompt!r} gamma={gamma} L={lookahead_tokens} M={budget}")
    assert len(seen) == 2 and min(seen.values()) > 0, seen
