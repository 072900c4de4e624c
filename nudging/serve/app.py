"""The HTTP routes: OpenAI's /v1/models, /v1/completions and /v1/chat/completions, /health, and a chat page."""

from __future__ import annotations

import asyncio
import hmac
import json
from dataclasses import dataclass
from importlib import resources
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse

from nudging import prompts
from nudging.backend import LocalModel
from nudging.config import SamplingConfig
from nudging.errors import NudgingError, PromptTooLongError
from nudging.serve.protocol import (
    APIError,
    ChatCompletionRequest,
    CompletionRequest,
    TokenizeRequest,
    new_id,
    now,
    validation_error,
)
from nudging.serve.logprobs import generated_tokens, score_completion
from nudging.serve.service import Finished, Job, Service
from nudging.text import Span


@dataclass
class ServerSettings:
    model_name: str = "nudging"
    api_key: str | None = None
    max_tokens: int = 512  # the default answer budget
    max_tokens_limit: int = 4096  # the most a request may ask for
    max_body_bytes: int = 1_000_000


def create_app(service: Service, settings: ServerSettings) -> FastAPI:
    app = FastAPI(title="nudging", docs_url=None, redoc_url=None)

    @app.exception_handler(APIError)
    async def api_error(request: Request, error: APIError) -> JSONResponse:
        return JSONResponse(error.body, status_code=error.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        errors = error.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            problem = APIError(400, "the request body is not valid JSON", code="invalid_json")
        elif any(tuple(e.get("loc", ())) == ("body",) for e in errors):
            problem = APIError(400, "the request body must be a JSON object, sent with Content-Type: "
                                    "application/json", code="invalid_body")
        else:
            problem = validation_error(list(errors))
        return JSONResponse(problem.body, status_code=problem.status)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        problem = APIError(500, f"internal error: {type(error).__name__}: {error}", "server_error")
        return JSONResponse(problem.body, status_code=500)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if request.url.path.startswith("/v1/") or request.url.path == "/tokenize":
            try:
                _check_key(request, settings.api_key)
                length = _content_length(request)
                if length > settings.max_body_bytes:
                    raise APIError(413, f"request body of {length} bytes is over the limit of "
                                        f"{settings.max_body_bytes}", code="body_too_large")
            except APIError as error:
                return JSONResponse(error.body, status_code=error.status)
        return await call_next(request)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": settings.model_name, "mode": service.mode, "running": service.running,
                "waiting": service.admitted - service.running, "stopped_by_disconnect": service.client_gone,
                "gamma": service.template.config.gamma, "lookahead": service.template.config.lookahead}

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return resources.files("nudging.serve").joinpath("page.html").read_text(encoding="utf-8")

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [
            {"id": settings.model_name, "object": "model", "created": now(), "owned_by": "nudging",
             "max_model_len": _context_length(service)}]}

    @app.post("/tokenize")
    async def tokenize(body: TokenizeRequest) -> dict[str, Any]:
        """vLLM's tokenize endpoint, with the base model's tokenizer (the nudger's when there is no base)."""
        _check_model(body.model, settings)
        model = service.template.base or service.template.nudger
        ids = model.tokenize(body.prompt) if body.add_special_tokens else model.tokenizer(
            body.prompt, add_special_tokens=False)["input_ids"]
        return {"tokens": list(ids), "count": len(ids), "max_model_len": model.context_length}

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        _check_model(body.model, settings)
        job = _job(service, body, settings, body.prompt, body.prompt)
        if body.echo or body.logprobs is not None:
            return await _scored(service, job, body, settings)
        return await _respond(service, job, body, request, settings, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        _check_model(body.model, settings)
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text} for m in body.messages]
        model = service.template.nudger or service.template.base
        nudger_prompt = prompts.chat_prompt_for(model.tokenizer, messages) if service.template.nudger else ""
        job = _job(service, body, settings, prompts.base_prompt_for(messages), nudger_prompt,
                   body.max_completion_tokens)
        return await _respond(service, job, body, request, settings, chat=True)

    return app


def _check_key(request: Request, api_key: str | None) -> None:
    if api_key is None:
        return
    header = request.headers.get("authorization", "")
    given = header[7:] if header.lower().startswith("bearer ") else ""
    if not hmac.compare_digest(given.encode(), api_key.encode()):
        raise APIError(401, "missing or wrong API key (send Authorization: Bearer KEY)", "authentication_error",
                       code="invalid_api_key")


