"""Batched generation (nudging.backends.batch): many answers at once, each the answer the spec gives it alone.

Tiny models built here, in float64: the batched answers are compared with the plain reference implementation of
the spec (tests/reference.py), and with one-at-a-time generation for the other methods.
"""

from __future__ import annotations

import itertools
import threading

import pytest
import torch
from transformers import Gemma3ForCausalLM, Gemma3TextConfig

from nudging import Nudger
from nudging.backends import batch, packed
from nudging.backends.local import LocalModel
from nudging.errors import InvalidArgumentError
from reference import RefModel, reference_nudging
from test_engine_reference import PROMPTS, SETTINGS, _chat, _pairs
from tiny import byte_level_tokenizer, local, metaspace_tokenizer, tiny_llama


@pytest.fixture(scope="module")
def tokenizers():
    return {"byte": byte_level_tokenizer(), "meta": metaspace_tokenizer()}


def _items(ntok, same_prompt: bool) -> list[dict]:
    items = []
    for prompt, (gamma, lookahead, budget) in itertools.product(PROMPTS, SETTINGS):
        base_prompt = prompt + "\n"
        items.append(dict(base_prompt=base_prompt, nudger_prompt=base_prompt if same_prompt else _chat(ntok, prompt),
                          gamma=gamma, lookahead=lookahead, max_new_tokens=budget))
    return items


def _outcome(result) -> tuple:
    return result.text, [(span.text, span.source) for span in result.spans], result.stop_reason


def test_batched_nudging_matches_the_reference(tokenizers, monkeypatch):
    """Every pair and setting of the reference grid, 8 answers at a time, in a cache small enough that it is
    squeezed and grown many times, with passes split at 24 tokens: each answer is the reference's."""
    monkeypatch.setattr(packed, "INITIAL_CAPACITY", 32)
    monkeypatch.setattr(batch, "PASS_TOKENS", 24)  # prompts (10-30 tokens) of 8 lanes take several passes
    compactions, shared = {"base": 0, "nudger": 0}, {"base": 0, "nudger": 0}
    for name, (btok, bmodel, ntok, nmodel, same_prompt) in _pairs(tokenizers).items():
        engine = Nudger(local(bmodel, btok, "base"), local(nmodel, ntok, "nudger"))
        items = _items(ntok, same_prompt)
        lanes = engine.lanes(8)
        results = engine.generate_batch(items, lanes=lanes)
        ref_base, ref_nudger = RefModel(bmodel, btok), RefModel(nmodel, ntok)
        for item, got in zip(items, results):
            expected = reference_nudging(ref_base, ref_nudger, item["base_prompt"], item["nudger_prompt"],
                                         item["gamma"], item["lookahead"], item["max_new_tokens"])
            assert _outcome(got) == (expected.text, expected.spans, expected.stop_reason), (name, item)
        for role in compactions:
            stats = getattr(lanes[0], role).packed.stats
            compactions[role] += stats.compactions
            shared[role] += stats.lane_passes - stats.passes
    assert all(compactions.values()), compactions
    assert all(shared.values()), shared  # lanes really shared passes


def test_batched_methods_equal_one_at_a_time(tokenizers):
    """The other methods run batched too (one model alone, the text ensemble, in-context alignment, nudging with
    the other rules; proxy tuning and the exact ensemble on models with one vocabulary), with the answers they
    give one at a time."""
    byte, meta = tokenizers["byte"], tokenizers["meta"]
    cross = Nudger(local(tiny_llama(meta, seed=2, max_positions=2048), meta, "base"),
                   local(tiny_llama(byte, seed=5, eos_logit_scale=1.4), byte, "nudger"))
    shared = Nudger(local(tiny_llama(byte, seed=1), byte, "base"), local(tiny_llama(byte, seed=5), byte, "nudger"),
                    anti_expert=local(tiny_llama(byte, seed=9), byte, "anti_expert"))
    questions = ["The cat reads the question", "Every student counts two numbers:", "Zoë finds the answer",
                 "A robot writes a long letter"]
    variants = ["nudging-entropy", "nudging-margin", "nudging-agreement", "nudging-window", "nudging-capped"]
    for engine, modes in ((cross, ["base", "nudger", "ensemble-text", "in-context", "blend"] + variants),
                          (shared, ["proxy-tuning", "ensemble"])):
        for mode in modes:
            alone = [_outcome(engine.generate(q, mode=mode, max_new_tokens=24)) for q in questions]
            together = engine.generate_batch(questions, batch_size=4, mode=mode, max_new_tokens=24)
            assert [_outcome(r) for r in together] == alone, mode


