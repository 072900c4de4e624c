"""A plain reference of NUDGING_SPEC.md: no cache, a full forward pass per query, whole-run decoding.

It shares no code with the engine on purpose (only the tokenizers and models), so the cached engine can be
checked against it. `events` records which branch each decision took, so tests can show every branch ran, and
`margin` how close the closest decision came to flipping (a top-1 probability against gamma, or the two most
likely tokens against each other), so a fuzzer can set aside cases that float rounding could decide. Each
model's `decisions` keeps how far each top-1 it computed was from flipping (see `margins`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import torch

REPLACEMENT = "\ufffd"


class ContextFull(Exception):
    """args[0]: the RefModel whose context the run no longer fits."""


class RefModel:
    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer
        configured = model.generation_config.eos_token_id
        configured = [] if configured is None else [configured] if isinstance(configured, int) else list(configured)
        self.eos = set(configured) | ({tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set())
        self.context = model.config.max_position_embeddings
        self.closest = float("inf")  # the smallest gap between the two most likely tokens of any top1 so far
        self.rewrites = 0  # pieces after which the decoder had rewritten text it gave before
        self.decisions: list[tuple[float, float]] = []  # per top1 call: (top-1 probability, top-1 - top-2 logit)
        self.probs: torch.Tensor | None = None  # the whole next-token distribution of the last top1 call

    def tokens(self, text: str) -> list[int]:
        return list(self.tokenizer(text)["input_ids"])

    def top1(self, ids: list[int]) -> tuple[int, float]:
        if len(ids) > self.context:
            raise ContextFull(self)
        with torch.no_grad():
            logits = self.model(input_ids=torch.tensor([ids]), logits_to_keep=1).logits[0, -1].float()
        probs = torch.softmax(logits, dim=-1)
        self.probs = probs
        first, second = torch.topk(probs, 2).values.tolist()
        self.closest = min(self.closest, first - second)
        best = torch.topk(logits, 2).values
        self.decisions.append((float(probs.max()), float(best[0] - best[1])))
        return int(torch.argmax(probs)), float(probs.max())

    def text(self, ids: list[int], start: int) -> str:
        """The run's text at its last token boundary where the decode ends on a whole character (a run that
        started from ids[:start] starts from their decode, whatever it ends with)."""
        for end in range(len(ids), start - 1, -1):
            decoded = self.tokenizer.decode(ids[:end], skip_special_tokens=False, clean_up_tokenization_spaces=False)
            if end == start or not decoded.endswith(REPLACEMENT):
                return decoded
        return ""

    def piece(self, ids: list[int], token: int, start: int) -> str:
        """What `token` adds to the text of the run `ids` (which started from ids[:start]): the new text after
        its longest common prefix with the old one (a byte-fallback decoder may rewrite bytes it decoded)."""
        before, after = self.text(ids, start), self.text(ids + [token], start)
        self.rewrites += not after.startswith(before)
        return after[len(os.path.commonprefix([before, after])) :]

    def greedy(self, text: str, n: int, events: list[str] | None = None) -> tuple[str, bool]:
        ids, out = self.tokens(text), ""
        start = len(ids)
        for _ in range(n):
            token, _ = self.top1(ids)
            if token in self.eos:
                return out, True
            piece = self.piece(ids, token, start)
            if not piece and events is not None:
                events.append("lookahead_piece_held")
            out += piece
            ids.append(token)
        return out, False


@dataclass
class RefResult:
    text: str
    spans: list[tuple[str, str]]
    stop_reason: str
    events: list[str] = field(default_factory=list)
    margin: float = float("inf")


def split_rounds(events: list[str]) -> list[list[str]]:
    """reference_nudging's events split into rounds (each round starts with a "round" event)."""
    rounds: list[list[str]] = []
    for event in events:
        if event == "round":
            rounds.append([])
        else:
            rounds[-1].append(event)
    return rounds


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


def rule_score(rule: str, p: float, probs: torch.Tensor | None) -> float:
    """NUDGING_SPEC.md, "Other acceptance rules": how sure the base is, compared with gamma."""
    if rule == "margin":
        first, second = sorted(probs.tolist(), reverse=True)[:2]
        return first - second
    if rule == "entropy":
        entropy = -sum(q * math.log(q) for q in probs.double().tolist() if q > 0)
        return math.exp(-entropy)
    return p  # top1 and agreement


def budget_reached(base: RefModel, answer: str, budget: int) -> bool:
    """NUDGING_SPEC.md step 6: the answer has `budget` base tokens (no special tokens) or more."""
    return len(base.tokenizer(answer, add_special_tokens=False)["input_ids"]) >= budget


