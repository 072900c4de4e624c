"""A local model's lookahead (spec step 1) computed as far as the engine reads it, and the rest of it computed
alongside the model's later passes.

The engine needs a round's whole lookahead only to know whether the nudger's EOS comes within its L tokens; the
nudge itself is its first word or two. So it reads a `RunLookahead` token by token up to the word where the base
takes over and `defer`s the rest (nudging.engine). The model then keeps its KV cache as the trunk of a packed
cache (nudging.backends.packed), and each deferred rest becomes a lane forked from the trunk where its run left
it: every later pass of the model also advances each rest by one token, in rows that cost next to nothing on a
CPU (a pass of up to four tokens costs about what a pass of one does, nudging.backends.cpu_linear), and `settle`
completes what is left in passes of the rests alone. Every token is still the model's own greedy choice after
its own run's tokens: the lookaheads are the spec's.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import torch
from transformers.cache_utils import DynamicLayer

from nudging.backends.interface import Lookahead
from nudging.backends.packed import TRUNK, PackedModel, PassRequest, kept_prefix, share_trunk


class RunLookahead(Lookahead):
    """greedy(text, max_tokens) of a local model's run, one token per `extend`."""

    def __init__(self, run: Any, max_tokens: int) -> None:  # a nudging.backends.local.LocalRun
        super().__init__()
        self.run = run
        self.max_tokens = max_tokens
        self.written = 0

    @property
    def complete(self) -> bool:
        return self.ended or self.written >= self.max_tokens

    def extend(self) -> None:
        if self.complete:
            raise ValueError("this lookahead is complete")
        self.take(self.run.next_logits())

    def take(self, logits: torch.Tensor) -> None:
        """Write the token these next-token logits (after the run's ids) choose."""
        run = self.run
        choice = run.model.choose(logits, run.ids, run.detokenizer)
        if choice.is_eos:
            self.ended = True
        else:
            self.text += run.append(choice)
            self.written += 1


class LazyLookaheads:
    """LocalModel's lookaheads, read lazily where asked, and their rests carried by its later passes. Uses the
    model's `_cache`, `_cached_ids`, `_trunk` (the cache as a Trunk, once a rest was deferred), `model`, `counters`,
    `sampler`, `context_length` and `draft_tokens`."""

    _trunk: "Trunk | None"

    def lookahead(self, text: str, max_tokens: int, lazy: bool = False) -> Lookahead:
        """greedy(text, max_tokens); `lazy`: a token per `extend`. A sampling model writes it whole at once, so
        that its random draws come in the spec's order; so does a run that could reach the end of the context
        window (its error comes here, as the spec's step 1 has it)."""
        if lazy and self.sampler.greedy:
            run = self.start_run(text)
            if self.context_length is None or len(run.ids) + max_tokens <= self.context_length:
                return RunLookahead(run, max_tokens)
        return super().lookahead(text, max_tokens)  # type: ignore[misc]

    def defer(self, lookahead: Lookahead) -> None:
        """Compute the rest of this model's lookahead a token at a time in its later passes (where its cache
        holds every position, which a packed trunk then takes over), until `settle`."""
        if not isinstance(lookahead, RunLookahead) or lookahead.complete or lookahead.run.model is not self:
            return
        if self._trunk is None:
            self._trunk = Trunk.from_cache(self.model, self._cache, len(self._cached_ids), self.counters)
            if self._trunk is None:
                return
            self._cache = None
        self._trunk.defer(lookahead, self._cached_ids)

    def settle(self, lookaheads: Sequence[Lookahead]) -> None:
        """Complete the lookaheads: the deferred ones in passes of their own, the others token by token."""
        if self._trunk is not None:
            self._trunk.settle([lookahead for lookahead in lookaheads if lookahead in self._trunk.rests])
        for lookahead in lookaheads:
            lookahead.finish()

    def guess_room(self) -> int:
        """Guessed tokens a pass may feed: deferred rests come first (their tokens are certain to be needed)."""
        return max(0, self.draft_tokens - (len(self._trunk.rests) if self._trunk is not None else 0))

    def drop_rests(self) -> None:
        """A new generation: rests deferred by one that ended early are not needed."""
        if self._trunk is not None:
            self._trunk.drop()


