"""Run methods over benchmark items, one JSON-lines result file per (task, method, models, settings).

Rows are written as each item finishes; a rerun reads them back and skips finished items, so a killed run
loses nothing and `--limit 20` after `--limit 10` adds only the ten new items.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Iterator

from nudging.config import NudgingConfig
from nudging.errors import InvalidArgumentError, PromptTooLongError
from nudging.evals import results, scoring, store
from nudging.evals.examples import LETTERS, Example
from nudging.evals.judge import Judge
from nudging.evals.tasks import TASK_NAMES, Task, get_task, load_examples, select
from nudging.evals.sources import DataUnavailableError
from nudging.backends.remote.spec import is_remote
from nudging.loading import LoadSpec, SharedBase
from nudging.methods import METHODS, MODES
from nudging.nudger import Nudger
from nudging.pool import LanePool

RESULT_VERSION = 1  # bump when prompts or scoring change, so old results are not mixed with new ones
ENDED_BY_ITSELF = ("eos", "nudger_eos", "stop")  # "stop": in-context alignment reached its next "# Query"
# left out of the key while unset, so older result files keep their names
LATER_FIELDS = ("base_protocol", "anti_expert", "alpha", "top_k", "quantize", "rule")


@dataclass(frozen=True)
class RunSettings:
    """Everything that makes one result file's answers what they are."""

    task: str
    method: str
    base: str | None
    nudger: str | None
    gamma: float | None
    lookahead: int | None
    max_new_tokens: int
    seed: int
    dtype: str
    data: str | None = None
    version: int = RESULT_VERSION
    base_protocol: str | None = None  # "chunked" only: the one remote protocol whose answers can differ
    anti_expert: str | None = None  # proxy tuning
    alpha: float | None = None  # proxy tuning, blend
    top_k: int | None = None  # ensemble-text, blend
    quantize: str | None = None  # local models in 8 or 4 bits: other answers than in dtype
    rule: str | None = None  # nudging with another rule or the cap: e.g. "window w=4", "top1 cap=0.2" (None: top1)

    @property
    def key(self) -> str:
        fields = {k: v for k, v in asdict(self).items() if not (k in LATER_FIELDS and v is None)}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:10]

    @property
    def stem(self) -> str:
        return f"{self.task}__{self.method}__{self.key}"


@dataclass
class EvalRequest:
    """What to run. The model settings left None take their defaults from nudging.loading.LoadSpec."""

    tasks: list[str]
    methods: list[str]
    base: str | None = None
    nudger: str | None = None
    gamma: float | None = None
    lookahead: int | None = None
    max_new_tokens: int | None = None
    limit: int | None = None
    seed: int = 0
    out: Path = Path("eval_results")
    dtype: str | None = None
    device: str | None = None
    data: dict[str, str] = field(default_factory=dict)
    judge: Judge | None = None
    # LoadSpec.build's options for remote models and the baselines (anti_expert, alpha, top_k, api_key, ...)
    load_options: dict[str, Any] = field(default_factory=dict)
    concurrency: int = 1  # items answered at once (local models: batched together; remote: one replica each)
    nudger_label: str | None = None  # with several nudgers: this one's name in the progress labels

    def load_spec(self) -> LoadSpec:
        return LoadSpec.build(self.base, self.nudger, gamma=self.gamma, lookahead=self.lookahead,
                              max_new_tokens=self.max_new_tokens, dtype=self.dtype, device=self.device,
                              methods=self.methods, **self.load_options)

    def settings(self, task: str, method: str) -> RunSettings:
        spec = self.load_spec()
        uses_base = "base" in METHODS[method].roles
        nudging = METHODS[method].nudges
        return RunSettings(
            task=task, method=method,
            base=spec.models.base if uses_base else None,
            nudger=spec.models.nudger if uses_nudger(method) else None,
            gamma=spec.config.gamma if METHODS[method].reads_gamma else None,
            lookahead=spec.config.lookahead if nudging else None,
            max_new_tokens=spec.config.max_new_tokens, seed=self.seed, dtype=spec.local.dtype,
            data=self.data.get(task),
            base_protocol="chunked" if uses_base and is_remote(spec.models.base)
            and spec.remote.remote_protocol == "chunked" else None,
            anti_expert=spec.models.anti_expert if method == "proxy-tuning" else None,
            alpha=float(_alpha(spec, method)) if method in ("proxy-tuning", "blend") else None,
            top_k=spec.baselines.top_k if method in ("ensemble-text", "blend") else None,
            quantize=spec.local.quantize,
            rule=rule_setting(METHODS[method].config_for(spec.config)) if METHODS[method].reads_gamma else None,
        )


