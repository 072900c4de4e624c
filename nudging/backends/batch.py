"""Many generations, one forward pass per model: continuous batching for local models.

Each concurrent generation ("lane") runs the engine as it is, in its own thread, on `Lane` models: LocalModels
whose forward passes are handed to a shared `Batch` instead of being run alone. When every generation that is
running waits for a pass, the batch runs them: all lanes' new tokens of one model go through it as one packed
pass (nudging.backends.packed), each lane seeing only its own tokens, at the cost of one pass over the weights for
all of them.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

import torch

from nudging.backends.interface import Lookahead, Model
from nudging.backends.local import LocalModel
from nudging.backends.packed import PackedModel, PassRequest

PASS_TOKENS = 2048  # new tokens per packed pass at most (the masks are queries x keys): more make several passes
MAX_WAIT_SECONDS = 0.2  # a queued pass runs after this long even if some generation is still busy


@dataclass
class Batch:
    """Gathers the forward passes of the generations running at once and runs them together, one pass per model.

    A thread taking part holds `member()` while it generates (a thread that is not a member joins for the length
    of its pass). Each model has a worker thread that runs its passes: when every member waits for a pass (of
    this model, or of another one that is running), or when its oldest request has waited `max_wait` seconds (a
    member busy elsewhere does not hold the others up for long). The models' workers run at the same time, each
    with an equal share of the CPU threads, so that the base's pass and the nudger's overlap.
    """

    models: int = 1  # models whose workers share the CPU threads
    max_wait: float = MAX_WAIT_SECONDS

    def __post_init__(self) -> None:
        self._condition = threading.Condition()
        self._members = 0
        self._waiting = 0
        self._pending: dict[PackedModel, list[PassRequest]] = {}
        self._oldest: dict[PackedModel, float] = {}
        self._workers: dict[PackedModel, threading.Thread] = {}
        self._local = threading.local()
        # set in each worker: a new thread starts with its creator's setting, and members run with one
        self._threads = max(1, torch.get_num_threads() // max(1, self.models))

    @contextmanager
    def member(self) -> Iterator[None]:
        depth = getattr(self._local, "depth", 0)
        self._local.depth = depth + 1
        threads = torch.get_num_threads()
        if depth == 0:
            # A member's own tensor work is small (choosing a token); one thread for it leaves the cores to the
            # workers' passes (the setting is per thread).
            torch.set_num_threads(1)
            with self._condition:
                self._members += 1
        try:
            yield
        finally:
            self._local.depth = depth
            if depth == 0:
                torch.set_num_threads(threads)
                with self._condition:
                    self._members -= 1
                    self._condition.notify_all()

    def run(self, packed: PackedModel, request: PassRequest) -> torch.Tensor:
        """Queue one lane's pass and wait for its logits."""
        with self.member(), self._condition:
            self._pending.setdefault(packed, []).append(request)
            self._waiting += 1
            self._oldest.setdefault(packed, time.monotonic())
            if packed not in self._workers:
                self._workers[packed] = threading.Thread(target=self._work, args=(packed,), name="nudging-batch",
                                                         daemon=True)
                self._workers[packed].start()
            self._condition.notify_all()
            while not request.done:
                self._condition.wait()
        if request.error is not None:
            raise request.error
        return request.result

    def _work(self, packed: PackedModel) -> None:
        torch.set_num_threads(self._threads)
        with self._condition:
            while True:
                if packed not in self._pending:
                    if self._members == 0:
                        del self._workers[packed]  # the next pass starts a new worker
                        return
                    self._condition.wait()
                    continue
                waited = time.monotonic() - self._oldest[packed]
                if self._waiting < self._members and waited < self.max_wait:
                    self._condition.wait(self.max_wait - waited)
                    continue
                self._run_pending(packed)

    def _run_pending(self, packed: PackedModel) -> None:
        """Run the queued passes of one model (called holding the lock, which is released while it runs)."""
        requests = self._pending.pop(packed)
        del self._oldest[packed]
        self._condition.release()
        try:
            for group in _groups(requests, PASS_TOKENS):
                try:
                    results = packed.forward(group)
                except BaseException as error:  # each waiting lane gets the error in its own thread
                    for request in group:
                        request.error = error
                else:
                    for request, result in zip(group, results):
                        request.result = result
        finally:
            self._condition.acquire()
            for request in requests:
                request.done = True
            self._waiting -= len(requests)
            self._condition.notify_all()


def _groups(requests: list[PassRequest], budget: int) -> Iterator[list[PassRequest]]:
    """The requests in order, in groups of at most `budget` new tokens (a larger request is a group alone)."""
    group: list[PassRequest] = []
    tokens = 0
    for request in requests:
        if group and tokens + len(request.new_ids) > budget:
            yield group
            group, tokens = [], 0
        group.append(request)
        tokens += len(request.new_ids)
    if group:
        yield group


class Lane(LocalModel):
    """A LocalModel whose forward passes go through a shared Batch (its cache is its part of a PackedCache)."""

    def __init__(self, packed: PackedModel, batch: Batch, tokenizer: Any, *, name: str, sampling: Any) -> None:
        super().__init__(packed.model, tokenizer, name=name, sampling=sampling)
        self.packed = packed
        self.batch = batch
        self.lane = packed.new_lane()

    def replica(self) -> "Lane":
        """Another lane of the same batch."""
        return Lane(self.packed, self.batch, self.tokenizer, name=self.name, sampling=self.sampling)

    def lookahead(self, text: str, max_tokens: int, lazy: bool = False) -> Lookahead:
        """Whole at once: a lane's passes go through the batch, which carries no deferred rests."""
        return super().lookahead(text, max_tokens, lazy=False)

    def _forward(self, ids: Sequence[int], keep: int, logits: int) -> torch.Tensor:
        return self.batch.run(self.packed, PassRequest(self.lane, keep, list(ids[keep:]), logits))


def make_lanes(models: Mapping[str, Model], count: int) -> tuple[Batch | None, list[dict[str, Model]]]:
    """`count` sets of the same models whose local models run their forward passes together (one Batch, one
    PackedModel per local model); a model on a server gets a replica per set (its server batches on its side).
    Returns the batch (None when no model is local) and the sets."""
    packed = {role: PackedModel(model.model) for role, model in models.items() if isinstance(model, LocalModel)}
    batch = Batch(models=len(packed))
    sets = []
    for _ in range(count):
        sets.append({role: Lane(packed[role], batch, model.tokenizer, name=model.name, sampling=model.sampling)
                     if role in packed else model.replica() for role, model in models.items()})
    return (batch if packed else None), sets
