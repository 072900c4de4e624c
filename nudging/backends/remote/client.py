"""HTTP to one OpenAI-compatible server: connection reuse, timeouts, retries with backoff, clear errors.

Retried: connection errors, timeouts, HTTP 429 and 5xx (honouring Retry-After). Not retried: a refused key
(401/403), an unknown model (404) and other client errors, which become a RemoteError that names the cause.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterator

import httpx

from nudging.errors import ContextWindowFull, InvalidArgumentError, RemoteError

RETRIED_STATUS = (429, 500, 502, 503, 504)
TRANSIENT = (httpx.TransportError,)  # connect, read, write, pool errors and timeouts, dropped connections


@dataclass(frozen=True)
class ClientSettings:
    timeout: float = 60.0  # seconds without a byte from the server before a try is given up
    retries: int = 4  # extra tries after the first
    backoff: float = 0.5  # seconds before the first retry; doubles each time

    def __post_init__(self) -> None:
        if isinstance(self.timeout, bool) or not isinstance(self.timeout, (int, float)) or not self.timeout > 0:
            raise InvalidArgumentError(f"timeout (--timeout) must be a number of seconds > 0, got {self.timeout!r}")
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise InvalidArgumentError(f"retries (--retries) must be an integer >= 0, got {self.retries!r}")
        if isinstance(self.backoff, bool) or not isinstance(self.backoff, (int, float)) or self.backoff < 0:
            raise InvalidArgumentError(f"backoff must be a number of seconds >= 0, got {self.backoff!r}")


class StreamBroken(Exception):
    """A stream ended early (server gone, connection dropped, no finish reason); the caller may resume it."""


class CompletionClient:
    """One server, shared by every replica of a model: httpx pools and reuses connections across threads."""

    def __init__(self, base_url: str, api_key: str | None, settings: ClientSettings | None = None) -> None:
        self.base_url = base_url
        self.settings = settings or ClientSettings()
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        timeout = httpx.Timeout(self.settings.timeout, connect=min(10.0, self.settings.timeout))
        self._http = httpx.Client(timeout=timeout, headers=headers, limits=httpx.Limits(max_connections=64))
        self._lock = threading.Lock()
        self.retries_made = 0

    def close(self) -> None:
        self._http.close()

    # --- requests -------------------------------------------------------------------------------------------
    def models(self) -> list[dict[str, Any]]:
        response = self._send("GET", "/models", None)
        data = _json(response, self.base_url).get("data")
        return data if isinstance(data, list) else []

    def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        response = self._send("POST", "/completions", body)
        payload = _json(response, self.base_url)
        if not payload.get("choices"):
            raise RemoteError(f"{self.base_url}: the completion came back without choices: {str(payload)[:200]}")
        return payload

    def stream(self, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """The chunks of a streamed completion. Raises StreamBroken if the stream stops before a finish reason;
        closing the iterator closes the connection, which tells the server to stop."""
        response = self._send("POST", "/completions", {**body, "stream": True}, stream=True)
        finished = False
        try:
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    raise _error_from_body(chunk, self.base_url)
                choices = chunk.get("choices") or []
                if choices and choices[0].get("finish_reason"):
                    finished = True
                yield chunk
        except TRANSIENT as error:
            if finished:  # everything arrived; only the closing [DONE] was lost
                return
            raise StreamBroken(f"{type(error).__name__}: {error}") from None
        except json.JSONDecodeError as error:
            raise StreamBroken(f"a chunk was not JSON: {error}") from None
        finally:
            response.close()
        if not finished:
            raise StreamBroken("the stream ended without a finish reason")

    def count_retry(self) -> None:
        with self._lock:
            self.retries_made += 1

    def pause(self, attempt: int, retry_after: str | None = None) -> None:
        delay = self.settings.backoff * (2 ** attempt)
        if retry_after:
            try:
                delay = max(delay, min(float(retry_after), 30.0))
            except ValueError:
                pass
        time.sleep(delay)

    def _send(self, method: str, path: str, body: dict[str, Any] | None, stream: bool = False) -> httpx.Response:
        url = self.base_url + path
        last_problem = ""
        for attempt in range(self.settings.retries + 1):
            if attempt:
                self.count_retry()
            try:
                request = self._http.build_request(method, url, json=body)
                response = self._http.send(request, stream=stream)
            except httpx.TimeoutException:
                last_problem = f"no answer within {self.settings.timeout:g} s"
            except TRANSIENT as error:
                last_problem = f"{type(error).__name__}: {error}"
            else:
                if response.status_code < 400:
                    return response
                if stream:
                    response.read()
                response.close()
                if response.status_code not in RETRIED_STATUS or _context_full(response):
                    raise _error(response, self.base_url, body)
                last_problem = f"HTTP {response.status_code}: {_message(response)}"
                if attempt < self.settings.retries:
                    self.pause(attempt, response.headers.get("retry-after"))
                continue
            if attempt < self.settings.retries:
                self.pause(attempt)
        raise RemoteError(f"{url}: gave up after {self.settings.retries + 1} tries ({last_problem})")


def _json(response: httpx.Response, base_url: str) -> dict[str, Any]:
    try:
        payload = response.json()
    except ValueError:
        raise RemoteError(f"{base_url}: the server answered with something that is not JSON: "
                          f"{response.text[:200]!r}") from None
    if not isinstance(payload, dict):
        raise RemoteError(f"{base_url}: expected a JSON object, got {str(payload)[:200]}")
    return payload


def _message(response: httpx.Response) -> str:
    try:
        payload = response.json()
    except ValueError:
        return response.text[:300]
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict):
        return str(error.get("message", error))[:300]
    if isinstance(payload, dict) and "detail" in payload:
        return str(payload["detail"])[:300]
    return str(error or payload)[:300]


def _context_full(response: httpx.Response) -> bool:
    """Does the error say the prompt does not fit the model's context (vLLM 400, llama-cpp-python 500)?"""
    lowered = _message(response).lower()
    return response.status_code in (400, 500) and (
        "context" in lowered and ("exceed" in lowered or "length" in lowered or "window" in lowered)
        or "maximum context" in lowered or "too long" in lowered
    )


def _error(response: httpx.Response, base_url: str, body: dict[str, Any] | None) -> Exception:
    status, message = response.status_code, _message(response)
    model = (body or {}).get("model")
    if status in (401, 403):
        return RemoteError(f"{base_url} refused the API key (HTTP {status}: {message}); give the key with --api-key "
                           "or $NUDGING_API_KEY / $OPENAI_API_KEY")
    if status == 404 and model is None:
        return RemoteError(f"{base_url} has no OpenAI-compatible API there (HTTP 404 for {response.request.url.path}: "
                           f"{message}); the URL should be the API's root, which usually ends in /v1")
    if status == 404:
        return RemoteError(f"{base_url} does not serve model {model!r} (HTTP 404: {message})")
    if _context_full(response):
        return ContextWindowFull(f"{base_url}: {message}")
    return RemoteError(f"{base_url} rejected the request (HTTP {status}: {message})")


def _error_from_body(payload: dict[str, Any], base_url: str) -> RemoteError:
    error = payload.get("error")
    message = error.get("message", error) if isinstance(error, dict) else error
    return RemoteError(f"{base_url}: the server reported an error in the stream: {message}")
