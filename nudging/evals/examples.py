"""One benchmark item, and how it is shown to the models (the paper's zero-shot protocol)."""

from __future__ import annotations

from dataclasses import dataclass

SYSTEM_PROMPT = "Answer the question by walking through the reasoning steps."
LETTERS = "ABCDEFGHIJ"


@dataclass(frozen=True)
class Example:
    id: str
    question: str
    gold: str = ""  # a number, an option letter, "yes"/"no", a string of letters; "" for open-ended tasks
    options: tuple[str, ...] = ()

    def render(self) -> str:
        """'Question: ...' with multiple-choice options as lettered lines."""
        lines = [f"Question: {self.question}"]
        lines += [f"{LETTERS[i]}. {option}" for i, option in enumerate(self.options)]
        return "\n".join(lines)


def letter(index: int) -> str:
    return LETTERS[index]
