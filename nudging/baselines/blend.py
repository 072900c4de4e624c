"""Soft blending (NUDGING_SPEC.md, "Soft blending (mode blend)"), for any two models.

The base writes while the acceptance rule finds it confident, in one run. At a position where it is unsure (or its
next token is EOS), the nudger gives its next-token strings from its own prompt plus the answer, and the answer
takes the candidate with the highest (1 - alpha) p_base + alpha p_nudger: a string of either model's top-k list
(compared as text, as the text ensemble does) or the end of the answer. Then a new round starts: a new base run
from the re-tokenized text.
"""

from __future__ import annotations

from typing import Iterator

from nudging.backends.interface import Choice, Model
from nudging.config import NudgingConfig
from nudging.engine import EngineState
from nudging.errors import ContextWindowFull
from nudging.rules import rule_of
from nudging.text import Source, Span
from nudging.trace import RoundTrace


def blend(
    base: Model, nudger: Model, base_prompt: str, nudger_prompt: str, config: NudgingConfig, top_k: int,
    alpha: float, state: EngineState,
) -> Iterator[Span]:
    """Run blending to the end, yielding each piece of the answer as it is written; sets state.stop_reason."""
    try:
        yield from _rounds(base, nudger, base_prompt, nudger_prompt, config, top_k, alpha, state)
    except ContextWindowFull:
        state.stop_reason = "length"


def _rounds(
    base: Model, nudger: Model, base_prompt: str, nudger_prompt: str, config: NudgingConfig, top_k: int,
    alpha: float, state: EngineState,
) -> Iterator[Span]:
    def write(text: str, source: Source) -> Span:
        state.answer += text
        return Span(text, source)

    def budget_reached() -> bool:
        if base.count_tokens(state.answer) < config.max_new_tokens:
            return False
        state.stop_reason = "length"
        return True

    rule = rule_of(config)
    while True:
        trace = RoundTrace()
        state.trace.append(trace)
        base.finish()  # the base's last run is over (a remote base's stream is closed here)
        run = base.start_run(base_prompt + state.answer, top_k)
        choice = run.next_choice()
        while not choice.is_eos and rule.score(choice) >= config.gamma:
            trace.stage_tokens += 1
            yield write(run.append(choice), "base")
            if budget_reached():
                return
            choice = run.next_choice()
        trace.compared += 1
        nudged = nudger.start_run(nudger_prompt + state.answer, top_k).next_choice()
        nudger.finish()  # one position is all blending reads of a nudger run
        text = blended(choice, nudged, alpha)
        if text is None:
            state.stop_reason = "eos"
            return
        yield write(text, "base" if not choice.is_eos and text == choice.piece else "nudger")
        if budget_reached():
            return


def blended(base: Choice, nudger: Choice, alpha: float) -> str | None:
    """The string written at an unsure position, or None where the answer ends: the candidate with the highest
    (1 - alpha) p_base + alpha p_nudger. Candidates are the strings of both top-k lists (a string missing from a
    list counts 0 there) and, where either model's top-1 is EOS, the end (its probability there). Ties go to the
    base's list, then the nudger's, then the end."""
    scores: dict[str | None, float] = {}
    weighted = ((1 - alpha, base), (alpha, nudger))
    for weight, choice in weighted:
        for string, prob in choice.alternatives:
            scores[string] = scores.get(string, 0.0) + weight * prob
    if base.is_eos or nudger.is_eos:
        for weight, choice in weighted:
            scores[None] = scores.get(None, 0.0) + (weight * choice.top1_prob if choice.is_eos else 0.0)
    if not scores:
        return None
    return max(scores.items(), key=lambda item: item[1])[0]
