"""What the engine needs of a model, and nothing else: the `Model` and `Run` protocols and `Choice`.

Local models (`nudging.backends.local`, `batch`) and models on a server (`nudging.backends.remote`) implement
it. This module imports no torch, so the remote backend and anything that only talks to servers stay light.

Per-generation settings (how to sample, the answer budget) are handed to `start_generation` at the start of
each generation; a model is used by one generation at a time (`replica()` gives another one over the same
weights or server).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Protocol, Sequence

from nudging.config import SamplingConfig
from nudging.errors import InvalidArgumentError, PromptTooLongError


@dataclass(frozen=True)
class Choice:
    """The next token of a run: its id (None on a server, which keeps its ids), the top-1 probability, its piece.

    For a run started with top_k, `alternatives` holds the k most likely next strings with their probabilities,
    most likely first, one entry per string; EOS and pieces that end inside a character are left out.
    `distribution`: the whole next-token distribution (a local model's probabilities, a 1-d tensor; None from a
    server), read only by the acceptance rules that need it (nudging.rules).
    """

    token: int | None
    top1_prob: float
    piece: str
    is_eos: bool
    alternatives: tuple[tuple[str, float], ...] = ()
    distribution: Any = field(default=None, compare=False, repr=False)


class Run(Protocol):
    """One run of the spec: starts from the canonical tokenization of a text, then extends its own tokens."""

    def next_choice(self) -> Choice: ...
    def append(self, choice: Choice) -> str:
        """Extend the run by the token of `choice` (the last `next_choice`); returns its piece."""


class Lookahead:
    """Spec step 1's `greedy(x, L)`, computed as far as it has been read. `text`: the tokens' pieces so far;
    `ended`: the model's EOS came (the text is final); `complete`: nothing more is to come (EOS, or L tokens).
    This one was computed whole at once; a local model's (nudging.backends.local.RunLookahead) computes a token per
    `extend`, and the model's `settle` completes several together."""

    def __init__(self, text: str = "", ended: bool = False) -> None:
        self.text = text
        self.ended = ended

    @property
    def complete(self) -> bool:
        return True

    def extend(self) -> None:
        """Compute the next token (only while not complete)."""
        raise ValueError("this lookahead is complete")

    def read(self, tokens: int) -> None:
        """Compute up to `tokens` more tokens (fewer where it completes first)."""
        for _ in range(tokens):
            if self.complete:
                return
            self.extend()

    def finish(self) -> None:
        while not self.complete:
            self.extend()


class Counters(Protocol):
    def to_dict(self) -> dict[str, int]: ...


class Model(Protocol):
    """A model as the engine and the baselines use it."""

    name: str
    tokenizer: Any
    sampling: SamplingConfig  # the model's default; a generation may bring its own
    context_length: int | None
    counters: Counters
    full_distribution: bool  # gives whole next-token distributions (local), not only top-k logprobs (a server)

    def tokenize(self, text: str) -> list[int]: ...
    def count_tokens(self, text: str) -> int: ...
    def check_prompt_fits(self, text: str, what: str) -> None: ...
    def replica(self) -> "Model": ...
    def start_generation(self, sampling: SamplingConfig | None, max_tokens: int) -> None:
        """A new generation starts: sample with `sampling` (None: the model's default) and write at most
        `max_tokens` answer tokens."""
    def finish(self) -> None: ...
    def greedy(self, text: str, max_tokens: int) -> tuple[str, bool]: ...
    def lookahead(self, text: str, max_tokens: int, lazy: bool = False) -> Lookahead:
        """greedy(text, max_tokens); `lazy`: computed as far as it is read, where the model can."""
    def defer(self, lookahead: Lookahead) -> None:
        """The rest of this lookahead may be computed alongside the model's later work."""
    def settle(self, lookaheads: Sequence[Lookahead]) -> None:
        """Complete these lookaheads of this model."""
    def start_run(self, text: str, top_k: int = 0) -> Run: ...
    def choices_at_prefixes(self, texts: Sequence[str], draft: str | None = None,
                            top_k: int = 0) -> Iterator[tuple[Run, Choice]]:
        """The next token after each text, in order (with top_k: each choice's `alternatives`)."""
    def plain_decode(self, text: str, max_tokens: int) -> int:
        """The base-only reference: greedy decoding the fastest way this backend knows; returns the answer's
        token count (bench times it)."""


def best_strings(candidates: Iterable[tuple[str, float]], top_k: int) -> tuple[tuple[str, float], ...]:
    """The top_k strings by probability from (string, probability) pairs, most likely first; a string that
    several tokens write keeps its highest probability (as the top_logprobs of OpenAI-style servers do)."""
    best: dict[str, float] = {}
    for string, prob in candidates:
        if string and prob > best.get(string, -1.0):
            best[string] = prob
    return tuple(sorted(best.items(), key=lambda item: item[1], reverse=True)[:top_k])


def start_ids(tokenizer: Any, label: str) -> list[int]:
    """Where a run on an empty prompt starts: at the beginning of a document, as OpenAI's completions read an
    empty prompt. That is the tokenizer's BOS token, or for a tokenizer without one its EOS token, which ends
    the previous document (GPT-2's <|endoftext|> is both)."""
    for token in (getattr(tokenizer, "bos_token_id", None), getattr(tokenizer, "eos_token_id", None)):
        if token is not None:
            return [int(token)]
    raise InvalidArgumentError(f"the prompt is empty, and {label}'s tokenizer has no BOS or EOS token to start "
                               "from: give a prompt")


class TokenizedModel:
    """Text <-> ids with the model's own tokenizer (held locally also for a remote model)."""

    name: str
    tokenizer: Any
    context_length: int | None

    @property
    def label(self) -> str:
        return self.name

    def tokenize(self, text: str) -> list[int]:
        """Canonical tokenization that starts a run: the tokenizer's default special tokens included. Text that
        gives no token at all (an empty prompt, on a tokenizer that adds no BOS) starts from `start_ids`."""
        return list(self.tokenizer(text)["input_ids"]) or start_ids(self.tokenizer, self.label)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def lookahead(self, text: str, max_tokens: int, lazy: bool = False) -> Lookahead:
        """The whole greedy(text, max_tokens) at once (a server writes it in one request)."""
        written, ended = self.greedy(text, max_tokens)  # type: ignore[attr-defined]
        return Lookahead(written, ended)

    def defer(self, lookahead: Lookahead) -> None:
        """Nothing to do alongside: `settle` completes it."""

    def settle(self, lookaheads: Sequence[Lookahead]) -> None:
        for lookahead in lookaheads:
            lookahead.finish()

    def check_prompt_fits(self, text: str, what: str) -> None:
        if self.context_length is None:
            return
        length = len(self.tokenize(text))
        if length >= self.context_length:
            raise PromptTooLongError(
                f"{what} is {length} tokens long, but {self.label} has a context window of "
                f"{self.context_length} tokens and needs room for at least one new token"
            )
