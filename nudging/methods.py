"""The methods a Nudger runs: nudging and the paper's baselines, with the models each one needs and the
generator that runs it.

Every method answers through the same call (`Nudger.generate(..., mode=NAME)`) and returns the same result
object; this table says which models a method uses and what it asks of them, so that a method that cannot run
on the models given fails at once with an error that names the methods that can.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping

from nudging import engine, guesses, rules
from nudging.backends.interface import Model
from nudging.baselines.blend import blend
from nudging.baselines.fusion import ensemble, fused_decode, proxy_tuning
from nudging.baselines.in_context import in_context, in_context_prompt
from nudging.baselines.text_ensemble import text_ensemble
from nudging.config import CAPPED_FRACTION, BaselineConfig, NudgingConfig
from nudging.errors import InvalidArgumentError
from nudging.text import Span

Role = str  # "base", "nudger" or "anti_expert"
ROLES: tuple[Role, ...] = ("base", "nudger", "anti_expert")


@dataclass(frozen=True)
class Call:
    """One generation as a method's generator gets it: the models and prompts by role, the settings, the state."""

    models: Mapping[Role, Model]
    prompts: Mapping[Role, str]
    config: NudgingConfig
    baselines: BaselineConfig
    state: engine.EngineState


@dataclass(frozen=True)
class Method:
    name: str
    summary: str
    roles: tuple[Role, ...]  # the models it runs
    generate: Callable[[Call], Iterator[Span]]
    shared_vocabulary: bool = False  # combines next-token distributions id by id: one vocabulary, local models
    logprobs: tuple[Role, ...] = ()  # roles whose probabilities it reads (a remote server must return logprobs)
    local_only: str | None = None  # why it cannot run on a server's model, if it cannot
    base_prompt: Callable[[str, str | None], str] | None = None  # (question, system) -> base prompt, if not the plain one
    reads_gamma: bool = False  # compares the rule's score with gamma (so gamma "auto" is resolved for it)
    check_settings: Callable[[NudgingConfig, BaselineConfig], None] | None = None  # raises on settings it cannot use
    nudges: bool = False  # runs the nudging engine (gamma, lookahead and the rule settings apply)
    rule: str | None = None  # a nudging variant's acceptance rule (None: the run's --rule)
    capped: bool = False  # a nudging variant with the intervention cap (--max-nudged-fraction, else CAPPED_FRACTION)

    @property
    def whole_distribution(self) -> bool:
        """Whether its rule reads the base's whole next-token distribution (so it needs a local base)."""
        return self.rule is not None and rules.Rule(self.rule).needs_distribution

    def config_for(self, config: NudgingConfig) -> NudgingConfig:
        """The settings this method runs with, from the run's: a variant's own rule, and its cap."""
        config = config.with_overrides(rule=self.rule)
        if self.capped and config.max_nudged_fraction is None:
            config = config.with_overrides(max_nudged_fraction=CAPPED_FRACTION)
        return config

    def check(self, config: NudgingConfig, baselines: BaselineConfig) -> None:
        """Raise if the method cannot run with these settings (before models load, and on each call)."""
        if self.check_settings is not None:
            self.check_settings(config, baselines)

    def run(self, call: Call) -> Iterator[Span]:
        self.check(call.config, call.baselines)
        return self.generate(call)


def _nudging(call: Call) -> Iterator[Span]:
    m, p = call.models, call.prompts
    rules.check_base(call.config, m["base"])
    guesses.offer_nudger_guesses(m["base"], m["nudger"], p["base"], p["nudger"])
    return engine.nudge(m["base"], m["nudger"], p["base"], p["nudger"], call.config, call.state,
                        read_first=guesses.tokens_read_first(m["base"], m["nudger"]))


def _nudging_method(name: str, summary: str, rule: str | None = None, capped: bool = False) -> Method:
    """Nudging, or a variant of it with its own acceptance rule or the intervention cap."""
    return Method(name, summary, ("base", "nudger"), _nudging, logprobs=("base",), nudges=True, reads_gamma=True,
                  rule=rule, capped=capped)


