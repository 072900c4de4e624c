"""How the pair's relative cost shapes the work, both models local: the nudger guesses the base's next token in
base stages, and it reads its lookahead only as far as its nudge (after a first few tokens read at once).

Guesses: speculative decoding with the small model as the drafter, inside nudging. In a base stage the base writes
greedily, one forward pass per token. Before each pass the nudger writes its own next token after the same answer,
and the base's pass feeds it (and the earlier n-grams that follow it, nudging.backends.drafts) as guesses: where
the base goes on to write them, the tokens after them are already computed, and a pass of up to four tokens costs
about what a pass of one does on a CPU (nudging.backends.cpu_linear). The base still chooses every token from its
own logits, so the answer is the spec's. The nudger's passes count in its own work figures, and they are not
wasted: they carry the rests of earlier lookaheads (nudging.backends.lookahead), and where the stage ends, the
nudger's next lookahead starts from positions it has computed.

Reading lazily pays where a nudger pass costs much next to a base pass (the demo pair, 2:1 in parameters). Where
the base is many times the nudger's size (the 11:1 ratio pair), the nudger first reads READ_FIRST_TOKENS of each
lookahead: where its EOS comes that soon (the answer's last round, as a rule), the round ends at once instead of
the base writing a stage that the rest's EOS later takes back, a stage of base passes saved for a few nudger
passes. Measured in docs/speed.md.
"""

from __future__ import annotations

from typing import Any, Callable

from nudging.backends.drafts import DRAFT_TOKENS
from nudging.backends.interface import Model
from nudging.pieces import CONTEXT_TOKENS, decode, is_complete, text_after

GUESS_SIZE_RATIO = 1.5  # the base has at least this many times the nudger's parameters (demo pair: 2, ratio pair: 11)
LAZY_SIZE_RATIO = 4.0  # from this ratio on, READ_FIRST_TOKENS are read before the base's first check (ratio pair)
READ_FIRST_TOKENS = 8  # ratio pair: 7 to 9 trade base for nudger passes at about one time cost (docs/speed.md)


def nudger_guesser(nudger: Model, base_prompt: str, nudger_prompt: str) -> Callable[[str], str]:
    """base run text (base_prompt + answer) -> the nudger's next token's text after that answer and the tokens that
    followed it before ("" at its EOS)."""
    def guess(run_text: str) -> str:
        if not run_text.startswith(base_prompt):
            return ""
        return _continuation(nudger, nudger_prompt + run_text[len(base_prompt):], DRAFT_TOKENS)

    return guess


def _continuation(nudger: Any, text: str, max_tokens: int) -> str:
    """A local nudger's next token after `text` (one pass) and the tokens that followed it earlier in this
    generation's runs (nudging.backends.drafts), at most `max_tokens` in all, as text ("" at its EOS)."""
    run = nudger.start_run(text)
    choice = run.next_choice()
    if choice.is_eos:
        return ""
    ids = run.ids + [choice.token]
    ids += nudger.drafts.guess(ids, max_tokens - 1)
    before = run.ids[-CONTEXT_TOKENS:]
    guessed = decode(nudger.tokenizer, before + ids[len(run.ids):])
    return text_after(guessed, decode(nudger.tokenizer, before)) if is_complete(guessed) else choice.piece


def size_ratio(base: Model, nudger: Model) -> float | None:
    """The base's parameters per parameter of the nudger, where both are local models (None otherwise)."""
    base_size, nudger_size = getattr(base, "parameter_count", None), getattr(nudger, "parameter_count", None)
    return base_size / nudger_size if base_size and nudger_size else None


def tokens_read_first(base: Model, nudger: Model) -> int | None:
    """How many tokens of each lookahead the engine reads before the base's first word check, reading the rest only
    as far as the nudge (nudging.backends.lookahead): both local, none below LAZY_SIZE_RATIO, READ_FIRST_TOKENS
    from it on; None (the whole lookahead at once) where a model is not local."""
    ratio = size_ratio(base, nudger)
    if ratio is None:
        return None
    return 0 if ratio < LAZY_SIZE_RATIO else READ_FIRST_TOKENS


def offer_nudger_guesses(base: Model, nudger: Model, base_prompt: str, nudger_prompt: str,
                         min_ratio: float | None = None) -> bool:
    """Let the base read the nudger's guesses for this generation where it takes them (a local base) and it pays
    (both local, a greedy nudger, the base at least `min_ratio` (default GUESS_SIZE_RATIO) times the nudger's
    size); returns whether it does."""
    ratio = size_ratio(base, nudger)
    if not hasattr(base, "guesser") or ratio is None:
        return False
    if not getattr(getattr(nudger, "sampler", None), "greedy", False):
        return False  # a sampling nudger would draw its guesses from the random stream its own tokens come from
    if ratio < (GUESS_SIZE_RATIO if min_ratio is None else min_ratio):
        return False
    base.guesser = nudger_guesser(nudger, base_prompt, nudger_prompt)
    return True