def nudged_word_share(spans) -> float:
    """Words are runs of non-space characters; a word is the nudger's if the nudger wrote its first character."""
    text = "".join(t for t, _ in spans)
    owners = "".join(("n" if source == "nudger" else "b") * len(t) for t, source in spans)
    starts = [i for i, ch in enumerate(text) if not ch.isspace() and (i == 0 or text[i - 1].isspace())]
    return sum(owners[i] == "n" for i in starts) / len(starts) if starts else 0.0


def reference_nudging(base: RefModel, nudger: RefModel, base_prompt, nudger_prompt, gamma, lookahead, budget,
                      chunk: int | None = None, rule: str = "top1", agreement_k: int = 5,
                      max_nudged_fraction: float | None = None, window: int = 4):
    """The spec's algorithm. With `chunk`, base stages are read as the authors' API code reads them (docs/remote.md,
    "chunked"): each request brings `chunk` tokens from the text it was sent, and the next request starts from the
    whole text so far re-tokenized, not from the run's own tokens. A word check is the first token of such a
    request, and the request that takes over is the first of the stage. `rule`, `agreement_k` and
    `max_nudged_fraction`: NUDGING_SPEC.md, "Other acceptance rules" and "Intervention cap"."""
    answer, spans, nudges, events = "", [], [], []
    base.closest = nudger.closest = float("inf")
    base.rewrites = nudger.rewrites = 0
    gamma_margin = float("inf")

    def finish(reason):
        if base.rewrites or nudger.rewrites:
            events.append("decoder_rewrote")
        margin = min(gamma_margin, base.closest, nudger.closest)
        return RefResult(answer, _merge(spans), reason, events, margin)

    try:
        while True:
            events.append("round")
            if max_nudged_fraction is not None and nudged_word_share(spans) > max_nudged_fraction:
                events.append("capped")
                ids = base.tokens(base_prompt + answer)
                start = len(ids)
                while True:
                    token, _ = base.top1(ids)
                    if token in base.eos:
                        events.append("capped_eos")
                        return finish("eos")
                    piece = base.piece(ids, token, start)
                    ids = ids + [token]
                    answer += piece
                    spans.append((piece, "base"))
                    if budget_reached(base, answer, budget):
                        events.append("capped_length")
                        return finish("length")
            c, eos = nudger.greedy(nudger_prompt + answer, lookahead, events)
            if eos:
                events.append("nudger_eos_at_once" if not c else "nudger_eos_after_text")
                answer += c
                spans.append((c, "nudger"))
                return finish("nudger_eos")
            if rule == "window":
                nudge, takeover, closest = _window_check(base, base_prompt + answer, c, window, gamma, events)
                gamma_margin = min(gamma_margin, closest)
            else:
                lead = c[: len(c) - len(c.lstrip(" "))]
                words = c.lstrip(" ").split(" ")
                if not c:
                    events.append("lookahead_empty")
                elif not c.strip(" "):
                    events.append("lookahead_only_spaces")
                elif len(words) == 1:
                    events.append("lookahead_one_word")
                if lead and c.strip(" "):
                    events.append("lookahead_leading_spaces")
                nudge, takeover = None, None
                for i in range(1, len(words)):
                    if not words[i]:
                        events.append("empty_word_skipped")
                        continue
                    ids = base.tokens(base_prompt + answer + lead + " ".join(words[:i]))
                    token, p = base.top1(ids)
                    score = rule_score(rule, p, base.probs if rule != "top1" else None)
                    if token not in base.eos:
                        gamma_margin = min(gamma_margin, abs(score - gamma))
                    if token in base.eos:
                        events.append("takeover_by_eos")
                    elif score >= gamma:
                        events.append("takeover_confident")
                    elif (" " + words[i]).startswith(piece := base.piece(ids, token, len(ids))):
                        events.append("takeover_agrees")
                        if not piece:
                            events.append("empty_piece_agrees")
                    elif rule == "agreement" and not any(
                            (" " + words[i]).startswith(s)
                            for s in _top_strings(base, ids, len(ids), base.probs, agreement_k)):
                        events.append("takeover_filtered")
                    else:
                        events.append("word_accepted")
                        continue
                    nudge, takeover = lead + " ".join(words[:i]), (ids, len(ids), token)
                    break
                if nudge is None:
                    events.append("no_takeover")
                    nudge = lead + " ".join(words[: len(words) - 1]) if len(words) >= 2 else c
            if len(nudges) >= 3 and all(prev == nudge for prev in nudges[-3:]):
                return finish("repetition")
            nudges.append(nudge)
            answer += nudge
            spans.append((nudge, "nudger"))
            if budget_reached(base, answer, budget):
                events.append("length_after_nudge")
                return finish("length")
            if takeover is None:
                continue
            ids, start, token = takeover
            read = 1  # tokens taken from the request the stage reads (chunked)
            while token not in base.eos:
                piece = base.piece(ids, token, start)
                if not piece:
                    events.append("stage_piece_held")
                ids = ids + [token]
                answer += piece
                spans.append((piece, "base"))
                if budget_reached(base, answer, budget):
                    events.append("window_length" if rule == "window" else "length_in_base_stage")
                    return finish("length")
                if read == chunk:
                    retokenized = base.tokens(base_prompt + answer)
                    events.append("chunk_retokenized" if retokenized != ids else "chunk")
                    ids, start, read = retokenized, len(retokenized), 0
                token, p = base.top1(ids)
                read += 1
                if rule == "window":
                    continue  # after the window's switch the base writes to its EOS (NUDGING_SPEC.md)
                score = rule_score(rule, p, base.probs if rule != "top1" else None)
                gamma_margin = min(gamma_margin, abs(score - gamma))
                if score < gamma:
                    events.append("base_stage_unsure")
                    break
            else:
                if rule == "window":
                    events.append("window_eos")
                    return finish("eos")
                events.append("base_stage_eos")
    except ContextFull as full_context:
        events.append("context_full")
        events.append("context_full_base" if full_context.args[0] is base else "context_full_nudger")
        return finish("length")


