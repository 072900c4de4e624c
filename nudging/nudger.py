"""The public entry point: a base model and a nudger, ready to generate."""

from __future__ import annotations

import time
from copy import deepcopy
from typing import Callable, Iterator, Literal

from nudging import engine, models, prompts
from nudging.backend import LocalModel, Model
from nudging.config import NudgingConfig, SamplingConfig
from nudging.errors import InvalidArgumentError
from nudging.remote.client import ClientSettings
from nudging.remote.spec import is_remote
from nudging.result import GenerationResult, GenerationStats
from nudging.text import Span, count_words, merge_spans

Mode = Literal["nudging", "base", "nudger"]
MODES = ("nudging", "base", "nudger")


class Nudger:
    """A base model aligned at inference time by a small chat model (Fei, Razeghi, Singh, ACL 2025).

    >>> n = Nudger.from_pretrained(base="demo-base", nudger="demo-nudger", gamma=0.3)
    >>> r = n.generate("What is 12 * 7?")
    >>> r.text, r.spans, r.stop_reason, r.stats
    """

    def __init__(
        self,
        base: Model | None,
        nudger: Model | None,
        config: NudgingConfig | None = None,
        system: str | None = None,
    ) -> None:
        self.base = base
        self.nudger = nudger
        self.config = config or NudgingConfig()
        self.system = system

    @classmethod
    def from_pretrained(
        cls,
        base: str = "demo-base",
        nudger: str = "demo-nudger",
        *,
        gamma: float = 0.3,
        lookahead: int = 16,
        max_new_tokens: int = 512,
        system: str | None = None,
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
    ) -> "Nudger":
        """Load both models from specs: a hub id, a local folder, a .gguf file, `demo-base`/`demo-nudger`, or a
        model on an OpenAI-compatible server, `openai:MODEL@http://HOST:PORT/v1`.

        With mode "base" or "nudger" only that model is loaded. For a remote model, `api_key` (else
        $NUDGING_API_KEY or $OPENAI_API_KEY) is sent to its server, its tokenizer is loaded locally from
        `base_tokenizer` / `nudger_tokenizer` (default: the served model name), and `remote_protocol` picks how
        word boundaries are checked: auto, echo, per-word, or chunked (the authors' 16-token base requests).
        """
        _check_mode(mode)
        config = NudgingConfig(gamma, lookahead, max_new_tokens)  # validate before the slow loads
        wanted = {"base": mode in ("nudging", "base"), "nudger": mode in ("nudging", "nudger")}
        specs = {"base": base, "nudger": nudger}
        # Resolve every local spec before loading any weights, so a bad spec fails fast.
        sources = {role: models.resolve(specs[role]) for role in specs if wanted[role] and not is_remote(specs[role])}
        tokenizers = {"base": base_tokenizer, "nudger": nudger_tokenizer}
        samplings = {"base": base_sampling, "nudger": nudger_sampling}
        loaded: dict[str, Model | None] = {"base": None, "nudger": None}
        for role in ("base", "nudger"):
            if not wanted[role]:
                continue
            if is_remote(specs[role]):
                from nudging.remote.probe import connect

                loaded[role] = connect(
                    specs[role], role=role if mode == "nudging" else "nudger", api_key=api_key,
                    tokenizer=tokenizers[role], protocol=remote_protocol, client_settings=client_settings,
                    sampling=samplings[role],
                )
                loaded[role].name = role
            else:
                loaded[role] = LocalModel(*models.load(sources[role], dtype, device), name=role,
                                          sampling=samplings[role])
        return cls(loaded["base"], loaded["nudger"], config, system)

    def replica(self) -> "Nudger":
        """Another Nudger over the same weights with caches and tokenizers of its own, so that two requests can
        run at once (a model's KV cache belongs to one generation at a time)."""
        def copy(model: Model | None) -> Model | None:
            if model is None:
                return None
            if not isinstance(model, LocalModel):
                return model.replica()
            return LocalModel(model.model, deepcopy(model.tokenizer), name=model.name, sampling=model.sampling)

        return Nudger(copy(self.base), copy(self.nudger), self.config, self.system)

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
        _check_mode(mode)
        config = config or self.config
        state = state if state is not None else engine.EngineState()
        base_text, nudger_text = self._resolve_prompts(question, base_prompt, nudger_prompt, system)
        for model in self._models().values():
            model.reset_sampling()
            if hasattr(model, "stage_tokens"):  # a remote model asks for at most the answer budget per request
                model.stage_tokens = config.max_new_tokens
        if mode == "base":
            model = self._need(self.base, "base", mode)
            model.check_prompt_fits(base_text, "the base prompt")
            pieces = engine.single_model(model, "base", base_text, config.max_new_tokens, state)
        elif mode == "nudger":
            model = self._need(self.nudger, "nudger", mode)
            model.check_prompt_fits(nudger_text, "the nudger prompt")
            pieces = engine.single_model(model, "nudger", nudger_text, config.max_new_tokens, state)
        else:
            base = self._need(self.base, "base", mode)
            nudger = self._need(self.nudger, "nudger", mode)
            base.check_prompt_fits(base_text, "the base prompt")
            nudger.check_prompt_fits(nudger_text, "the nudger prompt")
            pieces = engine.nudge(base, nudger, base_text, nudger_text, config, state)
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
        self, question: str | None, base_prompt: str | None, nudger_prompt: str | None, system: str | None
    ) -> tuple[str, str]:
        if question is None and base_prompt is None and nudger_prompt is None:
            raise InvalidArgumentError("give a question, or raw prompts (base_prompt and nudger_prompt)")
        if question is not None and not isinstance(question, str):
            raise InvalidArgumentError(f"question must be a string, got {type(question).__name__}")
        default_base, default_nudger = self.prompts_for(question, system) if question is not None else ("", "")
        if question is None and (base_prompt is None or nudger_prompt is None) and self.base and self.nudger:
            missing = "base_prompt" if base_prompt is None else "nudger_prompt"
            raise InvalidArgumentError(f"raw prompts need both base_prompt and nudger_prompt; {missing} is missing")
        return (
            default_base if base_prompt is None else base_prompt,
            default_nudger if nudger_prompt is None else nudger_prompt,
        )

    def _need(self, model: Model | None, which: str, mode: str) -> Model:
        if model is None:
            raise InvalidArgumentError(f"mode {mode!r} needs a {which} model, but this Nudger was built without one")
        return model

    def _models(self) -> dict[str, Model]:
        return {name: m for name, m in (("base", self.base), ("nudger", self.nudger)) if m is not None}

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
            paper_requests=state.paper_requests(),
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
