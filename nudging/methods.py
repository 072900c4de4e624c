"""The methods a Nudger runs: nudging and the paper's baselines, with the models each one needs.

Every method answers through the same call (`Nudger.generate(..., mode=NAME)`) and returns the same result
object; this table says which models a method uses and what it asks of them, so that a method that cannot run
on the models given fails at once with an error that names the methods that can.
"""

from __future__ import annotations

from dataclasses import dataclass

Role = str  # "base", "nudger" or "anti_expert"


@dataclass(frozen=True)
class Method:
    name: str
    summary: str
    roles: tuple[Role, ...]  # the models it runs
    shared_vocabulary: bool = False  # combines next-token distributions id by id: one vocabulary, local models
    logprobs: tuple[Role, ...] = ()  # roles whose probabilities it reads (a remote server must return logprobs)


METHODS: dict[str, Method] = {
    method.name: method
    for method in (
        Method("nudging", "the base writes; the nudger writes the words where the base is unsure",
               ("base", "nudger"), logprobs=("base",)),
        Method("base", "the base alone, greedy", ("base",)),
        Method("nudger", "the nudger alone, greedy", ("nudger",)),
        Method("proxy-tuning", "base + alpha * (expert - anti-expert) logits, token by token (Liu et al. 2024)",
               ("base", "nudger", "anti_expert"), shared_vocabulary=True),
        Method("ensemble", "the average of base and nudger next-token probabilities, token by token",
               ("base", "nudger"), shared_vocabulary=True),
        Method("ensemble-text", "both decode while their token strings agree; at a disagreement the string with "
               "the highest summed top-k probability (the paper's cross-tokenizer ensemble)",
               ("base", "nudger"), logprobs=("base", "nudger")),
        Method("in-context", "the base alone after fixed example dialogues (URIAL-style prompt)", ("base",)),
    )
}
MODES = tuple(METHODS)


def roles_for(methods: list[str] | tuple[str, ...]) -> set[Role]:
    return {role for name in methods for role in METHODS[name].roles}


def working_methods(shared_vocabulary: bool) -> list[str]:
    """Methods that run on models with (or without) one shared vocabulary on local models."""
    return [name for name, method in METHODS.items() if shared_vocabulary or not method.shared_vocabulary]


def fitting(names: list[str], base: str, nudger: str, anti_expert: str | None = None) -> tuple[list[str], dict[str, str]]:
    """Split methods into those these model specs can run and the others, each with the reason. Only
    tokenizers are loaded (to compare vocabularies), so this is quick next to loading the models."""
    from nudging import models
    from nudging.remote.spec import is_remote

    vocabularies: dict[str, dict[str, int]] = {}

    def vocabulary(spec: str) -> dict[str, int]:
        if spec not in vocabularies:
            vocabularies[spec] = models.load_tokenizer(spec).get_vocab()
        return vocabularies[spec]

    kept: list[str] = []
    skipped: dict[str, str] = {}
    specs = {"base": base, "nudger": nudger, "anti_expert": anti_expert}
    for name in names:
        method = METHODS[name]
        if "anti_expert" in method.roles and not anti_expert:
            skipped[name] = "needs an anti-expert (--anti-expert: the nudger's untuned base)"
        elif method.shared_vocabulary and any(is_remote(specs[role]) for role in method.roles):
            skipped[name] = ("needs local models (it combines full next-token distributions; a remote server returns "
                             "only top-k logprobs)")
        elif method.shared_vocabulary and any(vocabulary(specs[role]) != vocabulary(base) for role in method.roles):
            sizes = " and ".join(f"the {role.replace('_', '-')} {len(vocabulary(specs[role]))}" for role in method.roles)
            skipped[name] = f"needs models that share one vocabulary, but these tokenize differently ({sizes} tokens)"
        else:
            kept.append(name)
    return kept, skipped