def _window_check(base: RefModel, prefix: str, c: str, window: int, gamma: float, events: list[str]):
    """NUDGING_SPEC.md, "Window switch", step 2: the nudge, the takeover (ids, start, token) or None, and how close
    a window's mean came to gamma."""
    prompt_ids, ids = base.tokens(prefix), base.tokens(prefix + c)
    start = 0
    while start < min(len(prompt_ids), len(ids)) and prompt_ids[start] == ids[start]:
        start += 1
    start = max(start, 1)
    pieces = [base.piece(ids[:j], ids[j], start) for j in range(start, len(ids))]
    written = "".join(pieces)
    cuts = []
    if (prefix + c).endswith(written) and len(written) >= len(c):
        offset = len(prefix + c) - len(written)
        for j, piece in enumerate(pieces):
            if piece and (j == 0 or pieces[j - 1]) and offset >= len(prefix):
                cuts.append(offset - len(prefix))
            offset += len(piece)
    else:
        events.append("window_no_positions")
    if len(cuts) < window:
        events.append("window_too_few")
        return c, None, float("inf")
    scores, queries, closest = [], [], float("inf")
    for cut in cuts:
        query = base.tokens(prefix + c[:cut])
        token, p = base.top1(query)
        events.append("window_checked")
        scores.append(p)
        queries.append((query, token))
        if len(scores) >= window:
            mean = sum(scores[-window:]) / window
            closest = min(closest, abs(mean - gamma))
            if mean >= gamma:
                first = len(scores) - window
                events.append("window_switch" if first else "window_switch_at_once")
                query, token = queries[first]
                return c[: cuts[first]], (query, len(query), token), closest
    events.append("window_no_switch")
    return c[: (cuts + [len(c)])[len(cuts) - window + 1]], None, closest


# --- the paper's baselines, just as plainly ---------------------------------------------------------------------
def _logprobs(model: RefModel, ids: list[int]) -> torch.Tensor:
    if len(ids) > model.context:
        raise ContextFull(model)
    with torch.no_grad():
        logits = model.model(input_ids=torch.tensor([ids])).logits[0, -1].double()
    return torch.log_softmax(logits, dim=-1)


def reference_fused(models, prompts, method, budget, alpha=1.0, temperature=0.0, seed=0):
    """Proxy tuning (base, expert, anti-expert) or the ensemble (base, nudger) on full forward passes."""
    ids = [m.tokens(p) for m, p in zip(models, prompts)]
    start = len(ids[0])
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
            piece = models[0].piece(ids[0], token, start)
            spans.append((piece, "base" if token == int(torch.argmax(rows[0])) else "nudger"))
            answer += piece
            ids = [i + [token] for i in ids]
    except ContextFull:
        pass
    return RefResult(answer, _merge(spans), "length")


def _top_strings(model: RefModel, ids: list[int], start: int, row: torch.Tensor, k: int) -> dict[str, float]:
    """The k most likely next strings (EOS and empty pieces out, one entry per string at its highest)."""
    best: dict[str, float] = {}
    for token in torch.argsort(row, descending=True).tolist():
        if len(best) == k:
            break
        if token in model.eos:
            continue
        piece = model.piece(ids, token, start)
        if piece and piece not in best:
            best[piece] = float(torch.exp(row[token]))
    return best


