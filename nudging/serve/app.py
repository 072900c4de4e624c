"""The HTTP routes: OpenAI's /v1/models, /v1/completions and /v1/chat/completions, vLLM's /tokenize, /health, and
a chat page. Each route hands its request to nudging.serve.serving; errors of every kind go through the one
mapping in nudging.serve.errors.
"""

from __future__ import annotations

import hmac
from importlib import resources
from typing import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse
from starlette.exceptions import HTTPException

from nudging.errors import NudgingError
from nudging.serve import serving
from nudging.serve.errors import BodyTooLarge, InvalidRequest, LengthRequired, ServeError, Unauthorized, problem
from nudging.serve.openapi import GUARDED, POSTED, completed, documented, generation
from nudging.serve.protocol import (
    ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse, CompletionChunk, CompletionRequest,
    CompletionResponse, Health, ModelList, TokenizeRequest, TokenizeResponse,
)
from nudging.config import ServerSettings
from nudging.serve.serving import Service

__all__ = ["ServerSettings", "create_app"]

Next = Callable[[Request], Awaitable[Response]]


def create_app(service: Service, settings: ServerSettings) -> FastAPI:
    app = FastAPI(title="nudging", docs_url=None, redoc_url=None)
    app.openapi = completed(app, settings)  # type: ignore[method-assign]
    for kind in (ServeError, NudgingError, RequestValidationError, HTTPException, Exception):
        app.add_exception_handler(kind, error_response)
    app.middleware("http")(_guard(settings))

    @app.get("/health", response_model=Health, responses=documented(500))
    async def health() -> Health:
        return serving.health(service, settings)

    @app.get("/", response_class=HTMLResponse, responses=documented(500, json_route=False))
    async def page() -> str:
        return resources.files("nudging.serve").joinpath("page.html").read_text(encoding="utf-8")

    @app.get("/v1/models", response_model=ModelList, responses=documented(*GUARDED))
    async def list_models() -> ModelList:
        return serving.model_list(service, settings)

    @app.post("/tokenize", response_model=TokenizeResponse, responses=documented(*POSTED, 404))
    async def tokenize(body: TokenizeRequest) -> TokenizeResponse:
        return serving.tokenize(service, settings, body)

    @app.post("/v1/completions", response_model=None, responses=generation(CompletionResponse, CompletionChunk))
    async def completions(body: CompletionRequest, request: Request) -> Response:
        return await serving.complete(service, settings, body, request)

    @app.post("/v1/chat/completions", response_model=None,
              responses=generation(ChatCompletionResponse, ChatCompletionChunk))
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        return await serving.chat(service, settings, body, request)

    return app


async def error_response(request: Request, error: Exception) -> Response:
    """The one exception handler: the status from the table in nudging.serve.errors, OpenAI's error body (and a
    405's Allow header)."""
    status, body = problem(error)
    return serving.json_response(body, status, headers=getattr(error, "headers", None))


def _guard(settings: ServerSettings) -> Callable[[Request, Next], Awaitable[Response]]:
    """Checks before a request reaches its route (key, declared size), and the catch-all for errors no other
    handler took: they are answered here rather than re-raised to the server."""

    async def guard(request: Request, call_next: Next) -> Response:
        try:
            if request.url.path.startswith("/v1/") or request.url.path == "/tokenize":
                _check_key(request, settings.api_key)
                _check_size(request, settings.max_body_bytes)
            return await call_next(request)
        except Exception as error:
            return await error_response(request, error)

    return guard


def _check_key(request: Request, api_key: str | None) -> None:
    if api_key is None:
        return
    header = request.headers.get("authorization", "")
    given = header[7:] if header.lower().startswith("bearer ") else ""
    if not hmac.compare_digest(given.encode(), api_key.encode()):
        raise Unauthorized("missing or wrong API key (send Authorization: Bearer KEY)")


def _check_size(request: Request, limit: int) -> None:
    """A POST must declare its body's size, so that the size limit cannot be bypassed."""
    header = request.headers.get("content-length")
    if header is None:
        if request.method == "POST":
            raise LengthRequired("send the request body with a Content-Length header")
        return
    try:
        length = int(header)
    except ValueError:
        raise InvalidRequest(f"Content-Length is not a number: {header!r}", code="invalid_header") from None
    if length > limit:
        raise BodyTooLarge(f"request body of {length} bytes is over the limit of {limit}")
