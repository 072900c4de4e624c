"""Text helpers shared by the engine and the reports: word splitting, spans, and the check that text is valid
Unicode (where user text enters: the command line, files, requests, the Python API)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Literal, Sequence

from nudging.errors import InvalidArgumentError

Source = Literal["base", "nudger"]
_SURROGATE = re.compile("[\ud800-\udfff]")


def check_unicode(text: str, what: str) -> str:
    """`text` if it is valid Unicode, else one clear error naming `what` and where: a lone surrogate (from a JSON
    escape such as \\ud800, or a byte that is not UTF-8 on the command line) cannot be tokenized or written."""
    found = _SURROGATE.search(text)
    if found is None:
        return text
    code = ord(found.group())
    # Python reads a byte that is not UTF-8 in a command line or file name as U+DC80..U+DCFF (surrogateescape)
    kind = f"a byte that is not UTF-8 (0x{code - 0xDC00:02X})" if 0xDC80 <= code <= 0xDCFF else \
        f"a lone surrogate (U+{code:04X})"
    raise InvalidArgumentError(f"{what} is not valid Unicode: {kind} at character {found.start() + 1}")


@dataclass(frozen=True)
class Span:
    """A piece of the answer and the model that wrote it."""

    text: str
    source: Source

    def to_dict(self) -> dict[str, str]:
        return {"text": self.text, "source": self.source}


def split_lookahead(text: str) -> tuple[str, list[str]]:
    """Split a nudger lookahead into (leading spaces, words) on the space character only (spec step 2)."""
    stripped = text.lstrip(" ")
    return text[: len(text) - len(stripped)], stripped.split(" ")


def join_words(lead: str, words: list[str]) -> str:
    return lead + " ".join(words)


def merge_spans(spans: Iterable[Span]) -> list[Span]:
    """Join adjacent spans of one source and drop empty ones."""
    merged: list[Span] = []
    for span in spans:
        if not span.text:
            continue
        if merged and merged[-1].source == span.source:
            merged[-1] = Span(merged[-1].text + span.text, span.source)
        else:
            merged.append(span)
    return merged


_WORD_INSIDE = re.compile(r"(?<=\s)\S")  # a word's first character, after a space within the text


class WordCount:
    """Words of a growing answer by source, counted as pieces arrive: a word is a run of non-space characters,
    and it belongs to the model that wrote its first character."""

    def __init__(self) -> None:
        self.nudged = 0
        self.total = 0
        self._after_space = True  # the next non-space character starts a word

    def add(self, text: str, source: Source) -> None:
        if not text:
            return
        starts = len(_WORD_INSIDE.findall(text)) + (self._after_space and not text[0].isspace())
        self.total += starts
        if source == "nudger":
            self.nudged += starts
        self._after_space = text[-1].isspace()

    @property
    def nudged_share(self) -> float:
        """The share of words so far that the nudger wrote (0 before any word)."""
        return self.nudged / self.total if self.total else 0.0


def count_words(spans: list[Span]) -> tuple[int, int]:
    """(words written by the nudger, all words), as WordCount counts them."""
    count = WordCount()
    for span in spans:
        count.add(span.text, span.source)
    return count.nudged, count.total


def check_stops(stop: str | Sequence[str] | None, what: str = "stop") -> list[str]:
    """Stop strings as a list: None (none), one string, or a list of non-empty strings; else one clear error."""
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, (list, tuple)) or not all(isinstance(s, str) and s for s in stops):
        raise InvalidArgumentError(f"{what} must be a non-empty string or a list of them, got {stop!r}")
    return [check_unicode(s, what) for s in stops]


class StopScanner:
    """Passes text on as soon as it cannot be the start of a stop string, and cuts at the first stop string."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = stops
        self.hold = max((len(s) for s in stops), default=1) - 1
        self.text = ""
        self.sources: list[tuple[int, str]] = []  # (end offset, source) of each piece
        self.sent = 0
        self.stopped = False

    def feed(self, span: Span) -> list[Span]:
        self.text += span.text
        self.sources.append((len(self.text), span.source))
        cut = self._first_stop()
        if cut is not None:
            self.stopped = True
            return self._release(cut)
        return self._release(max(self.sent, len(self.text) - self.hold))

    def flush(self) -> list[Span]:
        return [] if self.stopped else self._release(len(self.text))

    def _first_stop(self) -> int | None:
        start = max(0, self.sent - self.hold)
        found = [i for i in (self.text.find(s, start) for s in self.stops) if i >= 0]
        return min(found) if found else None

    def _release(self, end: int) -> list[Span]:
        pieces = []
        start = self.sent
        for piece_end, source in self.sources:
            if piece_end <= start:
                continue
            stop = min(piece_end, end)
            if stop > start:
                pieces.append(Span(self.text[start:stop], source))
                start = stop
            if start >= end:
                break
        self.sent = max(self.sent, end)
        return pieces
