"""Serving: a request becomes a Job, which runs on one lane of the server's pool in a worker thread; its pieces
reach the event loop as they are written and the client as a JSON response or server-sent events.

Admission is bounded: `replicas` generations run at once and up to `queue` more wait for a lane; beyond that a
request gets 429. Stop strings cut the answer where they start, and a client that goes away stops its generation.
With several replicas the lanes are members of one batch (nudging.backends.batch): the running generations share
each forward pass.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, TypeVar, Union

from fastapi import Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from nudging import prompts, rules
from nudging.backends.interface import Model
from nudging.config import SamplingConfig, ServerSettings
from nudging.errors import InvalidArgumentError, PromptTooLongError
from nudging.nudger import Nudger
from nudging.pool import LanePool
from nudging.result import GenerationResult
from nudging.serve import logprobs
from nudging.serve.errors import (
    ClientClosed, InvalidRequest, TooManyRequests, UnknownModel, Unprocessable, problem,
)
from nudging.serve.protocol import (
    AssistantMessage, ChatChoice, ChatChunkChoice, ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse,
    CompletionChoice, CompletionChunk, CompletionRequest, CompletionResponse, Delta, Health, Logprobs, ModelCard,
    ModelList, NudgingInfo, PieceInfo, SpanInfo, TokenizeRequest, TokenizeResponse, Usage, new_id, now,
)
from nudging.text import Span, WordCount, count_words

T = TypeVar("T")
Put = Callable[[object], None]
Work = Callable[[Nudger, Put, threading.Event], None]
AnyRequest = Union[CompletionRequest, ChatCompletionRequest]
DONE = "data: [DONE]\n\n"


@dataclass
class Job:
    base_prompt: str
    nudger_prompt: str
    mode: str  # nudging, base, nudger
    max_tokens: int
    gamma: float | None = None  # None: the server's
    lookahead: int | None = None
    rule: dict[str, Any] = field(default_factory=dict)  # rule, agreement_k, window, max_nudged_fraction (None: the server's)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    stops: list[str] = field(default_factory=list)


@dataclass
class Finished:
    """The end of a generation as the client sees it (text cut at a stop string, if one was written)."""

    spans: list[Span]
    finish_reason: str  # stop or length
    stop_reason: str  # the engine's, or "stop_string"
    result: GenerationResult

    @property
    def text(self) -> str:
        return "".join(span.text for span in self.spans)

    def nudging_info(self) -> NudgingInfo:
        nudged, total = count_words(self.spans)
        stats = self.result.to_dict()["stats"]
        stats.update(nudged_words=nudged, total_words=total, nudged_word_fraction=nudged / total if total else 0.0)
        return NudgingInfo(spans=[SpanInfo(text=s.text, source=s.source) for s in self.spans],
                           stop_reason=self.stop_reason, stats=stats)


@dataclass
class _Failure:
    error: BaseException


_END = object()


class Service:
    """Generations on the lanes of one pool, with bounded admission (running + waiting <= replicas + queue)."""

    def __init__(self, nudger: Nudger, mode: str, replicas: int = ServerSettings.max_concurrency,
                 queue: int = ServerSettings.max_queue) -> None:
        self.mode = mode
        self.template = nudger  # for the event loop only (prompt checks, token counts); generations use lanes
        self.pool: LanePool[Nudger] = LanePool(nudger, replicas)
        self.capacity = replicas + queue
        self.admitted = 0  # running or waiting
        self.running = 0
        self.client_gone = 0  # generations stopped because their client went away (not refused, not failed)
        self._counts = threading.Lock()

    @property
    def waiting(self) -> int:
        return self.admitted - self.running

    async def generate(self, job: Job) -> AsyncIterator[Span | Finished]:
        """Yield the pieces a client may see (the engine holds back what could start a stop string and ends at
        one), then one Finished. Closing the iterator stops the generation."""
        sampling = {"base": job.sampling, "nudger": job.sampling}

        def work(replica: Nudger, put: Put, cancelled: threading.Event) -> None:
            put(replica.generate(
                base_prompt=job.base_prompt, nudger_prompt=job.nudger_prompt, mode=job.mode, gamma=job.gamma,
                lookahead=job.lookahead, max_new_tokens=job.max_tokens, sampling=sampling, stop=job.stops,
                on_span=put, should_stop=cancelled.is_set, **job.rule,
            ))

        items = self.threaded(work)
        try:
            async for item in items:
                if isinstance(item, GenerationResult):
                    yield _finished(item)
                    return
                yield item  # type: ignore[misc]
        finally:
            await items.aclose()

    async def threaded(self, work: Work) -> AsyncIterator[object]:
        """Run `work(replica, put, cancelled)` on a lane in a worker thread and yield what it puts, as it puts it.

        Admission happens on the first step (TooManyRequests when full). Closing the iterator sets `cancelled`,
        which the work checks to stop early; an error in the work is raised here, never lost in the thread.
        """
        self._admit()
        loop = asyncio.get_running_loop()
        items: asyncio.Queue[object] = asyncio.Queue()
        cancelled = threading.Event()

        def put(item: object) -> None:
            try:
                loop.call_soon_threadsafe(items.put_nowait, item)
            except RuntimeError:  # the loop is closed: the server shut down, nobody waits for this any more
                pass

        def run() -> None:
            outcome: object = _END
            try:
                self._on_lane(work, put, cancelled)
            except BaseException as error:
                outcome = _Failure(error)
            self._count(admitted=-1)  # before the end is sent: a client that has its answer finds its slot free
            put(outcome)

        threading.Thread(target=run, name="nudging-generation", daemon=True).start()
        try:
            while (item := await items.get()) is not _END:
                if isinstance(item, _Failure):
                    raise item.error
                yield item
        finally:
            cancelled.set()

    async def call(self, work: Callable[[Nudger], T]) -> T:
        """Run `work(replica)` on a lane in a worker thread (for requests that are not streamed piece by piece)."""
        items = self.threaded(lambda replica, put, cancelled: put(work(replica)))
        try:
            return await anext(items)  # type: ignore[return-value]
        finally:
            await items.aclose()

    def _on_lane(self, work: Work, put: Put, cancelled: threading.Event) -> None:
        with self.pool.lane() as replica:  # blocks this thread until a lane is free
            if cancelled.is_set():  # the client went away while this request waited
                return
            self._count(running=1)
            try:
                work(replica, put, cancelled)
            finally:
                self._count(running=-1)

    def client_left(self) -> None:
        """A client went away before its answer was complete (its generation is stopped by closing it)."""
        with self._counts:
            self.client_gone += 1

    def _admit(self) -> None:
        with self._counts:
            if self.admitted >= self.capacity:
                raise TooManyRequests("the server is at its concurrency limit; retry later")
            self.admitted += 1

    def _count(self, admitted: int = 0, running: int = 0) -> None:
        with self._counts:
            self.admitted += admitted
            self.running += running


def _finished(result: GenerationResult) -> Finished:
    # a client sees a Finished only while it is connected, so the engine's "stop" (should_stop) is never a
    # disconnect here: it is the stop string the engine ended at
    if result.stop_reason == "stop":
        return Finished(result.spans, "stop", "stop_string", result)
    finish = "length" if result.stop_reason == "length" else "stop"
    return Finished(result.spans, finish, result.stop_reason, result)


# --- the small routes ----------------------------------------------------------------------------------------
def health(service: Service, settings: ServerSettings) -> Health:
    config = service.template.config
    return Health(model=settings.model_name, mode=service.mode, running=service.running, waiting=service.waiting,
                  stopped_by_disconnect=service.client_gone, gamma=config.gamma, lookahead=config.lookahead)


def model_list(service: Service, settings: ServerSettings) -> ModelList:
    lengths = [m.context_length for m in (service.template.base, service.template.nudger) if m is not None]
    context = min((n for n in lengths if n), default=None)
    return ModelList(data=[ModelCard(id=settings.model_name, created=now(), max_model_len=context)])


def tokenize(service: Service, settings: ServerSettings, body: TokenizeRequest) -> TokenizeResponse:
    """vLLM's tokenize endpoint, with the base model's tokenizer (the nudger's when there is no base)."""
    check_model(body.model, settings)
    model = service.template.base or service.template.nudger
    ids = model.tokenize(body.prompt) if body.add_special_tokens else model.tokenizer(
        body.prompt, add_special_tokens=False)["input_ids"]
    return TokenizeResponse(tokens=list(ids), count=len(ids), max_model_len=model.context_length)


def check_model(model: str | None, settings: ServerSettings) -> None:
    if model is not None and model != settings.model_name:
        raise UnknownModel(f"the model {model!r} does not exist; this server serves {settings.model_name!r}",
                           param="model")


# --- completions ---------------------------------------------------------------------------------------------
async def complete(service: Service, settings: ServerSettings, body: CompletionRequest,
                   request: Request) -> Response:
    check_model(body.model, settings)
    job = _job(service, settings, body, body.prompt, body.prompt, body.max_tokens, prompt_field="prompt")
    if body.echo or body.logprobs is not None:
        return await _scored(service, settings, job, body)
    return await _respond(service, settings, job, body, request, chat=False)


async def chat(service: Service, settings: ServerSettings, body: ChatCompletionRequest,
               request: Request) -> Response:
    check_model(body.model, settings)
    messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text} for m in body.messages]
    nudger = service.template.nudger
    nudger_prompt = prompts.chat_prompt_for(nudger.tokenizer, messages) if nudger is not None else ""
    for name in ("max_tokens", "max_completion_tokens"):  # each is checked, even the one that does not count
        _check_budget(settings, name, getattr(body, name))
    job = _job(service, settings, body, prompts.base_prompt_for(messages), nudger_prompt,
               body.max_completion_tokens or body.max_tokens, prompt_field="messages")
    return await _respond(service, settings, job, body, request, chat=True)