def _alone(role: Role) -> Callable[[Call], Iterator[Span]]:
    def generate(call: Call) -> Iterator[Span]:
        return engine.single_model(call.models[role], role, call.prompts[role], call.config.max_new_tokens, call.state)

    return generate


def _fused(combine: Callable[[BaselineConfig], Callable], roles: tuple[Role, ...]) -> Callable[[Call], Iterator[Span]]:
    def generate(call: Call) -> Iterator[Span]:
        return fused_decode([call.models[r] for r in roles], [call.prompts[r] for r in roles],
                            combine(call.baselines), call.config.max_new_tokens, call.state)

    return generate


def _text_ensemble(call: Call) -> Iterator[Span]:
    m, p = call.models, call.prompts
    return text_ensemble(m["base"], m["nudger"], p["base"], p["nudger"], call.baselines.top_k,
                         call.config.max_new_tokens, call.state)


def _check_blend(config: NudgingConfig, baselines: BaselineConfig) -> None:
    rules.check_scored(config, "blend")
    baselines.blend_alpha()


def _blend(call: Call) -> Iterator[Span]:
    m, p = call.models, call.prompts
    return blend(m["base"], m["nudger"], p["base"], p["nudger"], call.config, call.baselines.top_k,
                 call.baselines.blend_alpha(), call.state)


def _in_context(call: Call) -> Iterator[Span]:
    return in_context(call.models["base"], call.prompts["base"], call.config.max_new_tokens, call.state)


METHODS: dict[str, Method] = {
    method.name: method
    for method in (
        _nudging_method("nudging", "the base writes; the nudger writes the words where the base is unsure"),
        Method("base", "the base alone, greedy", ("base",), _alone("base")),
        Method("nudger", "the nudger alone, greedy", ("nudger",), _alone("nudger")),
        _nudging_method("nudging-entropy", "nudging where the base's exp(-entropy) decides instead of its top-1 "
                        "probability", rule="entropy"),
        _nudging_method("nudging-margin", "nudging where the base's top-1 minus top-2 probability decides",
                        rule="margin"),
        _nudging_method("nudging-agreement", "nudging where the nudger writes only words that start with one of the "
                        "base's top-k strings (BlendIn's filter)", rule="agreement"),
        _nudging_method("nudging-window", "the nudger writes until the base's mean top-1 over a window of its text "
                        "reaches gamma; then the base writes the rest (weak-to-strong decoding)", rule="window"),
        _nudging_method("nudging-capped", f"nudging until the nudger wrote more than --max-nudged-fraction (default "
                        f"{CAPPED_FRACTION:g}) of the words; then the base writes the rest", capped=True),
        Method("proxy-tuning", "base + alpha * (expert - anti-expert) logits, token by token (Liu et al. 2024)",
               ("base", "nudger", "anti_expert"), _fused(lambda b: proxy_tuning(b.proxy_tuning_alpha), ROLES),
               shared_vocabulary=True),
        Method("ensemble", "the average of base and nudger next-token probabilities, token by token",
               ("base", "nudger"), _fused(lambda b: ensemble, ("base", "nudger")), shared_vocabulary=True),
        Method("ensemble-text", "both decode while their token strings agree; at a disagreement the string with "
               "the highest summed top-k probability (the paper's cross-tokenizer ensemble)",
               ("base", "nudger"), _text_ensemble, logprobs=("base", "nudger")),
        Method("in-context", "the base alone after fixed example dialogues (URIAL-style prompt)", ("base",),
               _in_context, base_prompt=in_context_prompt),
        Method("blend", "the base writes where it is confident; elsewhere the string with the highest "
               "(1 - alpha) p_base + alpha p_nudger over both models' top-k strings",
               ("base", "nudger"), _blend, reads_gamma=True, check_settings=_check_blend,
               local_only="it weighs each model's probability of ending the answer, which a server's stream does "
                          "not return"),
    )
}
MODES = tuple(METHODS)


def method_named(name: str) -> Method:
    if name not in METHODS:
        raise InvalidArgumentError(f"mode must be one of {', '.join(MODES)}, got {name!r}")
    return METHODS[name]


