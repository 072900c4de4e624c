"""A model behind an OpenAI-compatible /v1/completions endpoint, with the interface the engine uses.

The spec's runs map onto requests (NUDGING_SPEC.md, "Tokenization semantics"), so remote answers equal local
ones:
- `greedy(x, n)`, the nudger's lookahead, is one request with max_tokens n; finish_reason "stop" means EOS.
- A base query at a word boundary is the first token of a request streamed from that text with top-1
  logprobs ("per-word"). If the base takes over there, the same stream is the base stage: it is read until the
  first token below gamma and then closed, which tells the server to stop.
- "echo": where the server returns the prompt's logprobs, the word boundaries of one lookahead are checked in
  one request (prompt = the longest query). Queries whose tokens are not a prefix of the longest's, or whose
  top-1 string is ambiguous, are checked per word. The stage is then a stream from the takeover text.
- "chunked" stages, for servers that cannot stream logprobs: 16-token requests, each from the re-tokenized
  text so far, as the authors' code does. That can differ from the spec; stats count the re-tokenizations.

The model's tokenizer is loaded locally (from the model name, or a spec given as `tokenizer`): the nudger
needs its chat template, the base counts the answer budget and aligns echoed tokens with it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Collection, Iterator, Literal, Sequence

from nudging.backends.interface import Choice, TokenizedModel, best_strings
from nudging.config import NudgingConfig, SamplingConfig
from nudging.trace import AUTHORS_CHUNK
from nudging.errors import ContextWindowFull, RemoteError
from nudging.backends.remote.client import CompletionClient, StreamBroken

Protocol = Literal["auto", "echo", "per-word", "chunked"]
PROTOCOLS = ("auto", "echo", "per-word", "chunked")
PROBE_PROMPT = "The capital of France is"
EOS_CHOICE = Choice(None, math.nan, "", True)


@dataclass
class RemoteCounters:
    """Work a remote model was asked for: requests by kind and tokens read back."""

    requests: int = 0  # completion requests, all kinds
    prompt_tokens_sent: int = 0  # prompt tokens of those requests (this model's tokenizer)
    streamed_requests: int = 0
    echo_requests: int = 0  # requests that checked several word boundaries at once
    tokens_received: int = 0  # generated tokens read from responses (including those read past a cut)
    resumed_streams: int = 0  # streams that broke and were asked again, skipping what had been read
    chunked_requests: int = 0  # base requests for 16 tokens at a time (servers that cannot stream logprobs)
    retokenized_chunks: int = 0  # base stage requests that restarted from re-tokenized text (chunked, or max_tokens)
    echo_mismatches: int = 0  # takeover tokens where the stage stream disagreed with the echo

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class Capabilities:
    """What the probe found the server can do, and what its requests cost."""

    served: tuple[str, ...]
    owned_by: str
    context_length: int | None
    logprobs: bool = False
    stream_logprobs: bool = False
    echo_layout: str | None = None  # "aligned": entry i predicts prompt token i; "shifted": entry i follows it
    request_seconds: float = 0.0  # one 1-token request with logprobs
    echo_seconds_per_token: float = math.inf  # extra time per echoed prompt token


@dataclass
class _Token:
    piece: str
    top1_prob: float
    top: dict[str, float] | None = None  # the server's top_logprobs entry


def _top1_prob(logprob: float | None, top: dict[str, float] | None) -> float:
    values = [v for v in (top or {}).values() if v is not None] + ([logprob] if logprob is not None else [])
    return math.exp(max(values)) if values else math.nan


def tokens_of(text: str, logprobs: dict[str, Any] | None, stop_tokens: Collection[str] = ()) -> list[_Token]:
    """The tokens of one response or chunk: each token's piece and top-1 probability.

    Servers may hold back a multi-byte character and send it with a later token, and some drop the bytes of a
    partial character from token strings; where the token strings do not add up to the text, the text goes to
    the last token. `stop_tokens`: for a response that ended by EOS, the special tokens' strings; vLLM lists the
    token it stopped at (its text left out) as the last entry, llama-cpp-python does not, and it is no token of
    the run.
    """
    strings = (logprobs or {}).get("tokens") or []
    values = (logprobs or {}).get("token_logprobs") or [None] * len(strings)
    tops = (logprobs or {}).get("top_logprobs") or [None] * len(strings)
    if strings and strings[-1] in stop_tokens and not text.endswith(strings[-1]):
        strings, values, tops = strings[:-1], values[:-1], tops[:-1]
        if not strings:
            return []
    if not strings:
        return [_Token(text, math.nan)] if text else []
    probs = [_top1_prob(v, t) for v, t in zip(values, tops)]
    pieces = list(strings) if "".join(strings) == text else [""] * (len(strings) - 1) + [text]
    return [_Token(piece, prob, top) for piece, prob, top in zip(pieces, probs, tops)]


class RemoteModel(TokenizedModel):
    """A model on a server, driven through runs like a LocalModel."""

    full_distribution = False  # a server returns top-k logprobs only

    def __init__(
        self,
        client: CompletionClient,
        model: str,
        tokenizer: Any,
        capabilities: Capabilities,
        *,
        name: str = "model",
        sampling: SamplingConfig | None = None,
        protocol: Protocol = "auto",
        extra_body: dict[str, Any] | None = None,
    ) -> None:
        self.client = client
        self.remote_name = model
        self.tokenizer = tokenizer
        self.capabilities = capabilities
        self.name = name
        self.sampling = sampling or SamplingConfig()
        self.protocol = protocol
        # this generation's: how to sample, and max_tokens of a streamed stage (the engine cuts it far earlier)
        self.generation_sampling = self.sampling
        self.stage_tokens = NudgingConfig.max_new_tokens
        self.extra_body = dict(extra_body or {})
        self.context_length = capabilities.context_length
        self.counters = RemoteCounters()
        self.eos_strings = _eos_strings(tokenizer)
        self.special_strings = special_strings(tokenizer)
        self._open: RemoteRun | None = None

    def replica(self) -> "RemoteModel":
        """Another handle on the same server, with its own counters and open stream (one per generation); the
        tokenizer is shared (only read, as on lanes)."""
        return RemoteModel(
            self.client, self.remote_name, self.tokenizer, self.capabilities, name=self.name,
            sampling=self.sampling, protocol=self.protocol, extra_body=self.extra_body,
        )

    @property
    def stage_protocol(self) -> str:
        return "chunked" if self.protocol == "chunked" or not self.capabilities.stream_logprobs else "stream"

    def start_generation(self, sampling: SamplingConfig | None, max_tokens: int) -> None:
        """Sampling happens on the server (its `seed` makes it reproducible): this generation's settings go with
        each request, and a request asks for at most the answer budget."""
        self.generation_sampling = sampling or self.sampling
        self.stage_tokens = max_tokens

    def finish(self) -> None:
        """Close the stream still open at the end of a generation."""
        if self._open is not None:
            self._open.close()
            self._open = None

    @property
    def label(self) -> str:
        return f"{self.name} ({self.remote_name} at {self.client.base_url})"

    # --- requests -------------------------------------------------------------------------------------------
    def stop_tokens(self, choice: dict[str, Any]) -> Collection[str]:
        """What may end a response's token list without being a token of the run (see tokens_of)."""
        return self.special_strings if choice.get("finish_reason") == "stop" else ()

    def body(self, prompt: str, max_tokens: int, **fields: Any) -> dict[str, Any]:
        sampling = self.generation_sampling
        body: dict[str, Any] = {"model": self.remote_name, "prompt": prompt, "max_tokens": max_tokens,
                                "temperature": sampling.temperature, **self.extra_body, **fields}
        if sampling.top_p < 1.0:
            body["top_p"] = sampling.top_p
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        return body

    def _count(self, body: dict[str, Any]) -> None:
        self.counters.requests += 1
        self.counters.prompt_tokens_sent += len(self.tokenize(body["prompt"]))

    def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        self.finish()  # one request at a time per generation: a stream left open is done with
        self._count(body)
        if body.get("echo"):
            self.counters.echo_requests += 1
        return self.client.complete(body)

    def stream(self, body: dict[str, Any], run: "RemoteRun") -> Iterator[dict[str, Any]]:
        if self._open is not run:
            self.finish()
        self._open = run
        self._count(body)
        self.counters.streamed_requests += 1
        return self.client.stream(body)

    # --- the engine's interface -----------------------------------------------------------------------------
    def start_run(self, text: str, top_k: int = 0) -> "RemoteRun":
        """A run for plain decoding (single-model modes): streamed without logprobs, ends at its budget; with
        top_k, streamed with top_k logprobs per token (the text ensemble)."""
        return RemoteRun(self, text, probabilities=top_k > 0, top_k=top_k)

    def greedy(self, text: str, max_tokens: int) -> tuple[str, bool]:
        """greedy(x, n) of the spec in one request; returns (its text, hit EOS)."""
        choice = self.complete(self.body(text, max_tokens))["choices"][0]
        out = choice.get("text") or ""
        self.counters.tokens_received += self.count_tokens(out) if out else 0
        return out, choice.get("finish_reason") == "stop"

    def plain_decode(self, text: str, max_tokens: int) -> int:
        """One completion request: what serving the base without nudging costs."""
        answer, _ = self.greedy(text, max_tokens)
        return self.count_tokens(answer)

    def choices_at_prefixes(
        self, texts: Sequence[str], draft: str | None = None, top_k: int = 0
    ) -> Iterator[tuple["RemoteRun", Choice]]:
        """The base's next token after each text, in order; the engine stops asking at the first takeover,
        whose run continues as the base stage. (The draft is for local models: a server streams the stage.)
        With top_k, each text is its own streamed request with top_k logprobs (an echo reads only the top-1)."""
        known: list[Choice | None] = [None] * len(texts)
        if not top_k and _may_echo(self, texts):
            token_ids = [self.tokenize(text) for text in texts]
            if _echo_pays(self, token_ids):
                known = _echo_choices(self, texts, token_ids)
        for text, choice in zip(texts, known):
            run = RemoteRun(self, text, probabilities=True, expected=choice, top_k=top_k)
            yield run, choice if choice is not None else run.next_choice()


