"""A local Hugging Face causal LM behind the small interface the engine needs.

One `LocalModel` owns one tokenizer, one model and one KV cache. The cache holds the ids of the last forward
pass; any new request keeps the longest common prefix of those ids and prefills only the rest, so a new run on
re-tokenized text, a run that extends its own ids, and a batch of word-boundary queries all reuse it.

Beside the KV cache it keeps the next-token logits of the latest positions it computed. A run whose ids follow
ids already fed through the model reads them instead of making a pass: the base verifies a draft (the nudger's
lookahead, base-tokenized) in the narrow pass that checks the first word boundary, and a nudger whose next
lookahead repeats tokens of its last one does not compute them again. A pass that computes a run's next logits
also feeds up to three guessed tokens after them (nudging.backends.drafts, or the generation's guesser,
nudging.guesses), which costs little on a CPU (nudging.backends.cpu_linear) and saves the next passes where the
run writes those tokens. Once the engine defers a lookahead's rest, the cache becomes the trunk of a packed cache
whose passes also carry the rests (nudging.backends.lookahead).
"""

from __future__ import annotations

import functools
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterator, Sequence

import torch
from transformers import DynamicCache

from nudging.backends import cpu_linear
from nudging.backends.devices import input_device
from nudging.backends.drafts import DRAFT_TOKENS, Drafts
from nudging.backends.interface import Choice, TokenizedModel, best_strings
from nudging.backends.lookahead import LazyLookaheads, Trunk
from nudging.backends.packed import kept_prefix
from nudging.config import SamplingConfig
from nudging.errors import ContextWindowFull
from nudging.pieces import IncrementalDetokenizer


@dataclass
class ModelCounters:
    """Work done by one model: forward passes, tokens fed through it, rows of next-token logits computed,
    positions whose logits came from an earlier pass instead of a new one, and seconds spent in its passes
    (for a lane, waiting for its packed pass included)."""

    forward_passes: int = 0
    tokens_processed: int = 0
    logit_rows: int = 0
    reused_positions: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


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


class Sampler:
    """How one generation picks a model's next token: argmax, or a draw from softmax(logits / temperature)
    within top_p, with a generator of its own (seeded: reproducible; else freshly random)."""

    def __init__(self, settings: SamplingConfig) -> None:
        self.settings = settings
        self._generator = torch.Generator(device="cpu")
        if settings.seed is not None:
            self._generator.manual_seed(settings.seed)
        else:
            self._generator.seed()

    @property
    def greedy(self) -> bool:
        return self.settings.greedy

    def __call__(self, logits: torch.Tensor) -> int:
        if self.settings.greedy:
            return int(torch.argmax(logits))
        # In float64 and from the top logit down, so that a tiny temperature gives 0 and -inf, never inf - inf.
        shifted = logits.double().cpu() - logits.max().double().cpu()
        probs = torch.softmax(shifted / self.settings.temperature, dim=-1)
        if self.settings.top_p < 1.0:
            sorted_probs, order = torch.sort(probs, descending=True)
            outside = torch.cumsum(sorted_probs, dim=-1) - sorted_probs >= self.settings.top_p
            outside[0] = False  # the most likely token always stays, however small top_p is
            sorted_probs[outside] = 0.0
            return int(order[torch.multinomial(sorted_probs, 1, generator=self._generator)])
        return int(torch.multinomial(probs, 1, generator=self._generator))


class KeptLogits:
    """The next-token logits of a model's latest positions, kept beside its KV cache: position p -> the logits
    after the cached ids[: p + 1]. Valid while those ids stand; the model drops the rest after each pass."""

    def __init__(self) -> None:
        self.rows: dict[int, torch.Tensor] = {}

    def clear(self) -> None:
        self.rows = {}

    def lookup(self, ids: Sequence[int], cached_ids: Sequence[int], first_position: int) -> torch.Tensor | None:
        """The logits logits_from would compute, if an earlier pass over the same ids computed them all."""
        positions = range(first_position, len(ids))
        if not all(p in self.rows for p in positions) or len(ids) > len(cached_ids):
            return None
        if list(cached_ids[: len(ids)]) != list(ids):
            return None
        return torch.stack([self.rows[p] for p in positions])

    def remember(self, logits: torch.Tensor, first_position: int, keep: int, newest: int) -> None:
        """Keep the rows of this pass and those of earlier passes whose ids are still the cached prefix."""
        oldest = max(first_position, newest + 1 - ROWS_KEPT)
        self.rows = {p: row for p, row in self.rows.items() if p < keep and p > newest - ROWS_KEPT}
        fresh = logits[oldest - first_position :]
        if len(fresh) < len(logits):
            fresh = fresh.clone()  # don't hold a long prompt's logits alive through a few views
        for offset, row in enumerate(fresh):
            self.rows[oldest + offset] = row


