"""What it means for the engine to agree with the reference on one generation: the same text, spans and stop
reason, and a trace that records the reference's decisions round by round."""

from __future__ import annotations

from reference import RefResult, split_rounds

CHECKS = {"takeover_by_eos", "takeover_confident", "takeover_agrees", "takeover_filtered", "word_accepted",
          "window_checked"}  # one per boundary query


def round_takeover(events: list[str]) -> str:
    """Who took over after a round's nudge, in the trace's words."""
    if "capped" in events:
        return "capped"
    if "takeover_by_eos" in events:
        return "eos"
    if {"takeover_confident", "takeover_agrees", "takeover_filtered", "window_switch", "window_switch_at_once"} & set(events):
        return "base"
    return "none"


def assert_same_answer(expected: RefResult, got, where: str) -> None:
    assert got.text == expected.text, where
    assert [(s.text, s.source) for s in got.spans] == expected.spans, where
    assert got.stop_reason == expected.stop_reason, where


def assert_trace_matches(expected: RefResult, got, where: str) -> None:
    """Each round's trace says what the spec's decisions were: boundaries checked and who took over (a round
    that ends the answer, at the nudger's EOS or the repetition guard, says "end")."""
    trace, rounds = got.trace, split_rounds(expected.events)
    assert got.stats.rounds == len(trace) and got.stats.word_checks == sum(r.boundaries_checked for r in trace)
    assert len(trace) == len(rounds), where
    for number, (round_, events) in enumerate(zip(trace, rounds)):
        at = f"{where} round {number}"
        assert round_.boundaries_checked == sum(e in CHECKS for e in events), at
        ended = number == len(trace) - 1 and got.stop_reason in ("nudger_eos", "repetition")
        assert round_.takeover == ("end" if ended else round_takeover(events)), at
        if round_.takeover not in ("base", "capped"):
            assert round_.stage_tokens == 0, at
