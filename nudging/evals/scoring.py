"""Rule-based answer extraction: no API key needed.

Each extractor returns the answer in the gold's normal form, or None when the output has no answer or states
more than one (ambiguous), which counts as wrong. What is read (`read`): only the answer's own turn (a base
model that goes on to write a new "Question:" has its text cut there), and none of what merely repeats the
prompt: questions, sentences the prompt holds word for word, option lists, and loops. A stated answer ("the
answer is X", "Answer: X") counts wherever it stands outside those, in a loop too when the loop states only one
answer; without one, each kind has its own fallback read from the text before any loop.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable

from nudging.evals.examples import LETTERS

NEXT_TURN = re.compile(r"\n\s*(?:Question|Q)\s*:", re.IGNORECASE)
NUMBER = r"-?\$?\d[\d,]*(?:\.\d+)?"
ANSWER_IS = r"(?:the\s+)?(?:final\s+|correct\s+)?answer\s*(?:is|would be|will be|:)\s*:?\s*"
SENTENCE = re.compile(r"(?:[^.!?\n]|\.(?=\d))*(?:[.!?\n]|$)")  # up to its end mark ("$2.50" has none)
SENTENCE_END = re.compile(r"(?<=[.!?])[\"'”)\]]*[ \t]+|\n")
PROMPT_LABEL = re.compile(r"^(?:question|answer)\s*:\s*")
STEP_LABEL = re.compile(r"\b(step)\s*\d+", re.IGNORECASE)
ECHO_MIN_WORDS = 3  # a shorter sentence ("Yes.", "18.", "C.") may be an answer even if the prompt has it
LOOP_COPIES = 3  # a block of lines this many times in a row is a loop
LOOP_MAX_LINES = 12  # the longest block looked for (an echoed option list with its "Answer:" line fits)
CUT = "\x00"  # the line that stands where an option list was taken out: no statement reads across it


def option_marker(letters: str) -> re.Pattern[str]:
    """A line that starts with an option letter: 'A. ', 'B) ', '(C) ', 'D: ', '- E.', '**A.**'."""
    return re.compile(r"^[ \t*•-]*\(?([" + letters + r"])[.):]\**(?=\s|$)")


def answer_turn(text: str) -> str:
    match = NEXT_TURN.search(text)
    return text[: match.start()] if match else text


@dataclass(frozen=True)
class Reading:
    """The parts of an answer turn the rules read."""

    before: str  # the turn, its echoes taken out, up to a loop (all of it when none)
    loop: str  # one copy of the looped block ("" when none)


def read(output: str, prompt: str = "", letters: str = "") -> Reading:
    """The answer turn without what repeats the prompt; `letters`: the option letters of a multiple-choice
    item, whose option lists are taken out."""
    text = answer_turn(output)
    if letters:
        text = _without_option_lists(text, option_marker(letters))
    if prompt:
        text = _without_echoes(text, _sentences_of(prompt, option_marker(letters or LETTERS)))
    text = "".join(" " if s.endswith("?") else s for s in SENTENCE.findall(text))  # a question is no answer
    return _split_at_loop(text)


def _without_option_lists(text: str, marker: re.Pattern[str]) -> str:
    """Two or more lines in a row (blank lines between them aside) that start with different option letters
    are a list of the options, not an answer: each such run becomes CUT."""
    lines = text.split("\n")
    kept: list[str] = []
    index = 0
    while index < len(lines):
        end, run = index, set()
        while end < len(lines):
            option = marker.match(lines[end])
            if not option and (lines[end].strip() or not run):
                break
            if option:
                run.add(option.group(1))
            end += 1
        if len(run) >= 2:
            kept.append(CUT)
            while end > index and not lines[end - 1].strip():  # a blank line after the list stays
                end -= 1
            index = end
        else:
            kept.append(lines[index])
            index += 1
    return "\n".join(kept)


def _normal(sentence: str) -> str:
    words = PROMPT_LABEL.sub("", sentence.strip().lower()).split()
    return " ".join(words).strip(" \"'“”.!?:")


def _sentences(text: str) -> list[tuple[int, int]]:
    spans, start = [], 0
    for match in SENTENCE_END.finditer(text):
        spans.append((start, match.start()))
        start = match.end()
    spans.append((start, len(text)))
    return spans


def _sentences_of(prompt: str, marker: re.Pattern[str]) -> set[str]:
    """The prompt's sentences of at least ECHO_MIN_WORDS words, its option lines left out (an answer may name
    one)."""
    question = "\n".join(line for line in prompt.split("\n") if not marker.match(line))
    found = {_normal(question[a:b]) for a, b in _sentences(question)}
    return {sentence for sentence in found if len(sentence.split()) >= ECHO_MIN_WORDS}


def _without_echoes(text: str, echoes: set[str]) -> str:
    if not echoes:
        return text
    pieces, last = [], 0
    for start, end in _sentences(text):
        if _normal(text[start:end]) in echoes:
            pieces.append(text[last:start])
            last = end
    pieces.append(text[last:])
    return " ".join(pieces) if len(pieces) > 1 else text


def _split_at_loop(text: str) -> Reading:
    """Cut at the first block of 1 to LOOP_MAX_LINES lines repeated LOOP_COPIES or more times in a row
    (compared with blank lines and spacing ignored): a model stuck repeating itself."""
    starts, lines = [], []
    for match in re.finditer(r"[^\n]+", text):
        line = " ".join(match.group().split())
        if line:
            starts.append(match.start())
            lines.append(line)
    for first in range(len(lines)):
        for size in range(1, LOOP_MAX_LINES + 1):
            end = first + LOOP_COPIES * size
            if end > len(lines):
                break
            if lines[first: end - size] == lines[first + size: end]:
                return Reading(before=text[: starts[first]], loop="\n".join(lines[first: first + size]))
    return Reading(before=text, loop="")


def _decide(reading: Reading, stated: Callable[[str], list[str]],
            fallback: Callable[[str], str | None]) -> str | None:
    """A loop that states one answer gives it, one that states two gives none; else the last answer stated
    before the loop; else the kind's fallback, read before the loop."""
    in_loop = set(stated(reading.loop + "\n" + reading.loop))  # two copies: "Yes\nAnswer:" loops "Answer:\nYes"
    if in_loop:
        return in_loop.pop() if len(in_loop) == 1 else None
    before = stated(reading.before)
    return before[-1] if before else fallback(reading.before)


