"""The `nudging` model type of lm-evaluation-harness.

Prompts: lm-eval hands over each request's context as text, and both models get it exactly as given, which is
`nudging generate --base-prompt CONTEXT --nudger-prompt CONTEXT` (or a `--prompts` JSONL line with both fields).
With lm-eval's `--apply_chat_template`, a conversation is written as nudging writes a question: the plain
`{system}\\n{question}\\nAnswer:\\n` format for the base and the nudger's own chat template for the nudger, which
for one user turn is `nudging generate QUESTION`. Models load on the first generation request, so settings are
checked at once and a log-likelihood task fails before any weights load.
"""

from __future__ import annotations

from typing import Any

import lm_eval.models  # noqa: F401  (lm-eval fills its registry with the built-in models only while it is empty)
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from tqdm import tqdm

from nudging import models, prompts
from nudging.config import BATCH_SIZE, SamplingConfig
from nudging.errors import InvalidArgumentError, NudgingError
from nudging.backends.remote.spec import is_remote
from nudging.loading import LoadSpec
from nudging.nudger import Nudger
from nudging.text import check_stops

# model_args a user may give (each goes to Nudger.from_pretrained under the name on the right)
MODEL_ARGS = {
    "base": "base", "nudger": "nudger", "gamma": "gamma", "lookahead": "lookahead", "max_gen_toks": "max_new_tokens",
    "mode": "mode", "system": "system", "dtype": "dtype", "device_map": "device_map", "quantize": "quantize",
    "anti_expert": "anti_expert", "alpha": "alpha", "top_k": "top_k", "calibration": "calibration",
    "rule": "rule", "agreement_k": "agreement_k", "window": "window", "max_nudged_fraction": "max_nudged_fraction",
}
GEN_KWARGS = ("until", "max_gen_toks", "do_sample", "temperature", "top_p")
LM_EVAL_DEFAULT_DEVICE = "cuda:0"  # lm-eval's --device when none is given, also on machines without a GPU


class LoglikelihoodUnsupportedError(NudgingError):
    """lm-eval asked for log-likelihoods: nudging writes text, it has no distribution of its own to score with."""


