"""`nudging calibrate` and `--gamma auto`: on tiny models whose agreement structure is known by construction
(bigram models: the base's top-1 probability and whether it agrees with the nudger are set at every answer
position), the chosen gamma lands where it must; positions also match a plain reference on random
cross-tokenizer models."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from nudging import Nudger
from nudging.calibrate import analysis, saved
from nudging.rules import Rule
from nudging.calibrate.measure import AnswerPositions, answer_targets, measure, read_positions
from nudging.cli import main
from nudging.errors import InvalidArgumentError
from reference import RefModel
from servers import start_server
from tiny import bigram_llama, byte_level_tokenizer, local, metaspace_tokenizer, tiny_llama


def chain_pair(tokenizer, agree_p: float, disagree_p: float):
    """A nudger that answers " the answer two" to every prompt, and a base that, along that answer, agrees with
    probability `agree_p` at three positions and at the fourth (before "two") prefers " three" with probability
    `disagree_p` (" two" gets less)."""
    v = tokenizer.get_vocab()
    newline, the, answer, two, three = (v[t] for t in ("Ċ", "Ġthe", "Ġanswer", "Ġtwo", "Ġthree"))
    eos = tokenizer.eos_token_id
    nudger = bigram_llama(tokenizer, {newline: {the: 0.95}, the: {answer: 0.95}, answer: {two: 0.95},
                                      two: {eos: 0.95}, three: {eos: 0.95}})
    base = bigram_llama(tokenizer, {newline: {the: agree_p}, the: {answer: agree_p},
                                    answer: {three: disagree_p, two: disagree_p / 2},
                                    two: {eos: agree_p}, three: {eos: agree_p}})
    return base, nudger


@pytest.fixture(scope="module")
def byte_tokenizer():
    return byte_level_tokenizer()


@pytest.fixture(scope="module")
def chain_folders(tmp_path_factory, byte_tokenizer):
    root = tmp_path_factory.mktemp("chain")
    base, nudger = chain_pair(byte_tokenizer, 0.9, 0.22)
    folders = {}
    for name, model in (("base", base), ("nudger", nudger)):
        model.save_pretrained(root / name)
        byte_tokenizer.save_pretrained(root / name)
        folders[name] = str(root / name)
    return folders


@pytest.mark.parametrize("agree_p, disagree_p", [(0.9, 0.22), (0.97, 0.6), (0.45, 0.12)])
def test_chosen_gamma_lands_between_disagreement_and_agreement(byte_tokenizer, agree_p, disagree_p):
    base, nudger = chain_pair(byte_tokenizer, agree_p, disagree_p)
    pair = Nudger(local(base, byte_tokenizer, "base"), local(nudger, byte_tokenizer, "nudger"))
    records = measure(pair, ["What is it?", "Say something.", "A third question"], 32)
    for record in records:
        assert record.answer == " the answer two" and record.ended
        assert record.agree == [True, True, False, True]  # " the", " answer", " two" (base: " three"), EOS
        assert record.top1 == pytest.approx([agree_p, agree_p, disagree_p, agree_p], abs=1e-5)
    result = analysis.calibrate(records)
    assert disagree_p < result.gamma <= agree_p
    assert result.gamma == pytest.approx((disagree_p + agree_p) / 2, abs=0.011)  # the middle of the tied range
    assert disagree_p < result.interval[0] <= result.gamma <= result.interval[1] <= agree_p
    assert (result.positions, result.disagreements, result.prompts) == (12, 3, 3)
    chosen = next(row for row in result.table if row.gamma == result.gamma)
    assert (chosen.nudged_share, chosen.disagreements_caught, chosen.agreements_nudged) == (0.25, 1.0, 0.0)
    assert chosen.disagreement_rate_below == 1.0 and chosen.separation == 1.0
    assert sum(result.histogram_agree) == 9 and sum(result.histogram_disagree) == 3
    assert result.histogram_disagree[int(records[0].top1[2] * analysis.BINS)] == 3


def test_best_gamma_on_overlapping_distributions():
    rng = np.random.default_rng(0)
    agree = rng.uniform(0.35, 1.0, 4000)  # the separation J(g) = P(dis < g) - P(agr < g) peaks at g = 0.5
    disagree = rng.uniform(0.0, 0.5, 1000)
    top1 = list(agree) + list(disagree)
    flags = [True] * len(agree) + [False] * len(disagree)
    assert analysis.best_gamma(top1, flags) == pytest.approx(0.5, abs=0.02)
    row = analysis.row_for(0.1, top1, flags)
    assert row.disagreement_rate_below == 1.0 and row.agreements_nudged == 0.0
    assert row.disagreements_caught == pytest.approx(0.2, abs=0.03)
    assert analysis.share_below(top1)[analysis.CANDIDATES.index(0.5)] == pytest.approx(
        (1000 + 4000 * 0.15 / 0.65) / 5000, abs=0.02)


def test_no_positions_is_a_clear_error():
    empty = AnswerPositions("q", "", False, [], [])
    with pytest.raises(Exception, match="no answer positions"):
        analysis.calibrate([empty])


@pytest.mark.parametrize("base_kind, nudger_kind", [("meta", "byte"), ("byte", "meta")])
def test_positions_match_a_plain_reference_across_tokenizers(base_kind, nudger_kind):
    tokenizers = {"byte": byte_level_tokenizer(), "meta": metaspace_tokenizer()}
    btok, ntok = tokenizers[base_kind], tokenizers[nudger_kind]
    nmodel = tiny_llama(ntok, seed=5, eos_logit_scale=1.4) if nudger_kind == "byte" else tiny_llama(ntok, seed=4)
    ref_nudger = RefModel(nmodel, ntok)
    questions = ["The cat reads the question", "Zoë counts two numbers:", "What is 12 + 7?"]
    prompts = [Nudger(None, local(nmodel, ntok, "nudger")).prompts_for(q) for q in questions]
    # A base that agrees with the nudger's answers at every other position of its own tokenization of them,
    # and prefers another token at the rest.
    table: dict[int, dict[int, float]] = {}
    for base_prompt, nudger_prompt in prompts:
        ids = btok(base_prompt + ref_nudger.greedy(nudger_prompt, 40)[0])["input_ids"]
        for j in range(len(btok(base_prompt)["input_ids"]) - 1, len(ids) - 1):
            table[ids[j]] = {ids[j + 1]: 0.7} if j % 2 else {(ids[j + 1] + 1) % len(btok): 0.4}
    bmodel = bigram_llama(btok, table)
    pair = Nudger(local(bmodel, btok, "base"), local(nmodel, ntok, "nudger"))
    ref = RefModel(bmodel, btok)
    records = measure(pair, questions, 40)
    checked = agreements = 0
    for (base_prompt, nudger_prompt), record in zip(prompts, records):
        answer, ended = ref_nudger.greedy(nudger_prompt, 200)
        assert (record.answer, record.ended) == (answer[: len(record.answer)], ended and record.answer == answer)
        # plain reference: every position of the canonical tokenization, one full forward pass each
        ids, prompt_ids = ref.tokens(base_prompt + record.answer), ref.tokens(base_prompt)
        start = next(i for i, (a, b) in enumerate(zip(ids + [-1], prompt_ids + [-2])) if a != b)
        expected = []
        for j in range(start, len(ids) + record.ended):
            if any(btok.decode(ids[:end]).endswith("\ufffd") for end in (j, j + 1)):
                continue  # a position inside a multi-byte character is left out
            token, prob = ref.top1(ids[:j])
            expected.append((prob, token in ref.eos if j == len(ids) else token == ids[j]))
        assert [p for p, _ in expected] == pytest.approx(record.top1, abs=1e-6)
        assert [a for _, a in expected] == record.agree
        checked += len(expected)
        agreements += sum(record.agree)
    assert checked > 40 and 0.2 * checked < agreements < 0.8 * checked, (checked, agreements)


def test_a_position_needs_a_whole_character(byte_tokenizer):
    base = local(tiny_llama(byte_tokenizer, seed=1), byte_tokenizer, "base")
    targets = answer_targets(base, "Q\nAnswer:\n", " café 😀 ok", ended=True)
    pieces = [piece for _, piece in targets[:-1]]
    assert all(pieces) and not any("é" in p or "😀" in p for p in pieces)  # split characters are left out
    assert "".join(pieces).replace(" ", "") == "caok"
    assert all(text.startswith("Q\nAnswer:\n") for text, _ in targets)
    assert targets[-1] == ("Q\nAnswer:\n café 😀 ok", None)
    for text, piece in targets[:-1]:  # each target text is what follows its prefix in the answer
        assert ("Q\nAnswer:\n café 😀 ok")[len(text):].startswith(piece)
    top1, agree = read_positions(base, "Q\nAnswer:\n", " café 😀 ok", True)
    assert len(top1) == len(agree) == len(targets)
    # The window rule reads, at each position that starts a whole window, the mean top-1 over the window.
    means, window_agree = read_positions(base, "Q\nAnswer:\n", " café 😀 ok", True, Rule("window", window=3))
    assert means == pytest.approx([sum(top1[j : j + 3]) / 3 for j in range(len(top1) - 2)])
    assert window_agree == agree[: len(top1) - 2]


# --- the command ------------------------------------------------------------------------------------------------

def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_calibrate_writes_report_plot_and_stored_gamma_and_resumes(capsys, tmp_path, chain_folders):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("What is it?\nSay something.\n", encoding="utf-8")
    store_file = tmp_path / "calibration.json"
    argv = ["calibrate", "--base", chain_folders["base"], "--nudger", chain_folders["nudger"], "--prompts", str(prompts),
            "--out", str(tmp_path / "out"), "--calibration", str(store_file), "--max-new-tokens", "16"]
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert "Chosen gamma: 0.56" in out and "[2/2] answers measured" in err
    stored = saved.load(chain_folders["base"], chain_folders["nudger"], store_file)
    assert stored.gamma == 0.56 and stored.method == "separation" and stored.source == "2 prompts from prompts.txt"
    report = json.loads((tmp_path / "out" / "calibration.json").read_text())
    assert report["calibration"]["positions"] == 8 and report["chosen"]["gamma"] == 0.56
    png = (tmp_path / "out" / "calibration.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    positions = (tmp_path / "out" / "positions.jsonl").read_text()
    assert len(positions.splitlines()) == 2
    # a rerun reads the measured answers back instead of generating them again
    prompts.write_text("What is it?\nSay something.\nOne more.\n", encoding="utf-8")
    code, _, err = run_cli(capsys, *argv)
    assert code == 0 and "[2/3] answers measured" in err and "[3/3] answers measured" in err
    lines = (tmp_path / "out" / "positions.jsonl").read_text().splitlines()
    assert len(lines) == 3 and "\n".join(lines[:2]) + "\n" == positions


def test_calibrate_the_window_rule_stores_a_gamma_per_window_size(capsys, tmp_path, chain_folders):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("What is it?\nSay something.\n", encoding="utf-8")
    store_file = tmp_path / "calibration.json"
    code, out, err = run_cli(capsys, "calibrate", "--base", chain_folders["base"], "--nudger", chain_folders["nudger"],
                             "--prompts", str(prompts), "--out", str(tmp_path / "out"), "--calibration",
                             str(store_file), "--max-new-tokens", "16", "--rule", "window", "--window", "2")
    assert code == 0, err
    report = json.loads((tmp_path / "out" / "calibration.json").read_text())
    assert report["rule"] == "window-2"
    assert report["calibration"]["positions"] == 6  # 4 positions per answer, 3 of which start a window of 2
    stored = saved.load(chain_folders["base"], chain_folders["nudger"], store_file, "window-2")
    assert stored is not None and saved.load(chain_folders["base"], chain_folders["nudger"], store_file) is None
    assert "--rule window --window 2" in stored.describe(store_file)


def test_grid_on_labelled_items_picks_an_accurate_gamma(capsys, tmp_path, chain_folders):
    # With lookahead 2 the base writes " three" (option B, wrong) where it is confident enough (gamma <= 0.22)
    # and the nudger writes " two" (option A, right) where it is not: accuracy 0 below the step, 1 above.
    data = tmp_path / "items.jsonl"
    rows = [{"id": f"q{i}", "question": f"Question {i}: which?", "options": ["two", "three"], "answer": "A"}
            for i in range(4)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    store_file = tmp_path / "calibration.json"
    code, out, err = run_cli(
        capsys, "calibrate", "--base", chain_folders["base"], "--nudger", chain_folders["nudger"], "--task", "csqa",
        "--data", f"csqa={data}", "--limit", "4", "--grid", "0.1,0.2,0.3,0.4", "--lookahead", "2",
        "--max-new-tokens", "16", "--out", str(tmp_path / "out"), "--calibration", str(store_file))
    assert code == 0, err
    report = json.loads((tmp_path / "out" / "calibration.json").read_text())
    accuracy = {row["gamma"]: row["accuracy"] for row in report["grid"]["rows"]}
    assert accuracy == {0.1: 0.0, 0.2: 0.0, 0.3: 1.0, 0.4: 1.0, 0.56: 1.0}
    assert report["grid"]["gamma"] == 0.56  # the accurate gamma nearest the separation choice
    stored = saved.load(chain_folders["base"], chain_folders["nudger"], store_file)
    assert (stored.gamma, stored.method, stored.source) == (0.56, "accuracy", "csqa, 4 items")
    assert "Accuracy of nudging per gamma" in out
    assert "csqa · nudging gamma=0.3: 4/4 done, 4 correct" in err and "nudging gamma=0.1: 4/4 done, 0 correct" in err
    # the grid's answers are ordinary eval results: the report labels the runs by gamma
    code, _, _ = run_cli(capsys, "eval", "--report", str(tmp_path / "out" / "grid"))
    table = (tmp_path / "out" / "grid" / "summary.md").read_text()
    assert code == 0 and "nudging gamma=0.1 " in table and "nudging gamma=0.56 " in table


def test_gamma_auto_calibrates_once_then_reads_the_stored_value(capsys, tmp_path, chain_folders):
    store_file = tmp_path / "calibration.json"
    argv = ["generate", "Hello?", "--base", chain_folders["base"], "--nudger", chain_folders["nudger"],
            "--gamma", "auto", "--calibration", str(store_file), "--max-new-tokens", "16", "--json"]
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert "calibrating on built-in prompts" in err and "gamma 0.56" in err and "16 built-in prompts" in err
    assert json.loads(out)["text"] == " the answer two"
    assert saved.load(chain_folders["base"], chain_folders["nudger"], store_file).gamma == 0.56
    # a stored value (here set by hand) is used as it is, without calibrating again
    entry = saved.load(chain_folders["base"], chain_folders["nudger"], store_file)
    entry.gamma = 0.15
    saved.save(entry, store_file)
    code, out, err = run_cli(capsys, *argv[:-1], "--lookahead", "2", "--json")
    assert code == 0 and "calibrating" not in err and "gamma 0.15" in err
    assert json.loads(out)["text"] == " the answer three"  # at 0.15 the base is confident at 0.22
    # eval files its answers under the gamma used
    code, _, err = run_cli(capsys, "eval", "--task", "coin_flip", "--limit", "1", "--method", "nudging",
                           "--base", chain_folders["base"], "--nudger", chain_folders["nudger"], "--gamma", "auto",
                           "--calibration", str(store_file), "--max-new-tokens", "8", "--out", str(tmp_path / "ev"))
    assert code == 0, err
    [meta] = [json.loads(p.read_text()) for p in (tmp_path / "ev").glob("*.json")]
    assert meta["gamma"] == 0.15


def test_serve_with_gamma_auto_uses_the_stored_value(tmp_path, chain_folders):
    store_file = tmp_path / "calibration.json"
    saved.save(saved.SavedGamma(0.42, "separation", (0.4, 0.45), "test", chain_folders["base"],
                                chain_folders["nudger"]), store_file)
    process, url = start_server(chain_folders["base"], chain_folders["nudger"], "--gamma", "auto",
                                "--calibration", str(store_file))
    try:
        assert httpx.get(url + "/health").json()["gamma"] == 0.42
    finally:
        process.kill()
        process.wait()


def test_bad_gamma_is_a_clear_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "q", "--gamma", "often"])
    assert exit_info.value.code == 2
    assert "--gamma: must be a number in (0, 1) or auto, got 'often'" in capsys.readouterr().err
    code, _, err = run_cli(capsys, "generate", "q", "--base", "/no/such/base", "--gamma", "1.5")
    assert code == 2 and "gamma must be a number strictly between 0 and 1, got 1.5" in err


@pytest.mark.parametrize("extra, message", [
    (["--prompts", "p.txt", "--task", "gsm8k"], "give --prompts or --task, not both"),
    (["--task", "gsm8k", "--grid", "0.1,x"], "--grid must be comma-separated numbers"),
    (["--task", "gsm8k", "--grid", "0.1,1.2"], "--grid values must be in (0, 1)"),
    (["--limit", "0"], "--limit must be at least 1"),
    (["--gamma", "auto"], "calibrate chooses gamma itself"),
    (["--task", "justeval"], "add --grid none"),
    (["--task", "nosuchtask"], "nosuchtask"),
])
def test_calibrate_argument_errors_come_before_loading(capsys, extra, message):
    code, _, err = run_cli(capsys, "calibrate", "--base", "/nonexistent/base", *extra)
    assert code == 2 and message in err


def test_a_broken_calibration_file_is_named(tmp_path):
    path = tmp_path / "calibration.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(InvalidArgumentError, match="calibration file .* is not readable JSON"):
        saved.load("a", "b", path)
    path.write_text(json.dumps({"pairs": {saved.pair_key("a", "b"): {"gamma": 3}}}), encoding="utf-8")
    with pytest.raises(InvalidArgumentError, match="malformed"):
        saved.load("a", "b", path)


@pytest.mark.parametrize("pair", ["random", "chain"])
def test_a_remote_base_gives_the_positions_of_the_local_one(pair, tiny_folders, chain_folders):
    """The base behind a real OpenAI-compatible server (`nudging serve --mode base`): the same positions, read
    through echoed prompt logprobs instead of a forward pass."""
    folders = tiny_folders if pair == "random" else chain_folders
    questions = ["the cat reads the question", "Zoë counts two numbers"]
    expected = measure(Nudger.from_pretrained(folders["base"], folders["nudger"]), questions, 24)
    process, url = start_server(folders["base"], folders["nudger"], "--mode", "base")
    try:
        remote_pair = Nudger.from_pretrained(f"openai:nudging@{url}/v1", folders["nudger"],
                                             base_tokenizer=folders["base"], remote_protocol="echo")
        got = measure(remote_pair, questions, 24)
    finally:
        process.kill()
        process.wait()
    for mine, theirs in zip(got, expected):
        # the server stops at EOS without its probability: an answer's end position is left out
        kept = len(theirs.top1) - theirs.ended
        assert mine.answer == theirs.answer and len(mine.top1) == kept >= 3
        assert mine.top1 == pytest.approx(theirs.top1[:kept], abs=1e-5)
        assert mine.agree == theirs.agree[:kept]
    if pair == "chain":
        assert all(record.agree == [True, True, False] for record in got)
    assert remote_pair.base.counters.echo_requests >= len(questions)


# --- several nudgers --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def wrong_nudger(tmp_path_factory, byte_tokenizer):
    """A nudger that answers " the answer three" (option B, wrong) where the chain nudger answers " two": with the
    chain base, nudging answers wrong at every gamma."""
    v = byte_tokenizer.get_vocab()
    newline, the, answer, two, three = (v[t] for t in ("Ċ", "Ġthe", "Ġanswer", "Ġtwo", "Ġthree"))
    eos = byte_tokenizer.eos_token_id
    model = bigram_llama(byte_tokenizer, {newline: {the: 0.95}, the: {answer: 0.95}, answer: {three: 0.95},
                                          two: {eos: 0.95}, three: {eos: 0.95}})
    folder = tmp_path_factory.mktemp("wrong") / "wrong"
    model.save_pretrained(folder)
    byte_tokenizer.save_pretrained(folder)
    return str(folder)


def test_several_nudgers_on_labelled_items_pick_the_most_accurate_pair(capsys, tmp_path, chain_folders, wrong_nudger,
                                                                       monkeypatch):
    from nudging import loading

    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps({"id": f"q{i}", "question": f"Question {i}: which?", "options": ["two", "three"],
                                        "answer": "A"}) + "\n" for i in range(4)), encoding="utf-8")
    store_file = tmp_path / "calibration.json"
    right, base = chain_folders["nudger"], chain_folders["base"]
    out = tmp_path / "out"
    loads = []
    load = loading.LocalOptions.load
    monkeypatch.setattr(loading.LocalOptions, "load", lambda self, source: loads.append(source) or load(self, source))
    # the wrong nudger first: a pick by order alone would choose it
    code, stdout, err = run_cli(
        capsys, "calibrate", "--base", base, "--nudger", wrong_nudger, "--nudger", right, "--task", "csqa",
        "--data", f"csqa={data}", "--limit", "4", "--grid", "0.1,0.3", "--lookahead", "2", "--max-new-tokens", "16",
        "--out", str(out), "--calibration", str(store_file))
    assert code == 0, err
    assert loads == [base, wrong_nudger, right]  # the base once, kept for the second nudger
    report = json.loads((out / "calibration.json").read_text())
    assert report["nudgers"] == [wrong_nudger, right]
    assert [pair["folder"] for pair in report["pairs"]] == [str(out / "wrong"), str(out / "nudger")]
    accuracy = {pair["nudger"]: {row["gamma"]: row["accuracy"] for row in pair["grid"]["rows"]}
                for pair in report["pairs"]}
    assert accuracy[right] == {0.1: 0.0, 0.3: 1.0, 0.56: 1.0} and set(accuracy[wrong_nudger].values()) == {0.0}
    best = report["best"]
    assert (best["nudger"], best["gamma"], best["accuracy"]) == (right, 0.56, 1.0)
    assert best["accuracies"] == {wrong_nudger: 0.0, right: 1.0} and report["note"] is None
    text = (out / "calibration.md").read_text()
    assert "**Best: nudger nudger with gamma 0.56**" in text and "| wrong | 0.1 | 0.0% [0-49] | 4 |" in text
    assert "| nudger **(best)** | 16 | 25.0% | 0.56 | 0.56 | accuracy | 100.0% [51-100] | nudger |" in text
    assert "Best: nudger nudger with gamma 0.56" in " ".join(stdout.split())
    assert "csqa · nudging · wrong gamma=0.3: 4/4 done, 0 correct" in err
    for folder in ("wrong", "nudger"):  # each pair's own files, as a single-nudger run writes them
        assert (out / folder / "calibration.png").read_bytes().startswith(b"\x89PNG")
        assert json.loads((out / folder / "calibration.json").read_text())["nudger"] in (right, wrong_nudger)
    # stored: each pair's gamma (read by --gamma auto), and the best of the two for this base, in either order
    assert (saved.load(base, right, store_file).gamma, saved.load(base, right, store_file).method) == (0.56, "accuracy")
    assert saved.load(base, wrong_nudger, store_file) is not None
    stored = saved.load_best(base, [right, wrong_nudger], store_file)
    assert (stored.nudger, stored.gamma, stored.candidates) == (right, 0.56, [wrong_nudger, right])
    assert "stored the best of these 2 nudgers" in err
    # the grid's answers of both nudgers are one eval folder: a column per (nudger, gamma)
    code, _, _ = run_cli(capsys, "eval", "--report", str(out / "grid"))
    table = (out / "grid" / "summary.md").read_text()
    assert code == 0 and "nudging · nudger gamma=0.56 " in table and "nudging · wrong gamma=0.1 " in table


def test_several_nudgers_without_labels_store_each_pair_and_pick_none(capsys, tmp_path, chain_folders, wrong_nudger):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("What is it?\nSay something.\n", encoding="utf-8")
    store_file = tmp_path / "calibration.json"
    base = chain_folders["base"]
    code, stdout, err = run_cli(capsys, "calibrate", "--base", base, "--nudger", chain_folders["nudger"], "--nudger",
                                wrong_nudger, "--prompts", str(prompts), "--max-new-tokens", "16",
                                "--out", str(tmp_path / "out"), "--calibration", str(store_file))
    assert code == 0, err
    assert "No best nudger is picked" in (tmp_path / "out" / "calibration.md").read_text()
    assert "No best nudger is picked" in " ".join(stdout.split())
    report = json.loads((tmp_path / "out" / "calibration.json").read_text())
    assert report["best"] is None and "separation" in report["note"]
    assert saved.load(base, chain_folders["nudger"], store_file).gamma == 0.56  # as calibrated alone
    assert saved.load(base, wrong_nudger, store_file).method == "separation"
    assert json.loads(store_file.read_text()).get("best_nudgers", {}) == {}


def test_ties_in_accuracy_go_to_the_nudger_named_first():
    from nudging.calibrate.compare import PairOutcome, best

    def outcome(nudger: str, accuracy: float) -> PairOutcome:
        grid = {"gamma": 0.3, "rows": [{"gamma": 0.3, "accuracy": accuracy}]}
        return PairOutcome(nudger, nudger, nudger, {"grid": grid},
                           saved.SavedGamma(0.3, "accuracy", (0.3, 0.3), "s", "b", nudger))

    assert best([outcome("x", 0.5), outcome("y", 0.5), outcome("z", 0.25)], "s").nudger == "x"
    assert best([outcome("x", 0.25), outcome("y", 0.5), outcome("z", 0.5)], "s").nudger == "y"
    assert best([outcome("x", 0.5), PairOutcome("y", "y", "y", {"grid": None}, None)], "s") is None


def test_eval_with_gamma_auto_takes_each_pairs_own_gamma(capsys, tmp_path, chain_folders, wrong_nudger):
    store_file = tmp_path / "calibration.json"
    base, right = chain_folders["base"], chain_folders["nudger"]
    for nudger, gamma in ((right, 0.15), (wrong_nudger, 0.42)):
        saved.save(saved.SavedGamma(gamma, "separation", (gamma, gamma), "test", base, nudger), store_file)
    code, _, err = run_cli(capsys, "eval", "--task", "coin_flip", "--limit", "1", "--method", "nudging", "--base", base,
                           "--nudger", right, "--nudger", wrong_nudger, "--gamma", "auto", "--calibration",
                           str(store_file), "--max-new-tokens", "8", "--out", str(tmp_path / "ev"))
    assert code == 0, err
    metas = [json.loads(p.read_text()) for p in (tmp_path / "ev").glob("coin_flip__*.json")]
    assert sorted((m["nudger"], m["gamma"]) for m in metas) == sorted([(right, 0.15), (wrong_nudger, 0.42)])
    assert "gamma 0.15" in err and "gamma 0.42" in err