def _check_budget(settings: ServerSettings, field: str, budget: int | None) -> None:
    if budget is not None and budget > settings.max_tokens_limit:
        raise Unprocessable(f"{field} may be at most {settings.max_tokens_limit}, got {budget}", param=field)


def _job(service: Service, settings: ServerSettings, body: AnyRequest, base_prompt: str, nudger_prompt: str,
         max_tokens: int | None, prompt_field: str) -> Job:
    budget = max_tokens or settings.max_tokens
    _check_budget(settings, "max_tokens", budget)
    mode = service.mode if body.nudging else "base"
    if mode == "base" and service.template.base is None:
        raise Unprocessable("this server has no base model to run without nudging", param="nudging")
    try:
        if mode in ("nudging", "base"):
            service.template.base.check_prompt_fits(base_prompt, "the base prompt")
        if mode in ("nudging", "nudger"):
            service.template.nudger.check_prompt_fits(nudger_prompt, "the nudger prompt")
    except PromptTooLongError as error:
        raise InvalidRequest(str(error), param=prompt_field, code="context_length_exceeded") from error
    rule = {"rule": body.rule, "agreement_k": body.agreement_k, "window": body.window,
            "max_nudged_fraction": body.max_nudged_fraction}
    if mode == "nudging":
        try:
            rules.check_base(service.template.config.with_overrides(**rule), service.template.base)
        except InvalidArgumentError as error:
            raise Unprocessable(str(error), param="rule") from error
    return Job(base_prompt, nudger_prompt, mode, budget, body.gamma, body.lookahead, rule, body.sampling(), body.stop)


