"""What a generation returns."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from nudging.text import Span


@dataclass
class GenerationStats:
    rounds: int
    nudged_words: int
    total_words: int
    nudged_word_fraction: float
    answer_base_tokens: int
    nudged_base_tokens: int
    models: dict[str, dict[str, int]] = field(default_factory=dict)  # work per model: passes and tokens, or requests
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

    def to_dict(self) -> dict[str, Any]:
        stats = asdict(self.stats)
        stats["nudged_token_fraction"] = self.stats.nudged_token_fraction
        return {
            "text": self.text,
            "spans": [span.to_dict() for span in self.spans],
            "stop_reason": self.stop_reason,
            "mode": self.mode,
            "stats": stats,
        }
