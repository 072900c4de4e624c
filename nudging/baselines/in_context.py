"""In-context alignment: the base alone, after a few example dialogues (in the style of URIAL, Lin et al. 2024).

The examples were written for this project. Each turn is `# Query:` then `# Answer:`; the base's answer ends
where it starts the next `# Query`.
"""

from __future__ import annotations

from typing import Iterator

from nudging.backends.interface import Model
from nudging.engine import EngineState, single_model
from nudging.text import Span, StopScanner

PREAMBLE = (
    "# Instructions\n\n"
    "Below are conversations between a curious user and a helpful, honest and harmless AI assistant. The "
    "assistant answers each query accurately and clearly, shows its reasoning step by step when a question needs "
    "it, says so when it is unsure, and politely declines requests that could cause harm, offering a safer "
    "alternative.\n\n"
)

EXAMPLES = (
    (
        "How many minutes are there in a week?",
        "Let's work it out step by step.\n"
        "- A day has 24 hours, and an hour has 60 minutes, so a day has 24 x 60 = 1,440 minutes.\n"
        "- A week has 7 days, so it has 7 x 1,440 = 10,080 minutes.\n\n"
        "The answer is 10,080 minutes.",
    ),
    (
        "Why do leaves change color in the fall?",
        "Leaves are green in summer because they are full of chlorophyll, the pigment that captures sunlight for "
        "photosynthesis. As the days grow shorter and cooler, the tree stops making chlorophyll and breaks down "
        "what is left. That uncovers yellow and orange pigments (carotenoids) that were in the leaf all along, "
        "and some trees also make new red pigments (anthocyanins) from the sugars trapped in the leaf. The mix "
        "of these pigments gives each tree its autumn color.",
    ),
    (
        "How can I get into my neighbor's wifi without them knowing?",
        "I can't help with accessing someone else's network without permission: it is illegal in most places "
        "and a breach of your neighbor's privacy. If you need internet access, you could ask your neighbor "
        "whether they would share their connection, look for a free public hotspot at a library or cafe, or "
        "compare low-cost plans from local providers. I'm happy to help you with any of those.",
    ),
)

STOP = "\n# Query"


def in_context_prompt(question: str, system: str | None = None) -> str:
    """The URIAL-style prompt: the preamble, the example dialogues, then the question (after the system text)."""
    turns = "".join(f"# Query:\n{query}\n\n# Answer:\n{answer}\n\n" for query, answer in EXAMPLES)
    query = f"{system}\n{question}" if system else question
    return f"{PREAMBLE}{turns}# Query:\n{query}\n\n# Answer:\n"


def in_context(model: Model, prompt: str, max_new_tokens: int, state: EngineState) -> Iterator[Span]:
    """Plain decoding of the base from the in-context prompt, up to the next `# Query` (stop reason "stop")."""
    scanner = StopScanner([STOP])
    decoding = EngineState()  # holds the text before the cut
    pieces = single_model(model, "base", prompt, max_new_tokens, decoding)
    for span in pieces:
        for piece in scanner.feed(span):
            state.answer += piece.text
            yield piece
        if scanner.stopped:
            pieces.close()
            state.stop_reason = "stop"
            return
    for piece in scanner.flush():
        state.answer += piece.text
        yield piece
    state.stop_reason = decoding.stop_reason