async def _respond(service: Service, settings: ServerSettings, job: Job, body: AnyRequest, request: Request,
                   chat: bool) -> Response:
    pieces = service.generate(job)
    frame = _frame(settings, chat)
    if body.stream:
        first = await anext(pieces)  # an error before the first piece still gets its status line
        return StreamingResponse(_events(first, pieces, frame, chat, body.include_usage, service, job),
                                 media_type="text/event-stream")
    finished = await _collect(service, pieces, request)
    usage = _usage(service, job, finished)
    if chat:
        choice = ChatChoice(message=AssistantMessage(content=finished.text), finish_reason=finished.finish_reason)
        return json_response(ChatCompletionResponse(**frame, choices=[choice], usage=usage,
                                                    nudging=finished.nudging_info()))
    plain = CompletionChoice(text=finished.text, finish_reason=finished.finish_reason)
    return json_response(CompletionResponse(**frame, choices=[plain], usage=usage, nudging=finished.nudging_info()))


async def _collect(service: Service, pieces: AsyncIterator[Span | Finished], request: Request) -> Finished:
    """Run to the end, but stop the generation if the client disconnects while waiting."""
    async def drain() -> Finished:
        async for item in pieces:
            if isinstance(item, Finished):
                return item
        raise RuntimeError("generation ended without a result")

    async def client_gone() -> None:
        # Wait for the disconnect message, as a streamed response does: `request.is_disconnected()` never sees
        # one through the HTTP middleware (its receive is wrapped in a task group that a cancelled scope ends).
        while (await request.receive())["type"] != "http.disconnect":
            pass

    task, gone = asyncio.ensure_future(drain()), asyncio.ensure_future(client_gone())
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if not task.done():
        task.cancel()
        await asyncio.wait({task})  # the cancelled drain closes the pieces, which stops the generation
        await pieces.aclose()
        service.client_left()
        raise ClientClosed("client closed the request")
    return task.result()


