"""The plain reference's model interface on llama.cpp: `llama_cpp.Llama` driven in process on a GGUF, with the
numbers llama-cpp-python's server computes for the same requests, so `reference_nudging` run on two of these gives
the answers a remote pair on two such servers must give.

Same numerics as the server: the same library, n_ctx, threads and batch size (n_batch 1, see `llama_servers`),
the prompt tokenized as the server does (its BOS rule, special tokens parsed), EOS as the server ends a completion
(any end-of-generation token), pieces as the server writes token strings, probabilities from its log-softmax.
"""

from __future__ import annotations

from typing import Any

import llama_cpp
import numpy as np

from reference import ContextFull
from llama_servers import LLAMA_SETTINGS


class EndOfGeneration:
    """`token in model.eos`: any end-of-generation token of the vocabulary, the server's "stop"."""

    def __init__(self, llm: llama_cpp.Llama) -> None:
        self.llm = llm

    def __contains__(self, token: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_eog(self.llm._model.vocab, token))


class LlamaRefModel:
    """RefModel's interface (tokens, top1, piece, greedy, eos, context, tokenizer, decisions) on llama.cpp.

    With n_batch 1 each position is computed alone, so a position's logits do not depend on what was evaluated
    before (checked in the tests); top1 therefore keeps the ids it shares with the last evaluation and evaluates
    the rest, which gives the numbers of a fresh evaluation in a fraction of the time.
    """

    def __init__(self, gguf: str, tokenizer: Any) -> None:
        self.llm = llama_cpp.Llama(model_path=gguf, logits_all=True, verbose=False, **LLAMA_SETTINGS)
        self.tokenizer = tokenizer  # the remote engine counts the answer budget with the local tokenizer
        self.eos = EndOfGeneration(self.llm)
        self.context = LLAMA_SETTINGS["n_ctx"]
        self.decisions: list[tuple[float, float]] = []

    def tokens(self, text: str) -> list[int]:
        bos = [self.llm.token_bos()] if self.llm._model.add_bos_token() else []
        return bos + self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def logits(self, ids: list[int], fresh: bool = False) -> np.ndarray:
        """The next-token logits after ids; `fresh` evaluates every id again."""
        if len(ids) > self.context:
            raise ContextFull
        kept = 0 if fresh else llama_cpp.Llama.longest_token_prefix(self.llm.input_ids[: self.llm.n_tokens], ids)
        kept = min(kept, len(ids) - 1)
        self.llm.n_tokens = kept  # eval drops the cache from here on
        self.llm.eval(ids[kept:])
        return np.array(self.llm.scores[len(ids) - 1])

    def top1(self, ids: list[int]) -> tuple[int, float]:
        logits = self.logits(ids)
        logprobs = llama_cpp.Llama.logits_to_logprobs(logits)
        token = int(np.argmax(logits))
        best = np.sort(logits)[-2:]
        self.decisions.append((float(np.exp(logprobs[token])), float(best[1] - best[0])))
        return token, float(np.exp(logprobs[token]))

    def piece(self, ids: list[int], token: int, start: int | None = None) -> str:
        """The token's text as the server gives it (llama's detokenize after the run's ids; `start` unused)."""
        return self.llm.detokenize([token], prev_tokens=ids).decode("utf-8", errors="ignore")

    def greedy(self, text: str, n: int, events: list[str] | None = None) -> tuple[str, bool]:
        prompt = self.tokens(text)
        ids: list[int] = list(prompt)
        for _ in range(n):
            token, _ = self.top1(ids)
            if token in self.eos:
                return self._decode(prompt, ids), True
            ids.append(token)
        return self._decode(prompt, ids), False

    def _decode(self, prompt: list[int], ids: list[int]) -> str:
        return self.llm.detokenize(ids[len(prompt):], prev_tokens=prompt).decode("utf-8", errors="ignore")