# --- echo: several word boundaries in one request -----------------------------------------------------------
def _may_echo(model: RemoteModel, texts: Sequence[str]) -> bool:
    return len(texts) >= 2 and model.capabilities.echo_layout is not None and model.protocol in ("auto", "echo")


def _echo_pays(model: RemoteModel, token_ids: list[list[int]]) -> bool:
    if model.protocol == "echo":
        return True
    # auto: the cheaper by the probe's timings. Per word, the check that takes over is also the stage.
    caps = model.capabilities
    echo = 2 * caps.request_seconds + len(token_ids[-1]) * caps.echo_seconds_per_token
    per_word = caps.request_seconds * (len(token_ids) + 1) / 2
    return echo < per_word


def _echo_choices(model: RemoteModel, texts: Sequence[str], token_ids: list[list[int]]) -> list[Choice | None]:
    """Choices read from one echoed request; None where a text must be checked with its own request."""
    longest = token_ids[-1]
    aligned = [len(ids) <= len(longest) and longest[: len(ids)] == ids for ids in token_ids]
    payload = model.complete(model.body(texts[-1], 1, echo=True, logprobs=1, temperature=0.0))
    choice = payload["choices"][0]
    rows = _echo_rows(choice.get("logprobs"))
    if rows is None or not _echo_matches(model, rows[0], len(longest), texts[-1]):
        return [None] * len(texts)
    tops = rows[1]
    results: list[Choice | None] = []
    for ids, ok in zip(token_ids, aligned):
        index = len(ids) if model.capabilities.echo_layout == "aligned" else len(ids) - 1
        if not ok:
            results.append(None)
        elif index >= len(tops) or tops[index] is None:
            # After the whole prompt with nothing generated: the top-1 there was EOS.
            generated = (choice.get("text") or "")[len(texts[-1]):]
            ended = index == len(longest) and choice.get("finish_reason") == "stop" and not generated
            results.append(EOS_CHOICE if ended else None)
        else:
            piece, logprob = max(tops[index].items(), key=lambda item: item[1])
            if piece == "":  # EOS or a partial character: ask directly
                results.append(None)
            elif piece in model.eos_strings:
                results.append(Choice(None, math.exp(logprob), "", True))
            else:
                results.append(Choice(None, math.exp(logprob), piece, False))
    return results