def tiny_gemma3(tokenizer, seed: int) -> Gemma3ForCausalLM:
    """A tiny Gemma 3: sliding-window layers (window 6) beside full-attention ones, as in the demo base."""
    torch.manual_seed(seed)
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=1, head_dim=8, sliding_window=6, layer_types=["sliding_attention", "full_attention"],
        max_position_embeddings=512, eos_token_id=tokenizer.eos_token_id, bos_token_id=None, pad_token_id=None,
    )
    model = Gemma3ForCausalLM(config).to(torch.float64).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(30.0)
    return model


def test_packed_passes_compute_what_each_lane_computes_alone(tokenizers):
    """Logits of packed passes (lanes of different lengths, crops to earlier positions, sliding-window layers)
    equal those of the same passes made one lane at a time."""
    byte = tokenizers["byte"]
    model = tiny_gemma3(byte, seed=3)
    texts = ["The cat reads the question today.", "Zoë naïvely adds two numbers: 12 + 7 = 19.", "My friend"]
    lanes_ids = [byte(t)["input_ids"] for t in texts]
    packed = batch.PackedModel(model, capacity=8)
    lanes = [packed.new_lane() for _ in texts]
    alone = [LocalModel(model, byte) for _ in texts]
    # (keep, new tokens, logits rows) per lane per step: a prompt, one token, a crop back, a draft
    steps = [[(0, len(ids), 3) for ids in lanes_ids], [(len(ids), 1, 1) for ids in lanes_ids],
             [(4, 5, 5), (2, 9, 2), (1, 2, 1)], [(9, 1, 1), (11, 3, 3), (3, 4, 4)]]
    sequences = [list(ids) for ids in lanes_ids]
    for number, step in enumerate(steps):
        requests = []
        for lane, (keep, count, rows) in enumerate(step):
            sequence = sequences[lane][:keep] + [(7 * lane + 3 * number + i) % 200 + 10 for i in range(count)]
            if number == 0:
                sequence = lanes_ids[lane]
            sequences[lane] = sequence
            requests.append(batch.PassRequest(lanes[lane], keep, sequence[keep:], rows))
        got = packed.forward(requests)
        for lane, request in enumerate(requests):
            expected = alone[lane].logits_from(sequences[lane], len(sequences[lane]) - request.logits)
            # float32: a pass of a few rows takes cpu_linear's product, summed in another order than a wide one's
            assert torch.allclose(got[lane], expected, rtol=1e-5, atol=1e-5), (number, lane)
    assert packed.stats.compactions > 0 and packed.cache.capacity > 8


def test_batched_nudging_with_a_sliding_window_base(tokenizers):
    byte, meta = tokenizers["byte"], tokenizers["meta"]
    engine = Nudger(local(tiny_gemma3(byte, seed=4), byte, "base"), local(tiny_llama(meta, seed=4), meta, "nudger"))
    items = _items(meta, False)[:12]
    alone = [_outcome(engine.generate(**item)) for item in items]
    assert [_outcome(r) for r in engine.generate_batch(items, batch_size=6)] == alone


def test_an_error_in_a_pass_reaches_the_caller_without_hanging(tokenizers, monkeypatch):
    byte = tokenizers["byte"]
    engine = Nudger(local(tiny_llama(byte, seed=1), byte, "base"), local(tiny_llama(byte, seed=5), byte, "nudger"))
    calls = []
    forward = batch.PackedModel.forward

    def failing(self, requests):
        calls.append(len(requests))
        if len(calls) == 3:
            raise RuntimeError("out of memory (simulated)")
        return forward(self, requests)

    monkeypatch.setattr(batch.PackedModel, "forward", failing)
    outcome = {}
    worker = threading.Thread(target=lambda: outcome.setdefault("error", _raises(
        lambda: engine.generate_batch(["The cat", "A robot", "My friend"], batch_size=3, max_new_tokens=16))))
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive(), "generate_batch hung after a failed pass"
    assert isinstance(outcome["error"], RuntimeError) and "simulated" in str(outcome["error"])
    monkeypatch.setattr(batch.PackedModel, "forward", forward)  # the lanes recover: a new batch works
    assert len(engine.generate_batch(["The cat", "A robot"], batch_size=2, max_new_tokens=8)) == 2


def _raises(call):
    try:
        call()
    except Exception as error:  # noqa: BLE001 - the test inspects it
        return error
    return None


def test_generate_batch_checks_its_arguments(tokenizers):
    byte = tokenizers["byte"]
    engine = Nudger(local(tiny_llama(byte, seed=1), byte, "base"), local(tiny_llama(byte, seed=5), byte, "nudger"))
    with pytest.raises(InvalidArgumentError, match="list of strings"):
        engine.generate_batch("one question")
    with pytest.raises(InvalidArgumentError, match="batch_size must be at least 1"):
        engine.generate_batch(["a"], batch_size=0)
    with pytest.raises(InvalidArgumentError, match="count must be at least 1"):
        engine.lanes(0)
    assert engine.generate_batch([]) == []