class Trunk:
    """A local model's KV cache as the trunk lane of a PackedModel, with a lane per deferred lookahead. Work done
    for the rests goes into the model's counters (its own pass is counted where it asks for it)."""

    def __init__(self, model: Any, layers: Sequence[tuple[torch.Tensor, torch.Tensor]], counters: Any) -> None:
        self.packed = PackedModel(model, capacity=2 * layers[0][0].shape[2])
        self.packed.start_trunk(layers)
        self.counters = counters
        self.rests: dict[RunLookahead, int] = {}  # a deferred lookahead -> its lane

    @staticmethod
    def from_cache(model: Any, cache: Any, cached_length: int, counters: Any) -> "Trunk | None":
        """A trunk holding a DynamicCache's entries; None where a layer holds only a window of them (or none)."""
        layers = getattr(cache, "layers", None)
        if not layers or not all(type(layer) is DynamicLayer and layer.keys.shape[2] == cached_length
                                 for layer in layers):
            return None
        return Trunk(model, [(layer.keys, layer.values) for layer in layers], counters)

    def defer(self, lookahead: RunLookahead, cached_ids: Sequence[int]) -> None:
        """Fork a lane for the lookahead's rest from the trunk, where its run's ids and the trunk's part."""
        ids = lookahead.run.ids
        self.rests[lookahead] = self.packed.new_lane(offset=kept_prefix(cached_ids, ids, len(ids) - 1))

    def forward(self, ids: Sequence[int], keep: int, logits: int, room: int) -> torch.Tensor:
        """The model's own pass (keep the trunk's first `keep` positions, feed the rest of `ids`), with up to
        `room` rests advanced by one token in the same pass."""
        self._keep_trunk(keep)
        riders = list(self.rests)[:room]
        steps = [self._step(rest) for rest in riders]
        outputs = self.packed.forward([PassRequest(TRUNK, keep, list(ids[keep:]), logits)] + steps)
        self._count(steps, passes=0)
        self._took(riders, outputs[1:])
        return outputs[0]

    def settle(self, lookaheads: Sequence[RunLookahead]) -> None:
        """Complete these deferred lookaheads, in passes of their lanes alone."""
        while running := [rest for rest in lookaheads if rest in self.rests]:
            started = time.perf_counter()
            steps = [self._step(rest) for rest in running]
            outputs = self.packed.forward(steps)
            self.counters.seconds += time.perf_counter() - started
            self._count(steps, passes=1)
            self._took(running, outputs)

    def drop(self) -> None:
        """Forget every rest (a generation that ended before they were needed)."""
        for lane in self.rests.values():
            self.packed.close_lane(lane)
        self.rests.clear()

    def _keep_trunk(self, keep: int) -> None:
        """The trunk keeps its first `keep` positions. A rest forked after them takes over the positions between
        (the newest one; older rests that need them too get copies)."""
        needing = [rest for rest, lane in self.rests.items() if self.packed.lane_offset(lane) > keep]
        for rest in needing[:-1]:
            share_trunk(self.packed, self.rests[rest], keep)
        if needing:
            self.packed.hand_over(self.rests[needing[-1]], keep)
        self.packed.crop(TRUNK, keep)

    def _step(self, rest: RunLookahead) -> PassRequest:
        """A rest's next pass: the tokens of its run its lane does not hold yet (its latest one, after the first)."""
        lane = self.rests[rest]
        held = self.packed.lane_offset(lane) + self.packed.lane_length(lane)
        return PassRequest(lane, self.packed.lane_length(lane), list(rest.run.ids[held:]), 1)

    def _count(self, steps: Sequence[PassRequest], passes: int) -> None:
        self.counters.forward_passes += passes
        self.counters.tokens_processed += sum(len(step.new_ids) for step in steps)
        self.counters.logit_rows += sum(step.logits for step in steps)

    def _took(self, rests: Sequence[RunLookahead], outputs: Sequence[torch.Tensor]) -> None:
        for rest, logits in zip(rests, outputs):
            rest.take(logits[-1])
            if rest.complete:
                self.packed.close_lane(self.rests.pop(rest))
