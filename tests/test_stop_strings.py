"""Stop strings of a generation (Nudger.generate(stop=...), `nudging generate --stop`): the answer is the one
without them cut before the first stop string, and decoding ends once one is written. Tiny models, float64."""

from __future__ import annotations

import json

import pytest

from nudging import Nudger
from nudging.cli import main
from nudging.errors import InvalidArgumentError

QUESTION = "The cat reads the question"
BUDGET = 40


@pytest.fixture(scope="module")
def pair(tiny_folders):
    return Nudger.from_pretrained(base=tiny_folders["base"], nudger=tiny_folders["nudger"], dtype="float64",
                                  device="cpu")


def passes(result) -> int:
    return sum(work["forward_passes"] for work in result.stats.models.values())


@pytest.mark.parametrize("mode", ["nudging", "base", "nudger"])
def test_the_answer_is_cut_at_the_first_stop_string_and_decoding_ends_there(pair, mode):
    full = pair.generate(QUESTION, mode=mode, max_new_tokens=BUDGET, lookahead=3)
    assert len(full.text) > 12, full.text
    early, late = full.text[4:6], full.text[-3:]  # the earlier one in the text wins, whatever their order
    pieces = []
    cut = pair.generate(QUESTION, mode=mode, max_new_tokens=BUDGET, lookahead=3, stop=[late, early],
                        on_span=pieces.append)
    expected = full.text[: min(full.text.index(early), full.text.index(late))]
    assert cut.text == expected == "".join(span.text for span in pieces) == "".join(s.text for s in cut.spans)
    assert cut.stop_reason == "stop"
    assert passes(cut) < passes(full)  # decoding stopped early, not cut afterwards


def test_a_stop_string_never_written_changes_nothing(pair):
    # Both runs start from the KV cache of the same answer (how wide a pass can be depends on what it reuses).
    pair.generate(QUESTION, max_new_tokens=BUDGET)
    full = pair.generate(QUESTION, max_new_tokens=BUDGET)
    same = pair.generate(QUESTION, max_new_tokens=BUDGET, stop="\u2603never")
    assert (same.text, same.stop_reason, passes(same)) == (full.text, full.stop_reason, passes(full))


@pytest.mark.parametrize("stop", [[""], [1], ["ok", None], 3])
def test_bad_stop_strings_are_refused(pair, stop):
    with pytest.raises(InvalidArgumentError, match="stop must be a non-empty string or a list of them"):
        pair.generate(QUESTION, stop=stop)


def test_generate_takes_stop_strings_and_raw_prompt_lines(pair, tiny_folders, tmp_path, capsys):
    full = pair.generate(base_prompt="Zoë writes", nudger_prompt="Zoë writes", max_new_tokens=BUDGET)
    stop = full.text[5:7]
    expected = pair.generate(base_prompt="Zoë writes", nudger_prompt="Zoë writes", max_new_tokens=BUDGET, stop=stop)
    asked = pair.generate(QUESTION, max_new_tokens=BUDGET, stop=stop)
    lines = tmp_path / "prompts.jsonl"
    lines.write_text(json.dumps({"base_prompt": "Zoë writes", "nudger_prompt": "Zoë writes"}) + "\n"
                     + json.dumps({"question": QUESTION}) + "\n")
    models = ["--base", tiny_folders["base"], "--nudger", tiny_folders["nudger"], "--dtype", "float64"]
    assert main(["generate", "--prompts", str(lines), "--stop", stop, "--max-new-tokens", str(BUDGET), "--json",
                 *models]) == 0
    raw, question = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert raw["base_prompt"] == "Zoë writes" and (raw["text"], raw["stop_reason"]) == (expected.text, "stop")
    assert question["question"] == QUESTION and question["text"] == asked.text
    assert main(["generate", "--base-prompt", "Zoë writes", "--nudger-prompt", "Zoë writes", "--stop", stop,
                 "--max-new-tokens", str(BUDGET), "--json", *models]) == 0
    assert json.loads(capsys.readouterr().out)["text"] == expected.text
    assert main(["generate", "x", "--stop", "", *models]) == 2
    assert "--stop must be a non-empty string" in capsys.readouterr().err
