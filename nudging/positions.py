"""The base positions of a text that follows a prompt: where, token by token in the base's own tokenization,
the base predicts the text's next piece. Calibration reads a nudger's answer at these positions, and the window
rule (NUDGING_SPEC.md, "Window switch") reads a lookahead at them."""

from __future__ import annotations

from nudging.backends.interface import Model
from nudging.pieces import IncrementalDetokenizer


def answer_targets(base: Model, base_prompt: str, answer: str, ended: bool) -> list[tuple[str, str | None]]:
    """(text before the position, the answer's next base-token piece there, or None for EOS) for every base
    position of `answer` after `base_prompt`. Positions inside a multi-byte character are left out."""
    prompt_ids = base.tokenize(base_prompt)
    full = base_prompt + answer
    ids = base.tokenize(full)
    start = 0
    while start < min(len(prompt_ids), len(ids)) and prompt_ids[start] == ids[start]:
        start += 1
    start = max(start, 1)  # a position needs at least one token before it
    detokenizer = IncrementalDetokenizer(base.tokenizer, ids[:start])
    pieces = [detokenizer.push(ids[: j + 1]) for j in range(start, len(ids))]
    written = "".join(pieces)
    if not full.endswith(written) or len(written) < len(answer):
        return []  # a decoder that does not give back the text: nothing to compare against
    targets: list[tuple[str, str | None]] = []
    cut = len(full) - len(written)
    previous_whole = True
    for piece in pieces:
        if piece and previous_whole:
            targets.append((full[:cut], piece))
        previous_whole = bool(piece)
        cut += len(piece)
    if ended:
        targets.append((full, None))
    return targets