def rule_setting(config: NudgingConfig) -> str | None:
    """The acceptance rule and cap a nudging run used, in words (None: the paper's, top1 without a cap)."""
    words = [config.rule] if config.rule != "top1" or config.max_nudged_fraction is not None else []
    if config.rule == "agreement":
        words.append(f"k={config.agreement_k}")
    if config.rule == "window":
        words.append(f"w={config.window}")
    if config.max_nudged_fraction is not None:
        words.append(f"cap={config.max_nudged_fraction:g}")
    return " ".join(words) or None


def uses_nudger(method: str) -> bool:
    return "nudger" in METHODS[method].roles


def _alpha(spec: LoadSpec, method: str) -> float:
    return spec.baselines.blend_alpha() if method == "blend" else spec.baselines.proxy_tuning_alpha


def expand_tasks(names: list[str]) -> list[str]:
    chosen: list[str] = []
    for name in names:
        for task in (TASK_NAMES if name == "all" else [name]):
            get_task(task)
            if task not in chosen:
                chosen.append(task)
    return chosen


def check_request(request: EvalRequest) -> None:
    if not request.tasks:
        raise InvalidArgumentError("give at least one --task (or --task all)")
    for method in request.methods:
        if method not in MODES:
            raise InvalidArgumentError(f"--method must be one of {', '.join(MODES)}, got {method!r}")
    if request.concurrency < 1:
        raise InvalidArgumentError(f"--concurrency must be at least 1, got {request.concurrency}")
    if request.limit is not None and request.limit < 1:
        raise InvalidArgumentError(f"--limit must be at least 1, got {request.limit}")
    for task in request.data:
        if task not in TASK_NAMES:
            raise InvalidArgumentError(f"--data names unknown task {task!r}; tasks: {', '.join(TASK_NAMES)}")
    request.load_spec()  # the model settings, checked before any item runs


class LazyNudger:
    """Loads the models on the first item that needs them, so a finished run resumes without loading; then
    answers on a pool of `concurrency` lanes."""

    def __init__(self, request: EvalRequest, loaded: Nudger | None = None, shared: SharedBase | None = None) -> None:
        self.request = request
        self._loaded = loaded  # models already loaded by the caller (e.g. calibrate's grid over gamma)
        self._shared = shared  # a base kept across the requests of several nudgers

    @cached_property
    def pool(self) -> LanePool[Nudger]:
        nudger = self._loaded or Nudger.from_pretrained(spec=self.request.load_spec(), shared=self._shared)
        return LanePool(nudger, self.request.concurrency)

    def answers(self, task: Task, examples: list[Example], method: str) -> Iterator[dict[str, Any]]:
        """Rows in the order they finish, `concurrency` items at once. An error stops the rest (rows already
        yielded are kept)."""
        if not examples:
            return
        for _, row in self.pool.imap(examples, lambda lane, example: answer_row(task, example, method, lane,
                                                                                  self.request)):
            yield row


def score(task: Task, example: Example, prediction: str, judge: Judge | None) -> dict[str, Any]:
    extracted = scoring.extract(task.kind, prediction, example.options, task.render(example))
    rule_correct = scoring.is_correct(task.kind, extracted, example.gold)
    fields: dict[str, Any] = {"extracted": extracted, "rule_correct": rule_correct, "correct": rule_correct}
    if judge is None:
        return fields
    answer = scoring.answer_turn(prediction)
    if task.kind == "open":
        verdict = judge.rating(task.render(example), answer, task.safety)
        fields["rating"] = verdict.rating
    else:
        gold = example.gold
        if example.options:
            gold = f"{gold}. {example.options[LETTERS.index(gold)]}"
        verdict = judge.verdict(task.render(example), answer, gold)
        if verdict.correct is not None:
            fields["correct"] = verdict.correct
    fields["judge"] = {"model": judge.model, "reply": verdict.raw}
    return fields


