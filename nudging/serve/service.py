"""Generations for the HTTP layer: a pool of replicas over one set of weights, a bounded wait, stop strings,
and generations that end when their client goes away.

Each replica runs one request at a time in a worker thread; its pieces reach the event loop through a queue. With
several replicas, they are lanes of one batch (nudging.batch): the running generations share each forward pass.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable, TypeVar

from nudging.config import SamplingConfig
from nudging.nudger import Nudger
from nudging.result import GenerationResult
from nudging.serve.protocol import APIError
from nudging.text import Span, StopScanner, count_words

T = TypeVar("T")


@dataclass
class Job:
    base_prompt: str
    nudger_prompt: str
    mode: str  # nudging, base, nudger
    max_tokens: int
    gamma: float | None = None
    lookahead: int | None = None
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

    def nudging_info(self) -> dict:
        nudged, total = count_words(self.spans)
        stats = self.result.to_dict()["stats"]
        stats.update(nudged_words=nudged, total_words=total, nudged_word_fraction=nudged / total if total else 0.0)
        return {"spans": [span.to_dict() for span in self.spans], "stop_reason": self.stop_reason, "stats": stats}


class Service:
    """`replicas` generations run at once; up to `queue` more wait for a free replica; beyond that: 429."""

    def __init__(self, nudger: Nudger, mode: str, replicas: int = 1, queue: int = 16) -> None:
        self.mode = mode
        self.template = nudger  # used by the event loop only (prompt checks, token counts); generations use replicas
        self._free: asyncio.Queue[Nudger] | None = None
        # several generations at once: lanes, whose local models run their forward passes together
        self._replicas = nudger.lanes(replicas) if replicas > 1 else [nudger.replica()]
        self.capacity = replicas + queue
        self.admitted = 0  # running or waiting
        self.running = 0
        self.client_gone = 0  # generations stopped because their client went away

    def _pool(self) -> asyncio.Queue[Nudger]:
        if self._free is None:  # made inside the server's event loop
            self._free = asyncio.Queue()
            for replica in self._replicas:
                self._free.put_nowait(replica)
        return self._free

    async def generate(self, job: Job) -> AsyncIterator[Span | Finished]:
        """Yield the pieces a client may see, then one Finished. Closing the iterator stops the generation."""
        scanner = StopScanner(job.stops)
        finished = False
        cancelled = threading.Event()

        def work(replica: Nudger, put: Callable[[object], None], cancelled: threading.Event) -> None:
            for model in (replica.base, replica.nudger):
                if model is not None:
                    model.sampling = job.sampling
            put(replica.generate(
                base_prompt=job.base_prompt, nudger_prompt=job.nudger_prompt, mode=job.mode, gamma=job.gamma,
                lookahead=job.lookahead, max_new_tokens=job.max_tokens, on_span=put, should_stop=cancelled.is_set,
            ))

        items = self.threaded(work, cancelled)
        try:
            async for item in items:
                if isinstance(item, Span):
                    for piece in scanner.feed(item):
                        yield piece
                    if scanner.stopped:
                        cancelled.set()  # the engine ends with stop reason "stop" and still reports
                elif isinstance(item, GenerationResult):
                    for piece in scanner.flush():
                        yield piece
                    finished = True
                    yield _finished(_cut(item.spans, scanner.sent), item, scanner.stopped)
                    return
        finally:
            if not finished and not scanner.stopped:
                self.client_gone += 1
            await items.aclose()

    async def threaded(
        self,
        work: Callable[[Nudger, Callable[[object], None], threading.Event], None],
        cancelled: threading.Event | None = None,
    ) -> AsyncIterator[object]:
        """Run `work(replica, put, cancelled)` in a worker thread and yield what it puts, as it puts it.

        Closing the iterator sets `cancelled`, which the work checks to stop early; an error in the work is
        raised here, never lost in the thread.
        """
        replica = await self._acquire()
        loop = asyncio.get_running_loop()
        items: asyncio.Queue = asyncio.Queue()
        cancelled = cancelled or threading.Event()
        end = object()

        def put(item: object) -> None:
            loop.call_soon_threadsafe(items.put_nowait, item)

        def run() -> None:
            try:
                work(replica, put, cancelled)
                put(end)
            except BaseException as error:
                put(_Failure(error))
            finally:
                loop.call_soon_threadsafe(self._release, replica)

        threading.Thread(target=run, name="nudging-generation", daemon=True).start()
        try:
            while (item := await items.get()) is not end:
                if isinstance(item, _Failure):
                    raise item.error
                yield item
        finally:
            cancelled.set()

    async def call(self, work: Callable[[Nudger], T]) -> T:
        """Run `work(replica)` in a worker thread (for requests that are not streamed piece by piece)."""
        replica = await self._acquire()
        try:
            return await asyncio.to_thread(work, replica)
        finally:
            self._release(replica)

    async def _acquire(self) -> Nudger:
        if self.admitted >= self.capacity:
            raise APIError(429, "the server is at its concurrency limit; retry later", "rate_limit_error",
                           code="too_many_requests")
        self.admitted += 1
        try:
            replica = await self._pool().get()
        except BaseException:
            self.admitted -= 1
            raise
        self.running += 1
        return replica

    def _release(self, replica: Nudger) -> None:
        self.admitted -= 1
        self.running -= 1
        self._pool().put_nowait(replica)


@dataclass
class _Failure:
    error: BaseException


def _cut(spans: list[Span], length: int) -> list[Span]:
    kept, used = [], 0
    for span in spans:
        if used >= length:
            break
        kept.append(Span(span.text[: length - used], span.source))
        used += len(kept[-1].text)
    return kept


def _finished(spans: list[Span], result: GenerationResult, stopped_by_string: bool) -> Finished:
    if stopped_by_string:
        return Finished(spans, "stop", "stop_string", result)
    finish = "length" if result.stop_reason == "length" else "stop"
    return Finished(spans, finish, result.stop_reason, result)
