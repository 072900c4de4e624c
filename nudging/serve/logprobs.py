"""Completions with top-k log-probabilities (and the prompt's, with echo) from one model: what an API backend
needs from a server (`--mode base|nudger`). The model must give whole distributions (`full_distribution`).

Token strings are pieces in context (what the token adds to the run's text), so a client can compare them with
its own text; a top-k string of a position is likewise the piece that candidate would add there. Both come from
the run's own detokenizer (nudging.pieces.IncrementalDetokenizer), as the engine's pieces do.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator

import torch

from nudging.config import SamplingConfig
from nudging.errors import ContextWindowFull
from nudging.pieces import IncrementalDetokenizer
from nudging.serve.protocol import Logprobs

if TYPE_CHECKING:
    from nudging.backends.local import LocalModel


@dataclass
class ScoredToken:
    text: str
    logprob: float | None
    top: dict[str, float] | None


@dataclass
class ScoredText:
    text: str = ""
    tokens: list[str] = field(default_factory=list)
    token_logprobs: list[float | None] = field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] = field(default_factory=list)
    text_offset: list[int] = field(default_factory=list)
    finish_reason: str = "length"
    completion_tokens: int = 0

    def add(self, token: ScoredToken) -> None:
        self.text_offset.append(len(self.text))
        self.text += token.text
        self.tokens.append(token.text)
        self.token_logprobs.append(token.logprob)
        self.top_logprobs.append(token.top)

    def cut(self, length: int) -> None:
        """Keep the text up to `length` characters and the tokens that start before it."""
        keep = sum(1 for offset in self.text_offset if offset < length)
        self.text = self.text[:length]
        for name in ("tokens", "token_logprobs", "top_logprobs", "text_offset"):
            setattr(self, name, getattr(self, name)[:keep])

    def to_openai(self) -> Logprobs:
        return Logprobs(tokens=self.tokens, token_logprobs=self.token_logprobs, top_logprobs=self.top_logprobs,
                        text_offset=self.text_offset)


@contextmanager
def generation(model: LocalModel, sampling: SamplingConfig, max_tokens: int) -> Iterator[LocalModel]:
    """One generation on `model` with its own sampler (the model's shared settings stay as they are)."""
    model.start_generation(sampling, max_tokens)
    try:
        yield model
    finally:
        model.finish()


def _top_pieces(detokenizer: IncrementalDetokenizer, ids: list[int], logprobs: torch.Tensor,
                top: int) -> dict[str, float]:
    """The `top` most likely pieces after `ids` (a piece that several tokens write keeps its best logprob, as a
    dict keyed by string must)."""
    values, best = torch.topk(logprobs, top)
    pieces: dict[str, float] = {}
    for value, candidate in zip(values.tolist(), best.tolist()):
        pieces.setdefault(detokenizer.peek(ids, candidate), value)
    return pieces


def _prompt_pieces(model: LocalModel, prompt: str, count: int) -> list[str]:
    """Each prompt token's share of the prompt text, so that the pieces join to the prompt exactly: a token
    takes the text up to the end of its span (special tokens, with empty spans, take none)."""
    try:
        spans = model.tokenizer(prompt, return_offsets_mapping=True)["offset_mapping"]
    except (NotImplementedError, ValueError, KeyError):  # slow tokenizers have no offsets: all text on the last
        spans = []
    if len(spans) != count:  # no offsets, or an empty prompt's start token (interface.start_ids)
        return [""] * (count - 1) + [prompt]
    pieces, taken = [], 0
    for _, end in spans:
        pieces.append(prompt[taken:end] if end > taken else "")
        taken = max(taken, end)
    pieces[-1] += prompt[taken:]
    return pieces


def prompt_tokens(model: LocalModel, prompt: str, top: int = 1) -> list[ScoredToken]:
    """The prompt's tokens, each with its log-probability given the tokens before it (the first has none)."""
    ids = model.tokenize(prompt)
    logprobs = torch.log_softmax(model.logits_from(ids, 0), dim=-1)  # one pass for every position
    pieces = _prompt_pieces(model, prompt, len(ids))
    scored = [ScoredToken(pieces[0], None, None)]
    detokenizer = IncrementalDetokenizer(model.tokenizer, ids[:1])
    for position in range(1, len(ids)):
        row = logprobs[position - 1]
        top_pieces = _top_pieces(detokenizer, ids[:position], row, top)
        scored.append(ScoredToken(pieces[position], float(row[ids[position]]), top_pieces))
        detokenizer.push(ids[: position + 1])
    return scored


def generated_tokens(model: LocalModel, prompt: str, max_tokens: int, ending: dict[str, str],
                     top: int = 1) -> Iterator[ScoredToken]:
    """Decode in the generation started on `model`, one scored token at a time; sets ending["finish_reason"]
    to "stop" at EOS, else "length" (the budget or the context window is used up)."""
    ending["finish_reason"] = "length"
    run = model.start_run(prompt)
    try:
        for _ in range(max_tokens):
            logits = run.next_logits()
            choice = model.choose(logits, run.ids, run.detokenizer)
            if choice.is_eos:
                ending["finish_reason"] = "stop"
                return
            logprobs = torch.log_softmax(logits, dim=-1)
            top_pieces = _top_pieces(run.detokenizer, run.ids, logprobs, top)
            yield ScoredToken(run.append(choice), float(logprobs[choice.token]), top_pieces)
    except ContextWindowFull:
        return


def score_completion(model: LocalModel, prompt: str, sampling: SamplingConfig, max_tokens: int, echo: bool,
                     stops: list[str], top: int = 1) -> ScoredText:
    """A whole completion with its logprobs (and the prompt's, with echo), cut at the first stop string."""
    scored = ScoredText()
    with generation(model, sampling, max_tokens):
        if echo:
            for token in prompt_tokens(model, prompt, top):
                scored.add(token)
        start = len(scored.text)
        ending: dict[str, str] = {}
        for token in generated_tokens(model, prompt, max_tokens, ending, top):
            scored.add(token)
            scored.completion_tokens += 1
    scored.finish_reason = ending["finish_reason"]
    found = [i for i in (scored.text.find(s, start) for s in stops) if i >= 0]
    if found:
        scored.cut(min(found))
        scored.finish_reason = "stop"
    return scored
