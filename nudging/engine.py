"""The nudging algorithm (NUDGING_SPEC.md), written as a generator of answer spans.

A large base model writes the answer; wherever its top-1 probability falls below gamma the small aligned
nudger writes the next word(s). The models exchange text only. This module is the one place the algorithm lives:
the CLI, the server and the evaluation consume its spans. Each round is recorded in `state.trace`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Literal

from nudging.backends.interface import Choice, Model, Run
from nudging.config import NudgingConfig
from nudging.errors import ContextWindowFull
from nudging.text import Source, Span, join_words, split_lookahead
from nudging.trace import RoundTrace

StopReason = Literal["nudger_eos", "repetition", "length", "eos", "stop"]


@dataclass
class EngineState:
    """What a generation has produced so far; the engine owns it, callers read it."""

    answer: str = ""
    stop_reason: StopReason | None = None
    nudges: list[str] = field(default_factory=list)
    trace: list[RoundTrace] = field(default_factory=list)  # one entry per round

    @property
    def rounds(self) -> int:
        return len(self.trace)

    @property
    def word_checks(self) -> int:
        """Base queries at word boundaries (step 2)."""
        return sum(round_.boundaries_checked for round_ in self.trace)


def nudge(
    base: Model, nudger: Model, base_prompt: str, nudger_prompt: str, config: NudgingConfig, state: EngineState
) -> Iterator[Span]:
    """Run nudging to the end, yielding each piece of the answer as it is written; sets state.stop_reason."""
    try:
        yield from _rounds(base, nudger, base_prompt, nudger_prompt, config, state)
    except ContextWindowFull:
        state.stop_reason = "length"


def _rounds(
    base: Model, nudger: Model, base_prompt: str, nudger_prompt: str, config: NudgingConfig, state: EngineState
) -> Iterator[Span]:
    def budget_reached() -> bool:
        return base.count_tokens(state.answer) >= config.max_new_tokens

    while True:
        trace = RoundTrace()
        state.trace.append(trace)
        base.finish()  # the base's last run is over (a remote base's stream is closed here)
        # 1. Lookahead: the nudger proposes up to L tokens.
        lookahead, nudger_done = nudger.greedy(nudger_prompt + state.answer, config.lookahead)
        trace.lookahead_chars = len(lookahead)
        if nudger_done:
            trace.takeover = "end"
            state.answer += lookahead
            yield Span(lookahead, "nudger")
            state.stop_reason = "nudger_eos"
            return

        # 2. Nudging words: accept words until the base is confident again or agrees with the next word.
        nudge_text, takeover = _accept_words(base, base_prompt + state.answer, lookahead, config.gamma, trace)

        # 3. Repetition guard.
        if len(state.nudges) >= 3 and all(previous == nudge_text for previous in state.nudges[-3:]):
            trace.takeover = "end"
            state.stop_reason = "repetition"
            return
        state.nudges.append(nudge_text)

        # 4. Append the nudge.
        state.answer += nudge_text
        yield Span(nudge_text, "nudger")
        if budget_reached():
            state.stop_reason = "length"
            return

        # 5. Base stage, continuing the run of the takeover query.
        if takeover is None:
            continue
        run, choice = takeover
        while not choice.is_eos:
            piece = run.append(choice)
            trace.stage_tokens += 1
            state.answer += piece
            yield Span(piece, "base")
            if budget_reached():
                state.stop_reason = "length"
                return
            choice = run.next_choice()
            if choice.top1_prob < config.gamma:
                break


def _accept_words(
    base: Model, prefix: str, lookahead: str, gamma: float, trace: RoundTrace
) -> tuple[str, tuple[Run, Choice] | None]:
    """Spec step 2: the nudge text, and the base run and token that take over after it (None if none does)."""
    lead, words = split_lookahead(lookahead)
    candidates = [i for i in range(1, len(words)) if words[i]]
    queries = [prefix + join_words(lead, words[:i]) for i in candidates]
    if queries:
        # The whole lookahead goes along as a draft: where the base agrees with it, its stage is already computed.
        for i, (run, choice) in zip(candidates, base.choices_at_prefixes(queries, draft=prefix + lookahead)):
            trace.boundaries_checked += 1
            if choice.is_eos or choice.top1_prob >= gamma or (" " + words[i]).startswith(choice.piece):
                trace.takeover = "eos" if choice.is_eos else "base"
                return join_words(lead, words[:i]), (run, choice)
    if len(words) == 1:
        return lookahead, None
    return join_words(lead, words[:-1]), None


def single_model(
    model: Model, source: Source, prompt: str, max_new_tokens: int, state: EngineState
) -> Iterator[Span]:
    """Plain decoding of one model (the `base` and `nudger` modes): stops at EOS or after max_new_tokens."""
    try:
        run = model.start_run(prompt)
        for _ in range(max_new_tokens):
            choice = run.next_choice()
            if choice.is_eos:
                state.stop_reason = "eos"
                return
            piece = run.append(choice)
            state.answer += piece
            yield Span(piece, source)
        state.stop_reason = "length"
    except ContextWindowFull:
        state.stop_reason = "length"