def _number(text: str) -> str | None:
    value = text.rstrip(".").replace(",", "").replace("$", "")
    try:
        number = float(value)
    except ValueError:
        return None
    if not math.isfinite(number):  # a run of hundreds of digits
        return None
    return str(int(number)) if number == int(number) else repr(number)


def _stated_numbers(text: str) -> list[str]:
    found = (_number(n) for n in re.findall(ANSWER_IS + r"[^\d\-$]{0,20}(" + NUMBER + ")", text, re.IGNORECASE))
    return [n for n in found if n is not None]


def _last_number(text: str) -> str | None:
    numbers = re.findall(NUMBER, STEP_LABEL.sub(r"\1", text))  # "Step 3:" counts steps, it states no number
    return _number(numbers[-1]) if numbers else None


def extract_number(output: str, prompt: str = "") -> str | None:
    """The number after 'the answer is', else the last number written (not a 'Step N' label)."""
    return _decide(read(output, prompt), _stated_numbers, _last_number)


def extract_choice(output: str, options: tuple[str, ...], prompt: str = "") -> str | None:
    """An option letter: one stated as the answer, else the only letter marked as an option, else the only
    option whose text appears."""
    if not options:
        return None
    letters = LETTERS[: len(options)]
    lead = r"(?i:" + ANSWER_IS + r"(?:option\s+|choice\s+)?)"  # the lead-in in any case, the letter in upper case
    statement = re.compile(lead + r"(?:\(?([" + letters + r"])\b\)?|\(?([" + letters.lower() + r"])\))")

    def stated(text: str) -> list[str]:
        return [(upper or lower).upper() for upper, lower in statement.findall(text)]

    def marked_or_named(text: str) -> str | None:
        marked = set(re.findall(r"\(([" + letters + r"])\)", text))
        marker = option_marker(letters)
        marked |= {m.group(1) for m in (marker.match(line) for line in text.split("\n")) if m}
        if re.fullmatch(r"\s*([" + letters + r"])\s*\.?\s*", text):
            marked.add(text.strip().rstrip(".").strip())
        if len(marked) == 1:
            return marked.pop()
        if marked:
            return None
        return _only_option_text(text, options)

    return _decide(read(output, prompt, letters), stated, marked_or_named)


