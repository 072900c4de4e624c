"""A plain reference of NUDGING_SPEC.md: no cache, a full forward pass per query, whole-run decoding.

It shares no code with the engine on purpose (only the tokenizers and models), so the cached engine can be
checked against it. `events` records which branch each decision took, so tests can show every branch ran, and
each model's `decisions` how far each top-1 it computed was from flipping (see `margins`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

REPLACEMENT = "\ufffd"


class ContextFull(Exception):
    pass


class RefModel:
    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer
        configured = model.generation_config.eos_token_id
        configured = [] if configured is None else [configured] if isinstance(configured, int) else list(configured)
        self.eos = set(configured) | ({tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set())
        self.context = model.config.max_position_embeddings
        self.decisions: list[tuple[float, float]] = []  # per top1 call: (top-1 probability, top-1 - top-2 logit)

    def tokens(self, text: str) -> list[int]:
        return list(self.tokenizer(text)["input_ids"])

    def top1(self, ids: list[int]) -> tuple[int, float]:
        if len(ids) > self.context:
            raise ContextFull
        with torch.no_grad():
            logits = self.model(input_ids=torch.tensor([ids]), logits_to_keep=1).logits[0, -1].float()
        probs = torch.softmax(logits, dim=-1)
        best = torch.topk(logits, 2).values
        self.decisions.append((float(probs.max()), float(best[0] - best[1])))
        return int(torch.argmax(probs)), float(probs.max())

    def text(self, ids: list[int]) -> str:
        """The run's text at its last token boundary where the decode ends on a whole character."""
        for end in range(len(ids), -1, -1):
            decoded = self.tokenizer.decode(ids[:end], skip_special_tokens=False, clean_up_tokenization_spaces=False)
            if not decoded.endswith(REPLACEMENT):
                return decoded
        return ""

    def piece(self, ids: list[int], token: int) -> str:
        before, after = self.text(ids), self.text(ids + [token])
        assert after.startswith(before), (before, after)
        return after[len(before) :]

    def greedy(self, text: str, n: int) -> tuple[str, bool]:
        ids, out = self.tokens(text), ""
        for _ in range(n):
            token, _ = self.top1(ids)
            if token in self.eos:
                return out, True
            out += self.piece(ids, token)
            ids.append(token)
        return out, False


@dataclass
class RefResult:
    text: str
    spans: list[tuple[str, str]]
    stop_reason: str
    events: list[str] = field(default_factory=list)


def _merge(spans):
    merged = []
    for text, source in spans:
        if not text:
            continue
        if merged and merged[-1][1] == source:
            merged[-1] = (merged[-1][0] + text, source)
        else:
            merged.append((text, source))
    return merged


@dataclass
class Margins:
    """How close a run's decisions came to flipping: the smallest |p - gamma| of the base's top-1 probabilities
    (each is compared with gamma) and the smallest gap between the two largest logits of any top1 call (an
    argmax, both models). A difference in the numbers smaller than these cannot change the answer."""

    gamma: float
    logit: float

    def above(self, threshold: float) -> bool:
        return self.gamma > threshold and self.logit > threshold


def margins(base, nudger, gamma) -> Margins:
    """The margins of the decisions recorded since the models' `decisions` were last cleared."""
    return Margins(min((abs(p - gamma) for p, _ in base.decisions), default=math.inf),
                   min((gap for _, gap in base.decisions + nudger.decisions), default=math.inf))


def reference_nudging(base: RefModel, nudger: RefModel, base_prompt, nudger_prompt, gamma, lookahead, budget,
                      chunk: int | None = None):
    """The spec's algorithm. With `chunk`, base stages are read as the authors' API code reads them (docs/remote.md,
    "chunked"): each request brings `chunk` tokens from the text it was sent, and the next request starts from the
    whole text so far re-tokenized, not from the run's own tokens. A word check is the first token of such a
    request, and the request that takes over is the first of the stage."""
    answer, spans, nudges, events = "", [], [], []

    def finish(reason):
        return RefResult(answer, _merge(spans), reason, events)

    def full():
        return len(base.tokenizer(answer, add_special_tokens=False)["input_ids"]) >= budget

    try:
        while True:
            c, eos = nudger.greedy(nudger_prompt + answer, lookahead)
            if eos:
                answer += c
                spans.append((c, "nudger"))
                return finish("nudger_eos")
            lead = c[: len(c) - len(c.lstrip(" "))]
            words = c.lstrip(" ").split(" ")
            nudge, takeover = None, None
            for i in range(1, len(words)):
                if not words[i]:
                    continue
                ids = base.tokens(base_prompt + answer + lead + " ".join(words[:i]))
                token, p = base.top1(ids)
                if token in base.eos:
                    events.append("takeover_by_eos")
                elif p >= gamma:
                    events.append("takeover_confident")
                elif (" " + words[i]).startswith(base.piece(ids, token)):
                    events.append("takeover_agrees")
                else:
                    events.append("word_accepted")
                    continue
                nudge, takeover = lead + " ".join(words[:i]), (ids, token)
                break
            if nudge is None:
                events.append("no_takeover")
                nudge = lead + " ".join(words[: len(words) - 1]) if len(words) >= 2 else c
            if len(nudges) >= 3 and all(prev == nudge for prev in nudges[-3:]):
                return finish("repetition")
            nudges.append(nudge)
            answer += nudge
            spans.append((nudge, "nudger"))
            if full():
                return finish("length")
            if takeover is None:
                continue
            ids, token = takeover
            read = 1  # tokens taken from the request the stage reads (chunked)
            while token not in base.eos:
                piece = base.piece(ids, token)
                ids = ids + [token]
                answer += piece
                spans.append((piece, "base"))
                if full():
                    return finish("length")
                if read == chunk:
                    retokenized = base.tokens(base_prompt + answer)
                    events.append("chunk_retokenized" if retokenized != ids else "chunk")
                    ids, read = retokenized, 0
                token, p = base.top1(ids)
                read += 1
                if p < gamma:
                    events.append("base_stage_unsure")
                    break
            else:
                events.append("base_stage_eos")
    except ContextFull:
        events.append("context_full")
        return finish("length")


