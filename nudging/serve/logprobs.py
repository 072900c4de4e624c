"""Completions with top-k log-probabilities (and the prompt's, with echo) from one model: what an API backend
needs from a server (`--mode base|nudger`).

Token strings are pieces in context (what the token adds to the text before it), so a client can compare them
with its own text; the top-1 string of a position is likewise the piece that token would add there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import torch

from nudging.backend import LocalModel, Run
from nudging.errors import ContextWindowFull
from nudging.pieces import decode, text_after

WINDOW = 4  # tokens of context used to decode one piece


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

    def to_openai(self) -> dict:
        return {"tokens": self.tokens, "token_logprobs": self.token_logprobs, "top_logprobs": self.top_logprobs,
                "text_offset": self.text_offset}


def _piece_after(model: LocalModel, ids: list[int], token: int) -> str:
    context = ids[-WINDOW:]
    return text_after(decode(model.tokenizer, context + [token]), decode(model.tokenizer, context))


def _prompt_pieces(model: LocalModel, prompt: str, count: int) -> list[str]:
    """Each prompt token's share of the prompt text, so that the pieces join to the prompt exactly: a token
    takes the text up to the end of its span (special tokens, with empty spans, take none)."""
    try:
        spans = model.tokenizer(prompt, return_offsets_mapping=True)["offset_mapping"]
    except (NotImplementedError, ValueError, KeyError):  # slow tokenizers have no offsets: all text on the last
        return [""] * (count - 1) + [prompt]
    pieces, taken = [], 0
    for _, end in spans:
        pieces.append(prompt[taken:end] if end > taken else "")
        taken = max(taken, end)
    pieces[-1] += prompt[taken:]
    return pieces


def _scored(model: LocalModel, ids: list[int], row: torch.Tensor, token: int, text: str, top: int) -> ScoredToken:
    """A token with its logprob and the `top` most likely pieces at its position (a piece that several tokens
    write keeps its best logprob, as a dict keyed by string must)."""
    values, best = torch.topk(row, top)
    pieces: dict[str, float] = {}
    for value, candidate in zip(values.tolist(), best.tolist()):
        pieces.setdefault(_piece_after(model, ids, candidate), value)
    return ScoredToken(text, float(row[token]), pieces)


def prompt_tokens(model: LocalModel, prompt: str, top: int = 1) -> list[ScoredToken]:
    """The prompt's tokens, each with its log-probability given the tokens before it (the first has none)."""
    ids = model.tokenize(prompt)
    logprobs = torch.log_softmax(model.logits_from(ids, 0), dim=-1)
    scored = []
    for position, (token, piece) in enumerate(zip(ids, _prompt_pieces(model, prompt, len(ids)))):
        if position == 0:
            scored.append(ScoredToken(piece, None, None))
        else:
            scored.append(_scored(model, ids[:position], logprobs[position - 1], token, piece, top))
    return scored


def generated_tokens(
    model: LocalModel, prompt: str, max_tokens: int, ending: dict[str, str], top: int = 1
) -> Iterator[ScoredToken]:
    """Decode with the model's sampling settings, one scored token at a time; sets ending["finish_reason"]
    to "stop" at EOS, else "length" (the budget or the context window is used up)."""
    ending["finish_reason"] = "length"
    run = Run(model, model.tokenize(prompt))
    try:
        for _ in range(max_tokens):
            logits = model.logits_from(run.ids, len(run.ids) - 1)[0]
            choice = model.choose(logits, run.ids, run.detokenizer)
            if choice.is_eos:
                ending["finish_reason"] = "stop"
                return
            ids = list(run.ids)
            piece = run.append(choice.token)
            yield _scored(model, ids, torch.log_softmax(logits, dim=-1), choice.token, piece, top)
    except ContextWindowFull:
        return


def score_completion(
    model: LocalModel, prompt: str, max_tokens: int, echo: bool, stops: list[str], top: int = 1
) -> ScoredText:
    """A whole completion with its logprobs (and the prompt's, with echo), cut at the first stop string."""
    scored = ScoredText()
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
