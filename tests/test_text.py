"""Word splitting of the nudger's lookahead, spans, and word ownership."""

from __future__ import annotations

import pytest

from nudging.text import Span, count_words, join_words, merge_spans, split_lookahead


@pytest.mark.parametrize(
    "text, lead, words",
    [
        ("Sure, here it is", "", ["Sure,", "here", "it", "is"]),
        ("  two leading", "  ", ["two", "leading"]),
        ("a  b", "", ["a", "", "b"]),
        ("end ", "", ["end", ""]),
        ("   ", "   ", [""]),
        ("", "", [""]),
        ("The answ", "", ["The", "answ"]),
        ("line\nbreak\tand tab", "", ["line\nbreak\tand", "tab"]),
        ("\n indented", "", ["\n", "indented"]),
    ],
)
def test_split_lookahead(text, lead, words):
    assert split_lookahead(text) == (lead, words)
    assert join_words(lead, words) == text


def test_join_words_prefixes():
    lead, words = split_lookahead(" one two  three")
    assert [join_words(lead, words[:i]) for i in range(1, len(words) + 1)] == [
        " one", " one two", " one two ", " one two  three"
    ]


def test_merge_spans_joins_neighbours_of_one_source():
    spans = [Span("Hel", "base"), Span("lo", "base"), Span(" there", "nudger"), Span(".", "base")]
    assert merge_spans(spans) == [Span("Hello", "base"), Span(" there", "nudger"), Span(".", "base")]


def test_merge_spans_drops_empty_spans_and_joins_across_them():
    spans = [Span("", "nudger"), Span("a", "base"), Span("", "nudger"), Span("b", "base"), Span("", "base")]
    assert merge_spans(spans) == [Span("ab", "base")]
    assert merge_spans([]) == []
    assert merge_spans([Span("", "base")]) == []


@pytest.mark.parametrize(
    "spans, counts",
    [
        ([Span("hel", "base"), Span("lo world", "nudger")], (1, 2)),
        ([Span("Sure", "nudger"), Span("! The answer is 4.", "base")], (1, 5)),
        ([Span("a ", "base"), Span("b", "nudger")], (1, 2)),
        ([Span(" ", "nudger"), Span("x", "base")], (0, 1)),
        ([Span("one\ntwo", "nudger"), Span("\tthree", "base")], (2, 3)),
        ([Span("   ", "base")], (0, 0)),
        ([], (0, 0)),
    ],
)
def test_count_words_gives_a_word_to_the_writer_of_its_first_character(spans, counts):
    assert count_words(spans) == counts