def _echo_matches(model: RemoteModel, strings: list[str], count: int, text: str) -> bool:
    """Did the server tokenize the prompt as the local tokenizer did (same count, same text)?"""
    if len(strings) < count:
        return False
    joined = "".join(strings[:count])
    if joined == text:
        return True
    return any(joined.startswith(s) and joined[len(s):] == text for s in model.special_strings)


def _echo_rows(logprobs: dict[str, Any] | None) -> tuple[list[str], list[dict[str, float] | None]] | None:
    if not logprobs or not logprobs.get("tokens") or not logprobs.get("top_logprobs"):
        return None
    return list(logprobs["tokens"]), list(logprobs["top_logprobs"])


def special_strings(tokenizer: Any) -> list[str]:
    """The tokenizer's special tokens as text, longest first."""
    return sorted(set(getattr(tokenizer, "all_special_tokens", []) or []), key=len, reverse=True)


def _eos_strings(tokenizer: Any) -> frozenset[str]:
    eos = getattr(tokenizer, "eos_token", None)
    return frozenset([eos] if eos else [])


class RemoteRun:
    """One spec run on a server: the text it started from, and the tokens read so far in order.

    Tokens come from one stream (or 16-token chunks where logprobs cannot be streamed). A stream that breaks
    is asked again and the tokens already read are skipped, which is exact for greedy decoding.
    """

    def __init__(
        self, model: RemoteModel, text: str, *, probabilities: bool, expected: Choice | None = None, top_k: int = 0
    ):
        self.model = model
        self.text = text
        self.probabilities = probabilities
        self.top_k = top_k
        self.expected = expected  # the echo's choice for the first token, checked when it is read
        self.written = ""  # text of the tokens appended so far
        self._buffer: list[_Token] = []
        self._read = 0  # tokens read from the current request
        self._finish: str | None = None  # the current request's finish reason once it ended
        self._chunks: Iterator[dict[str, Any]] | None = None
        self._appended = 0

    # --- the engine's interface -----------------------------------------------------------------------------
    def next_choice(self) -> Choice:
        token = self._peek()
        if token is None:
            return EOS_CHOICE
        alternatives = ()
        if self.top_k:
            eos = self.model.eos_strings
            alternatives = best_strings(
                ((s, math.exp(v)) for s, v in (token.top or {}).items() if v is not None and s not in eos), self.top_k)
        return Choice(None, token.top1_prob, token.piece, False, alternatives)

    def append(self, choice: Choice) -> str:
        """Extend the run by its next token (the one next_choice returned); returns its piece."""
        next_token = self._peek()
        if next_token is None:
            raise RemoteError(f"{self.model.client.base_url}: the server ended the run where a token was expected")
        if self._appended == 0 and self.expected is not None and next_token.piece != self.expected.piece:
            self.model.counters.echo_mismatches += 1
        self._buffer.pop(0)
        self._appended += 1
        self.written += next_token.piece
        return next_token.piece

    def close(self) -> None:
        if self._chunks is not None:
            self._chunks.close()  # type: ignore[attr-defined]
            self._chunks = None

    # --- reading tokens -------------------------------------------------------------------------------------
    def _peek(self) -> _Token | None:
        """The next token of the run, reading more from the server as needed; None at EOS."""
        while not self._buffer:
            if self._finish is not None and self._finish != "length":
                return None  # EOS (servers say "stop"; anything but "length" ends the run)
            if self._chunks is None or self._finish == "length":
                self._request()
            self._read_chunk()
        return self._buffer[0]

    def _request(self) -> None:
        """Start the run's next request: the first, or a continuation after the last one hit max_tokens."""
        model = self.model
        if self._finish == "length":
            if not self.probabilities:  # plain decoding asked for its whole budget at once
                raise ContextWindowFull(f"{model.name}: the run has used the max_tokens it asked for")
            model.counters.retokenized_chunks += 1
        self.close()
        self._finish, self._read = None, 0
        prompt = self.text + self.written
        if self.probabilities and model.stage_protocol == "chunked":
            self._chunks = self._fetch_chunk(prompt)
        else:
            self._chunks = self._stream(prompt)

    def _stream(self, prompt: str) -> Iterator[dict[str, Any]]:
        """Chunks of one streamed request, asked again (skipping what was read) if the stream breaks. Only
        breaks in a row without a new token count against the retries."""
        model = self.model
        fields = {"logprobs": max(1, self.top_k)} if self.probabilities else {}
        skip_tokens = skip_chars = 0
        failures, read_at_break = 0, -1
        while True:
            chunks = model.stream(model.body(prompt, model.stage_tokens, **fields), self)
            try:
                for chunk in chunks:
                    choice = (chunk.get("choices") or [{}])[0]
                    tokens = tokens_of(choice.get("text") or "", choice.get("logprobs"), model.stop_tokens(choice))
                    if self.probabilities:  # one entry per token: skip by count
                        drop = min(skip_tokens, len(tokens))
                        skip_tokens -= drop
                        tokens = tokens[drop:]
                    else:  # text only: skip by characters
                        while tokens and skip_chars >= len(tokens[0].piece) > 0:
                            skip_chars -= len(tokens.pop(0).piece)
                    yield {"tokens": tokens, "finish_reason": choice.get("finish_reason")}
                return
            except StreamBroken as error:
                failures = 1 if self._read > read_at_break else failures + 1
                read_at_break = self._read
                if not model.generation_sampling.greedy or failures > model.client.settings.retries:
                    raise RemoteError(f"{model.client.base_url}: a stream broke off ({error})") from None
                model.counters.resumed_streams += 1
                model.client.count_retry()
                model.client.pause(failures - 1)
                skip_tokens = self._read
                skip_chars = len(self.written) + sum(len(t.piece) for t in self._buffer)
            finally:
                chunks.close()  # type: ignore[attr-defined]

    def _fetch_chunk(self, prompt: str) -> Iterator[dict[str, Any]]:
        model = self.model
        model.counters.chunked_requests += 1
        payload = model.complete(model.body(prompt, AUTHORS_CHUNK, logprobs=max(1, self.top_k)))
        choice = payload["choices"][0]
        yield {"tokens": tokens_of(choice.get("text") or "", choice.get("logprobs"), model.stop_tokens(choice)),
               "finish_reason": choice.get("finish_reason") or "length"}

    def _read_chunk(self) -> None:
        try:
            chunk = next(self._chunks)  # type: ignore[arg-type]
        except StopIteration:
            self._finish = self._finish or "stop"
            return
        tokens = chunk["tokens"]
        self._buffer.extend(tokens)
        self._read += len(tokens)
        self.model.counters.tokens_received += len(tokens)
        if chunk["finish_reason"]:
            self._finish = chunk["finish_reason"]
