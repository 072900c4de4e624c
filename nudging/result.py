"""What a generation returns."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from nudging.text import Span, count_words
from nudging.trace import RoundTrace, authors_requests


@dataclass
class GenerationStats:
    rounds: int
    nudged_words: int
    total_words: int
    nudged_word_fraction: float
    answer_base_tokens: int
    nudged_base_tokens: int
    models: dict[str, dict[str, float]] = field(default_factory=dict)  # work per model: passes, tokens, seconds; or requests
    seconds: float = 0.0
    word_checks: int = 0  # base queries at word boundaries
    paper_requests: int = 0  # requests the authors' code would send for this answer (one per 16 base tokens)

    @property
    def nudged_token_fraction(self) -> float:
        return self.nudged_base_tokens / self.answer_base_tokens if self.answer_base_tokens else 0.0


@dataclass
class GenerationResult:
    text: str
    spans: list[Span]
    stop_reason: str
    stats: GenerationStats
    mode: str = "nudging"
    trace: list[RoundTrace] = field(default_factory=list)  # what each round did (nudging, ensemble-text, blend)

    def to_dict(self) -> dict[str, Any]:
        stats = asdict(self.stats)
        stats["nudged_token_fraction"] = self.stats.nudged_token_fraction
        return {
            "text": self.text,
            "spans": [span.to_dict() for span in self.spans],
            "stop_reason": self.stop_reason,
            "mode": self.mode,
            "stats": stats,
            "trace": [round_.to_dict() for round_ in self.trace],
        }


def stats_of(spans: list[Span], state: Any, work: dict[str, dict[str, float]], seconds: float, counter: Any,
             mode: str) -> GenerationStats:
    """A generation's figures: words and base tokens by source (counted with `counter`, the base's tokenizer
    where there is a base), rounds and word checks from the engine's trace, each model's work."""
    nudged_words, total_words = count_words(spans)
    answer_tokens = counter.count_tokens("".join(s.text for s in spans))
    nudged_tokens = sum(counter.count_tokens(s.text) for s in spans if s.source == "nudger")
    return GenerationStats(
        rounds=state.rounds,
        nudged_words=nudged_words,
        total_words=total_words,
        nudged_word_fraction=nudged_words / total_words if total_words else 0.0,
        answer_base_tokens=answer_tokens,
        nudged_base_tokens=nudged_tokens,
        models=work,
        seconds=seconds,
        word_checks=state.word_checks,
        paper_requests=authors_requests(mode, state.trace),
    )