def top_strings(
    probs: torch.Tensor, ids: Sequence[int], detok: IncrementalDetokenizer, top_k: int, eos_ids: frozenset[int]
) -> tuple[tuple[str, float], ...]:
    """The top_k strings of the next token. EOS, partial characters and repeated strings drop out, so more
    tokens are read until k strings are found (or the vocabulary is used up)."""
    count = 2 * top_k + len(eos_ids)
    while True:
        values, tokens = torch.topk(probs, min(count, probs.shape[-1]))
        strings = best_strings(
            ((detok.peek(ids, int(t)), float(v)) for v, t in zip(values, tokens) if int(t) not in eos_ids), top_k)
        if len(strings) == top_k or count >= probs.shape[-1]:
            return strings
        count *= 4


class LocalModel(LazyLookaheads, TokenizedModel):
    """A causal LM with its tokenizer and a KV cache that is reused across runs."""

    full_distribution = True

    def __init__(self, model: Any, tokenizer: Any, *, name: str = "model", sampling: SamplingConfig | None = None,
                 draft_tokens: int = DRAFT_TOKENS):
        self.model = model.eval()
        cpu_linear.install(self.model)
        self.tokenizer = tokenizer
        self.name = name
        self.sampling = sampling or SamplingConfig()
        self.eos_ids = eos_token_ids(model, tokenizer)
        self.context_length = context_length(model)
        self.counters = ModelCounters()
        self.sampler = Sampler(self.sampling)
        self._cache: DynamicCache | None = None
        self._cached_ids: list[int] = []
        self._kept = KeptLogits()
        self._trunk: Trunk | None = None  # the cache as a packed trunk, once a lookahead's rest was deferred
        self.draft_tokens = draft_tokens  # guessed tokens fed after a run's last one (nudging.backends.drafts)
        self.drafts = Drafts()
        self.guesser: Callable[[str], str] | None = None  # run text -> a guess at what follows, this generation

    @functools.cached_property
    def device(self) -> torch.device:
        return input_device(self.model)

    @functools.cached_property
    def parameter_count(self) -> int:
        return sum(parameter.numel() for parameter in self.model.parameters())

    def replica(self) -> "LocalModel":
        """Another LocalModel over the same weights and tokenizer (a fast tokenizer is only read), with a cache
        of its own."""
        return LocalModel(self.model, self.tokenizer, name=self.name, sampling=self.sampling,
                          draft_tokens=self.draft_tokens)

    def finish(self) -> None:
        """Nothing to release at the end of a generation (the KV cache is kept for the next one)."""

    def start_generation(self, sampling: SamplingConfig | None, max_tokens: int) -> None:
        """A new answer: its sampler starts (from its seed, if it has one), and logits kept from earlier answers
        are dropped, so that each answer pays for its own passes (the KV cache of a shared prompt is reused)."""
        self._kept.clear()
        self.drafts.clear()
        self.drop_rests()
        self.guesser = None  # a method that has a cheap guesser offers it after this (nudging.guesses)
        self.sampler = Sampler(sampling or self.sampling)

    # --- forward passes with the cache ----------------------------------------------------------------------
    def logits_from(self, ids: Sequence[int], first_position: int,
                    guess: Callable[[], list[int]] | None = None) -> torch.Tensor:
        """Next-token logits after ids[:p+1] for every p from `first_position` to the end, shape [n, vocab].

        Keeps the cached prefix that `ids` shares with the last pass (but recomputes from `first_position` at
        the latest) and feeds only the rest through the model. Where it makes a pass, the tokens `guess()`
        returns ride along after `ids`, and their logits are kept for a run that goes on to write them.
        """
        if self.context_length is not None and len(ids) > self.context_length:
            raise ContextWindowFull(f"{self.name}: {len(ids)} tokens exceed the context of {self.context_length}")
        known = self._known_rows(ids, first_position)
        if known is not None:
            self.counters.reused_positions += len(known)
            return known
        rows = len(ids) - first_position
        if guess is not None:
            ids = list(ids) + guess()
        keep = kept_prefix(self._cached_ids, ids, first_position)
        started = time.perf_counter()
        try:
            logits = self._forward(ids, keep, len(ids) - first_position)
        except BaseException:
            self._cache, self._cached_ids, self._trunk = None, [], None
            self._kept.clear()
            raise
        self._cached_ids = list(ids)
        self.counters.seconds += time.perf_counter() - started
        self.counters.forward_passes += 1
        self.counters.tokens_processed += len(ids) - keep
        self.counters.logit_rows += len(logits)
        self._kept.remember(logits, first_position, keep, len(ids) - 1)
        return logits[:rows]

    def _known_rows(self, ids: Sequence[int], first_position: int) -> torch.Tensor | None:
        return self._kept.lookup(ids, self._cached_ids, first_position)

    def _forward(self, ids: Sequence[int], keep: int, logits: int) -> torch.Tensor:
        """One pass: keep the first `keep` cached positions, feed the rest of `ids`, return the next-token logits
        of the last `logits` positions, in float32."""
        if self._trunk is not None:
            room = max(0, cpu_linear.SKINNY_ROWS - (len(ids) - keep))  # rows that ride along for free
            return self._trunk.forward(ids, keep, logits, room)
        if self._cache is None or keep == 0:
            self._cache = DynamicCache()
        elif keep < len(self._cached_ids):
            self._cache.crop(keep - len(self._cached_ids))
        new_ids = torch.tensor([list(ids[keep:])], dtype=torch.long, device=self.device)
        with torch.inference_mode():
            output = self.model(input_ids=new_ids, cache=self._cache, use_cache=True, logits_to_keep=logits)
        return output.logits[0].float()

    def choose(self, logits: torch.Tensor, ids: Sequence[int], detok: IncrementalDetokenizer, top_k: int = 0) -> Choice:
        """Top-1 probability of one position's logits and the token this generation writes there (and with
        top_k, the most likely next strings)."""
        probs = torch.softmax(logits, dim=-1)
        top_prob, top_token = torch.max(probs, dim=-1)
        token = int(top_token) if self.sampler.greedy else self.sampler(logits)
        alternatives = top_strings(probs, ids, detok, top_k, self.eos_ids) if top_k else ()
        return Choice(token, float(top_prob), detok.peek(ids, token), token in self.eos_ids, alternatives, probs)

    # --- runs -----------------------------------------------------------------------------------------------
    def start_run(self, text: str, top_k: int = 0) -> "LocalRun":
        return LocalRun(self, self.tokenize(text), top_k, text=text)

    def greedy(self, text: str, max_tokens: int) -> tuple[str, bool]:
        """greedy(x, n) of the spec: a run of at most n tokens from `text`; returns (its text, hit EOS)."""
        run = self.start_run(text)
        pieces: list[str] = []
        for _ in range(max_tokens):
            choice = run.next_choice()
            if choice.is_eos:
                return "".join(pieces), True
            pieces.append(run.append(choice))
        return "".join(pieces), False

    def choices_at_prefixes(self, texts: Sequence[str], draft: str | None = None,
                            top_k: int = 0) -> Iterator[tuple["LocalRun", Choice]]:
        """The next token after each text, in order, for texts that extend one another.

        Where a shorter text's tokenization is a prefix of the longest one's, its answer comes from a single
        forward pass over the longest; the others each take one extra pass, made only when reached. A `draft`
        (a text the others lead into) is fed in the same pass where they align with it, so that a run which
        goes on to write it finds its logits computed. With top_k, each choice carries the k most likely strings.
        """
        return prefix_choices(self, texts, draft, top_k)

    def plain_decode(self, text: str, max_tokens: int) -> int:
        """transformers' cached `generate`, greedy: the base-only reference bench times nudging against."""
        inputs = self.tokenizer(text, return_tensors="pt").to(self.device)
        eos = sorted(self.eos_ids)
        with torch.inference_mode():
            output = self.model.generate(
                **inputs, max_new_tokens=max_tokens, do_sample=False, temperature=None, top_p=None, top_k=None,
                eos_token_id=eos, pad_token_id=eos[0] if eos else None,
            )
        new = output[0, inputs["input_ids"].shape[1] :].tolist()
        return sum(1 for token in new if token not in self.eos_ids)


