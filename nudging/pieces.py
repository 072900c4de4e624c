"""Token pieces: the text a token adds to a run.

The spec defines a token's piece as decode(ids + [t]) minus decode(ids). A run's text is taken at its last
token boundary where the decoded text ends on a whole character: while the decode ends in U+FFFD (a multi-byte
character cut across tokens, which byte-fallback decoders may even spread back over earlier bytes of the same
group) the new tokens' text is held back, and it arrives whole with the token that completes the character. A
run that stops in the middle of a character writes nothing for it.

Decoding the whole run for every token costs O(n) per token, so this decodes a short window of the run's last
tokens instead; the window starts on a character boundary, so both give the same pieces.
"""

from __future__ import annotations

from typing import Any, Sequence

REPLACEMENT_CHAR = "\ufffd"
CONTEXT_TOKENS = 4


def is_complete(text: str) -> bool:
    """False when the text ends inside a multi-byte character."""
    return not text.endswith(REPLACEMENT_CHAR)


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
        self._committed = decode(tokenizer, ids[self._start :])  # window text up to the last whole character

    def peek(self, ids: Sequence[int], token: int) -> str:
        """The piece `token` would add after `ids` (the run's ids so far), without recording it."""
        text = decode(self._tokenizer, list(ids[self._start :]) + [token])
        return text_after(text, self._committed) if is_complete(text) else ""

    def push(self, ids: Sequence[int]) -> str:
        """Record that the last id of `ids` was appended to the run; returns its piece."""
        text = decode(self._tokenizer, ids[self._start :])
        if not is_complete(text):
            return ""
        piece = text_after(text, self._committed)
        self._committed = text
        if len(ids) - self._start > 2 * CONTEXT_TOKENS:
            start = self._boundary_at_or_before(ids, len(ids) - CONTEXT_TOKENS, self._start)
            if start != self._start:
                self._start = start
                self._committed = decode(self._tokenizer, ids[start:])
        return piece

    def _boundary_at_or_before(self, ids: Sequence[int], start: int, lowest: int) -> int:
        """Move `start` back until the window does not begin inside a multi-byte character."""
        while start > lowest and decode(self._tokenizer, ids[start:]).startswith(REPLACEMENT_CHAR):
            start -= 1
        return start