def answer_row(task: Task, example: Example, method: str, nudger: Nudger, request: EvalRequest) -> dict[str, Any]:
    question = task.render(example)
    row: dict[str, Any] = {"id": example.id, "task": task.name, "kind": task.kind, "method": method,
                           "prompt": question, "options": list(example.options), "gold": example.gold}
    try:
        result = nudger.generate(question, system=task.system, mode=method, max_new_tokens=request.max_new_tokens,
                                 gamma=request.gamma if METHODS[method].reads_gamma else None,
                                 lookahead=request.lookahead if METHODS[method].nudges else None)
    except PromptTooLongError as error:
        row.update(prediction="", error=str(error), stop_reason="prompt_too_long", ended_by_itself=False,
                   extracted=None, correct=False if task.kind != "open" else None)
        return row
    row.update(prediction=result.text, stop_reason=result.stop_reason,
               ended_by_itself=result.stop_reason in ENDED_BY_ITSELF)
    row.update(score(task, example, result.text, request.judge))
    generation = result.to_dict()
    row["spans"] = generation["spans"]
    row["stats"] = generation["stats"]
    return row


def result_path(out: Path, settings: RunSettings) -> Path:
    return out / f"{settings.stem}.jsonl"


def write_settings(out: Path, settings: RunSettings, source: str, items: int) -> None:
    meta = {**asdict(settings), "key": settings.key, "source": source, "items": items}
    path = out / f"{settings.stem}.json"
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    partial.replace(path)


Progress = Callable[[str, int, int, int], None]  # (label, done, total, correct so far)


def run(request: EvalRequest, on_progress: Progress | None = None, warn: Callable[[str], None] | None = None,
        loaded: Nudger | None = None, shared: SharedBase | None = None) -> list[Path]:
    """Answer every item not yet answered; return the result files of this request. `loaded`: models already
    loaded for it (else they are loaded on the first item that needs them); `shared`: a base kept from an earlier
    request (another nudger), reused where it fits."""
    check_request(request)
    warn = warn or (lambda message: print(f"nudging: warning: {message}", file=sys.stderr))
    store.make_folder(request.out, "--out")
    nudger = LazyNudger(request, loaded, shared)
    paths = []
    for task in request.data:
        if task not in request.tasks:
            warn(f"--data {task}=... is not used: {task} is not among the tasks of this run")
    several_tasks = len(request.tasks) > 1
    for name in request.tasks:
        task = get_task(name)
        try:
            examples, source = load_examples(task, request.data.get(name), request.seed)
        except DataUnavailableError as error:
            if not several_tasks:
                raise
            warn(f"skipping {name}: {error}")
            continue
        if not examples:
            warn(f"skipping {name}: its source holds no items")
            continue
        chosen = select(examples, request.limit, request.seed)
        for method in request.methods:
            settings = request.settings(name, method)
            path = result_path(request.out, settings)
            store.repair(path)
            write_settings(request.out, settings, source, len(chosen))
            finished = {row["id"]: row for row in results.read_rows(path, warn, "skipped: its item runs again")}
            done = sum(1 for e in chosen if e.id in finished)
            correct = sum(1 for e in chosen if finished.get(e.id, {}).get("correct"))
            label = f"{name} · {method}"
            if request.nudger_label and uses_nudger(method):
                label += f" · {request.nudger_label}"
            if on_progress:
                on_progress(label, done, len(chosen), correct)
            pending = [example for example in chosen if example.id not in finished]
            for row in nudger.answers(task, pending, method):
                store.append_row(path, row)
                done += 1
                correct += bool(row.get("correct"))
                if on_progress:
                    on_progress(label, done, len(chosen), correct)
            paths.append(path)
    return paths