@register_model("nudging")
class NudgingLM(LM):
    """Generation requests answered by nudging (or by `mode`: base, nudger, a baseline), `batch_size` at once."""

    def __init__(self, batch_size: int | str = 1, max_batch_size: int | None = None, device: str | None = None,
                 **model_args: Any) -> None:
        super().__init__()
        unknown = sorted(set(model_args) - set(MODEL_ARGS))
        if unknown:
            raise InvalidArgumentError(f"--model_args: unknown argument {unknown[0]!r} for the nudging model; it takes "
                                       f"{', '.join(MODEL_ARGS)} (and lm-eval's --batch_size and --device)")
        options = {MODEL_ARGS[name]: value for name, value in model_args.items()}
        self.mode = options.get("mode") or "nudging"
        self.spec = LoadSpec.build(**options, device=_device(device))  # every setting checked before weights load
        self.lanes = _batch_size(batch_size, max_batch_size)
        self._nudger: Nudger | None = None
        self._chat_prompts: dict[str, str] = {}  # base prompt written by apply_chat_template -> the nudger's

    @property
    def pair(self) -> Nudger:
        if self._nudger is None:
            self._nudger = Nudger.from_pretrained(spec=self.spec)
        return self._nudger

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        default_budget = self.spec.config.max_new_tokens
        items = [self._item(context, settings, default_budget) for context, settings in (r.args for r in requests)]
        if not items:
            return []
        bar = tqdm(total=len(items), desc="nudging", disable=disable_tqdm or self.rank != 0)
        results = self.pair.generate_batch(items, batch_size=self.lanes, mode=self.mode,
                                           on_result=lambda index, result: bar.update(1))
        bar.close()
        texts = [result.text for result in results]
        for request, text in zip(requests, texts):
            self.cache_hook.add_partial("generate_until", request.args, text)
        return texts

    def _item(self, context: str, settings: dict[str, Any], default_budget: int) -> dict[str, Any]:
        """generate()'s arguments for one request: its prompts, stop strings, token budget and sampling."""
        settings = dict(settings or {})
        unknown = sorted(set(settings) - set(GEN_KWARGS))
        if unknown:
            raise InvalidArgumentError(f"generation setting {unknown[0]!r} is not supported by nudging (it takes "
                                       f"{', '.join(GEN_KWARGS)})")
        budget = settings.get("max_gen_toks", default_budget)
        if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
            raise InvalidArgumentError(f"max_gen_toks must be an integer >= 1, got {budget!r}")
        item = {"base_prompt": context, "nudger_prompt": self._chat_prompts.get(context, context),
                "stop": check_stops(settings.get("until"), "until"), "max_new_tokens": budget}
        if settings.get("do_sample"):
            sampling = SamplingConfig(temperature=settings.get("temperature", 1.0), top_p=settings.get("top_p", 1.0))
            item["sampling"] = {"base": sampling, "nudger": sampling}
        return item

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """The base's prompt for a conversation (nudging's plain format); the nudger's (its chat template) is kept
        for the generation request whose context this is. Without a generation prompt, the last (assistant)
        message is a prefix of the answer and follows both prompts as it is."""
        messages, prefix = chat_history, ""
        if not add_generation_prompt and chat_history and chat_history[-1]["role"] == "assistant":
            messages, prefix = chat_history[:-1], chat_history[-1]["content"]
        base = prompts.base_prompt_for(messages) + prefix
        tokenizer = self.pair.nudger.tokenizer if self.pair.nudger is not None else None
        self._chat_prompts[base] = (prompts.chat_prompt_for(tokenizer, messages) if tokenizer is not None else base) \
            + prefix
        return base

    @property
    def tokenizer_name(self) -> str:
        return f"{self.spec.models.base}+{self.spec.models.nudger}".replace("/", "__")

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        nudger = self.pair.nudger
        return getattr(nudger.tokenizer, "chat_template", None) if nudger is not None else None

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        raise LoglikelihoodUnsupportedError(self._scoring_advice("loglikelihood (multiple-choice) requests"))

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        raise LoglikelihoodUnsupportedError(self._scoring_advice("loglikelihood_rolling (perplexity) requests"))

    def _scoring_advice(self, what: str) -> str:
        specs = {"base": self.spec.models.base, "nudger": self.spec.models.nudger}
        where = "; ".join(f"{role}: {_scoring_command(spec)}" for role, spec in specs.items() if spec)
        return (f"nudging is a decoding method: it writes text and has no probability distribution of its own, so "
                f"it cannot answer this task's {what}. Score one model of the pair by log-likelihood instead "
                f"({where}), or run generate_until tasks through nudging")


def _device(device: str | None) -> str | None:
    """lm-eval's --device as nudging's: cpu, cuda or auto (lm-eval's default cuda:0: the GPU where there is one)."""
    if device is None or device == LM_EVAL_DEFAULT_DEVICE:
        return None
    if device not in models.DEVICES:
        raise InvalidArgumentError(f"--device must be one of {', '.join(models.DEVICES)} for the nudging model, "
                                   f"got {device!r}")
    return device


def _batch_size(batch_size: int | str, max_batch_size: int | None) -> int:
    """lm-eval's --batch_size as a number of lanes; auto: nudging's default batch, at most --max_batch_size."""
    if isinstance(batch_size, str) and batch_size.startswith("auto"):
        return min(BATCH_SIZE, max_batch_size or BATCH_SIZE)
    try:
        lanes = int(batch_size)
    except (TypeError, ValueError):
        lanes = 0
    if lanes < 1:
        raise InvalidArgumentError(f"--batch_size must be an integer >= 1 or auto, got {batch_size!r}")
    return lanes


def _scoring_command(spec: str) -> str:
    """The lm-eval command that scores one model: hf on its Hugging Face folder (a built-in alias or a .gguf file
    as its converted folder), or local-completions on the server of a remote one."""
    if is_remote(spec):
        name, _, url = spec.removeprefix("openai:").partition("@")
        return f"lm_eval --model local-completions --model_args model={name},base_url={url.rstrip('/')}/completions"
    try:
        path = models.resolve(spec)
    except NudgingError:
        path = spec
    return f"lm_eval --model hf --model_args pretrained={path}"
