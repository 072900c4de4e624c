"""Connecting to a remote model: check the server, the key and the model name, then probe what it returns.

The probe asks three small questions of a base model's server: does a completion carry top-1 logprobs (needed),
does a stream carry them (else base stages go in 16-token chunks), and does `echo` return the prompt's
logprobs, in which layout, and at what cost per prompt token (then several word boundaries can be checked in
one request). The answers are kept per server and model, so replicas do not probe again.
"""

from __future__ import annotations

import math
import threading
import time
import warnings
from typing import Any

from nudging.config import SamplingConfig
from nudging.errors import RemoteError
from nudging.backends.remote.client import ClientSettings, CompletionClient, StreamBroken
from nudging.backends.remote.model import (PROBE_PROMPT, PROTOCOLS, Capabilities, Protocol, RemoteModel,
                                           special_strings, tokens_of)
from nudging.backends.remote.spec import api_key_from_env, parse

LLAMA_CPP_OWNER = "me"  # llama-cpp-python's /v1/models says owned_by "me"


class RemoteWarning(UserWarning):
    """A remote model works, but not in the exact way the spec defines."""


_probed: dict[tuple[str, str, str], Capabilities] = {}
_lock = threading.Lock()


def connect(
    spec: str,
    *,
    role: str,
    api_key: str | None = None,
    tokenizer: str | None = None,
    protocol: Protocol = "auto",
    client_settings: ClientSettings | None = None,
    sampling: SamplingConfig | None = None,
) -> RemoteModel:
    """A RemoteModel for `openai:MODEL@URL`, probed. `role` "base" needs logprobs; "nudger" only completions."""
    if protocol not in PROTOCOLS:
        raise RemoteError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    remote = parse(spec)
    client = CompletionClient(remote.base_url, api_key_from_env(api_key), client_settings)
    served = served_models(client, remote.model)  # first, so a wrong URL, key or name is what the error says
    local_tokenizer = load_tokenizer(tokenizer or remote.model, spec, given=tokenizer is not None)
    key = (remote.base_url, remote.model, role)
    with _lock:
        capabilities = _probed.get(key)
    if capabilities is None:
        capabilities = probe(client, remote.model, role, local_tokenizer, served)
        with _lock:
            _probed[key] = capabilities
    if role == "base" and not capabilities.stream_logprobs and protocol != "chunked":
        warnings.warn(f"{spec}: the server does not stream logprobs, so base stages go in 16-token requests that "
                      "re-tokenize the text between them (as the authors' code does); this can change an answer "
                      "in rare cases, and stats count it as chunked_requests", RemoteWarning, stacklevel=2)
    return RemoteModel(client, remote.model, local_tokenizer, capabilities, name=role, sampling=sampling,
                       protocol=protocol, extra_body=greedy_fields(capabilities.owned_by))


def greedy_fields(owned_by: str) -> dict[str, Any]:
    """Request fields a server needs besides temperature 0 to decode greedily: llama-cpp-python's default
    repeat_penalty of 1.1 changes the argmax."""
    return {"repeat_penalty": 1.0} if owned_by == LLAMA_CPP_OWNER else {}


def load_tokenizer(source: str, spec: str, given: bool) -> Any:
    """The model's tokenizer, from a spec `nudging.models` understands (hub id, folder, .gguf, demo alias)."""
    from nudging import models
    from nudging.errors import NudgingError

    try:
        return models.load_tokenizer(source)
    except NudgingError as error:
        hint = "" if given else (
            f"; the tokenizer is looked up by the served model name {source!r}: when that is not a hub id, folder, "
            ".gguf file or demo model, give one with --base-tokenizer / --nudger-tokenizer (tokenizer= in Python)"
        )
        raise RemoteError(f"{spec}: cannot load its tokenizer ({error}){hint}") from None


