"""The nudging algorithm (NUDGING_SPEC.md), written as a generator of answer spans.

A large base model writes the answer; wherever its top-1 probability falls below gamma (or the score of another
acceptance rule, nudging.rules) the small aligned nudger writes the next word(s). The models exchange text only.
This module is the one place the algorithm lives: the CLI, the server and the evaluation consume its spans. Each
round is recorded in `state.trace`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Iterator, Literal

from nudging.backends.interface import Choice, Lookahead, Model, Run
from nudging.config import NudgingConfig
from nudging.errors import ContextWindowFull
from nudging.positions import answer_targets
from nudging.rules import Rule, rule_of
from nudging.text import Source, Span, WordCount, join_words, split_lookahead
from nudging.trace import RoundTrace

StopReason = Literal["nudger_eos", "repetition", "length", "eos", "stop"]


@dataclass
class EngineState:
    """What a generation has produced so far; the engine owns it, callers read it."""

    answer: str = ""
    stop_reason: StopReason | None = None
    nudges: list[str] = field(default_factory=list)
    trace: list[RoundTrace] = field(default_factory=list)  # one entry per round
    words: WordCount = field(default_factory=WordCount)  # the answer's words by source, for the intervention cap

    @property
    def rounds(self) -> int:
        return len(self.trace)

    @property
    def word_checks(self) -> int:
        """Base queries at word boundaries (step 2)."""
        return sum(round_.boundaries_checked for round_ in self.trace)


SETTLE_ROUNDS = 16  # at most this many rounds wait for their lookaheads' rests; their spans are held back until then


@dataclass
class _HeldRound:
    """A round whose lookahead was read only up to its nudge: what the state was before it, where its spans
    start among the held ones, and the lookahead whose rest is still to be checked for the nudger's EOS."""

    lookahead: Lookahead
    answer: str
    nudges: list[str]
    rounds: int
    words: WordCount
    spans: int


def nudge(
    base: Model, nudger: Model, base_prompt: str, nudger_prompt: str, config: NudgingConfig, state: EngineState,
    read_first: int | None = None,
) -> Iterator[Span]:
    """Run nudging to the end, yielding each piece of the answer once it is certain; sets state.stop_reason.

    With `read_first` tokens (None: the whole lookahead at once), a round reads that many tokens of the nudger's
    lookahead before the base's first word check, then further only as far as its nudge (the base takes over within
    a word or two); the rest of it, which matters only for the nudger's EOS (spec step 1), is computed alongside
    the nudger's later passes (`Model.defer`), or at the latest after SETTLE_ROUNDS rounds or at the end
    (`Model.settle`). Until then the spans are held back; where a rest holds the EOS, the answer goes back to that
    round and ends there with its lookahead, as the spec's step 1 would have ended it.
    """
    held: list[Span] = []  # spans from round `waiting[0]` on, not yet yielded
    released = 0  # spans yielded so far
    waiting: list[_HeldRound] = []
    rounds = _rounds(base, nudger, base_prompt, nudger_prompt, config, state, waiting, read_first)
    went_back = False
    try:
        for span in rounds:
            held.append(span)
            if len(waiting) >= SETTLE_ROUNDS:
                nudger.settle([round_.lookahead for round_ in waiting])
            if went_back := _went_back(waiting, state, held, released):
                rounds.close()
                break
            ready = waiting[0].spans - released if waiting else len(held)
            yield from held[:ready]
            released += ready
            del held[:ready]
    except ContextWindowFull:
        state.stop_reason = "length"
    if not went_back:
        nudger.settle([round_.lookahead for round_ in waiting])
        _went_back(waiting, state, held, released)
    yield from held


