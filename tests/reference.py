"""A plain reference of NUDGING_SPEC.md: no cache, a full forward pass per query, whole-run decoding.

It shares no code with the engine on purpose (only the tokenizers and models), so the cached engine can be
checked against it. `events` records which branch each decision took, so tests can show every branch ran.
"""

from __future__ import annotations

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

    def tokens(self, text: str) -> list[int]:
        return list(self.tokenizer(text)["input_ids"])

    def top1(self, ids: list[int]) -> tuple[int, float]:
        if len(ids) > self.context:
            raise ContextFull
        with torch.no_grad():
            logits = self.model(input_ids=torch.tensor([ids]), logits_to_keep=1).logits[0, -1].float()
        probs = torch.softmax(logits, dim=-1)
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


def reference_nudging(base: RefModel, nudger: RefModel, base_prompt, nudger_prompt, gamma, lookahead, budget):
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
            while token not in base.eos:
                piece = base.piece(ids, token)
                ids = ids + [token]
                answer += piece
                spans.append((piece, "base"))
                if full():
                    return finish("length")
                token, p = base.top1(ids)
                if p < gamma:
                    events.append("base_stage_unsure")
                    break
            else:
                events.append("base_stage_eos")
    except ContextFull:
        events.append("context_full")
        return finish("length")
