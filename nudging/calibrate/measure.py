"""What calibration measures: at every position of the nudger's own answers, the base's top-1 probability and
whether the base's greedy token is the one the nudger wrote there (the paper's agreement analysis).

The nudger answers each prompt alone (greedy, as `--mode nudger`). Its answer, as text, is then read by the base
token by token in the base's own tokenization: at each position the base's top-1 token either writes the same
text as the answer's next base token (agreement) or not; after an answer the nudger ended, the base agrees if
its top-1 is EOS. The base is asked through the same interface nudging uses (`choices_at_prefixes`), so a local
base reads a whole answer in one forward pass and a remote one in one echo request where its server has echo
(a server that stops at EOS without its probability leaves the end position out).
"""

from __future__ import annotations

import hashlib
import math
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from nudging.backends.interface import Model
from nudging.config import BATCH_SIZE, NudgingConfig
from nudging.evals import store
from nudging.positions import answer_targets
from nudging.rules import Rule


class Answering(Protocol):
    """What calibration asks of a Nudger: its models, its prompts, and the nudger's answers in batches."""

    base: Model
    nudger: Model

    def prompts_for(self, question: str, system: str | None = None) -> tuple[str, str]: ...
    def generate_batch(self, questions: Sequence[str], **options: Any) -> list[Any]: ...

GROUP = 64  # positions asked of the base at once (a local base holds their next-token logits together)


@dataclass
class AnswerPositions:
    """One prompt: the nudger's answer and, at each of its base positions, the top-1 probability and agreement."""

    question: str
    answer: str
    ended: bool  # the nudger ended its answer (EOS) within the budget
    top1: list[float]
    agree: list[bool]
    key: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def read_positions(base: Model, base_prompt: str, answer: str, ended: bool,
                   rule: Rule = Rule()) -> tuple[list[float], list[bool]]:
    """The base's score (top-1 probability, or the rule's) and agreement with the answer at each of its
    positions (the window rule: at each position that starts a whole window)."""
    targets = answer_targets(base, base_prompt, answer, ended)
    top1: list[float] = []
    agree: list[bool] = []
    base.start_generation(None, NudgingConfig.max_new_tokens)
    for begin in range(0, len(targets), GROUP):
        group = targets[begin : begin + GROUP]
        for (_, choice), (_, piece) in zip(base.choices_at_prefixes([text for text, _ in group]), group):
            if math.isnan(choice.top1_prob):
                continue  # a server that ends with EOS without saying how likely it was: nothing to place
            top1.append(rule.score(choice))
            agree.append(choice.is_eos if piece is None else (not choice.is_eos and choice.piece == piece))
    base.finish()
    if rule.window:  # the window rule reads the mean top-1 over the positions from each one on
        top1 = [sum(top1[j : j + rule.window]) / rule.window for j in range(len(top1) - rule.window + 1)]
        agree = agree[: len(top1)]
    return top1, agree


def record_key(nudger: Answering, prompts: tuple[str, str], max_new_tokens: int, score: str = "top1") -> str:
    """What makes one prompt's measurement what it is (models, both prompts, budget, the score measured)."""
    base_prompt, nudger_prompt = prompts
    names = [getattr(m, "remote_name", None) or getattr(getattr(m, "model", None), "name_or_path", "")
             for m in (nudger.base, nudger.nudger)]
    text = json.dumps([names, base_prompt, nudger_prompt, max_new_tokens] + ([score] if score != "top1" else []))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def measure(
    nudger: Answering,
    questions: Sequence[str],
    max_new_tokens: int,
    *,
    batch_size: int = BATCH_SIZE,
    path: Path | None = None,
    on_done: Callable[[int, int], None] | None = None,
    rule: Rule = Rule(),
) -> list[AnswerPositions]:
    """Positions of every question's nudger answer. With `path`, each finished question is appended there as
    it is measured, and questions already there are read back instead of answered again."""
    prompts = [nudger.prompts_for(q) for q in questions]
    keys = [record_key(nudger, pair, max_new_tokens, rule.scored_by) for pair in prompts]
    known: dict[str, AnswerPositions] = {}
    if path is not None and path.exists():
        store.repair(path)
        known = {row["key"]: AnswerPositions(**row) for row in store.read_rows(path)}
    pending = [i for i, key in enumerate(keys) if key not in known]
    done = len(questions) - len(pending)
    if on_done:
        on_done(done, len(questions))
    # In chunks of one batch: a killed run keeps every chunk it finished.
    for begin in range(0, len(pending), batch_size):
        chunk = pending[begin : begin + batch_size]
        answers = nudger.generate_batch([questions[i] for i in chunk], batch_size=batch_size, mode="nudger",
                                        max_new_tokens=max_new_tokens)
        for i, result in zip(chunk, answers):
            ended = result.stop_reason == "eos"
            top1, agree = read_positions(nudger.base, prompts[i][0], result.text, ended, rule)
            known[keys[i]] = AnswerPositions(questions[i], result.text, ended, top1, agree, keys[i])
            if path is not None:
                store.append_row(path, known[keys[i]].to_dict())
            done += 1
            if on_done:
                on_done(done, len(questions))
    return [known[key] for key in keys]