def probe(
    client: CompletionClient, model: str, role: str, tokenizer: Any, served: tuple[tuple[str, ...], str, int | None]
) -> Capabilities:
    names, owned_by, context = served
    base = Capabilities(names, owned_by, context)
    request = {"model": model, "prompt": PROBE_PROMPT, "max_tokens": 1, "temperature": 0.0, **greedy_fields(owned_by)}
    if role != "base":
        client.complete(request)  # the name and the key work for completions, not only for /models
        return base
    missing = (f"{client.base_url} returned no logprobs for {model!r}: nudging needs the base model's top-1 "
               "probability (vLLM, SGLang, llama-cpp-python and `nudging serve --mode base` return them with "
               "logprobs: 1)")
    started = time.perf_counter()
    try:
        first = client.complete({**request, "logprobs": 1})["choices"][0]
    except RemoteError as error:
        raise RemoteError(f"{missing}; it answered: {error}") from None
    request_seconds = time.perf_counter() - started
    tokens = tokens_of(first.get("text") or "", first.get("logprobs"))
    if not tokens or math.isnan(tokens[0].top1_prob):
        raise RemoteError(missing)
    return Capabilities(
        names, owned_by, context, logprobs=True, stream_logprobs=_streams_logprobs(client, request),
        echo_layout=(layout := _echo_layout(client, request, tokens[0], tokenizer)),
        request_seconds=request_seconds,
        echo_seconds_per_token=_echo_cost(client, request, request_seconds, tokenizer) if layout else math.inf,
    )


def served_models(client: CompletionClient, model: str) -> tuple[tuple[str, ...], str, int | None]:
    """(the names the server lists, who it says owns MODEL, MODEL's context length if given); an error if the
    server lists models but not this one."""
    listed = client.models()
    served = tuple(str(entry.get("id")) for entry in listed if isinstance(entry, dict))
    if served and model not in served:
        raise RemoteError(f"{client.base_url} does not serve model {model!r}; it serves: {', '.join(served)}")
    entry = next((e for e in listed if isinstance(e, dict) and e.get("id") == model), {})
    context = entry.get("max_model_len")
    return served, str(entry.get("owned_by", "")), context if isinstance(context, int) and context > 0 else None


def _streams_logprobs(client: CompletionClient, request: dict[str, Any]) -> bool:
    for attempt in range(client.settings.retries + 1):
        try:
            chunks = list(client.stream({**request, "max_tokens": 2, "logprobs": 1}))
        except RemoteError:
            return False
        except StreamBroken:
            client.count_retry()
            client.pause(attempt)
            continue
        return any(((c.get("choices") or [{}])[0].get("logprobs") or {}).get("token_logprobs") for c in chunks)
    return False


def _echo_layout(client: CompletionClient, request: dict[str, Any], first, tokenizer: Any) -> str | None:
    """Echo the probe prompt plus its greedy next token: the entry that repeats that token's probability
    tells whether entry i predicts prompt token i ("aligned") or follows it ("shifted")."""
    text = PROBE_PROMPT + first.piece
    try:
        choice = client.complete({**request, "prompt": text, "echo": True, "logprobs": 1})["choices"][0]
    except RemoteError:
        return None
    logprobs = choice.get("logprobs") or {}
    offsets, tops = logprobs.get("text_offset") or [], logprobs.get("top_logprobs") or []
    if len(tokenizer(text)["input_ids"]) != len(tokenizer(PROBE_PROMPT)["input_ids"]) + 1:
        return None  # the probe token merged with the prompt: cannot tell
    at = _prompt_end(offsets, logprobs.get("tokens") or [], tokenizer)
    if at is None:
        return None

    def predicts(index: int) -> bool:
        if not 0 <= index < len(tops) or not tops[index]:
            return False
        piece, logprob = max(tops[index].items(), key=lambda item: item[1])
        return piece == first.piece and abs(math.exp(logprob) - first.top1_prob) < 1e-3
    if predicts(at):
        return "aligned"
    if predicts(at - 1):
        return "shifted"
    return None


def _prompt_end(offsets: list[Any], tokens: list[Any], tokenizer: Any) -> int | None:
    """The index of the first echoed entry after the probe prompt: by `text_offset`, or, where the offsets count
    a special token's text that the echoed text leaves out (vLLM counts gemma's "<bos>"), by the tokens' text."""
    at = next((i for i, offset in enumerate(offsets) if offset == len(PROBE_PROMPT)), None)
    if at is not None:
        return at
    starts = [PROBE_PROMPT] + [special + PROBE_PROMPT for special in special_strings(tokenizer)]
    joined = ""
    for i, token in enumerate(tokens):
        if joined in starts:
            return i
        joined += str(token)
    return None


def _echo_cost(client: CompletionClient, request: dict[str, Any], request_seconds: float, tokenizer: Any) -> float:
    """Seconds an echo adds per prompt token, from one echo of a longer prompt."""
    text = " ".join([PROBE_PROMPT] * 4)
    started = time.perf_counter()
    client.complete({**request, "prompt": text, "echo": True, "logprobs": 1})
    seconds = time.perf_counter() - started
    return max(0.0, seconds - request_seconds) / max(1, len(tokenizer(text)["input_ids"]))