# --- the paper's baselines, just as plainly ---------------------------------------------------------------------
def _logprobs(model: RefModel, ids: list[int]) -> torch.Tensor:
    if len(ids) > model.context:
        raise ContextFull
    with torch.no_grad():
        logits = model.model(input_ids=torch.tensor([ids])).logits[0, -1].double()
    return torch.log_softmax(logits, dim=-1)


def reference_fused(models, prompts, method, budget, alpha=1.0, temperature=0.0, seed=0):
    """Proxy tuning (base, expert, anti-expert) or the ensemble (base, nudger) on full forward passes."""
    ids = [m.tokens(p) for m, p in zip(models, prompts)]
    eos = set().union(*(m.eos for m in models))
    generator = torch.Generator().manual_seed(seed)
    answer, spans = "", []
    try:
        for _ in range(budget):
            rows = [_logprobs(m, i) for m, i in zip(models, ids)]
            width = min(len(r) for r in rows)
            rows = [r[:width] for r in rows]
            if method == "proxy-tuning":
                scores = rows[0] + alpha * (rows[1] - rows[2])
            else:
                scores = torch.log(sum(torch.exp(r) for r in rows) / len(rows))
            if temperature == 0:
                token = int(torch.argmax(scores))
            else:
                token = int(torch.multinomial(torch.softmax(scores / temperature, dim=-1), 1, generator=generator))
            if token in eos:
                return RefResult(answer, _merge(spans), "eos")
            piece = models[0].piece(ids[0], token)
            spans.append((piece, "base" if token == int(torch.argmax(rows[0])) else "nudger"))
            answer += piece
            ids = [i + [token] for i in ids]
    except ContextFull:
        pass
    return RefResult(answer, _merge(spans), "length")


def _top_strings(model: RefModel, ids: list[int], row: torch.Tensor, k: int) -> dict[str, float]:
    """The k most likely next strings (EOS and empty pieces out, one entry per string at its highest)."""
    best: dict[str, float] = {}
    for token in torch.argsort(row, descending=True).tolist():
        if len(best) == k:
            break
        if token in model.eos:
            continue
        piece = model.piece(ids, token)
        if piece and piece not in best:
            best[piece] = float(torch.exp(row[token]))
    return best


def reference_text_ensemble(base: RefModel, nudger: RefModel, base_prompt, nudger_prompt, k, budget):
    answer, spans, events = "", [], []

    def full():
        return len(base.tokenizer(answer, add_special_tokens=False)["input_ids"]) >= budget

    try:
        while True:
            bids, nids = base.tokens(base_prompt + answer), nudger.tokens(nudger_prompt + answer)
            while True:
                brow, nrow = _logprobs(base, bids), _logprobs(nudger, nids)
                bt, nt = int(torch.argmax(brow)), int(torch.argmax(nrow))
                if nt in nudger.eos:
                    events.append("nudger_eos")
                    return RefResult(answer, _merge(spans), "eos", events)
                bpiece = "" if bt in base.eos else base.piece(bids, bt)
                npiece = nudger.piece(nids, nt)
                if bt not in base.eos and bpiece and bpiece == npiece:
                    events.append("agree")
                    bids, nids = bids + [bt], nids + [nt]
                    answer += bpiece
                    spans.append((bpiece, "base"))
                    if full():
                        return RefResult(answer, _merge(spans), "length", events)
                    continue
                if bt in base.eos:
                    events.append("base_eos")
                    text = npiece or next(iter(_top_strings(nudger, nids, nrow, k)), "")
                else:
                    events.append("disagree")
                    totals: dict[str, float] = {}
                    for model, ids, row in ((base, bids, brow), (nudger, nids, nrow)):
                        for string, prob in _top_strings(model, ids, row, k).items():
                            totals[string] = totals.get(string, 0.0) + prob
                    text = max(totals.items(), key=lambda item: item[1])[0] if totals else (bpiece or npiece)
                    if text != bpiece:
                        events.append("nudger_string_won")
                if not text:
                    return RefResult(answer, _merge(spans), "eos", events)
                answer += text
                spans.append((text, "base" if text == bpiece and bt not in base.eos else "nudger"))
                if full():
                    return RefResult(answer, _merge(spans), "length", events)
                break
    except ContextFull:
        events.append("context_full")
        return RefResult(answer, _merge(spans), "length", events)
