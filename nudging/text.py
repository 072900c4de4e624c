"""Text helpers shared by the engine and the reports: word splitting and spans."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Literal

Source = Literal["base", "nudger"]


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


_WORD = re.compile(r"\S+")


def count_words(spans: list[Span]) -> tuple[int, int]:
    """(words written by the nudger, all words): a word belongs to the model that wrote its first character."""
    text = "".join(span.text for span in spans)
    owner: list[str] = []
    for span in spans:
        owner.extend(span.source for _ in span.text)
    words = [match.start() for match in _WORD.finditer(text)]
    nudged = sum(1 for start in words if owner[start] == "nudger")
    return nudged, len(words)
