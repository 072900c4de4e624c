"""The cross-tokenizer ensemble of the authors' API code, on token strings (works for any two models).

Each round both models start a run from their prompt plus the answer so far and decode greedily in step while
their next token strings agree. At the first disagreement the answer takes the string with the highest summed
probability over both models' top-k lists (a string missing from a list counts 0 there); then new runs start
from the re-tokenized text. Where the base's next token is EOS the nudger's string is taken; where the
nudger's is EOS, the answer ends (the chat model decides when the answer is done, as in the authors' code).

Runs map onto requests like nudging's: locally each model keeps its KV cache; a remote model streams each run
with top-k logprobs and the stream is closed at the disagreement.
"""

from __future__ import annotations

from typing import Iterator

from nudging.backends.interface import Choice, Model
from nudging.engine import EngineState
from nudging.errors import ContextWindowFull
from nudging.text import Span
from nudging.trace import RoundTrace


def text_ensemble(
    base: Model, nudger: Model, base_prompt: str, nudger_prompt: str, top_k: int, max_new_tokens: int,
    state: EngineState,
) -> Iterator[Span]:
    try:
        yield from _rounds(base, nudger, base_prompt, nudger_prompt, top_k, max_new_tokens, state)
    except ContextWindowFull:
        state.stop_reason = "length"


def _rounds(
    base: Model, nudger: Model, base_prompt: str, nudger_prompt: str, top_k: int, max_new_tokens: int,
    state: EngineState,
) -> Iterator[Span]:
    def budget_reached() -> bool:
        return base.count_tokens(state.answer) >= max_new_tokens

    while True:
        trace = RoundTrace()
        state.trace.append(trace)
        base.finish()
        nudger.finish()
        base_run = base.start_run(base_prompt + state.answer, top_k)
        nudger_run = nudger.start_run(nudger_prompt + state.answer, top_k)
        while True:
            trace.compared += 1
            base_choice, nudger_choice = base_run.next_choice(), nudger_run.next_choice()
            if nudger_choice.is_eos:
                state.stop_reason = "eos"
                return
            if not base_choice.is_eos and base_choice.piece and base_choice.piece == nudger_choice.piece:
                base_run.append(base_choice)
                nudger_run.append(nudger_choice)
                trace.stage_tokens += 1
                state.answer += base_choice.piece
                yield Span(base_choice.piece, "base")
                if budget_reached():
                    state.stop_reason = "length"
                    return
                continue
            text = disagreement(base_choice, nudger_choice)
            if not text:  # neither model offers a whole character to write
                state.stop_reason = "eos"
                return
            state.answer += text
            yield Span(text, "base" if text == base_choice.piece and not base_choice.is_eos else "nudger")
            if budget_reached():
                state.stop_reason = "length"
                return
            break


def disagreement(base: Choice, nudger: Choice) -> str:
    """The string written where the models' next tokens differ: the nudger's where the base would end, else the
    highest summed probability over both top-k lists (ties go to the base's order)."""
    if base.is_eos:
        return nudger.piece or next((s for s, _ in nudger.alternatives), "")
    totals: dict[str, float] = {}
    for choice in (base, nudger):
        for string, prob in choice.alternatives:
            totals[string] = totals.get(string, 0.0) + prob
    if not totals:
        return base.piece or nudger.piece
    return max(totals.items(), key=lambda item: item[1])[0]
