"""What each round of a generation did, recorded by the engine and the baselines; and what the authors' request
protocol would have sent for it, computed from that record where it is reported (stats, bench, docs)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

AUTHORS_CHUNK = 16  # tokens per base request in the authors' API code


@dataclass
class RoundTrace:
    """One round. Nudging: the lookahead's length in characters, the word boundaries the base checked, who took
    over after the nudge ("base", "eos" for a base EOS, "none" where no boundary took over, "end" where the round
    ended the answer) and the base stage's token count. The text ensemble: the positions where both models were
    asked for their next token (`compared`). Blend: the base's confident tokens (`stage_tokens`) and 1 in
    `compared` where the round ended at a blended position."""

    lookahead_chars: int = 0
    boundaries_checked: int = 0
    takeover: str = "none"
    stage_tokens: int = 0
    compared: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def authors_requests(method: str, rounds: list[RoundTrace]) -> int:
    """Requests the authors' API code would send for an answer with these rounds. Nudging: one per lookahead,
    one per word boundary checked and one per 16 tokens of a base stage; the text ensemble: both models asked
    for 16 tokens at a time. Other methods are not in their code: 0."""
    if method == "nudging":
        return sum(1 + r.boundaries_checked + math.ceil(r.stage_tokens / AUTHORS_CHUNK) for r in rounds)
    if method == "ensemble-text":
        return sum(2 * math.ceil(r.compared / AUTHORS_CHUNK) for r in rounds)
    return 0
