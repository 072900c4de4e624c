"""Rule-based answer extraction: no API key needed.

Each extractor returns the answer in the gold's normal form, or None when the output has no answer or states
more than one (ambiguous), which counts as wrong. Only the answer's own turn is read: a base model that goes
on to write a new "Question:" has its text cut there first.
"""

from __future__ import annotations

import math
import re

from nudging.evals.examples import LETTERS

NEXT_TURN = re.compile(r"\n\s*(?:Question|Q)\s*:", re.IGNORECASE)
NUMBER = r"-?\$?\d[\d,]*(?:\.\d+)?"
ANSWER_IS = r"(?:the\s+)?(?:final\s+|correct\s+)?answer\s*(?:is|would be|will be|:)\s*:?\s*"


def answer_turn(text: str) -> str:
    match = NEXT_TURN.search(text)
    return text[: match.start()] if match else text


def _last(pattern: str, text: str, flags: int = re.IGNORECASE) -> str | None:
    matches = re.findall(pattern, text, flags)
    return matches[-1] if matches else None


def _number(text: str) -> str | None:
    value = text.replace(",", "").replace("$", "")
    try:
        number = float(value)
    except ValueError:
        return None
    if not math.isfinite(number):  # a run of hundreds of digits
        return None
    return str(int(number)) if number == int(number) else repr(number)


def extract_number(output: str) -> str | None:
    """The number after 'the answer is', else the last number written."""
    text = answer_turn(output)
    stated = _last(ANSWER_IS + r"[^\d\-$]{0,20}(" + NUMBER + ")", text)
    found = stated or _last(NUMBER, text)
    return _number(found.rstrip(".")) if found else None


def extract_choice(output: str, options: tuple[str, ...]) -> str | None:
    """An option letter: one stated as the answer, else the only letter marked as an option, else the only
    option whose text appears."""
    if not options:
        return None
    text = answer_turn(output)
    letters = LETTERS[: len(options)]
    lead = r"(?i:" + ANSWER_IS + r"(?:option\s+|choice\s+)?)"  # the lead-in in any case, the letter in upper case
    stated = _last(lead + r"\(?([" + letters + r"])\b\)?", text, 0)
    if stated is None:
        stated = _last(lead + r"\(?([" + letters.lower() + r"])\)", text, 0)
    if stated:
        return stated.upper()
    marked = set(re.findall(r"\(([" + letters + r"])\)", text))
    marked |= set(re.findall(r"(?:^|\n)\s*([" + letters + r"])[.):](?:\s|$)", text))
    if re.fullmatch(r"\s*([" + letters + r"])\s*\.?\s*", text):
        marked.add(text.strip().rstrip(".").strip())
    if len(marked) == 1:
        return marked.pop()
    if marked:
        return None
    return _only_option_text(text, options)


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


def extract_yes_no(output: str) -> str | None:
    """'yes' or 'no' (true/false, plausible/implausible, heads up/tails up): the stated answer, else the word
    the answer opens with, else the only polarity the text uses."""
    text = answer_turn(output).lower()
    stated = _last(ANSWER_IS + r"\W{0,3}(" + _POLAR_PATTERN + r")\b", text)
    if stated:
        return _POLAR[stated]
    opening = re.match(r"\W*(" + _POLAR_PATTERN + r")\b", text)
    if opening:
        return _POLAR[opening.group(1)]
    found = {_POLAR[w] for w in re.findall(r"(?<!\w)(" + _POLAR_PATTERN + r")(?!\w)", text)}
    return found.pop() if len(found) == 1 else None


def extract_letters(output: str) -> str | None:
    """The concatenated letters: the stated answer, else the last quoted word, else the last word."""
    text = answer_turn(output)
    stated = _last(ANSWER_IS + r"[\"'“*]*([A-Za-z]+)", text)
    found = stated or _last(r"[\"“']([A-Za-z]+)[\"”']", text) or _last(r"\b([A-Za-z]+)\b", text)
    return found.lower() if found else None


def extract(kind: str, output: str, options: tuple[str, ...] = ()) -> str | None:
    if kind == "number":
        return extract_number(output)
    if kind == "choice":
        return extract_choice(output, options)
    if kind == "yes_no":
        return extract_yes_no(output)
    if kind == "letters":
        return extract_letters(output)
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
