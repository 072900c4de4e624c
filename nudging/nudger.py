"""The public entry point: a base model and a nudger, ready to generate."""

from __future__ import annotations

import functools
import threading
import time
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterator, Literal, Sequence

from nudging import engine, models, prompts
from nudging.backend import LocalModel, Model
from nudging.batch import Batch, Lane, PackedModel
from nudging.baselines.fusion import ensemble, fused_decode, proxy_tuning
from nudging.baselines.in_context import in_context, in_context_prompt
from nudging.baselines.text_ensemble import text_ensemble
from nudging.config import BaselineConfig, NudgingConfig, SamplingConfig
from nudging.errors import InvalidArgumentError
from nudging.methods import METHODS, MODES, Method, fitting, roles_for, unfit_error, unfit_reason
from nudging.remote.client import ClientSettings
from nudging.remote.spec import is_remote
from nudging.result import GenerationResult, GenerationStats
from nudging.text import Span, count_words, merge_spans

Mode = Literal["nudging", "base", "nudger", "proxy-tuning", "ensemble", "ensemble-text", "in-context"]
ROLES = ("base", "nudger", "anti_expert")


class Nudger:
    """A base model aligned at inference time by a small chat model (Fei, Razeghi, Singh, ACL 2025).

    >>> n = Nudger.from_pretrained(base="demo-base", nudger="demo-nudger", gamma=0.3)
    >>> r = n.generate("What is 12 * 7?")
    >>> r.text, r.spans, r.stop_reason, r.stats

    `mode` picks the method: nudging, one model alone (base, nudger), or one of the paper's baselines
    (proxy-tuning, ensemble, ensemble-text, in-context; see nudging.methods). Every method returns the same
    result object.
    """

    def __init__(
        self,
        base: Model | None,
        nudger: Model | None,
        config: NudgingConfig | None = None,
        system: str | None = None,
        *,
        anti_expert: Model | None = None,
        baselines: BaselineConfig | None = None,
    ) -> None:
        self.base = base
        self.nudger = nudger
        self.anti_expert = anti_expert  # proxy tuning's untuned counterpart of the nudger
        self.config = config or NudgingConfig()
        self.system = system
        self.baselines = baselines or BaselineConfig()
        self._methods_checked: set[str] = set()
        self.batch: Batch | None = None  # set on lanes: their local models run their passes together
        self.gamma_note: str | None = None  # with gamma="auto": which value was used, and where it came from

    @classmethod
    def from_pretrained(
        cls,
        base: str = "demo-base",
        nudger: str = "demo-nudger",
        *,
        gamma: float | Literal["auto"] = 0.3,
        lookahead: int = 16,
        max_new_tokens: int = 512,
        system: str | None = None,
        calibration: str | Path | None = None,
        dtype: str = "auto",
        device: str = "auto",
        base_sampling: SamplingConfig | None = None,
        nudger_sampling: SamplingConfig | None = None,
        mode: Mode = "nudging",
        api_key: str | None = None,
        base_tokenizer: str | None = None,
        nudger_tokenizer: str | None = None,
        remote_protocol: str = "auto",
        client_settings: ClientSettings | None = None,
        anti_expert: str | None = None,
        alpha: float = 1.0,
        top_k: int = 5,
        methods: Sequence[str] | None = None,
    ) -> "Nudger":
        """Load both models from specs: a hub id, a local folder, a .gguf file, `demo-base`/`demo-nudger`, or a
        model on an OpenAI-compatible server, `openai:MODEL@http://HOST:PORT/v1`.

        Only the models that `methods` (default: [mode]) use are loaded: "base" and "nudger" one model each,
        proxy tuning also `anti_expert` (the nudger's untuned base, sharing the vocabulary); `alpha` is proxy
        tuning's strength and `top_k` the text ensemble's candidates per model. For a remote model, `api_key`
        (else $NUDGING_API_KEY or $OPENAI_API_KEY) is sent to its server, its tokenizer is loaded locally from
        `base_tokenizer` / `nudger_tokenizer` (default: the served model name), and `remote_protocol` picks how
        word boundaries are checked: auto, echo, per-word, or chunked (the authors' 16-token base requests).

        `gamma="auto"` takes the gamma stored for this pair by `nudging calibrate` (in `calibration`, default
        nudging.calibrate.saved.default_path()), else calibrates on built-in prompts now and stores the result;
        `gamma_note` then says which value was used and where it came from.
        """
        methods = list(methods) if methods else [mode]
        for method in methods:
            _check_mode(method)
        auto_gamma = gamma == "auto"
        config = NudgingConfig(0.3 if auto_gamma else gamma, lookahead, max_new_tokens)  # validate before loading
        baselines = BaselineConfig(alpha, top_k)
        wanted = roles_for(methods)
        specs = {"base": base, "nudger": nudger, "anti_expert": anti_expert}
        # Resolve every local spec, and check that each method fits these models (comparing vocabularies where a
        # method needs one), before loading any weights, so a bad spec or a method that cannot run fails fast.
        # (a missing anti-expert is not a bad spec: `fitting` says proxy tuning needs one)
        present = {role for role in wanted if role != "anti_expert" or anti_expert}
        sources = {role: models.resolve(specs[role]) for role in present if not is_remote(specs[role])}
        _, unfit = fitting(methods, base, nudger, anti_expert)
        if unfit:
            raise unfit_error(*next(iter(unfit.items())))
        tokenizers = {"base": base_tokenizer, "nudger": nudger_tokenizer, "anti_expert": None}
        samplings = {"base": base_sampling, "nudger": nudger_sampling, "anti_expert": nudger_sampling}
        reads_probabilities = {role for name in methods for role in METHODS[name].logprobs}
        loaded: dict[str, Model | None] = {role: None for role in ROLES}
        for role in ROLES:
            if role not in wanted:
                continue
            if is_remote(specs[role]):
                from nudging.remote.probe import connect

                loaded[role] = connect(
                    specs[role], role="base" if role in reads_probabilities else "nudger", api_key=api_key,
                    tokenizer=tokenizers[role], protocol=remote_protocol, client_settings=client_settings,
                    sampling=samplings[role],
                )
                loaded[role].name = role
            else:
                loaded[role] = LocalModel(*models.load(sources[role], dtype, device), name=role,
                                          sampling=samplings[role])
        nudger_ = cls(loaded["base"], loaded["nudger"], config, system, anti_expert=loaded["anti_expert"],
                      baselines=baselines)
        for method in methods:
            nudger_.check_method(method)
        if auto_gamma and "nudging" in methods:
            from nudging.calibrate import auto, saved

            path = Path(calibration) if calibration else saved.default_path()
            choice = auto.resolve(nudger_, base, nudger, path)
            nudger_.config = replace(config, gamma=choice.gamma)
            nudger_.gamma_note = choice.describe(path)
        return nudger_

    def replica(self) -> "Nudger":
        """Another Nudger over the same weights with caches of its own, so that two requests can run at once (a
        model's KV cache belongs to one generation at a time). Tokenizers are shared: a fast tokenizer is only
        read (never given truncation or padding), and a copy of a large vocabulary takes seconds."""
        def copy(model: Model | None) -> Model | None:
            if model is None:
                return None
            if not isinstance(model, LocalModel):
                return model.replica()
            return LocalModel(model.model, model.tokenizer, name=model.name, sampling=model.sampling)

        return Nudger(copy(self.base), copy(self.nudger), self.config, self.system,
                      anti_expert=copy(self.anti_expert), baselines=self.baselines)

    def lanes(self, count: int) -> list["Nudger"]:
        """`count` Nudgers over the same weights whose local models run their forward passes together: while
        several of them generate at once (one thread each), every pass of a model is one packed pass for all of
        them (nudging.batch). Remote models get a replica each (their servers batch on their side). Tokenizers are
        shared, as in `replica`."""
        if count < 1:
            raise InvalidArgumentError(f"lanes: count must be at least 1, got {count}")
        packed = {role: PackedModel(model.model) for role, model in self._models().items()
                  if isinstance(model, LocalModel)}
        batch = Batch(models=len(packed))

        def lane(role: str) -> Model | None:
            model = getattr(self, role)
            if model is None or role not in packed:
                return None if model is None else model.replica()
            return Lane(packed[role], batch, model.tokenizer, name=model.name, sampling=model.sampling)

        lanes = []
        for _ in range(count):
            nudger = Nudger(lane("base"), lane("nudger"), self.config, self.system, anti_expert=lane("anti_expert"),
                            baselines=self.baselines)
            nudger.batch = batch if packed else None
            nudger._methods_checked = set(self._methods_checked)
            lanes.append(nudger)
        return lanes

    def generate_batch(
        self,
        questions: Sequence[str | dict],
        *,
        batch_size: int = 16,
        on_result: Callable[[int, GenerationResult], None] | None = None,
        lanes: Sequence["Nudger"] | None = None,
        **options,
    ) -> list[GenerationResult]:
        """Answer many questions, `batch_size` at a time, their forward passes packed together (see `lanes`);
        each answer is what `generate(question, **options)` returns, up to float rounding. An item may also be a
        dict of generate's arguments (e.g. base_prompt and nudger_prompt, gamma). `on_result(index, result)` is
        called as each one finishes (in finishing order, from worker threads, one at a time). `lanes` (from
        `lanes()`, e.g. to read their work counters afterwards) replaces the batch_size new ones."""
        if isinstance(questions, str) or not all(isinstance(q, (str, dict)) for q in questions):
            raise InvalidArgumentError("generate_batch: questions must be a list of strings (or of dicts of "
                                       "generate's arguments)")
        if batch_size < 1:
            raise InvalidArgumentError(f"generate_batch: batch_size must be at least 1, got {batch_size}")
        results: list[GenerationResult | None] = [None] * len(questions)
        if not questions:
            return []
        lanes = list(lanes) if lanes else self.lanes(min(batch_size, len(questions)))
        next_index = iter(range(len(questions)))
        lock = threading.Lock()
        errors: list[BaseException] = []

        def work(lane: Nudger) -> None:
            while not errors:
                with lock:
                    index = next(next_index, None)
                if index is None:
                    return
                try:
                    item = questions[index]
                    result = lane.generate(**options, **({"question": item} if isinstance(item, str) else item))
                except BaseException as error:
                    errors.append(error)
                    return
                with lock:
                    results[index] = result
                    if on_result is not None:
                        on_result(index, result)

        threads = [threading.Thread(target=work, args=(lane,), name="nudging-lane", daemon=True) for lane in lanes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        return results  # type: ignore[return-value]

    def check_method(self, mode: str) -> Method:
        """The method `mode`, once checked to run on these models: the models it needs are there, and a method
        that combines distributions token by token has local models with one vocabulary."""
        _check_mode(mode)
        method = METHODS[mode]
        for role in method.roles:
            self._need(getattr(self, role), role, mode)
        if mode in self._methods_checked:
            return method
        vocabulary = functools.cache(lambda role: getattr(self, role).tokenizer.get_vocab())
        reason = unfit_reason(method, lambda role: True, lambda role: not isinstance(getattr(self, role), LocalModel),
                              vocabulary)
        if reason is not None:
            raise unfit_error(mode, reason)
        self._methods_checked.add(mode)
        return method

    def prompts_for(self, question: str, system: str | None = None) -> tuple[str, str]:
        """(base prompt, nudger prompt) for a question, in the paper's formats."""
        system = self.system if system is None else system
        nudger_prompt = prompts.chat_prompt(self.nudger.tokenizer, question, system) if self.nudger else ""
        return prompts.base_prompt(question, system), nudger_prompt

    def stream(
        self,
        question: str | None = None,
        *,
        base_prompt: str | None = None,
        nudger_prompt: str | None = None,
        system: str | None = None,
        mode: Mode = "nudging",
        config: NudgingConfig | None = None,
        state: engine.EngineState | None = None,
    ) -> Iterator[Span]:
        """Yield the answer's pieces as they are written; `state` (if given) holds the stop reason at the end."""
        method = self.check_method(mode)
        config = config or self.config
        state = state if state is not None else engine.EngineState()
        base_text, nudger_text = self._resolve_prompts(question, base_prompt, nudger_prompt, system, method)
        for model in self._models().values():
            model.start_generation()
            if hasattr(model, "stage_tokens"):  # a remote model asks for at most the answer budget per request
                model.stage_tokens = config.max_new_tokens
        prompt_of = {"base": base_text, "nudger": nudger_text, "anti_expert": base_text}
        for role in method.roles:
            getattr(self, role).check_prompt_fits(prompt_of[role], f"the {role.replace('_', '-')} prompt")
        budget = config.max_new_tokens
        if mode == "nudging":
            pieces = engine.nudge(self.base, self.nudger, base_text, nudger_text, config, state)
        elif mode in ("base", "nudger"):
            pieces = engine.single_model(getattr(self, mode), mode, prompt_of[mode], budget, state)
        elif mode == "in-context":
            pieces = in_context(self.base, base_text, budget, state)
        elif mode == "ensemble-text":
            pieces = text_ensemble(self.base, self.nudger, base_text, nudger_text, self.baselines.top_k, budget, state)
        else:
            combine = proxy_tuning(self.baselines.alpha) if mode == "proxy-tuning" else ensemble
            fused = [getattr(self, role) for role in method.roles]
            pieces = fused_decode(fused, [prompt_of[role] for role in method.roles], combine, budget, state)
        return _finishing(pieces, list(self._models().values()))

    def generate(
        self,
        question: str | None = None,
        *,
        base_prompt: str | None = None,
        nudger_prompt: str | None = None,
        system: str | None = None,
        mode: Mode = "nudging",
        gamma: float | None = None,
        lookahead: int | None = None,
        max_new_tokens: int | None = None,
        on_span: Callable[[Span], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> GenerationResult:
        """Answer one question (or raw prompts, used exactly as given) and return text, spans, stop reason, stats.

        `on_span` is called with each piece of the answer as soon as it is written (for live display);
        `should_stop` is asked after each piece, and a true answer ends the generation with stop reason "stop"
        (a stop string was written, or the client went away).
        """
        config = NudgingConfig(
            self.config.gamma if gamma is None else gamma,
            self.config.lookahead if lookahead is None else lookahead,
            self.config.max_new_tokens if max_new_tokens is None else max_new_tokens,
        )
        with self.batch.member() if self.batch is not None else nullcontext():  # a lane: one of the batch's members
            return self._generate(question, base_prompt, nudger_prompt, system, mode, config, on_span, should_stop)

    def _generate(
        self, question: str | None, base_prompt: str | None, nudger_prompt: str | None, system: str | None,
        mode: Mode, config: NudgingConfig, on_span: Callable[[Span], None] | None,
        should_stop: Callable[[], bool] | None,
    ) -> GenerationResult:
        state = engine.EngineState()
        before = {name: m.counters.to_dict() for name, m in self._models().items()}
        started = time.perf_counter()
        pieces = self.stream(
            question, base_prompt=base_prompt, nudger_prompt=nudger_prompt, system=system, mode=mode,
            config=config, state=state,
        )
        if on_span is not None or should_stop is not None:
            pieces = _tap(pieces, on_span, should_stop, state)
        spans = merge_spans(pieces)
        seconds = time.perf_counter() - started
        work = {
            name: {key: value - before[name][key] for key, value in m.counters.to_dict().items()}
            for name, m in self._models().items()
        }
        return GenerationResult(
            text="".join(span.text for span in spans),
            spans=spans,
            stop_reason=state.stop_reason or "length",
            stats=self._stats(spans, state, work, seconds),
            mode=mode,
        )

    # --- helpers --------------------------------------------------------------------------------------------
    def _resolve_prompts(
        self, question: str | None, base_prompt: str | None, nudger_prompt: str | None, system: str | None,
        method: Method,
    ) -> tuple[str, str]:
        if question is None and base_prompt is None and nudger_prompt is None:
            raise InvalidArgumentError("give a question, or raw prompts (base_prompt and nudger_prompt)")
        if question is not None and not isinstance(question, str):
            raise InvalidArgumentError(f"question must be a string, got {type(question).__name__}")
        default_base, default_nudger = self.prompts_for(question, system) if question is not None else ("", "")
        if question is not None and method.name == "in-context":
            default_base = in_context_prompt(question, self.system if system is None else system)
        uses = {"base_prompt": "base" in method.roles, "nudger_prompt": "nudger" in method.roles}
        given = {"base_prompt": base_prompt is not None, "nudger_prompt": nudger_prompt is not None}
        missing = [name for name in uses if uses[name] and not given[name]]
        if question is None and missing:
            raise InvalidArgumentError(f"raw prompts for {method.name} need {' and '.join(n for n in uses if uses[n])}; "
                                       f"{missing[0]} is missing")
        return (
            default_base if base_prompt is None else base_prompt,
            default_nudger if nudger_prompt is None else nudger_prompt,
        )

    def _need(self, model: Model | None, which: str, mode: str) -> Model:
        if model is None:
            which = which.replace("_", "-")
            raise InvalidArgumentError(f"mode {mode!r} needs a {which} model, but this Nudger was built without one")
        return model

    def _models(self) -> dict[str, Model]:
        return {role: getattr(self, role) for role in ROLES if getattr(self, role) is not None}

    def _stats(
        self, spans: list[Span], state: engine.EngineState, work: dict[str, dict[str, int]], seconds: float
    ) -> GenerationStats:
        nudged_words, total_words = count_words(spans)
        counter = self.base or self.nudger
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
            paper_requests=state.paper_requests,
        )


def _tap(
    spans: Iterator[Span],
    callback: Callable[[Span], None] | None,
    should_stop: Callable[[], bool] | None,
    state: engine.EngineState,
) -> Iterator[Span]:
    for span in spans:
        if callback is not None:
            callback(span)
        yield span
        if should_stop is not None and should_stop():
            state.stop_reason = "stop"
            spans.close()
            return


def _finishing(pieces: Iterator[Span], models: list[Model]) -> Iterator[Span]:
    """The engine's pieces; at the end (or when the caller stops early) every model releases what it holds."""
    try:
        yield from pieces
    finally:
        pieces.close()
        for model in models:
            model.finish()


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise InvalidArgumentError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
