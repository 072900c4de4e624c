"""Token pieces: the text a token adds to a run.

The spec defines a token's piece as decode(ids + [t]) minus decode(ids). Text that ends inside a multi-byte
character decodes to U+FFFD; such an unfinished tail is held back ("settled" text drops trailing U+FFFD), so a
character cut across tokens arrives whole with the token that completes it, and a run that stops in the middle of
one writes nothing for it. Decoding the whole run for every token costs O(n) per token, so this decodes a short
window of the run's last tokens instead; the window starts on a character boundary so the two agree.
"""

from __future__ import annotations

from typing import Any, Sequence

REPLACEMENT_CHAR = "\ufffd"
CONTEXT_TOKENS = 4


def settled(text: str) -> str:
    """Text without an unfinished multi-byte character at its end."""
    return text.rstrip(REPLACEMENT_CHAR)


def text_after(full: str, prefix: str) -> str:
    """What `full` adds to `prefix` (decoders that rewrite earlier text fall back to the common prefix)."""
    if full.startswith(prefix):
        return full[len(prefix) :]
    common = 0
    for a, b in zip(full, prefix):
        if a != b:
            break
        common += 1
    return full[common:]


def decode(tokenizer: Any, ids: Sequence[int]) -> str:
    return tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)


class IncrementalDetokenizer:
    """Pieces of the tokens appended to one run, decoding only a bounded window of it."""

    def __init__(self, tokenizer: Any, ids: Sequence[int]) -> None:
        self._tokenizer = tokenizer
        self._start = self._boundary_at_or_before(ids, max(0, len(ids) - CONTEXT_TOKENS), 0)
        self._window_text = settled(decode(tokenizer, ids[self._start :]))

    def peek(self, ids: Sequence[int], token: int) -> str:
        """The piece `token` would add after `ids` (the run's ids so far), without recording it."""
        window = list(ids[self._start :]) + [token]
        return text_after(settled(decode(self._tokenizer, window)), self._window_text)

    def push(self, ids: Sequence[int]) -> str:
        """Record that the last id of `ids` was appended to the run; returns its piece."""
        full = decode(self._tokenizer, ids[self._start :])
        text = settled(full)
        piece = text_after(text, self._window_text)
        self._window_text = text
        if full == text and len(ids) - self._start > 2 * CONTEXT_TOKENS:
            start = self._boundary_at_or_before(ids, len(ids) - CONTEXT_TOKENS, self._start)
            if start != self._start:
                self._start = start
                self._window_text = settled(decode(self._tokenizer, ids[start:]))
        return piece

    def _boundary_at_or_before(self, ids: Sequence[int], start: int, lowest: int) -> int:
        """Move `start` back until the window does not begin inside a multi-byte character."""
        while start > lowest and decode(self._tokenizer, ids[start:]).startswith(REPLACEMENT_CHAR):
            start -= 1
        return start