def _only_option_text(text: str, options: tuple[str, ...]) -> str | None:
    lowered = text.lower()
    found = [
        i for i, option in enumerate(options)
        if option.strip() and re.search(r"(?<!\w)" + re.escape(option.strip().lower()) + r"(?!\w)", lowered)
    ]
    # an option inside a longer option that also appears ("store" in "department store") is not a second answer
    found = [i for i in found if not any(j != i and options[i].lower() in options[j].lower() for j in found)]
    return LETTERS[found[0]] if len(found) == 1 else None


YES_WORDS = {"yes": "yes", "true": "yes", "not false": "yes", "plausible": "yes", "heads up": "yes",
             "still heads up": "yes"}
NO_WORDS = {"no": "no", "false": "no", "not true": "no", "implausible": "no", "not plausible": "no", "tails up": "no",
            "not heads up": "no", "no longer heads up": "no"}
_POLAR = {**YES_WORDS, **NO_WORDS}
_POLAR_PATTERN = "|".join(sorted((re.escape(w) for w in _POLAR), key=len, reverse=True))


def _stated_polar(text: str) -> list[str]:
    return [_POLAR[w] for w in re.findall(ANSWER_IS + r"\W{0,3}(" + _POLAR_PATTERN + r")\b", text.lower())]


# A condition states no answer: "plausible if it is true ...", "whether it is plausible" (to the sentence's end).
_CONDITIONAL = re.compile(r"(?:(?<!\w)(?:" + _POLAR_PATTERN + r"),?\s+)?(?<!\w)(?:only\s+)?(?:if|unless|when|whether|"
                          r"provided)(?!\w)[^.!?\n]*")


def _polar(text: str) -> str | None:
    text = _CONDITIONAL.sub(" ", text.lower())
    opening = re.match(r"\W*(" + _POLAR_PATTERN + r")\b", text)
    if opening:
        return _POLAR[opening.group(1)]
    found = {_POLAR[w] for w in re.findall(r"(?<!\w)(" + _POLAR_PATTERN + r")(?!\w)", text)}
    return found.pop() if len(found) == 1 else None


def extract_yes_no(output: str, prompt: str = "") -> str | None:
    """'yes' or 'no' (true/false, plausible/implausible, heads up/tails up): the stated answer, else the word
    the answer opens with, else the only polarity the text uses."""
    return _decide(read(output, prompt), _stated_polar, _polar)


def _stated_letters(text: str) -> list[str]:
    return [w.lower() for w in re.findall(ANSWER_IS + r"[\"'“*]*([A-Za-z]+)", text, re.IGNORECASE)]


def _quoted_or_last_word(text: str) -> str | None:
    quoted = re.findall(r"[\"“']([A-Za-z]+)[\"”']", text)
    words = quoted or re.findall(r"\b([A-Za-z]+)\b", text)
    return words[-1].lower() if words else None


def extract_letters(output: str, prompt: str = "") -> str | None:
    """The concatenated letters: the stated answer, else the last quoted word, else the last word."""
    return _decide(read(output, prompt), _stated_letters, _quoted_or_last_word)


def extract(kind: str, output: str, options: tuple[str, ...] = (), prompt: str = "") -> str | None:
    """`prompt`: the item as the models saw it (the rows' "prompt"), so that sentences repeated from it are
    not read as answers."""
    if kind == "number":
        return extract_number(output, prompt)
    if kind == "choice":
        return extract_choice(output, options, prompt)
    if kind == "yes_no":
        return extract_yes_no(output, prompt)
    if kind == "letters":
        return extract_letters(output, prompt)
    return None  # open-ended answers are scored only by a judge


def is_correct(kind: str, extracted: str | None, gold: str) -> bool | None:
    """None for open-ended tasks (no rule can score them)."""
    if kind == "open":
        return None
    if extracted is None:
        return False
    if kind == "number":
        return abs(float(extracted) - float(gold)) < 1e-6
    return extracted == gold