async def _events(first: Span | Finished, pieces: AsyncIterator[Span | Finished], frame: dict[str, Any], chat: bool,
                  include_usage: bool, service: Service, job: Job) -> AsyncIterator[str]:
    """Server-sent events in OpenAI's chunk format; an error after the stream has begun is one data event."""
    try:
        item = first
        words = WordCount()
        while not isinstance(item, Finished):
            words.add(item.text, item.source)
            yield sse(_chunk(frame, chat, item.text, None, PieceInfo(source=item.source, nudged_share=words.nudged_share)))
            item = await anext(pieces)
        yield sse(_chunk(frame, chat, None if chat else "", item.finish_reason, item.nudging_info()))
        if include_usage:
            chunk_type = ChatCompletionChunk if chat else CompletionChunk
            yield sse(chunk_type(**frame, choices=[], usage=_usage(service, job, item)))
    except Exception as error:  # the status line is gone: report in the stream
        yield error_event(error)
    except (GeneratorExit, asyncio.CancelledError):  # the response was closed before its end: the client left
        service.client_left()
        raise
    finally:
        await pieces.aclose()  # a client that went away stops its generation here
    yield DONE


def _chunk(frame: dict[str, Any], chat: bool, text: str | None, finish: str | None,
           info: NudgingInfo | PieceInfo) -> BaseModel:
    if chat:
        delta = Delta() if text is None else Delta(role="assistant", content=text)
        choice = ChatChunkChoice(delta=delta, finish_reason=finish)
        return ChatCompletionChunk(**frame, choices=[choice], nudging=info)
    return CompletionChunk(**frame, choices=[CompletionChoice(text=text or "", finish_reason=finish)], nudging=info)


# --- completions with logprobs (one model) -------------------------------------------------------------------
async def _scored(service: Service, settings: ServerSettings, job: Job, body: CompletionRequest) -> Response:
    """A completion with top-k logprobs (and the prompt's, with echo): one model; streamed one token per chunk."""
    _check_scorable(service, job, body)
    top = max(1, body.logprobs or 0)
    if body.stream:
        return StreamingResponse(_scored_events(service, settings, job, top), media_type="text/event-stream")

    def work(replica: Nudger) -> tuple[int, logprobs.ScoredText]:
        model = _model_of_mode(replica, job.mode)
        scored = logprobs.score_completion(model, job.base_prompt, job.sampling, job.max_tokens, body.echo,
                                           job.stops, top)
        return len(model.tokenize(job.base_prompt)), scored

    prompt_tokens, scored = await service.call(work)
    choice = CompletionChoice(text=scored.text, finish_reason=scored.finish_reason,
                              logprobs=scored.to_openai() if body.logprobs is not None else None)
    return json_response(CompletionResponse(**_frame(settings, chat=False), choices=[choice],
                                            usage=Usage.of(prompt_tokens, scored.completion_tokens)))