def _went_back(waiting: list[_HeldRound], state: EngineState, held: list[Span], released: int) -> bool:
    """The rounds at the front of `waiting` whose lookaheads are complete leave it (their trace gets the whole
    lookahead's length). Where one's lookahead holds the nudger's EOS, the state and the held spans (the answer's
    spans from number `released` on) go back to that round, which writes its lookahead and ends the answer
    (returns True)."""
    while waiting and waiting[0].lookahead.complete:
        round_ = waiting.pop(0)
        if not round_.lookahead.ended:
            state.trace[round_.rounds].lookahead_chars = len(round_.lookahead.text)
            continue
        state.answer, state.nudges, state.words = round_.answer, round_.nudges, round_.words
        del state.trace[round_.rounds :]
        del held[round_.spans - released :]
        held.append(_end_with_lookahead(state, round_.lookahead.text))
        waiting.clear()
        return True
    return False


def _end_with_lookahead(state: EngineState, text: str) -> Span:
    """Spec step 1 at the nudger's EOS: the lookahead is the answer's last piece, in a round of its own."""
    state.trace.append(RoundTrace(lookahead_chars=len(text), takeover="end"))
    state.answer += text
    state.words.add(text, "nudger")
    state.stop_reason = "nudger_eos"
    return Span(text, "nudger")


def _rounds(
    base: Model, nudger: Model, base_prompt: str, nudger_prompt: str, config: NudgingConfig, state: EngineState,
    waiting: list[_HeldRound], read_first: int | None,
) -> Iterator[Span]:
    """The rounds; a round whose lookahead is not yet read to its end goes into `waiting` before its spans."""
    spans = 0

    def budget_reached() -> bool:
        return base.count_tokens(state.answer) >= config.max_new_tokens

    def write(text: str, source: Source) -> Span:
        nonlocal spans
        spans += 1
        state.answer += text
        state.words.add(text, source)
        return Span(text, source)

    def base_stage(run: Run, choice: Choice, to_the_end: bool) -> Iterator[Span]:
        """The base extends its run from `choice` until EOS or, unless `to_the_end`, a choice the rule finds
        unsure; at the budget it sets stop reason "length"."""
        while not choice.is_eos:
            trace.stage_tokens += 1
            yield write(run.append(choice), "base")
            if budget_reached():
                state.stop_reason = "length"
                return
            choice = run.next_choice()
            if not to_the_end and rule.score(choice) < config.gamma:
                return

    rule = rule_of(config)
    while True:
        trace = RoundTrace()
        state.trace.append(trace)
        base.finish()  # the base's last run is over (a remote base's stream is closed here)
        # 0. Intervention cap: once the nudger wrote more than its share of the words, the base writes the rest.
        if config.max_nudged_fraction is not None and state.words.nudged_share > config.max_nudged_fraction:
            trace.takeover = "capped"
            run = base.start_run(base_prompt + state.answer)
            yield from base_stage(run, run.next_choice(), to_the_end=True)
            state.stop_reason = state.stop_reason or "eos"
            return
        # 1. Lookahead: the nudger proposes up to L tokens (read as far as step 2 needs them).
        lazy = read_first is not None and read_first < config.lookahead and not rule.window
        lookahead = nudger.lookahead(nudger_prompt + state.answer, config.lookahead, lazy=lazy)
        lookahead.read(read_first or 0)

        # 2. Nudging words: accept words until the base is confident again or agrees with the next word (the
        # window rule: cut the lookahead where the base is confident over the next window of it).
        if rule.window:
            lookahead.finish()
            if not lookahead.ended:
                nudge_text, takeover = _window_switch(base, base_prompt + state.answer, lookahead.text, rule.window,
                                                      config.gamma, trace)
        else:
            nudge_text, takeover = _accept_words(base, base_prompt + state.answer, lookahead, rule, config.gamma,
                                                 trace)
        trace.lookahead_chars = len(lookahead.text)
        if lookahead.ended:
            state.trace.pop()  # the checks made while reading it were not the spec's: the round ends at step 1
            yield _end_with_lookahead(state, lookahead.text)
            return
        if not lookahead.complete:  # nothing of this round is written yet: the state before it is the state now
            nudger.defer(lookahead)
            waiting.append(_HeldRound(lookahead, state.answer, list(state.nudges), len(state.trace) - 1,
                                      copy.copy(state.words), spans))

        # 3. Repetition guard.
        if len(state.nudges) >= 3 and all(previous == nudge_text for previous in state.nudges[-3:]):
            trace.takeover = "end"
            state.stop_reason = "repetition"
            return
        state.nudges.append(nudge_text)

        # 4. Append the nudge.
        yield write(nudge_text, "nudger")
        if budget_reached():
            state.stop_reason = "length"
            return

        # 5. Base stage, continuing the run of the takeover query (after the window rule's switch, to the end).
        if takeover is None:
            continue
        yield from base_stage(*takeover, to_the_end=bool(rule.window))
        if rule.window:
            state.stop_reason = state.stop_reason or "eos"
        if state.stop_reason is not None:
            return