def _content_length(request: Request) -> int:
    """The body's declared size; a POST must declare it, so that the size limit cannot be bypassed."""
    header = request.headers.get("content-length")
    if header is None:
        if request.method == "POST":
            raise APIError(411, "send the request body with a Content-Length header", code="length_required")
        return 0
    try:
        return int(header)
    except ValueError:
        raise APIError(400, f"Content-Length is not a number: {header!r}", code="invalid_header") from None


def _check_model(model: str | None, settings: ServerSettings) -> None:
    if model is not None and model != settings.model_name:
        raise APIError(404, f"the model {model!r} does not exist; this server serves {settings.model_name!r}",
                       param="model", code="model_not_found")


def _job(service: Service, body, settings: ServerSettings, base_prompt: str, nudger_prompt: str,
         max_tokens: int | None = None) -> Job:
    budget = max_tokens or body.max_tokens or settings.max_tokens
    if budget > settings.max_tokens_limit:
        raise APIError(422, f"max_tokens may be at most {settings.max_tokens_limit}, got {budget}",
                       param="max_tokens", code="invalid_value")
    mode = service.mode if body.nudging else "base"
    if mode == "base" and service.template.base is None:
        raise APIError(422, "this server has no base model to run without nudging", param="nudging")
    try:
        if mode in ("nudging", "base"):
            service.template.base.check_prompt_fits(base_prompt, "the base prompt")
        if mode in ("nudging", "nudger"):
            service.template.nudger.check_prompt_fits(nudger_prompt, "the nudger prompt")
    except PromptTooLongError as error:
        raise APIError(400, str(error), param="messages", code="context_length_exceeded") from None
    sampling = SamplingConfig(body.temperature, body.top_p, body.seed)
    return Job(base_prompt, nudger_prompt, mode, budget, body.gamma, body.lookahead, sampling, body.stop)


async def _respond(service: Service, job: Job, body, request: Request, settings: ServerSettings, chat: bool):
    pieces = service.generate(job)
    frame = _frame(settings, chat)
    if body.stream:
        first = await _first(pieces)  # errors before the first piece still get a status code
        return StreamingResponse(_events(first, pieces, frame, chat, body.include_usage, service, job),
                                 media_type="text/event-stream")
    finished = await _collect(pieces, request)
    usage = _usage(service, job, finished)
    if chat:
        choice = {"index": 0, "message": {"role": "assistant", "content": finished.text},
                  "finish_reason": finished.finish_reason, "logprobs": None}
        payload = {**frame, "object": "chat.completion", "choices": [choice]}
    else:
        choice = {"index": 0, "text": finished.text, "finish_reason": finished.finish_reason, "logprobs": None}
        payload = {**frame, "object": "text_completion", "choices": [choice]}
    return JSONResponse({**payload, "usage": usage, "nudging": finished.nudging_info()})


async def _scored(service: Service, job: Job, body: CompletionRequest, settings: ServerSettings):
    """A completion with top-k logprobs (and the prompt's, with echo): one model; streamed one token per chunk."""
    if job.mode == "nudging":
        raise APIError(422, "logprobs and echo come from one model: serve with --mode base|nudger, or send "
                            "nudging: false", param="logprobs" if body.logprobs is not None else "echo",
                       code="unsupported_parameter")
    if body.stream and (body.echo or job.stops):
        raise APIError(422, "a stream with logprobs takes neither echo nor stop strings; send stream: false",
                       param="echo" if body.echo else "stop", code="unsupported_parameter")

    if not isinstance(_model_of_mode(service.template, job.mode), LocalModel):
        raise APIError(422, "logprobs and echo need a local model; this server forwards to a remote one",
                       param="logprobs" if body.logprobs is not None else "echo", code="unsupported_parameter")

    def model_of(replica) -> LocalModel:
        model = _model_of_mode(replica, job.mode)
        model.sampling = job.sampling
        model.start_generation()
        return model

    if body.stream:
        return StreamingResponse(_scored_events(service, job, body, settings, model_of),
                                 media_type="text/event-stream")

    def work(replica):
        model = model_of(replica)
        return len(model.tokenize(job.base_prompt)), score_completion(
            model, job.base_prompt, job.max_tokens, body.echo, job.stops, max(1, body.logprobs or 0))

    prompt_tokens, scored = await service.call(work)
    choice = {"index": 0, "text": scored.text, "finish_reason": scored.finish_reason,
              "logprobs": scored.to_openai() if body.logprobs is not None else None}
    return JSONResponse({**_frame(settings, chat=False), "object": "text_completion", "choices": [choice],
                         "usage": _usage_counts(prompt_tokens, scored.completion_tokens)})


