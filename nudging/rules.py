"""Acceptance rules: where the base counts as confident, so that it writes and the nudger does not
(NUDGING_SPEC.md, step 2 and step 5, and "Other acceptance rules").

Every rule scores the base's next-token choice in [0, 1], higher meaning surer; the base is confident where the
score is at least gamma. `top1` (the paper's) scores the top-1 probability; `margin` the top-1 minus the top-2
probability; `entropy` exp(-H), H the entropy in nats (so it hands over where H > ln(1/gamma), i.e. where the
base spreads its mass over more than 1/gamma tokens' worth). `agreement` scores like top1 and in addition lets
the nudger write a word only where it starts with one of the base's `agreement_k` most likely strings. `window`
(weak-to-strong decoding's switch) scores like top1, but averaged over `window` base positions of the nudger's
text, and switches once: the base then writes the rest (the engine's `_window_switch`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from nudging.backends.interface import Choice, Model
from nudging.config import NudgingConfig
from nudging.errors import InvalidArgumentError

# Rules decided by one position's score alone (Rule.score against gamma): the ones mode blend can use. A rule that
# needs more than that (a word, a window of positions) is left out.
SCORED_RULES = ("top1", "entropy", "margin", "agreement")


@dataclass(frozen=True)
class Rule:
    """One acceptance rule with its parameters (the threshold gamma lives in NudgingConfig)."""

    name: str = "top1"
    agreement_k: int = 0  # > 0: the agreement rule's k
    window: int = 0  # > 0: the window rule's window, in base tokens

    def score(self, choice: Choice) -> float:
        """How sure the base is of its next token, in [0, 1]; confident where score >= gamma."""
        if self.name == "margin":
            first, second = choice.distribution.topk(2).values.tolist()
            return first - second
        if self.name == "entropy":
            probs = choice.distribution.double()
            return math.exp(float(probs.xlogy(probs).sum()))  # exp(-H), H = -sum p ln p
        return choice.top1_prob

    @property
    def top_k(self) -> int:
        """How many of the base's most likely strings a word-boundary choice must carry."""
        return self.agreement_k

    def lets_nudger_write(self, choice: Choice, text: str) -> bool:
        """Whether the nudger may write `text` (" " + its next word) where the base is unsure of `choice`."""
        if not self.agreement_k:
            return True
        return any(text.startswith(string) for string, _ in choice.alternatives)

    @property
    def scored_by(self) -> str:
        """The name of the score this rule compares with gamma (what calibration measures)."""
        if self.window:
            return f"window-{self.window}"
        return "top1" if self.name == "agreement" else self.name

    @property
    def needs_distribution(self) -> bool:
        return self.name in ("margin", "entropy")


def rule_of(config: NudgingConfig) -> Rule:
    return Rule(config.rule, config.agreement_k if config.rule == "agreement" else 0,
                config.window if config.rule == "window" else 0)


def check_base(config: NudgingConfig, base: Model | None) -> None:
    """A rule that reads the whole next-token distribution needs a base that gives it (a local model)."""
    if base is not None and rule_of(config).needs_distribution and not base.full_distribution:
        raise InvalidArgumentError(
            f"rule {config.rule} needs the base's whole next-token distribution, which a server's top logprobs do "
            f"not give; use --rule top1 or agreement with {base.name}, or load the base locally")


def check_scored(config: NudgingConfig, method: str) -> None:
    """`method` reads only the rule's score at each position: refuse a rule that is more than a score."""
    if config.rule not in SCORED_RULES:
        raise InvalidArgumentError(f"mode {method} compares the rule's score with gamma at each position; rule "
                                   f"{config.rule} is not a per-position score: use one of {', '.join(SCORED_RULES)}")
