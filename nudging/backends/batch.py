"""Many generations, one forward pass per model: continuous batching for local models.

Each concurrent generation ("lane") runs the engine as it is, in its own thread, on `Lane` models: LocalModels
whose forward passes are handed to a shared `Batch` instead of being run alone. When every generation that is
running waits for a pass, the batch runs them: all lanes' new tokens of one model go through it as ONE packed
sequence (no padding), with an attention mask that lets each token see only the earlier tokens of its own lane.
The lanes' keys and values live in one `PackedCache` per model, where each lane keeps, crops and extends its own
positions exactly as a LocalModel does with its private cache; dropped positions are holes, masked, and squeezed
out when the cache runs out of room. Each lane thus computes what it would alone (up to float rounding, as in any
batched inference), at the cost of one pass over the weights for all of them.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

import torch

from nudging.backends.interface import Model
from nudging.backends.local import LocalModel, input_device

INITIAL_CAPACITY = 1024  # cached positions per model before the first growth
PASS_TOKENS = 2048  # new tokens per packed pass at most (the masks are queries x keys): more make several passes
MAX_WAIT_SECONDS = 0.2  # a queued pass runs after this long even if some generation is still busy


class PackedCache:
    """Keys and values of all lanes of one model, in one sequence; `update` writes a pass's entries at `length`
    (the model calls it once per layer) and returns everything written so far. Duck-types transformers' Cache."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.length = 0  # entries in use (live and holes); a pass writes after them
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []

    def update(self, keys: torch.Tensor, values: torch.Tensor, layer_idx: int, kwargs: Any = None, **_: Any):
        if layer_idx == len(self.keys):
            shape = (keys.shape[0], keys.shape[1], self.capacity, keys.shape[3])
            self.keys.append(keys.new_zeros(shape))
            self.values.append(values.new_zeros(shape))
        end = self.length + keys.shape[2]
        self.keys[layer_idx][:, :, self.length : end] = keys
        self.values[layer_idx][:, :, self.length : end] = values
        return self.keys[layer_idx][:, :, :end], self.values[layer_idx][:, :, :end]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.length

    def gather(self, indices: torch.Tensor, capacity: int) -> None:
        """Keep only the entries at `indices`, moved to the front, in a cache that holds `capacity` entries."""
        for store in (self.keys, self.values):
            for layer, tensor in enumerate(store):
                fresh = tensor.new_zeros((tensor.shape[0], tensor.shape[1], capacity, tensor.shape[3]))
                fresh[:, :, : len(indices)] = tensor.index_select(2, indices.to(tensor.device))  # sharded: per layer
                store[layer] = fresh
        self.capacity = capacity
        self.length = len(indices)


@dataclass
class PassRequest:
    """One lane's forward pass: keep its first `keep` cached positions, feed `new_ids`, return the next-token
    logits of the last `logits` positions."""

    lane: int
    keep: int
    new_ids: list[int]
    logits: int
    result: torch.Tensor | None = None
    error: BaseException | None = None
    done: bool = False


@dataclass
class PackedStats:
    """Work of one model serving lanes: packed passes, the lanes' passes they held, tokens fed."""

    passes: int = 0
    lane_passes: int = 0
    tokens: int = 0
    compactions: int = 0  # times the holes were squeezed out of the cache (and it grew, where it had to)

    def to_dict(self) -> dict[str, float]:
        return {"packed_passes": self.passes, "lane_passes": self.lane_passes, "tokens": self.tokens,
                "lanes_per_pass": self.lane_passes / self.passes if self.passes else 0.0,
                "compactions": self.compactions}


