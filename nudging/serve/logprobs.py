"""Completions with top-1 log-probabilities (and the prompt's, with echo) from one model: what an API backend
needs from a server (`--mode base|nudger`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from nudging.backend import LocalModel, Run
from nudging.errors import ContextWindowFull


@dataclass
class ScoredText:
    text: str = ""
    tokens: list[str] = field(default_factory=list)
    token_logprobs: list[float | None] = field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] = field(default_factory=list)
    text_offset: list[int] = field(default_factory=list)
    finish_reason: str = "length"
    completion_tokens: int = 0

    def add(self, token_text: str, logprob: float | None, top: dict[str, float] | None) -> None:
        self.text_offset.append(len(self.text))
        self.text += token_text
        self.tokens.append(token_text)
        self.token_logprobs.append(logprob)
        self.top_logprobs.append(top)

    def cut(self, length: int) -> None:
        """Keep the text up to `length` characters and the tokens that start before it."""
        keep = sum(1 for offset in self.text_offset if offset < length)
        self.text = self.text[:length]
        for name in ("tokens", "token_logprobs", "top_logprobs", "text_offset"):
            setattr(self, name, getattr(self, name)[:keep])

    def to_openai(self) -> dict:
        return {"tokens": self.tokens, "token_logprobs": self.token_logprobs, "top_logprobs": self.top_logprobs,
                "text_offset": self.text_offset}


def _token_text(model: LocalModel, token: int) -> str:
    return model.tokenizer.decode([token], skip_special_tokens=True)


def _prompt_pieces(model: LocalModel, ids: list[int]) -> list[str]:
    """Each prompt token's share of the decoded prompt text (decoding tokens one by one loses spaces)."""
    pieces, previous = [], ""
    for end in range(1, len(ids) + 1):
        text = model.tokenizer.decode(ids[:end], skip_special_tokens=True)
        if text.startswith(previous):
            pieces.append(text[len(previous):])
            previous = text
        else:
            pieces.append(_token_text(model, ids[end - 1]))
            previous += pieces[-1]
    return pieces


def score_completion(model: LocalModel, prompt: str, max_tokens: int, echo: bool, stops: list[str]) -> ScoredText:
    """Decode with the model's sampling settings; every token comes with its log-probability and the top-1."""
    ids = model.tokenize(prompt)
    scored = ScoredText()
    if echo:
        logprobs = torch.log_softmax(model.logits_from(ids, 0), dim=-1)
        for position, (token, piece) in enumerate(zip(ids, _prompt_pieces(model, ids))):
            if position == 0:
                scored.add(piece, None, None)
                continue
            row = logprobs[position - 1]
            best = int(torch.argmax(row))
            scored.add(piece, float(row[token]), {_token_text(model, best): float(row[best])})
    start = len(scored.text)
    run = Run(model, list(ids))
    try:
        for _ in range(max_tokens):
            logits = model.logits_from(run.ids, len(run.ids) - 1)[0]
            row = torch.log_softmax(logits, dim=-1)
            best = int(torch.argmax(row))
            choice = model.choose(logits, run.ids, run.detokenizer)
            if choice.is_eos:
                scored.finish_reason = "stop"
                break
            piece = run.append(choice.token)
            scored.add(piece, float(row[choice.token]),
                       {_token_text(model, best): float(row[best])})
            scored.completion_tokens += 1
    except ContextWindowFull:
        scored.finish_reason = "length"
    found = [i for i in (scored.text.find(s, start) for s in stops) if i >= 0]
    if found:
        scored.cut(min(found))
        scored.finish_reason = "stop"
    return scored
