"""A local Hugging Face causal LM behind the small interface the engine needs.

One `LocalModel` owns one tokenizer, one model and one KV cache. The cache holds the ids of the last forward
pass; any new request keeps the longest common prefix of those ids and prefills only the rest, so a new run on
re-tokenized text, a run that extends its own ids, and a batch of word-boundary queries all reuse it.

Beside the KV cache it keeps the next-token logits of the latest positions it computed. A run whose ids follow
ids already fed through the model reads them instead of making a pass: the base verifies a draft (the nudger's
lookahead, base-tokenized) in the one pass that checks the word boundaries, and a nudger whose next lookahead
repeats tokens of its last one does not compute them again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Protocol, Sequence

import torch
from transformers import DynamicCache

from nudging.config import SamplingConfig
from nudging.errors import ContextWindowFull, PromptTooLongError
from nudging.pieces import IncrementalDetokenizer


@dataclass
class ModelCounters:
    """Work done by one model: forward passes, tokens fed through it, and positions whose next-token logits
    came from an earlier pass instead of a new one."""

    forward_passes: int = 0
    tokens_processed: int = 0
    reused_positions: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"forward_passes": self.forward_passes, "tokens_processed": self.tokens_processed,
                "reused_positions": self.reused_positions}


@dataclass(frozen=True)
class Choice:
    """The next token of a run: the token chosen (argmax when greedy), the top-1 probability, its piece.

    For a run started with top_k, `alternatives` holds the k most likely next strings with their probabilities,
    most likely first, one entry per string; EOS and pieces that end inside a character are left out.
    """

    token: int
    top1_prob: float
    piece: str
    is_eos: bool
    alternatives: tuple[tuple[str, float], ...] = ()


def best_strings(candidates: Iterable[tuple[str, float]], top_k: int) -> tuple[tuple[str, float], ...]:
    """The top_k strings by probability from (string, probability) pairs, most likely first; a string that
    several tokens write keeps its highest probability (as the top_logprobs of OpenAI-style servers do)."""
    best: dict[str, float] = {}
    for string, prob in candidates:
        if string and prob > best.get(string, -1.0):
            best[string] = prob
    return tuple(sorted(best.items(), key=lambda item: item[1], reverse=True)[:top_k])


ROWS_KEPT = 128  # next-token logits kept per model, for the latest positions (a lookahead and a stage fit)


def eos_token_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    """EOS = every id in the generation config's eos_token_id plus the tokenizer's eos_token_id (spec)."""
    ids: set[int] = set()
    generation_config = getattr(model, "generation_config", None)
    configured = getattr(generation_config, "eos_token_id", None) if generation_config is not None else None
    if isinstance(configured, int):
        ids.add(configured)
    elif configured is not None:
        ids.update(int(i) for i in configured)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return frozenset(ids)


def context_length(model: Any) -> int | None:
    config = model.config
    for name in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


class Model(Protocol):
    """What the engine needs of a model: LocalModel here, RemoteModel (nudging.remote) over HTTP."""

    name: str
    tokenizer: Any
    sampling: SamplingConfig
    context_length: int | None

    def count_tokens(self, text: str) -> int: ...
    def check_prompt_fits(self, text: str, what: str) -> None: ...
    def start_generation(self) -> None: ...
    def finish(self) -> None: ...
    def greedy(self, text: str, max_tokens: int) -> tuple[str, bool]: ...
    def start_run(self, text: str, top_k: int = 0) -> Any: ...
    def choices_at_prefixes(self, texts: Sequence[str], draft: str | None = None) -> Iterator[tuple[Any, Choice]]: ...


class TokenizedModel:
    """Text <-> ids with the model's own tokenizer (held locally also for a remote model)."""

    name: str
    tokenizer: Any
    context_length: int | None

    @property
    def label(self) -> str:
        return self.name

    def tokenize(self, text: str) -> list[int]:
        """Canonical tokenization that starts a run: the tokenizer's default special tokens included."""
        return list(self.tokenizer(text)["input_ids"])

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def check_prompt_fits(self, text: str, what: str) -> None:
        if self.context_length is None:
            return
        length = len(self.tokenize(text))
        if length >= self.context_length:
            raise PromptTooLongError(
                f"{what} is {length} tokens long, but {self.label} has a context window of "
                f"{self.context_length} tokens and needs room for at least one new token"
            )