class PackedModel:
    """One transformers causal LM serving many lanes: their positions in one PackedCache, one pass for all."""

    def __init__(self, model: Any, capacity: int | None = None) -> None:
        capacity = capacity or INITIAL_CAPACITY
        self.model = model
        self.cache = PackedCache(capacity)
        device = input_device(model)
        self._lane_of = torch.full((capacity,), -1, dtype=torch.long, device=device)  # -1: a hole
        self._position_of = torch.zeros(capacity, dtype=torch.long, device=device)
        self._slots: dict[int, list[int]] = {}  # lane -> cache index of each of its positions, in order
        self._windows = _attention_windows(model.config)
        self.stats = PackedStats()

    def new_lane(self) -> int:
        lane = len(self._slots)
        self._slots[lane] = []
        return lane

    def forward(self, requests: Sequence[PassRequest]) -> list[torch.Tensor]:
        """Run every request in one packed pass; returns each one's logits [n, vocab] in float32."""
        for request in requests:
            self._crop(request.lane, request.keep)
        total = sum(len(request.new_ids) for request in requests)
        self._make_room(total)
        start = self.cache.length
        lanes, positions, kept_rows = [], [], []
        for request in requests:
            count = len(request.new_ids)
            first = start + len(lanes)
            kept_rows.extend(range(len(lanes) + count - request.logits, len(lanes) + count))
            self._slots[request.lane].extend(range(first, first + count))
            lanes.extend([request.lane] * count)
            positions.extend(range(request.keep, request.keep + count))
        device = self._lane_of.device
        query_lane = torch.tensor(lanes, dtype=torch.long, device=device)
        query_position = torch.tensor(positions, dtype=torch.long, device=device)
        self._lane_of[start : start + total] = query_lane
        self._position_of[start : start + total] = query_position
        ids = torch.tensor([[i for request in requests for i in request.new_ids]], dtype=torch.long, device=device)
        masks = self._masks(query_lane, query_position, start + total)
        try:
            with torch.inference_mode():
                output = self.model(
                    input_ids=ids, position_ids=query_position[None], attention_mask=masks, cache=self.cache,
                    use_cache=True, logits_to_keep=torch.tensor(kept_rows, device=device),
                )
        except BaseException:
            for request in requests:  # those lanes start over (their LocalModel state is reset too)
                self._crop(request.lane, 0)
            raise
        self.cache.length = start + total
        self.stats.passes += 1
        self.stats.lane_passes += len(requests)
        self.stats.tokens += total
        logits = output.logits[0].float()
        pieces, offset = [], 0
        for request in requests:
            pieces.append(logits[offset : offset + request.logits])
            offset += request.logits
        return pieces

    def _masks(self, query_lane: torch.Tensor, query_position: torch.Tensor, length: int) -> Any:
        """Additive masks [1, 1, queries, keys]: a token sees the tokens of its own lane at earlier or equal
        positions (within the sliding window, for sliding-window layers)."""
        key_lane, key_position = self._lane_of[:length], self._position_of[:length]
        seen = (key_lane[None, :] == query_lane[:, None]) & (key_position[None, :] <= query_position[:, None])
        dtype = self.model.dtype
        minimum = torch.finfo(dtype).min

        def additive(allowed: torch.Tensor) -> torch.Tensor:
            mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
            return mask.masked_fill_(~allowed, minimum)[None, None]

        masks = {}
        for layer_type, window in self._windows.items():
            allowed = seen if window is None else seen & (query_position[:, None] - key_position[None, :] < window)
            masks[layer_type] = additive(allowed)
        return masks if len(masks) > 1 or "full_attention" not in masks else masks["full_attention"]

    def _crop(self, lane: int, keep: int) -> None:
        slots = self._slots[lane]
        if keep < len(slots):
            dropped = torch.tensor(slots[keep:], dtype=torch.long, device=self._lane_of.device)
            self._lane_of[dropped] = -1
            del slots[keep:]

    def _make_room(self, incoming: int) -> None:
        """Squeeze out the holes (and grow) when the next pass would not fit after the entries in use."""
        if self.cache.length + incoming <= self.cache.capacity:
            return
        live = [index for slots in self._slots.values() for index in slots]
        self.stats.compactions += 1
        capacity = self.cache.capacity
        while len(live) + incoming > capacity * 3 // 4:
            capacity *= 2
        device = self._lane_of.device
        indices = torch.tensor(live, dtype=torch.long, device=device)
        lane_of = torch.full((capacity,), -1, dtype=torch.long, device=device)
        position_of = torch.zeros(capacity, dtype=torch.long, device=device)
        lane_of[: len(live)] = self._lane_of[indices]
        position_of[: len(live)] = self._position_of[indices]
        self._lane_of, self._position_of = lane_of, position_of
        if self.cache.keys:
            self.cache.gather(indices, capacity)
        else:
            self.cache.capacity = capacity
        self.cache.length = len(live)
        first = 0
        for lane, slots in self._slots.items():
            self._slots[lane] = list(range(first, first + len(slots)))
            first += len(slots)


def _attention_windows(config: Any) -> dict[str, int | None]:
    """The attention kinds of a model's layers and their windows: what its own mask functions would build."""
    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None)
    if layer_types:
        return {kind: (window if kind == "sliding_attention" else None) for kind in set(layer_types)}
    if window and getattr(config, "use_sliding_window", True):
        return {"full_attention": window}
    return {"full_attention": None}


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
