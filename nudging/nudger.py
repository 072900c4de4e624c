"""The public entry point: a base model and a nudger, ready to generate."""

from __future__ import annotations

import time
from contextlib import nullcontext
from typing import Any, Callable, Iterator, Literal, Sequence

from nudging import loading, prompts
from nudging.backends.batch import Batch, make_lanes
from nudging.backends.interface import Model
from nudging.config import BATCH_SIZE, BaselineConfig, NudgingConfig, SamplingConfig
from nudging.engine import EngineState
from nudging.errors import InvalidArgumentError
from nudging.methods import MODES, ROLES, Call, Method, check_fits, method_named, reads_gamma
from nudging.pool import LanePool
from nudging.result import GenerationResult, stats_of
from nudging.text import Span, StopScanner, check_stops, check_unicode, merge_spans

Mode = Literal["nudging", "base", "nudger", "nudging-entropy", "nudging-margin", "nudging-agreement", "nudging-window",
               "nudging-capped", "proxy-tuning", "ensemble", "ensemble-text", "in-context", "blend"]
__all__ = ["MODES", "Mode", "Nudger"]


class Nudger:
    """A base model aligned at inference time by a small chat model (Fei, Razeghi, Singh, ACL 2025).

    >>> n = Nudger.from_pretrained(base="demo-base", nudger="demo-nudger", gamma=0.3)
    >>> r = n.generate("What is 12 * 7?")
    >>> r.text, r.spans, r.stop_reason, r.stats

    `mode` picks the method: nudging (or a variant with another rule), one model alone (base, nudger), a
    baseline, or blend (nudging.methods). Every method returns the same result object.
    """

    def __init__(self, base: Model | None, nudger: Model | None, config: NudgingConfig | None = None,
                 system: str | None = None, *, anti_expert: Model | None = None,
                 baselines: BaselineConfig | None = None, batch: Batch | None = None) -> None:
        self.base, self.nudger = base, nudger
        self.anti_expert = anti_expert  # proxy tuning's untuned counterpart of the nudger
        self.config = config or NudgingConfig()
        self.system = system
        self.baselines = baselines or BaselineConfig()
        self.batch = batch  # on lanes: the batch whose members run their forward passes together
        self.gamma_note: str | None = None  # with gamma="auto": which value was used, and where it came from
        self._methods_checked: set[str] = set()

    @classmethod
    def from_pretrained(cls, base: str | None = None, nudger: str | None = None, *, spec: loading.LoadSpec | None = None,
                        shared: loading.SharedBase | None = None, **options: Any) -> "Nudger":
        """Load the models from specs (default: the demo pair): a hub id, a local folder, a .gguf file,
        `demo-base`/`demo-nudger`, or a model on an OpenAI-compatible server, `openai:MODEL@http://HOST:PORT/v1`.

        `options`: fields of nudging.loading.LoadSpec and its parts (gamma, lookahead, max_new_tokens, system, dtype,
        device, device_map, quantize, max_memory, offload_folder (large models: nudging.loading.LocalOptions),
        base_sampling, nudger_sampling, mode or methods (only their models load), anti_expert, alpha, top_k, api_key,
        base_tokenizer, nudger_tokenizer, remote_protocol, client_settings, calibration), or a whole `spec`.
        `gamma="auto"`: the gamma `nudging calibrate` stored for this pair, else one calibrated now (and stored;
        `gamma_note` says which). `shared`: a base kept from an earlier pair, used where it fits (loading.SharedBase)."""
        spec = spec or loading.LoadSpec.build(base, nudger, **options)
        models = loading.load_models(spec, shared)
        pair = cls(models["base"], models["nudger"], spec.config, spec.system, anti_expert=models["anti_expert"],
                   baselines=spec.baselines)
        for method in spec.methods:
            pair.check_method(method)
        if spec.gamma_auto and reads_gamma(spec.methods):
            pair.config, pair.gamma_note = loading.resolve_auto_gamma(pair, spec)
        return pair

    def _with_models(self, models: dict[str, Model], batch: Batch | None = None) -> "Nudger":
        twin = Nudger(models.get("base"), models.get("nudger"), self.config, self.system,
                      anti_expert=models.get("anti_expert"), baselines=self.baselines, batch=batch)
        twin._methods_checked = set(self._methods_checked)
        return twin

    def replica(self) -> "Nudger":
        """Another Nudger over the same weights (and tokenizers) with caches of its own, so that two
        generations can run at once (a model belongs to one generation at a time)."""
        return self._with_models({role: model.replica() for role, model in self._models().items()})

    def lanes(self, count: int) -> list["Nudger"]:
        """`count` Nudgers over the same weights whose local models run their forward passes together: while
        several of them generate at once (one thread each), every pass of a model is one packed pass for all of
        them (nudging.backends.batch). Remote models get a replica each (their servers batch on their side)."""
        if count < 1:
            raise InvalidArgumentError(f"lanes: count must be at least 1, got {count}")
        batch, sets = make_lanes(self._models(), count)
        return [self._with_models(models, batch) for models in sets]

    def generate_batch(self, questions: Sequence[str | dict], *, batch_size: int = BATCH_SIZE,
                       on_result: Callable[[int, GenerationResult], None] | None = None,
                       lanes: Sequence["Nudger"] | None = None, **options: Any) -> list[GenerationResult]:
        """Answer many questions, `batch_size` at a time, their forward passes packed together (see `lanes`):
        what `generate(question, **options)` returns, up to float rounding. An item may be a dict of generate's
        arguments. `on_result(index, result)` is called as each one finishes. `lanes` (from `lanes()`, e.g. to
        read their work counters afterwards) replaces the batch_size new ones."""
        _check_batch(questions, batch_size)
        if not questions:
            return []
        pool = LanePool(self, min(batch_size, len(questions)), lanes)
        results: list[GenerationResult | None] = [None] * len(questions)
        ask = lambda lane, item: lane.generate(**options, **({"question": item} if isinstance(item, str) else item))
        for index, result in pool.imap(questions, ask):
            results[index] = result
            if on_result is not None:
                on_result(index, result)
        return results  # type: ignore[return-value]

    def check_method(self, mode: str) -> Method:
        """The method `mode`, once checked to run on these models: the models it needs are there, and a method
        that combines distributions token by token has local models with one vocabulary."""
        method = method_named(mode)
        if mode not in self._methods_checked:
            check_fits(method, self._models())
            self._methods_checked.add(mode)
        return method

    def prompts_for(self, question: str, system: str | None = None) -> tuple[str, str]:
        """(base prompt, nudger prompt) for a question, in the paper's formats."""
        system = self.system if system is None else system
        nudger_prompt = prompts.chat_prompt(self.nudger.tokenizer, question, system) if self.nudger else ""
        return prompts.base_prompt(question, system), nudger_prompt

    def stream(self, question: str | None = None, *, base_prompt: str | None = None,
               nudger_prompt: str | None = None, system: str | None = None, mode: Mode = "nudging",
               config: NudgingConfig | None = None, state: EngineState | None = None,
               sampling: dict[str, SamplingConfig] | None = None,
               baselines: BaselineConfig | None = None) -> Iterator[Span]:
        """Yield the answer's pieces as they are written; `state` (if given) holds the stop reason at the end.
        `sampling` (by role) and `baselines` replace the models' sampling and this Nudger's baseline settings for
        this generation."""
        method = self.check_method(mode)
        config = method.config_for(config or self.config)
        state = state if state is not None else EngineState()
        base_text, nudger_text = _prompts(self, question, base_prompt, nudger_prompt, system, method)
        prompt_of = {"base": base_text, "nudger": nudger_text, "anti_expert": base_text}
        models = _started(self._models(), method, prompt_of, sampling, config.max_new_tokens)
        pieces = method.run(Call(models, prompt_of, config, baselines or self.baselines, state))
        return _finishing(pieces, list(models.values()))

    def generate(self, question: str | None = None, *, base_prompt: str | None = None,
                 nudger_prompt: str | None = None, system: str | None = None, mode: Mode = "nudging",
                 gamma: float | None = None, lookahead: int | None = None, max_new_tokens: int | None = None,
                 rule: str | None = None, agreement_k: int | None = None, window: int | None = None,
                 max_nudged_fraction: float | None = None, alpha: float | None = None, top_k: int | None = None,
                 sampling: dict[str, SamplingConfig] | None = None, stop: str | Sequence[str] | None = None,
                 on_span: Callable[[Span], None] | None = None,
                 should_stop: Callable[[], bool] | None = None) -> GenerationResult:
        """Answer one question (or raw prompts, used exactly as given) and return text, spans, stop reason, stats.

        NudgingConfig's and BaselineConfig's fields (None: this Nudger's), `sampling` (by role) and `stop` (strings:
        the answer ends before the first one written) apply to this generation only. `on_span` gets each piece as it
        is written; `should_stop` is asked after each, and true ends with stop reason "stop"."""
        config = self.config.with_overrides(gamma=gamma, lookahead=lookahead, max_new_tokens=max_new_tokens, rule=rule,
                                            agreement_k=agreement_k, window=window, max_nudged_fraction=max_nudged_fraction)
        baselines = self.baselines.with_overrides(alpha=alpha, top_k=top_k)
        stops = check_stops(stop)
        with self.batch.member() if self.batch is not None else nullcontext():  # a lane: one of the batch's members
            state, models = EngineState(), self._models()
            before = {name: m.counters.to_dict() for name, m in models.items()}
            started = time.perf_counter()
            pieces = self.stream(question, base_prompt=base_prompt, nudger_prompt=nudger_prompt, system=system,
                                 mode=mode, config=config, state=state, sampling=sampling, baselines=baselines)
            spans = merge_spans(_tap(_until_stop(pieces, stops, state), on_span, should_stop, state))
            seconds = time.perf_counter() - started
            work = {name: {key: value - before[name][key] for key, value in m.counters.to_dict().items()}
                    for name, m in models.items()}
        return GenerationResult(text="".join(span.text for span in spans), spans=spans,
                                stop_reason=state.stop_reason or "length", mode=mode, trace=state.trace,
                                stats=stats_of(spans, state, work, seconds, self.base or self.nudger, mode))

    def _models(self) -> dict[str, Model]:
        return {role: getattr(self, role) for role in ROLES if getattr(self, role) is not None}