def _accept_words(
    base: Model, prefix: str, lookahead: Lookahead, rule: Rule, gamma: float, trace: RoundTrace
) -> tuple[str, tuple[Run, Choice] | None]:
    """Spec step 2: the nudge text, and the base run and token that take over after it (None if none does).
    The agreement rule also takes over where the next word starts with none of the base's top-k strings.

    The lookahead is read a token at a time, and each word boundary is checked once the word after it is whole
    (followed by a space, or the lookahead is complete): the same checks in the same order as on the whole
    lookahead, which stop at the first takeover. Where the nudger's EOS comes first, the caller ends the round.
    """
    checked = 0  # boundaries 1 .. checked are done
    while not lookahead.ended:
        lead, words = split_lookahead(lookahead.text)
        whole = len(words) if lookahead.complete else len(words) - 1
        candidates = [i for i in range(checked + 1, whole) if words[i]]
        if candidates:
            queries = [prefix + join_words(lead, words[:i]) for i in candidates]
            # The lookahead read so far goes along as a draft: where the base agrees with it, its stage is computed.
            choices = base.choices_at_prefixes(queries, draft=prefix + lookahead.text, top_k=rule.top_k)
            for i, (run, choice) in zip(candidates, choices):
                trace.boundaries_checked += 1
                word = " " + words[i]
                if (choice.is_eos or rule.score(choice) >= gamma or word.startswith(choice.piece)
                        or not rule.lets_nudger_write(choice, word)):
                    trace.takeover = "eos" if choice.is_eos else "base"
                    return join_words(lead, words[:i]), (run, choice)
        checked = max(checked, whole - 1)
        if lookahead.complete:
            break
        lookahead.extend()
    if lookahead.ended:
        return lookahead.text, None
    if len(words) == 1:
        return lookahead.text, None
    return join_words(lead, words[:-1]), None


def _window_switch(
    base: Model, prefix: str, lookahead: str, window: int, gamma: float, trace: RoundTrace
) -> tuple[str, tuple[Run, Choice] | None]:
    """The window rule's step 2: the lookahead up to its first base position where the base's mean top-1
    probability over that position and the next window - 1 reaches gamma, and the base run that takes over
    there; else the part of the lookahead whose windows were all checked, and None."""
    cuts = [len(text) - len(prefix) for text, _ in answer_targets(base, prefix, lookahead, ended=False)
            if len(text) >= len(prefix)]
    if len(cuts) < window:
        return lookahead, None
    scores: list[float] = []
    runs: list[tuple[Run, Choice]] = []
    for run, choice in base.choices_at_prefixes([prefix + lookahead[:cut] for cut in cuts], draft=prefix + lookahead):
        trace.boundaries_checked += 1
        runs.append((run, choice))
        scores.append(choice.top1_prob)
        if len(scores) >= window and sum(scores[-window:]) / window >= gamma:
            first = len(scores) - window
            trace.takeover = "base"
            return lookahead[: cuts[first]], runs[first]
    return lookahead[: (cuts + [len(lookahead)])[len(cuts) - window + 1]], None


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