def _check_scorable(service: Service, job: Job, body: CompletionRequest) -> None:
    param = "logprobs" if body.logprobs is not None else "echo"
    if job.mode == "nudging":
        raise Unprocessable("logprobs and echo come from one model: serve with --mode base|nudger, or send "
                            "nudging: false", param=param, code="unsupported_parameter")
    if body.stream and (body.echo or job.stops):
        raise Unprocessable("a stream with logprobs takes neither echo nor stop strings; send stream: false",
                            param="echo" if body.echo else "stop", code="unsupported_parameter")
    if not _model_of_mode(service.template, job.mode).full_distribution:
        raise Unprocessable("logprobs and echo need a local model; this server forwards to a remote one",
                            param=param, code="unsupported_parameter")


async def _scored_events(service: Service, settings: ServerSettings, job: Job, top: int) -> AsyncIterator[str]:
    """One chunk per generated token with its logprobs (text_offset counts from the prompt's end), then one
    with the finish reason. Closing the stream stops the decoding."""
    frame = _frame(settings, chat=False)
    ending: dict[str, str] = {}

    def work(replica: Nudger, put: Put, cancelled: threading.Event) -> None:
        model = _model_of_mode(replica, job.mode)
        with logprobs.generation(model, job.sampling, job.max_tokens):
            for token in logprobs.generated_tokens(model, job.base_prompt, job.max_tokens, ending, top):
                put(token)
                if cancelled.is_set():
                    return

    items = service.threaded(work)
    offset = 0
    try:
        async for token in items:
            scores = Logprobs(tokens=[token.text], token_logprobs=[token.logprob], top_logprobs=[token.top],
                              text_offset=[offset])
            offset += len(token.text)
            choice = CompletionChoice(text=token.text, finish_reason=None, logprobs=scores)
            yield sse(CompletionChunk(**frame, choices=[choice]))
        last = CompletionChoice(text="", finish_reason=ending.get("finish_reason", "length"))
        yield sse(CompletionChunk(**frame, choices=[last]))
    except Exception as error:  # the status line is gone: report in the stream
        yield error_event(error)
    except (GeneratorExit, asyncio.CancelledError):  # the response was closed before its end: the client left
        service.client_left()
        raise
    finally:
        await items.aclose()
    yield DONE


# --- response helpers ----------------------------------------------------------------------------------------
def json_response(payload: BaseModel, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(payload.model_dump_json(), status_code=status, headers=headers, media_type="application/json")


def sse(payload: BaseModel) -> str:
    """One server-sent event."""
    return f"data: {payload.model_dump_json()}\n\n"


def error_event(error: BaseException) -> str:
    """An error after a stream has begun (its status line is gone): one event with OpenAI's error body."""
    return sse(problem(error)[1])


def _model_of_mode(nudger: Nudger, mode: str) -> Model:
    """The one model a single-model mode runs: the nudger's in mode "nudger", else the base's."""
    return nudger.nudger if mode == "nudger" else nudger.base


def _usage(service: Service, job: Job, finished: Finished) -> Usage:
    model = _model_of_mode(service.template, job.mode)
    prompt = job.nudger_prompt if job.mode == "nudger" else job.base_prompt
    return Usage.of(len(model.tokenize(prompt)), model.count_tokens(finished.text))


def _frame(settings: ServerSettings, chat: bool) -> dict[str, Any]:
    """The fields every response and chunk of one request share."""
    return {"id": new_id("chatcmpl" if chat else "cmpl"), "created": now(), "model": settings.model_name}
