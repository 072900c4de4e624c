"""Draft tokens for a local model's runs, looked up in the text of the same generation (prompt lookup).

A run that needs its next token can feed a few guessed tokens after it in the same forward pass: the pass then
also computes the logits after each guess, and where the run goes on to write the guessed token, its next
logits are already there (LocalModel keeps them). A wrong guess costs a little width in one pass, never a
different answer: every token is still the model's own choice from its own logits.

The guesses come from what this generation has already seen: the tokens that followed the latest earlier
occurrence of the run's last few tokens, in the run itself or in the model's earlier runs of this generation
(prompt, answer, and the lookaheads the nudger wrote and the engine did not keep, which the nudger often writes
again a round later).
"""

from __future__ import annotations

from array import array
from typing import Sequence

DRAFT_TOKENS = 3  # guessed tokens at most: a pass of up to four tokens costs about what a pass of one does (cpu_linear)
MATCH_LENGTHS = (3, 2, 1)  # the longest match wins; a single token still guesses better than nothing
RUNS_KEPT = 16  # earlier runs searched, newest first


def _encoded(ids: Sequence[int]) -> bytes:
    return array("q", ids).tobytes()


class Drafts:
    """The earlier runs of one model in one generation, and guesses for what a run writes next."""

    def __init__(self) -> None:
        self.runs: list[list[int]] = []  # the runs' own id lists: they grow as the runs go on

    def clear(self) -> None:
        self.runs = []

    def add(self, ids: list[int]) -> None:
        self.runs = [run for run in self.runs[-(RUNS_KEPT - 1):] if run is not ids] + [ids]

    def guess(self, ids: Sequence[int], count: int) -> list[int]:
        """Up to `count` tokens that may follow `ids` (none where nothing earlier matches its end)."""
        if count <= 0 or not ids:
            return []
        current = _encoded(ids)
        sources = [(current[: -8], ids)] + [(_encoded(run), run) for run in reversed(self.runs) if run is not ids]
        for length in MATCH_LENGTHS:
            if length > len(ids):
                continue
            key = current[-8 * length :]
            for encoded, source in sources:
                found = _last_aligned(encoded, key, len(encoded))
                if found is not None and found + length < len(source):
                    return list(source[found + length : found + length + count])
        return []


def _last_aligned(haystack: bytes, needle: bytes, end: int) -> int | None:
    """The token index of the last occurrence of `needle` in `haystack[:end]` that starts on a token boundary."""
    while True:
        at = haystack.rfind(needle, 0, end)
        if at < 0:
            return None
        if at % 8 == 0:
            return at // 8
        end = at + len(needle) - 1
