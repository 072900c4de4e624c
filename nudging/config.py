"""Settings of one generation, validated where they are made."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TypeVar

from nudging.errors import InvalidArgumentError


BATCH_SIZE = 16  # generations answered at once by default (generate_batch, --batch-size)
MAX_LOOKAHEAD = 256  # tokens per lookahead at most: the nudger writes words, not whole answers, per round
GAMMA_RANGE = (0.0, 1.0)  # open: gamma lies strictly between the two
TOP_P_RANGE = (0.0, 1.0)  # half-open: above the first, up to and including the second
SEED_RANGE = (-(2**63), 2**63 - 1)  # a signed 64-bit integer, as torch and OpenAI-compatible servers (vLLM) take
# Acceptance rules (nudging.rules, NUDGING_SPEC.md "Other acceptance rules"); each compares its score with gamma.
RULES = ("top1", "entropy", "margin", "agreement", "window")
CAPPED_FRACTION = 0.2  # the method nudging-capped: the nudger's share of words where --max-nudged-fraction gives none
MAX_TOP_K = 20  # the most top logprobs vLLM returns by default (--max-logprobs)


def check_whole_number(name: str, value: object, low: int, high: int) -> None:
    """`value` is an integer (not a bool) from low to high, else one clear error naming `name`."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidArgumentError(f"{name} must be an integer from {low} to {high}, got {value!r}")


@dataclass(frozen=True)
class NudgingConfig:
    """The algorithm's knobs (NUDGING_SPEC.md, "Inputs")."""

    gamma: float = 0.3
    lookahead: int = 16
    max_new_tokens: int = 512
    rule: str = "top1"  # when the base counts as confident: one of RULES
    agreement_k: int = 5  # the agreement rule: how many of the base's most likely strings the nudger may write
    window: int = 4  # the window rule: base tokens of the nudger's text over which the base's mean top-1 is taken
    max_nudged_fraction: float | None = None  # once the nudger wrote more than this share of words, the base writes on

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise InvalidArgumentError(f"rule must be one of {', '.join(RULES)}, got {self.rule!r}")
        check_whole_number("agreement_k", self.agreement_k, 1, MAX_TOP_K)
        check_whole_number("window", self.window, 1, MAX_LOOKAHEAD)
        fraction = self.max_nudged_fraction
        if fraction is not None and (isinstance(fraction, bool) or not isinstance(fraction, (int, float))
                                     or not 0 <= fraction <= 1):
            raise InvalidArgumentError(f"max_nudged_fraction must be a number from 0 to 1, got {fraction!r}")
        low, high = GAMMA_RANGE
        if isinstance(self.gamma, bool) or not isinstance(self.gamma, (int, float)) or not low < self.gamma < high:
            raise InvalidArgumentError(
                f"gamma must be a number strictly between {low:g} and {high:g}, got {self.gamma!r}")
        for name in ("lookahead", "max_new_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidArgumentError(f"{name} must be an integer >= 1, got {value!r}")
        if self.lookahead > MAX_LOOKAHEAD:
            raise InvalidArgumentError(f"lookahead must be at most {MAX_LOOKAHEAD}, got {self.lookahead!r}")

    def with_overrides(self, **values: object) -> "NudgingConfig":
        return with_overrides(self, values)


_Config = TypeVar("_Config", "NudgingConfig", "BaselineConfig")


def with_overrides(config: _Config, values: dict[str, object]) -> _Config:
    """A frozen config with the given fields replaced (None: keep the config's value), validated."""
    changed = {name: value for name, value in values.items() if value is not None}
    return replace(config, **changed) if changed else config


@dataclass(frozen=True)
class SamplingConfig:
    """How one model picks its next token. temperature 0 means greedy (the default and what the spec defines).

    With sampling, the uncertainty test still uses the base's top-1 probability; only the token written changes.
    """

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.temperature, (int, float)) or not math.isfinite(self.temperature) or self.temperature < 0:
            raise InvalidArgumentError(f"temperature must be a number >= 0, got {self.temperature!r}")
        low, high = TOP_P_RANGE
        if not isinstance(self.top_p, (int, float)) or not low < self.top_p <= high:  # also rejects NaN
            raise InvalidArgumentError(f"top_p must be in ({low:g}, {high:g}], got {self.top_p!r}")
        low, high = SEED_RANGE
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)
                                      or not low <= self.seed <= high):
            raise InvalidArgumentError(f"seed must be an integer from -2**63 to 2**63 - 1, got {self.seed!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass(frozen=True)
class ServerSettings:
    """`nudging serve`'s name for the model and its limits (flags default to these)."""

    model_name: str = "nudging"
    api_key: str | None = None
    max_concurrency: int = 1  # generations that run at once
    max_queue: int = 16  # requests that may wait for one; more get 429
    max_tokens: int = NudgingConfig.max_new_tokens  # the answer budget of a request that sets none
    max_tokens_limit: int = 4096  # the most a request may ask for
    max_body_bytes: int = 1_000_000



PROXY_TUNING_ALPHA = 1.0  # proxy tuning: base + alpha * (expert - anti-expert); any finite alpha
BLEND_ALPHA = 0.5  # blend: (1 - alpha) * p_base + alpha * p_nudger
BLEND_ALPHA_RANGE = (0.0, 1.0)  # closed: both ends allowed


@dataclass(frozen=True)
class BaselineConfig:
    """Knobs of the baselines: alpha (proxy tuning's strength, blend's nudger weight) and the candidate lists of
    the text ensemble and blend."""

    alpha: float | None = None  # None: the method's own default (PROXY_TUNING_ALPHA, BLEND_ALPHA)
    top_k: int = 5  # text ensemble, blend: candidate strings per model (the authors' API code asks for 5)

    def __post_init__(self) -> None:
        alpha = self.alpha
        if alpha is not None and (isinstance(alpha, bool) or not isinstance(alpha, (int, float))
                                  or not math.isfinite(alpha)):
            raise InvalidArgumentError(f"alpha (--alpha) must be a finite number, got {alpha!r}")
        check_whole_number("top_k", self.top_k, 1, MAX_TOP_K)

    def with_overrides(self, **values: object) -> "BaselineConfig":
        return with_overrides(self, values)

    @property
    def proxy_tuning_alpha(self) -> float:
        return PROXY_TUNING_ALPHA if self.alpha is None else self.alpha

    def blend_alpha(self) -> float:
        """alpha for blend, which needs it in BLEND_ALPHA_RANGE (an error otherwise)."""
        alpha = BLEND_ALPHA if self.alpha is None else self.alpha
        low, high = BLEND_ALPHA_RANGE
        if not low <= alpha <= high:
            raise InvalidArgumentError(f"mode blend needs alpha (--alpha) from {low:g} to {high:g}, got {alpha!r}")
        return alpha