def _check_batch(questions: Sequence[str | dict], batch_size: int) -> None:
    if isinstance(questions, str) or not all(isinstance(q, (str, dict)) for q in questions):
        raise InvalidArgumentError("generate_batch: questions must be a list of strings (or of dicts of generate's "
                                   "arguments)")
    if batch_size < 1:
        raise InvalidArgumentError(f"generate_batch: batch_size must be at least 1, got {batch_size}")


def _started(models: dict[str, Model], method: Method, prompt_of: dict[str, str],
             sampling: dict[str, SamplingConfig] | None, max_new_tokens: int) -> dict[str, Model]:
    """The models, each started on a new generation, once the prompts of those the method runs fit them."""
    for role, model in models.items():
        model.start_generation((sampling or {}).get(role), max_new_tokens)
    for role in method.roles:
        models[role].check_prompt_fits(prompt_of[role], f"the {role.replace('_', '-')} prompt")
    return models


def _prompts(nudger: Nudger, question: str | None, base_prompt: str | None, nudger_prompt: str | None,
             system: str | None, method: Method) -> tuple[str, str]:
    """The base and nudger prompts of one generation: raw prompts as given, else built from the question."""
    if question is None and base_prompt is None and nudger_prompt is None:
        raise InvalidArgumentError("give a question, or raw prompts (base_prompt and nudger_prompt)")
    texts = {"question": question, "base_prompt": base_prompt, "nudger_prompt": nudger_prompt, "system": system}
    for name, text in texts.items():
        if text is not None and not isinstance(text, str):
            raise InvalidArgumentError(f"{name} must be a string, got {type(text).__name__}")
        if text is not None:
            check_unicode(text, name)
    default_base, default_nudger = nudger.prompts_for(question, system) if question is not None else ("", "")
    if question is not None and method.base_prompt is not None:
        default_base = method.base_prompt(question, nudger.system if system is None else system)
    uses = {"base_prompt": "base" in method.roles, "nudger_prompt": "nudger" in method.roles}
    given = {"base_prompt": base_prompt is not None, "nudger_prompt": nudger_prompt is not None}
    missing = [name for name in uses if uses[name] and not given[name]]
    if question is None and missing:
        raise InvalidArgumentError(f"raw prompts for {method.name} need {' and '.join(n for n in uses if uses[n])}; "
                                   f"{missing[0]} is missing")
    return (default_base if base_prompt is None else base_prompt,
            default_nudger if nudger_prompt is None else nudger_prompt)