def reads_gamma(methods: list[str] | tuple[str, ...]) -> bool:
    """Whether any of these methods compares a rule's score with gamma."""
    return any(METHODS[name].reads_gamma for name in methods)


def roles_for(methods: list[str] | tuple[str, ...]) -> set[Role]:
    return {role for name in methods for role in METHODS[name].roles}


def working_methods(remote: bool = False) -> list[str]:
    """Methods that run on local models with two vocabularies (remote: on models some of which are on servers)."""
    return [name for name, method in METHODS.items()
            if not method.shared_vocabulary and not (remote and (method.local_only or method.whole_distribution))]


ANTI_EXPERT_MISSING = ("needs an anti-expert: the untuned base model of the nudger, with its vocabulary (e.g. "
                       "HuggingFaceTB/SmolLM2-135M for SmolLM2-135M-Instruct), given as anti_expert / --anti-expert")


def unfit_reason(
    method: Method, present: Callable[[Role], bool], remote: Callable[[Role], bool],
    vocabulary: Callable[[Role], dict[str, int]],
) -> str | None:
    """Why `method` cannot run on the models described by the three callbacks (None where it can). Used on model
    specs before loading (`fitting`) and on loaded models (`Nudger.check_method`), so both say the same."""
    if "anti_expert" in method.roles and not present("anti_expert"):
        return ANTI_EXPERT_MISSING
    if method.whole_distribution and remote("base"):
        return "needs the base's whole next-token distribution (a local base; a server returns only top-k logprobs)"
    if method.local_only and any(remote(role) for role in method.roles):
        return f"needs local models ({method.local_only})"
    if not method.shared_vocabulary:
        return None
    if any(remote(role) for role in method.roles):
        return "needs local models (it combines full next-token distributions; a remote server returns only top-k logprobs)"
    if any(vocabulary(role) != vocabulary("base") for role in method.roles):
        sizes = " and ".join(f"the {role.replace('_', '-')} {len(vocabulary(role))}" for role in method.roles)
        return f"needs models that share one vocabulary, but these tokenize differently ({sizes} tokens)"
    return None


def check_fits(method: Method, models: Mapping[Role, Model]) -> None:
    """Raise if `method` cannot run on these loaded models: one it needs is missing, or it combines
    distributions token by token and they are not local models with one vocabulary."""
    for role in method.roles:
        if role not in models:
            raise InvalidArgumentError(f"mode {method.name!r} needs a {role.replace('_', '-')} model, but this "
                                       "Nudger was built without one")
    vocabulary = functools.cache(lambda role: models[role].tokenizer.get_vocab())
    remote = lambda role: not models[role].full_distribution
    reason = unfit_reason(method, lambda role: True, remote, vocabulary)
    if reason is not None:
        raise unfit_error(method.name, reason, any(remote(role) for role in models))


def unfit_error(name: str, reason: str, remote: bool) -> InvalidArgumentError:
    """The error of a method that cannot run, naming those that can (`remote`: some model is on a server)."""
    return InvalidArgumentError(f"{name} {reason}; with these models use one of: {', '.join(working_methods(remote))}")


def fitting(names: list[str], base: str, nudger: str, anti_expert: str | None = None) -> tuple[list[str], dict[str, str]]:
    """Split methods into those these model specs can run and the others, each with the reason. Only
    tokenizers are loaded (to compare vocabularies), so this is quick next to loading the models."""
    from nudging import models
    from nudging.backends.remote.spec import is_remote

    specs = {"base": base, "nudger": nudger, "anti_expert": anti_expert}
    vocabularies: dict[Role, dict[str, int]] = {}

    def vocabulary(role: Role) -> dict[str, int]:
        if role not in vocabularies:
            vocabularies[role] = models.load_tokenizer(specs[role]).get_vocab()
        return vocabularies[role]

    kept: list[str] = []
    skipped: dict[str, str] = {}
    for name in names:
        reason = unfit_reason(METHODS[name], lambda role: bool(specs[role]), lambda role: is_remote(specs[role]),
                              vocabulary)
        if reason is None:
            kept.append(name)
        else:
            skipped[name] = reason
    return kept, skipped