class LocalModel(TokenizedModel):
    """A causal LM with its tokenizer and a KV cache that is reused across runs."""

    def __init__(self, model: Any, tokenizer: Any, *, name: str = "model", sampling: SamplingConfig | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.sampling = sampling or SamplingConfig()
        self.eos_ids = eos_token_ids(model, tokenizer)
        self.context_length = context_length(model)
        self.counters = ModelCounters()
        self._generator = torch.Generator(device="cpu")
        self.reset_sampling()
        self._cache: DynamicCache | None = None
        self._cached_ids: list[int] = []
        self._rows: dict[int, torch.Tensor] = {}  # position p -> next-token logits after _cached_ids[: p + 1]

    @property
    def device(self) -> torch.device:
        return self.model.device

    def finish(self) -> None:
        """Nothing to release at the end of a generation (the KV cache is kept for the next one)."""

    def start_generation(self) -> None:
        """A new answer: the sampler restarts, and logits kept from earlier answers are dropped, so that each
        answer pays for its own passes (the KV cache of a shared prompt is still reused)."""
        self._rows = {}
        self.reset_sampling()

    def reset_sampling(self) -> None:
        """Restart the sampler: from its seed (reproducible), or from a fresh random seed when none is set."""
        if self.sampling.seed is not None:
            self._generator.manual_seed(self.sampling.seed)
        else:
            self._generator.seed()

    # --- forward passes with the cache ----------------------------------------------------------------------
    def logits_from(self, ids: Sequence[int], first_position: int) -> torch.Tensor:
        """Next-token logits after ids[:p+1] for every p from `first_position` to the end, shape [n, vocab].

        Keeps the cached prefix that `ids` shares with the last pass (but recomputes from `first_position` at
        the latest) and feeds only the rest through the model.
        """
        if self.context_length is not None and len(ids) > self.context_length:
            raise ContextWindowFull(f"{self.name}: {len(ids)} tokens exceed the context of {self.context_length}")
        known = self._known_rows(ids, first_position)
        if known is not None:
            return known
        keep = 0
        limit = min(len(self._cached_ids), first_position, len(ids) - 1)
        cached = self._cached_ids
        while keep < limit and cached[keep] == ids[keep]:
            keep += 1
        try:
            logits = self._forward(ids, keep, len(ids) - first_position)
        except BaseException:
            self._cache, self._cached_ids, self._rows = None, [], {}
            raise
        self._cached_ids = list(ids)
        self.counters.forward_passes += 1
        self.counters.tokens_processed += len(ids) - keep
        self._remember_rows(logits, first_position, keep)
        return logits

    def _forward(self, ids: Sequence[int], keep: int, logits: int) -> torch.Tensor:
        """One pass: keep the first `keep` cached positions, feed the rest of `ids`, return the next-token logits
        of the last `logits` positions, in float32."""
        if self._cache is None or keep == 0:
            self._cache = DynamicCache()
        elif keep < len(self._cached_ids):
            self._cache.crop(keep - len(self._cached_ids))
        new_ids = torch.tensor([list(ids[keep:])], dtype=torch.long, device=self.device)
        with torch.inference_mode():
            output = self.model(input_ids=new_ids, cache=self._cache, use_cache=True, logits_to_keep=logits)
        return output.logits[0].float()

    def _known_rows(self, ids: Sequence[int], first_position: int) -> torch.Tensor | None:
        """The logits logits_from would compute, if an earlier pass over the same ids computed them all."""
        positions = range(first_position, len(ids))
        if not all(p in self._rows for p in positions) or len(ids) > len(self._cached_ids):
            return None
        if self._cached_ids[: len(ids)] != list(ids):
            return None
        self.counters.reused_positions += len(positions)
        return torch.stack([self._rows[p] for p in positions])

    def _remember_rows(self, logits: torch.Tensor, first_position: int, keep: int) -> None:
        """Keep the rows of this pass and those of earlier passes whose ids are still the cached prefix."""
        newest = len(self._cached_ids) - 1
        oldest = max(first_position, newest + 1 - ROWS_KEPT)
        self._rows = {p: row for p, row in self._rows.items() if p < keep and p > newest - ROWS_KEPT}
        fresh = logits[oldest - first_position :]
        if len(fresh) < len(logits):
            fresh = fresh.clone()  # don't hold a long prompt's logits alive through a few views
        for offset, row in enumerate(fresh):
            self._rows[oldest + offset] = row

    def choose(self, logits: torch.Tensor, ids: Sequence[int], detok: IncrementalDetokenizer, top_k: int = 0) -> Choice:
        """Top-1 probability of one position's logits and the token this model writes there (and with top_k,
        the most likely next strings)."""
        probs = torch.softmax(logits, dim=-1)
        top_prob, top_token = torch.max(probs, dim=-1)
        token = int(top_token) if self.sampling.greedy else self.sample(logits)
        alternatives = self._top_strings(probs, ids, detok, top_k) if top_k else ()
        return Choice(token, float(top_prob), detok.peek(ids, token), token in self.eos_ids, alternatives)

    def _top_strings(
        self, probs: torch.Tensor, ids: Sequence[int], detok: IncrementalDetokenizer, top_k: int
    ) -> tuple[tuple[str, float], ...]:
        """The top_k strings of the next token. EOS, partial characters and repeated strings drop out, so more
        tokens are read until k strings are found (or the vocabulary is used up)."""
        count = 2 * top_k + len(self.eos_ids)
        while True:
            values, tokens = torch.topk(probs, min(count, probs.shape[-1]))
            strings = best_strings(
                ((detok.peek(ids, int(t)), float(v)) for v, t in zip(values, tokens) if int(t) not in self.eos_ids),
                top_k,
            )
            if len(strings) == top_k or count >= probs.shape[-1]:
                return strings
            count *= 4

    def sample(self, logits: torch.Tensor) -> int:
        """A token drawn from softmax(logits / temperature), within top_p, with this model's generator."""
        probs = torch.softmax(logits / self.sampling.temperature, dim=-1).cpu()
        if self.sampling.top_p < 1.0:
            sorted_probs, order = torch.sort(probs, descending=True)
            outside = torch.cumsum(sorted_probs, dim=-1) - sorted_probs >= self.sampling.top_p
            sorted_probs[outside] = 0.0
            return int(order[torch.multinomial(sorted_probs, 1, generator=self._generator)])
        return int(torch.multinomial(probs, 1, generator=self._generator))

    # --- runs -----------------------------------------------------------------------------------------------
    def start_run(self, text: str, top_k: int = 0) -> "Run":
        return Run(self, self.tokenize(text), top_k)

    def greedy(self, text: str, max_tokens: int) -> tuple[str, bool]:
        """greedy(x, n) of the spec: a run of at most n tokens from `text`; returns (its text, hit EOS)."""
        run = self.start_run(text)
        pieces: list[str] = []
        for _ in range(max_tokens):
            choice = run.next_choice()
            if choice.is_eos:
                return "".join(pieces), True
            pieces.append(run.append(choice.token))
        return "".join(pieces), False

    def choices_at_prefixes(self, texts: Sequence[str], draft: str | None = None) -> Iterator[tuple["Run", Choice]]:
        """The next token after each text, in order, for texts that extend one another.

        Where a shorter text's tokenization is a prefix of the longest one's, its answer comes from a single
        forward pass over the longest; the others each take one extra pass, made only when reached. A `draft`
        (a text the others lead into) is fed in the same pass where they align with it, so that a run which
        goes on to write it finds its logits computed.
        """
        token_ids = [self.tokenize(text) for text in texts]
        passes = token_ids + ([self.tokenize(draft)] if draft is not None else [])
        fitting = [ids for ids in passes if self.context_length is None or len(ids) <= self.context_length]
        longest = fitting[-1] if fitting else []
        if draft is not None and longest is passes[-1] and longest[: len(token_ids[-1])] != token_ids[-1]:
            longest = fitting[-2] if len(fitting) >= 2 else []  # the draft tokenizes apart from the texts
        aligned = [bool(longest) and len(ids) <= len(longest) and longest[: len(ids)] == ids for ids in token_ids]
        if any(aligned):
            first = min(len(ids) - 1 for ids, ok in zip(token_ids, aligned) if ok)
            shared_logits = self.logits_from(longest, first)
        for ids, ok in zip(token_ids, aligned):
            run = Run(self, ids)
            logits = shared_logits[len(ids) - 1 - first] if ok else self.logits_from(ids, len(ids) - 1)[0]
            yield run, self.choose(logits, ids, run.detokenizer)


class Run:
    """One run of the spec: starts from a canonical tokenization, then extends its own ids."""

    def __init__(self, model: LocalModel, ids: list[int], top_k: int = 0) -> None:
        self.model = model
        self.ids = ids
        self.top_k = top_k
        self.detokenizer = IncrementalDetokenizer(model.tokenizer, ids)

    def next_logits(self) -> torch.Tensor:
        return self.model.logits_from(self.ids, len(self.ids) - 1)[0]

    def next_choice(self) -> Choice:
        return self.model.choose(self.next_logits(), self.ids, self.detokenizer, self.top_k)

    def append(self, token: int) -> str:
        """Extend the run by `token`; returns its piece."""
        self.ids.append(token)
        return self.detokenizer.push(self.ids)