def _tap(spans: Iterator[Span], callback: Callable[[Span], None] | None, should_stop: Callable[[], bool] | None,
         state: EngineState) -> Iterator[Span]:
    for span in spans:
        if callback is not None:
            callback(span)
        yield span
        if should_stop is not None and should_stop():
            state.stop_reason = "stop"
            spans.close()  # type: ignore[attr-defined]
            return


def _until_stop(pieces: Iterator[Span], stops: list[str], state: EngineState) -> Iterator[Span]:
    """The pieces up to the first stop string; the generation ends as soon as one is written."""
    return _cut_at_stop(pieces, StopScanner(stops), state) if stops else pieces


def _cut_at_stop(pieces: Iterator[Span], scanner: StopScanner, state: EngineState) -> Iterator[Span]:
    try:
        for span in pieces:
            yield from scanner.feed(span)
            if scanner.stopped:
                state.stop_reason = "stop"
                return
        yield from scanner.flush()
    finally:
        pieces.close()  # type: ignore[attr-defined]


def _finishing(pieces: Iterator[Span], models: list[Model]) -> Iterator[Span]:
    """The method's pieces; at the end (or when the caller stops early) every model releases what it holds."""
    try:
        yield from pieces
    finally:
        pieces.close()  # type: ignore[attr-defined]
        for model in models:
            model.finish()