def prefix_choices(model: LocalModel, texts: Sequence[str], draft: str | None,
                   top_k: int = 0) -> Iterator[tuple["LocalRun", Choice]]:
    """LocalModel.choices_at_prefixes (here to keep the class short).

    The texts that align with the longest tokenization are answered lazily, in at most two passes: the first
    covers the first text and rides on only as far as the pass stays narrow (cpu_linear.SKINNY_ROWS new tokens);
    a caller that reads on (the engine stops at the first word where the base takes over) gets the rest from one
    pass over all of them. A narrow pass costs what a one-token pass does, a wide one two to four times that."""
    token_ids = [model.tokenize(text) for text in texts]
    passes = token_ids + ([model.tokenize(draft)] if draft is not None else [])
    fitting = [ids for ids in passes if model.context_length is None or len(ids) <= model.context_length]
    longest = fitting[-1] if fitting else []
    if draft is not None and longest is passes[-1] and longest[: len(token_ids[-1])] != token_ids[-1]:
        longest = fitting[-2] if len(fitting) >= 2 else []  # the draft tokenizes apart from the texts
    aligned = [bool(longest) and len(ids) <= len(longest) and longest[: len(ids)] == ids for ids in token_ids]
    needed = max((len(ids) for ids, ok in zip(token_ids, aligned) if ok), default=0)
    passes_made = 0

    def ride_along(ids: list[int]) -> list[int]:
        """The tokens of `longest` fed after `ids` in a pass for its row (called only where one is made): a
        narrow draft the first time, then every text still to come (and a narrow draft after the last)."""
        nonlocal passes_made
        passes_made += 1
        kept = kept_prefix(model._cached_ids, ids, len(ids) - 1)
        end = kept + cpu_linear.SKINNY_ROWS if passes_made == 1 else max(needed, kept + cpu_linear.SKINNY_ROWS)
        return longest[len(ids) : max(len(ids), end)]

    for text, ids, ok in zip(texts, token_ids, aligned):
        run = LocalRun(model, ids, text=text)
        if ok:
            logits = model.logits_from(ids, len(ids) - 1, guess=lambda: ride_along(ids))[0]
        else:
            logits = model.logits_from(ids, len(ids) - 1)[0]
        yield run, model.choose(logits, ids, run.detokenizer, top_k)


