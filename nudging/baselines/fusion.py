"""Decoding from a combination of next-token distributions over one shared vocabulary.

All models read the same answer tokens (their prompts may differ); at each step their log-probabilities are
combined into one score per token, and the token chosen is appended to every model's run. Each model keeps its
KV cache, so a step costs one new token per model.

- Proxy tuning (Liu et al. 2024): scores = base + alpha * (expert - anti-expert), the expert being the small
  chat model (the nudger) and the anti-expert its untuned base. Logits or log-probabilities give the same
  softmax: they differ by a constant per model.
- Ensemble: scores = log((p_base + p_nudger) / 2).
"""

from __future__ import annotations

import math
from typing import Callable, Iterator, Sequence

import torch

from nudging.backends.local import LocalModel
from nudging.engine import EngineState
from nudging.errors import ContextWindowFull
from nudging.text import Span

Combine = Callable[[list[torch.Tensor]], torch.Tensor]  # log-probabilities per model -> scores


def proxy_tuning(alpha: float) -> Combine:
    def combine(logprobs: list[torch.Tensor]) -> torch.Tensor:
        base, expert, anti_expert = logprobs
        return base + alpha * (expert - anti_expert)

    return combine


def ensemble(logprobs: list[torch.Tensor]) -> torch.Tensor:
    return torch.logsumexp(torch.stack(logprobs), dim=0) - math.log(len(logprobs))


def fused_decode(
    models: Sequence[LocalModel], prompts: Sequence[str], combine: Combine, max_new_tokens: int, state: EngineState
) -> Iterator[Span]:
    """Decode up to max_new_tokens tokens from the combined scores (greedy, or sampled with the base's
    sampling settings); models[0] is the base and writes the text. Stops at any model's EOS token."""
    base = models[0]
    eos = frozenset().union(*(model.eos_ids for model in models))
    try:
        runs = [model.start_run(prompt) for model, prompt in zip(models, prompts)]
        for _ in range(max_new_tokens):
            logprobs = [torch.log_softmax(run.next_logits(), dim=-1) for run in runs]
            width = min(row.shape[-1] for row in logprobs)  # vocabularies padded to different sizes
            logprobs = [row[:width].to(logprobs[0].device) for row in logprobs]
            scores = combine(logprobs)
            token = base.sampler(scores)
            if token in eos:
                state.stop_reason = "eos"
                return
            source = "base" if token == int(torch.argmax(logprobs[0])) else "nudger"
            piece = runs[0].append_token(token)
            for run in runs[1:]:
                run.append_token(token)
            state.answer += piece
            yield Span(piece, source)
        state.stop_reason = "length"
    except ContextWindowFull:
        state.stop_reason = "length"
