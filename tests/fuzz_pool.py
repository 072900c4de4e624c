"""A seeded pool of tiny model pairs for the differential fuzzer (test_fuzz_engine.py).

Bases and nudgers of both tokenizers, shaped to reach every branch of the spec: confident and EOS-prone bases,
bases and nudgers that write lone bytes (so pieces end inside multi-byte characters), nudgers biased toward
spaces and punctuation, stuck nudgers (a word forever, a space forever), short contexts on either side, and one
pair with the same weights at two sharpnesses (they agree, so the base takes over on agreement and writes long
stages). Each model is built once; the fuzzer draws a pair, prompts and settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from nudging import LocalModel, Nudger

from reference import RefModel
from tiny import (bigram_llama, byte_level_tokenizer, lone_byte_ids, metaspace_tokenizer, single_token, spacing_ids,
                  stuck_llama, tiny_llama)


@dataclass
class PoolModel:
    name: str
    tokenizer: Any
    local: LocalModel
    reference: RefModel


def _biased(tokenizer, ids: list[int], bias: float) -> dict[int, float]:
    return {token: bias for token in ids}


def _recipes(byte, meta) -> dict[str, tuple[Any, Callable[[], Any]]]:
    """name -> (tokenizer, builder); names starting with "base" are bases, "nudger" nudgers."""
    return {
        "base-meta": (meta, lambda: tiny_llama(meta, seed=2)),
        "base-byte-confident": (byte, lambda: tiny_llama(byte, seed=1, sharpness=80.0)),
        "base-byte-eos-prone": (byte, lambda: tiny_llama(byte, seed=3, logit_bias={byte.eos_token_id: 9.0})),
        "base-meta-eos-prone": (meta, lambda: tiny_llama(meta, seed=17, logit_bias={meta.eos_token_id: 8.0})),
        "base-meta-bytes": (meta, lambda: tiny_llama(meta, seed=11, keep_lone_bytes=True,
                                                     logit_bias=_biased(meta, lone_byte_ids(meta), 2.0))),
        "base-byte-bytes": (byte, lambda: tiny_llama(byte, seed=12, keep_lone_bytes=True)),
        "base-byte-short": (byte, lambda: tiny_llama(byte, seed=6, max_positions=20)),
        "base-agree": (byte, lambda: tiny_llama(byte, seed=7, sharpness=6.0)),
        "nudger-byte": (byte, lambda: tiny_llama(byte, seed=5, eos_logit_scale=1.4)),
        "nudger-meta": (meta, lambda: tiny_llama(meta, seed=4)),
        "nudger-byte-eos-prone": (byte, lambda: tiny_llama(byte, seed=18, logit_bias={byte.eos_token_id: 3.0})),
        "nudger-byte-spacing": (byte, lambda: tiny_llama(byte, seed=13, logit_bias=_biased(byte, spacing_ids(byte), 5.0))),
        "nudger-meta-spacing": (meta, lambda: tiny_llama(meta, seed=14, logit_bias=_biased(meta, spacing_ids(meta), 4.0))),
        "nudger-meta-bytes": (meta, lambda: tiny_llama(meta, seed=15, keep_lone_bytes=True,
                                                       logit_bias=_biased(meta, lone_byte_ids(meta), 2.0))),
        "nudger-byte-short": (byte, lambda: tiny_llama(byte, seed=16, max_positions=40)),
        "nudger-stuck-word": (byte, lambda: stuck_llama(byte, single_token(byte, " the"))),
        "nudger-stuck-space": (meta, lambda: stuck_llama(meta, single_token(meta, " "))),
        "nudger-agree": (byte, lambda: tiny_llama(byte, seed=7, sharpness=25.0)),
        "nudger-double-space": (byte, lambda: _double_spacer(byte)),
    }


def _double_spacer(byte):
    """Writes " the  the  the": a word, then a space token, so its lookaheads hold empty words."""
    word, space = single_token(byte, " the"), single_token(byte, " ")
    return bigram_llama(byte, {previous: {space if previous == word else word: 0.7} for previous in range(len(byte))})


class ModelPool:
    def __init__(self) -> None:
        byte, meta = byte_level_tokenizer(), metaspace_tokenizer()
        self.models: dict[str, PoolModel] = {}
        for name, (tokenizer, build) in _recipes(byte, meta).items():
            model = build()
            self.models[name] = PoolModel(name, tokenizer, LocalModel(model, tokenizer, name=name),
                                          RefModel(model, tokenizer))
        self.bases = sorted(name for name in self.models if name.startswith("base"))
        self.nudgers = sorted(name for name in self.models if name.startswith("nudger"))
        self._engines: dict[tuple[str, str], Nudger] = {}

    def engine(self, base: str, nudger: str) -> Nudger:
        """One Nudger per pair; a model's LocalModel (and its cache) is shared by every pair it is in."""
        if (base, nudger) not in self._engines:
            self._engines[base, nudger] = Nudger(self.models[base].local, self.models[nudger].local)
        return self._engines[base, nudger]