class LocalRun:
    """One run of the spec: starts from a canonical tokenization, then extends its own ids."""

    def __init__(self, model: LocalModel, ids: list[int], top_k: int = 0, *, text: str = "") -> None:
        self.model = model
        self.ids = ids
        self.top_k = top_k
        self.text = text  # the run's text: what it started from, then its pieces
        self.detokenizer = IncrementalDetokenizer(model.tokenizer, ids)
        model.drafts.add(ids)

    def next_logits(self) -> torch.Tensor:
        """The logits after the run's ids: kept from an earlier pass, or from a pass that also feeds a few guessed
        tokens, so that the next ones are there if the run goes on to write them."""
        return self.model.logits_from(self.ids, len(self.ids) - 1, guess=self._guess)[0]

    def _guess(self) -> list[int]:
        """Tokens that may come next: the generation's guesser's text (nudging.guesses), else earlier n-grams
        (nudging.backends.drafts). Only the pass's width depends on them, never the run's tokens."""
        model = self.model
        room = model.guess_room() if model.context_length is None else min(
            model.guess_room(), model.context_length - len(self.ids))
        if room <= 0:
            return []
        guessed: list[int] = []
        if model.guesser is not None and (text := model.guesser(self.text)):
            guessed = model.tokenizer(text, add_special_tokens=False)["input_ids"][:room]
        return guessed + model.drafts.guess(list(self.ids) + guessed, room - len(guessed))

    def next_choice(self) -> Choice:
        return self.model.choose(self.next_logits(), self.ids, self.detokenizer, self.top_k)

    def append(self, choice: Choice) -> str:
        return self.append_token(choice.token)

    def append_token(self, token: int) -> str:
        """Extend the run by `token`; returns its piece."""
        self.ids.append(token)
        piece = self.detokenizer.push(self.ids)
        self.text += piece
        return piece
