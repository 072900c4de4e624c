"""`--gamma auto`: the stored gamma of this model pair, else one calibrated now on built-in generic prompts (and
stored, so the next run starts at once)."""

from __future__ import annotations

from pathlib import Path

from nudging.calibrate import saved
from nudging.calibrate.analysis import calibrate
from nudging.calibrate.measure import Answering, measure
from nudging.prompts import BUILT_IN_PROMPTS
from nudging.rules import Rule

AUTO_MAX_NEW_TOKENS = 96  # answer budget per built-in prompt: enough positions, about a minute on the demo pair


def resolve(nudger: Answering, base: str, nudger_spec: str, path: Path | None = None,
            rule: Rule = Rule()) -> saved.SavedGamma:
    """The stored choice for (base, nudger_spec) and the rule's score, or a new one measured with `nudger`'s
    models and stored."""
    found = saved.load(base, nudger_spec, path, rule.scored_by)
    if found is not None:
        return found
    questions = list(BUILT_IN_PROMPTS)
    result = calibrate(measure(nudger, questions, AUTO_MAX_NEW_TOKENS, rule=rule))
    choice = saved.SavedGamma(result.gamma, "separation", result.interval, f"{len(questions)} built-in prompts",
                              base, nudger_spec, rule=rule.scored_by)
    saved.save(choice, path)
    return choice
