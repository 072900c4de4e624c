"""Several sequences of one model in one forward pass: a packed KV cache and the masks that keep them apart.

All sequences' ("lanes'") new tokens of a pass go through the model as ONE packed sequence (no padding), with an
attention mask that lets each token see only the earlier tokens of its own lane, and the trunk lane's before the
point where its lane forked from the trunk, if it did. The lanes' keys and values live in one `PackedCache`, where
each lane keeps, crops and extends its own positions exactly as a LocalModel does with its private cache; dropped
positions are holes, masked, and squeezed out when the cache runs out of room. Each lane thus computes what it
would alone (up to float rounding, as in any batched inference), at the cost of one pass over the weights for all
of them. Continuous batching (nudging.backends.batch) uses lanes; a lookahead's rest computed alongside a model's
own passes (nudging.backends.lookahead) uses a lane forked from the trunk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from nudging.backends.devices import input_device

TRUNK = -2  # the trunk lane: each other lane sees its positions before that lane's offset
INITIAL_CAPACITY = 1024  # cached positions per model before the first growth


def kept_prefix(cached_ids: Sequence[int], ids: Sequence[int], first_position: int) -> int:
    """How many leading positions of `ids` a pass can keep from a cache of `cached_ids` (it recomputes from
    first_position at the latest, and always feeds the last id)."""
    keep = 0
    limit = min(len(cached_ids), first_position, len(ids) - 1)
    while keep < limit and cached_ids[keep] == ids[keep]:
        keep += 1
    return keep



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

    def seed(self, layers: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Start an empty cache from these keys and values (per layer, [batch, heads, length, dim])."""
        for layer, (keys, values) in enumerate(layers):
            self.update(keys, values, layer)
        self.length = layers[0][0].shape[2]

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
        self._offsets: dict[int, int] = {}  # lane -> the position of its first entry; it sees the trunk's before it
        self._lanes_opened = 0
        self._windows = _attention_windows(model.config)
        self.stats = PackedStats()

    def new_lane(self, offset: int = 0) -> int:
        """A lane; with `offset`, one that continues the first `offset` positions of the trunk (`start_trunk`)."""
        lane = self._lanes_opened
        self._lanes_opened += 1
        self._slots[lane] = []
        self._offsets[lane] = offset
        return lane

    def close_lane(self, lane: int) -> None:
        """A lane that is done: its positions become holes, and it is forgotten."""
        self.crop(lane, 0)
        del self._slots[lane], self._offsets[lane]

    def start_trunk(self, layers: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Open the trunk lane (TRUNK) of an empty PackedModel, holding these keys and values (per layer, as a
        KV cache holds them). Lanes opened with an offset see its positions before their offset."""
        if self._slots or self.cache.length:
            raise ValueError("the trunk goes into an empty PackedModel")
        length = layers[0][0].shape[2]
        self._slots[TRUNK] = []
        self._offsets[TRUNK] = 0
        self._make_room(length)
        self.cache.seed(layers)
        self._lane_of[:length] = TRUNK
        self._position_of[:length] = torch.arange(length, device=self._lane_of.device)
        self._slots[TRUNK] = list(range(length))

    def hand_over(self, lane: int, keep: int) -> None:
        """The trunk keeps its first `keep` positions; those from there up to `lane`'s offset become the lane's
        own (it still needs them), and the rest of the trunk's are dropped."""
        trunk, offset = self._slots[TRUNK], self._offsets[lane]
        if keep < offset:
            moved = trunk[keep:offset]
            self._lane_of[torch.tensor(moved, dtype=torch.long, device=self._lane_of.device)] = lane
            self._slots[lane] = moved + self._slots[lane]
            self._offsets[lane] = keep
            del trunk[keep:offset]
        self.crop(TRUNK, keep)

    def lane_length(self, lane: int) -> int:
        """Positions the lane holds of its own."""
        return len(self._slots[lane])

    def lane_offset(self, lane: int) -> int:
        """The position of the lane's first own entry (the trunk's before it are its too)."""
        return self._offsets[lane]

    def forward(self, requests: Sequence[PassRequest]) -> list[torch.Tensor]:
        """Run every request in one packed pass; returns each one's logits [n, vocab] in float32."""
        for request in requests:
            self.crop(request.lane, request.keep)
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
            first_position = self._offsets[request.lane] + request.keep
            positions.extend(range(first_position, first_position + count))
        device = self._lane_of.device
        query_lane = torch.tensor(lanes, dtype=torch.long, device=device)
        query_position = torch.tensor(positions, dtype=torch.long, device=device)
        self._lane_of[start : start + total] = query_lane
        self._position_of[start : start + total] = query_position
        ids = torch.tensor([[i for request in requests for i in request.new_ids]], dtype=torch.long, device=device)
        query_offset = torch.tensor([self._offsets[lane] for lane in lanes], dtype=torch.long, device=device)
        masks = _masks(self, query_lane, query_position, query_offset, start + total)
        try:
            with torch.inference_mode():
                output = self.model(
                    input_ids=ids, position_ids=query_position[None], attention_mask=masks, cache=self.cache,
                    use_cache=True, logits_to_keep=torch.tensor(kept_rows, device=device),
                )
        except BaseException:
            for request in requests:  # those lanes start over (their LocalModel state is reset too)
                self.crop(request.lane, 0)
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

    def crop(self, lane: int, keep: int) -> None:
        """The lane keeps its first `keep` own positions."""
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


def share_trunk(packed: PackedModel, lane: int, keep: int) -> None:
    """Like `PackedModel.hand_over`, but the trunk keeps its positions from `keep` up to `lane`'s offset: the lane
    gets copies of their keys and values (for a lane that needs them while another takes them over)."""
    offset = packed._offsets[lane]
    if keep >= offset:
        return
    packed._make_room(offset - keep)  # before reading slot indices: making room renumbers them
    source = torch.tensor(packed._slots[TRUNK][keep:offset], dtype=torch.long, device=packed._lane_of.device)
    start, count = packed.cache.length, offset - keep
    for store in (packed.cache.keys, packed.cache.values):
        for tensor in store:
            tensor[:, :, start : start + count] = tensor.index_select(2, source.to(tensor.device))
    packed._lane_of[start : start + count] = lane
    packed._position_of[start : start + count] = torch.arange(keep, offset, device=packed._lane_of.device)
    packed._slots[lane] = list(range(start, start + count)) + packed._slots[lane]
    packed._offsets[lane] = keep
    packed.cache.length = start + count


def _masks(packed: PackedModel, query_lane: torch.Tensor, query_position: torch.Tensor, query_offset: torch.Tensor,
           length: int) -> Any:
    """Additive masks [1, 1, queries, keys] for a pass of `packed`: a token sees the tokens of its own lane at
    earlier or equal positions, and the trunk's before its lane's offset (within the sliding window, for
    sliding-window layers)."""
    key_lane, key_position = packed._lane_of[:length], packed._position_of[:length]
    trunk = (key_lane[None, :] == TRUNK) & (key_position[None, :] < query_offset[:, None])
    own = (key_lane[None, :] == query_lane[:, None]) & (key_position[None, :] <= query_position[:, None])
    seen = own | trunk
    dtype = packed.model.dtype
    minimum = torch.finfo(dtype).min

    def additive(allowed: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
        return mask.masked_fill_(~allowed, minimum)[None, None]

    masks = {}
    for layer_type, window in packed._windows.items():
        allowed = seen if window is None else seen & (query_position[:, None] - key_position[None, :] < window)
        masks[layer_type] = additive(allowed)
    return masks if len(masks) > 1 or "full_attention" not in masks else masks["full_attention"]


def _attention_windows(config: Any) -> dict[str, int | None]:
    """The attention kinds of a model's layers and their windows: what its own mask functions would build."""
    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None)
    if layer_types:
        return {kind: (window if kind == "sliding_attention" else None) for kind in set(layer_types)}
    if window and getattr(config, "use_sliding_window", True):
        return {"full_attention": window}
    return {"full_attention": None}