async def _scored_events(service: Service, job: Job, body: CompletionRequest, settings: ServerSettings, model_of):
    """One chunk per generated token with its logprobs (text_offset counts from the prompt's end), then one
    with the finish reason. Closing the stream stops the decoding."""
    frame = {**_frame(settings, chat=False), "object": "text_completion"}
    ending: dict[str, str] = {}

    def work(replica, put, cancelled) -> None:
        for token in generated_tokens(model_of(replica), job.base_prompt, job.max_tokens, ending,
                                      max(1, body.logprobs or 0)):
            put(token)
            if cancelled.is_set():
                return

    items = service.threaded(work)
    offset = 0
    try:
        async for token in items:
            logprobs = {"tokens": [token.text], "token_logprobs": [token.logprob], "top_logprobs": [token.top],
                        "text_offset": [offset]}
            offset += len(token.text)
            choice = {"index": 0, "text": token.text, "finish_reason": None, "logprobs": logprobs}
            yield _sse({**frame, "choices": [choice]})
        choice = {"index": 0, "text": "", "finish_reason": ending.get("finish_reason", "length"), "logprobs": None}
        yield _sse({**frame, "choices": [choice]})
    except Exception as error:  # the status line is gone: report in the stream
        yield _stream_error(error)
    finally:
        await items.aclose()
    yield "data: [DONE]\n\n"


async def _first(pieces: AsyncIterator[Span | Finished]) -> Span | Finished:
    try:
        return await pieces.__anext__()
    except NudgingError as error:
        raise APIError(400, str(error)) from None


async def _collect(pieces: AsyncIterator[Span | Finished], request: Request) -> Finished:
    """Run to the end, but stop the generation if the client disconnects while waiting."""
    async def drain() -> Finished:
        async for item in pieces:
            if isinstance(item, Finished):
                return item
        raise RuntimeError("generation ended without a result")

    task = asyncio.ensure_future(drain())
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=0.25)
            if not task.done() and await request.is_disconnected():
                task.cancel()
                await pieces.aclose()
                raise APIError(499, "client closed the request", code="client_closed")
        return task.result()
    except NudgingError as error:
        raise APIError(400, str(error)) from None


async def _events(first, pieces, frame, chat: bool, include_usage: bool, service: Service, job: Job):
    """Server-sent events in OpenAI's chunk format; an error after the stream has begun is one data event."""
    object_name = "chat.completion.chunk" if chat else "text_completion"

    def chunk(text: str | None, finish: str | None, extra: dict[str, Any]) -> str:
        if chat:
            delta = {} if text is None else {"role": "assistant", "content": text}
            choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        else:
            choice = {"index": 0, "text": text or "", "finish_reason": finish, "logprobs": None}
        return _sse({**frame, "object": object_name, "choices": [choice], **extra})

    try:
        item = first
        while True:
            if isinstance(item, Finished):
                yield chunk(None if chat else "", item.finish_reason, {"nudging": item.nudging_info()})
                if include_usage:
                    usage = {**frame, "object": object_name, "choices": [], "usage": _usage(service, job, item)}
                    yield _sse(usage)
                break
            yield chunk(item.text, None, {"nudging": {"source": item.source}})
            item = await pieces.__anext__()
    except Exception as error:  # the status line is gone: report in the stream
        yield _stream_error(error)
    finally:
        await pieces.aclose()  # a client that went away stops its generation here
    yield "data: [DONE]\n\n"


def _sse(payload: dict[str, Any]) -> str:
    """One server-sent event."""
    return "data: " + json.dumps(payload) + "\n\n"


def _stream_error(error: Exception) -> str:
    """An error after a stream has begun (its status line is gone): one event with OpenAI's error body."""
    return _sse(APIError(500, f"{type(error).__name__}: {error}", "server_error").body)


def _model_of_mode(nudger, mode: str):
    """The one model a single-model mode runs: the nudger's in mode "nudger", else the base's."""
    return nudger.nudger if mode == "nudger" else nudger.base


def _context_length(service: Service) -> int | None:
    lengths = [m.context_length for m in (service.template.base, service.template.nudger) if m is not None]
    return min((n for n in lengths if n), default=None)


def _usage(service: Service, job: Job, finished: Finished) -> dict[str, int]:
    model = _model_of_mode(service.template, job.mode)
    prompt = job.nudger_prompt if job.mode == "nudger" else job.base_prompt
    return _usage_counts(len(model.tokenize(prompt)), model.count_tokens(finished.text))


def _usage_counts(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def _frame(settings: ServerSettings, chat: bool) -> dict[str, Any]:
    """The fields every response and chunk of one request share."""
    return {"id": new_id("chatcmpl" if chat else "cmpl"), "created": now(), "model": settings.model_name}