def reference_text_ensemble(base: RefModel, nudger: RefModel, base_prompt, nudger_prompt, k, budget):
    answer, spans, events = "", [], []

    try:
        while True:
            bids, nids = base.tokens(base_prompt + answer), nudger.tokens(nudger_prompt + answer)
            bstart, nstart = len(bids), len(nids)
            while True:
                brow, nrow = _logprobs(base, bids), _logprobs(nudger, nids)
                bt, nt = int(torch.argmax(brow)), int(torch.argmax(nrow))
                if nt in nudger.eos:
                    events.append("nudger_eos")
                    return RefResult(answer, _merge(spans), "eos", events)
                bpiece = "" if bt in base.eos else base.piece(bids, bt, bstart)
                npiece = nudger.piece(nids, nt, nstart)
                if bt not in base.eos and bpiece and bpiece == npiece:
                    events.append("agree")
                    bids, nids = bids + [bt], nids + [nt]
                    answer += bpiece
                    spans.append((bpiece, "base"))
                    if budget_reached(base, answer, budget):
                        return RefResult(answer, _merge(spans), "length", events)
                    continue
                if bt in base.eos:
                    events.append("base_eos")
                    text = npiece or next(iter(_top_strings(nudger, nids, nstart, nrow, k)), "")
                else:
                    events.append("disagree")
                    totals: dict[str, float] = {}
                    for model, ids, start, row in ((base, bids, bstart, brow), (nudger, nids, nstart, nrow)):
                        for string, prob in _top_strings(model, ids, start, row, k).items():
                            totals[string] = totals.get(string, 0.0) + prob
                    text = max(totals.items(), key=lambda item: item[1])[0] if totals else (bpiece or npiece)
                    if text != bpiece:
                        events.append("nudger_string_won")
                if not text:
                    return RefResult(answer, _merge(spans), "eos", events)
                answer += text
                spans.append((text, "base" if text == bpiece and bt not in base.eos else "nudger"))
                if budget_reached(base, answer, budget):
                    return RefResult(answer, _merge(spans), "length", events)
                break
    except ContextFull:
        events.append("context_full")
        return RefResult(answer, _merge(spans), "length", events)


END = None  # the end of the answer, a candidate of reference_blend


def reference_blend(base: RefModel, nudger: RefModel, base_prompt, nudger_prompt, gamma, alpha, k, budget,
                    rule: str = "top1"):
    """NUDGING_SPEC.md, "Soft blending (mode blend)". `margin`: the smallest gap between a confidence score and
    gamma, and between the two best blended scores, so a test can set aside decisions float rounding could flip."""
    answer, spans, events = "", [], []
    margin = float("inf")

    def finish(reason):
        return RefResult(answer, _merge(spans), reason, events, margin)

    try:
        while True:
            events.append("round")
            ids = base.tokens(base_prompt + answer)
            start = len(ids)
            while True:
                row = _logprobs(base, ids)
                probs = torch.exp(row)
                token = int(torch.argmax(row))
                score = rule_score(rule, float(probs[token]), probs)
                if token not in base.eos:
                    margin = min(margin, abs(score - gamma))
                if token not in base.eos and score >= gamma:
                    events.append("confident")
                    piece = base.piece(ids, token, start)
                    ids = ids + [token]
                    answer += piece
                    spans.append((piece, "base"))
                    if budget_reached(base, answer, budget):
                        return finish("length")
                    continue
                events.append("base_eos" if token in base.eos else "unsure")
                nids = nudger.tokens(nudger_prompt + answer)
                nrow = _logprobs(nudger, nids)
                ntoken = int(torch.argmax(nrow))
                base_strings = _top_strings(base, ids, start, row, k)
                nudger_strings = _top_strings(nudger, nids, len(nids), nrow, k)
                candidates = list(base_strings) + [s for s in nudger_strings if s not in base_strings]
                scores = {s: (1 - alpha) * base_strings.get(s, 0.0) + alpha * nudger_strings.get(s, 0.0)
                          for s in candidates}
                if token in base.eos or ntoken in nudger.eos:
                    base_end = float(probs[token]) if token in base.eos else 0.0
                    nudger_end = float(torch.exp(nrow[ntoken])) if ntoken in nudger.eos else 0.0
                    scores[END] = (1 - alpha) * base_end + alpha * nudger_end
                if not scores:
                    events.append("no_candidates")
                    return finish("eos")
                ranked = sorted(scores.values(), reverse=True)
                if len(ranked) > 1:
                    margin = min(margin, ranked[0] - ranked[1])
                best = next(s for s in scores if scores[s] == ranked[0])  # ties: the earliest candidate
                if best is END:
                    events.append("end_won" if token in base.eos else "end_won_by_the_nudger")
                    return finish("eos")
                base_piece = None if token in base.eos else base.piece(ids, token, start)
                events.append("base_string_won" if best == base_piece else "other_string_won")
                answer += best
                spans.append((best, "base" if best == base_piece else "nudger"))
                if budget_reached(base, answer, budget):
                    return finish("length")
                break
    except ContextFull:
        events.append("context_full")
        return finish("length")
