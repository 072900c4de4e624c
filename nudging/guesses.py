"""The nudger guesses the base's next token during a base stage, where that pays (a base much larger than its
nudger, both local): speculative decoding with the small model as the drafter, inside nudging.

In a base stage the base writes greedily, one forward pass per token. Before each pass the nudger (a tenth of the
base's size at the paper's ratio) writes its own next token after the same answer, and the base's pass feeds it
as a guess: where the base goes on to write it, the token after it is already computed, and a pass of two tokens
costs about what a pass of one does on a CPU (nudging.backends.cpu_linear). The base still chooses every token
from its own logits, so the answer is the spec's. The nudger's passes count in its own work figures, and they
are not wasted: where the stage ends, the nudger's next lookahead starts from positions it has computed.
"""

from __future__ import annotations

from typing import Callable

from nudging.backends.interface import Model

GUESS_SIZE_RATIO = 4.0  # the base has at least this many times the nudger's parameters (demo pair: 2, off)


def nudger_guesser(nudger: Model, base_prompt: str, nudger_prompt: str) -> Callable[[str], str]:
    """base run text (base_prompt + answer) -> the nudger's next token's text after that answer ("" at its EOS)."""
    def guess(run_text: str) -> str:
        if not run_text.startswith(base_prompt):
            return ""
        text, _ = nudger.greedy(nudger_prompt + run_text[len(base_prompt):], 1)
        return text

    return guess


def offer_nudger_guesses(base: Model, nudger: Model, base_prompt: str, nudger_prompt: str,
                         min_ratio: float | None = None) -> bool:
    """Let the base read the nudger's guesses for this generation where it takes them (a local base) and it pays
    (both local, a greedy nudger, the base at least `min_ratio` (default GUESS_SIZE_RATIO) times the nudger's
    size); returns whether it does."""
    base_size, nudger_size = getattr(base, "parameter_count", None), getattr(nudger, "parameter_count", None)
    if not hasattr(base, "guesser") or not base_size or not nudger_size:
        return False
    if not getattr(getattr(nudger, "sampler", None), "greedy", False):
        return False  # a sampling nudger would draw its guesses from the random stream its own tokens come from
    if base_size < (GUESS_SIZE_RATIO if min_ratio is None else min_ratio) * nudger_size:
        return False
    base.guesser = nudger_guesser(nudger, base_prompt, nudger_prompt)
    return True
