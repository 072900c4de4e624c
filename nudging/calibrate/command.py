"""`nudging calibrate`: measure where the base agrees with the nudger, choose gamma, optionally check it on
labelled items with a small grid, write the report and plot, and store the choice for `--gamma auto`."""

from __future__ import annotations

import argparse
import gc
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from nudging import prompts
from nudging.calibrate import analysis, compare, saved
from nudging.calibrate.compare import PairOutcome
from nudging.calibrate.grid import GridResult, run_grid
from nudging.calibrate.measure import measure
from nudging.calibrate.plot import draw
from nudging.commands import (at_least, check_nudger_specs, eval_request, for_nudger, load_nudger, load_spec,
                              nudger_specs, parse_data)
from nudging.config import BATCH_SIZE
from nudging.errors import InvalidArgumentError
from nudging.evals import store
from nudging.loading import AUTO, SharedBase
from nudging.names import short_name, short_names
from nudging.rules import check_base, rule_of

DEFAULT_GRID = (0.1, 0.2, 0.3, 0.4, 0.5)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_argument_group("what to calibrate on (default: 16 built-in generic prompts)")
    source.add_argument("--prompts", help="unlabelled questions: one per line, or JSONL with a 'question' field")
    source.add_argument("--task", help="a benchmark: its questions, and with --grid its labels")
    source.add_argument("--limit", type=int, default=20, help="items of --task (a seeded sample; default 20)")
    source.add_argument("--seed", type=int, default=0, help="seed of the sample and of the bootstrap")
    source.add_argument("--data", action="append", default=[], metavar="TASK=FILE",
                        help="items of TASK from a .jsonl/.json/.csv file, as in `nudging eval`")
    parser.add_argument("--max-new-tokens", type=int, default=128, help="answer budget per prompt (base tokens)")
    parser.add_argument("--grid", default=",".join(map(str, DEFAULT_GRID)),
                        help="with --task: gammas to score nudging at (comma-separated; the separation choice is "
                             "added); 'none' skips the grid")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="answers generated at once")
    parser.add_argument("--out", default="calibration", help="folder for positions, report, plot and grid answers")
    parser.add_argument("--no-save", action="store_true", help="do not store the chosen gamma for --gamma auto")


def parse_grid(text: str) -> list[float]:
    if text.strip().lower() == "none":
        return []
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InvalidArgumentError(f"--grid must be comma-separated numbers in (0, 1) or 'none', got {text!r}") from None
    bad = [v for v in values if not 0 < v < 1]
    if bad or not values:
        raise InvalidArgumentError(f"--grid values must be in (0, 1), got {text!r}")
    return values


def check(args: argparse.Namespace) -> list[float]:
    """Argument errors before any model loads; returns the grid."""
    if args.prompts and args.task:
        raise InvalidArgumentError("give --prompts or --task, not both")
    at_least(args, 1, "limit", "max_new_tokens", "batch_size")
    if args.gamma == AUTO:
        raise InvalidArgumentError("calibrate chooses gamma itself: leave out --gamma auto")
    if not args.task:
        return []
    from nudging.evals.tasks import get_task

    grid = parse_grid(args.grid)
    if grid and get_task(args.task).kind == "open":
        raise InvalidArgumentError(f"--task {args.task} is scored by a judge, which calibrate's grid does not use: "
                                   "add --grid none (its questions still serve as prompts)")
    return grid


def questions_for(args: argparse.Namespace) -> tuple[list[str], str | None, str]:
    """(questions, the system text they go with, a description of them)."""
    if args.prompts:
        questions = prompts.read_prompts(args.prompts)
        return questions, None, f"{len(questions)} prompts from {Path(args.prompts).name}"
    if args.task:
        from nudging.evals.tasks import get_task, load_examples, select

        task = get_task(args.task)
        examples, _ = load_examples(task, parse_data(args.data).get(args.task), args.seed)
        chosen = select(examples, args.limit, args.seed)
        return [task.render(e) for e in chosen], task.system, f"{args.task}, {len(chosen)} items"
    questions = list(prompts.BUILT_IN_PROMPTS)
    return questions, None, f"{len(questions)} built-in prompts"


@dataclass
class Inputs:
    """What every pair of a run is calibrated on."""

    questions: list[str]
    system: str | None
    described: str
    grid: list[float]


def main(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markdown import Markdown

    console = Console(stderr=True, highlight=False)
    grid = check(args)
    specs = nudger_specs(args)
    if len(specs) > 1:
        check_nudger_specs(specs)
    questions, system, described = questions_for(args)
    if not questions:
        raise InvalidArgumentError("no questions to calibrate on")
    out = store.make_folder(Path(args.out), "--out")
    if len(specs) > 1:
        return _several(args, specs, Inputs(questions, system, described, grid), out, console)
    outcome = _calibrate_pair(args, Inputs(questions, system, described, grid), out, console)
    Console().print(Markdown((out / "calibration.md").read_text(encoding="utf-8")))
    if not args.no_save:
        path = saved.save(outcome.choice, Path(args.calibration) if args.calibration else None)
        console.print(f"stored gamma {outcome.choice.gamma:g} for this pair in {path} (used by --gamma auto)")
    console.print(f"wrote {out / 'calibration.md'}, {out / 'calibration.json'}, {out / 'calibration.png'}",
                  style="dim")
    return 0


def _calibrate_pair(args: argparse.Namespace, inputs: Inputs, out: Path, console, shared: SharedBase | None = None,
                    name: str | None = None) -> PairOutcome:
    """Measure one pair (the command line's one --nudger), choose its gamma, and write calibration.json, .md and
    .png into `out`. `name`: the nudger's name in progress lines, where several are compared."""
    spec = load_spec(args, args.max_new_tokens, "nudging")
    pair = spec.models
    nudger = load_nudger(args, spec=spec, shared=shared)
    nudger.system = inputs.system
    console.print(f"calibrating on {inputs.described}: the nudger answers each, the base reads its answers"
                  + (f" (nudger {name})" if name else ""), style="dim")

    def progress(done: int, total: int) -> None:
        console.print(f"[{done}/{total}] answers measured", markup=False, style="dim")

    rule = rule_of(spec.config)
    check_base(spec.config, nudger.base)
    records = measure(nudger, inputs.questions, args.max_new_tokens, batch_size=args.batch_size,
                      path=out / "positions.jsonl", on_done=progress, rule=rule)
    calibration = analysis.calibrate(records, seed=args.seed)
    top1, agree = analysis.flatten(records)
    draw(calibration, analysis.separations(top1, agree), analysis.share_below(top1), out / "calibration.png",
         title=f"base {short_name(pair.base)} · nudger {short_name(pair.nudger)} · {inputs.described}")
    result: GridResult | None = None
    if inputs.grid:
        result = _grid(args, nudger, inputs.grid + [calibration.gamma], calibration.gamma, console, name)
    choice = _choice(pair, calibration, result, inputs.described, rule.scored_by)
    report = {"base": pair.base, "nudger": pair.nudger, "rule": rule.scored_by, "on": inputs.described,
              "max_new_tokens": args.max_new_tokens,
              "calibration": calibration.to_dict(), "grid": result.to_dict() if result else None,
              "chosen": asdict(choice)}
    (out / "calibration.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / "calibration.md").write_text(markdown(report), encoding="utf-8")
    return PairOutcome(pair.nudger, name or pair.nudger, str(out), report, choice)


def _several(args: argparse.Namespace, specs: list[str], inputs: Inputs, out: Path, console) -> int:
    """Each nudger in turn (one loaded at a time; a local base loaded once), each pair's files in a folder of its
    own under --out, the grid's answers together in --out/grid; then one table, and the best pair where labelled
    items scored them."""
    from rich.console import Console
    from rich.markdown import Markdown

    names = short_names(specs)
    folders = _folder_names([names[spec] for spec in specs])
    shared = SharedBase()
    outcomes = []
    for spec, folder in zip(specs, folders):
        pair_out = store.make_folder(out / folder, "--out")
        outcomes.append(_calibrate_pair(for_nudger(args, spec), inputs, pair_out, console, shared, names[spec]))
        gc.collect()  # this nudger's weights, before the next one loads
    chosen = compare.best(outcomes, inputs.described)
    (out / "calibration.json").write_text(json.dumps(compare.report(outcomes, chosen), indent=2) + "\n",
                                          encoding="utf-8")
    text = compare.markdown(outcomes, chosen)
    (out / "calibration.md").write_text(text, encoding="utf-8")
    Console().print(Markdown(text))
    if not args.no_save:
        path = Path(args.calibration) if args.calibration else None
        for outcome in outcomes:
            stored = saved.save(outcome.choice, path)
            console.print(f"stored gamma {outcome.choice.gamma:g} for base + {outcome.name} in {stored} "
                          "(used by --gamma auto)")
        if chosen is not None:
            stored = saved.save_best(chosen, path)
            console.print(f"stored the best of these {len(specs)} nudgers for this base in {stored}: "
                          f"{chosen.describe()}")
    console.print(f"wrote {out / 'calibration.md'}, {out / 'calibration.json'} and each nudger's files in "
                  f"{', '.join(str(out / folder) for folder in folders)}", style="dim")
    return 0


def _folder_names(names: list[str]) -> list[str]:
    """A folder name per nudger: its short name in safe characters, numbered where two would be the same."""
    safe = [re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "nudger" for name in names]
    return [f"{name}-{index + 1}" if safe.count(name) > 1 else name for index, name in enumerate(safe)]


def _grid(args: argparse.Namespace, nudger, gammas: list[float], prefer: float, console,
          name: str | None = None) -> GridResult:
    from nudging.evals.progress import progress_bars

    request = eval_request(
        args, tasks=[args.task], methods=["nudging"], gamma=prefer, max_new_tokens=args.max_new_tokens,
        limit=args.limit, seed=args.seed, out=Path(args.out) / "grid", data=parse_data(args.data),
        concurrency=args.batch_size, nudger_label=name,
    )
    with progress_bars(console) as (show, warn):
        return run_grid(nudger, request, gammas, prefer, on_progress=show, warn=warn, seed=args.seed)


def _choice(pair, calibration: analysis.Calibration, grid: GridResult | None, described: str,
            rule: str) -> saved.SavedGamma:
    chosen, method = (grid, "accuracy") if grid is not None else (calibration, "separation")
    return saved.SavedGamma(chosen.gamma, method, chosen.interval, described, pair.base, pair.nudger, rule=rule)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def markdown(report: dict) -> str:
    c = report["calibration"]
    chosen = report["chosen"]
    paper = c["paper"]
    lines = [
        f"# Calibration: base {report['base']}, nudger {report['nudger']}",
        "",
        f"On {report['on']} (answers up to {report['max_new_tokens']} tokens): {c['positions']} answer positions, "
        f"{c['disagreements']} ({_percent(c['disagreements'] / c['positions'])}) where the base's greedy token is "
        "not the nudger's.",
        "",
        f"**Chosen gamma: {chosen['gamma']:g}** (by {chosen['method']}; 95% interval "
        f"{chosen['interval'][0]:g}-{chosen['interval'][1]:g}).",
        f"Best separation of disagreement from agreement positions: gamma {c['gamma']:g} "
        f"(95% bootstrap interval over prompts {c['interval'][0]:g}-{c['interval'][1]:g}).",
        "",
        "| the paper's figure | paper | here |",
        "|---|---:|---:|",
        f"| base disagrees where its top-1 < 0.1 | ~90% | {_percent(paper['disagreement_rate_below_0.1'])} |",
        f"| disagreements with top-1 < 0.5 | >80% | {_percent(paper['disagreements_below_0.5'])} |",
        f"| all positions with top-1 < 0.5 | ~11% | {_percent(paper['positions_below_0.5'])} |",
        "",
        "| base's top-1 | positions | base agrees | base disagrees | disagreement rate |",
        "|---|---:|---:|---:|---:|",
    ]
    agree, disagree = c["histogram_agree"], c["histogram_disagree"]
    per_row = len(agree) // 10  # ten rows of width 0.1
    for row in range(10):
        a = sum(agree[row * per_row:(row + 1) * per_row])
        d = sum(disagree[row * per_row:(row + 1) * per_row])
        lines.append(f"| {row / 10:.1f}-{(row + 1) / 10:.1f} | {a + d} | {a} | {d} | "
                     f"{_percent(d / (a + d) if a + d else None)} |")
    lines += [
        "",
        "| gamma | positions nudged | disagreements caught | agreements nudged | disagree rate below gamma | separation |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    best = "chosen" if chosen["method"] == "separation" else "best separation"
    for row in c["table"]:
        mark = f" **({best})**" if row["gamma"] == c["gamma"] else ""
        lines.append(f"| {row['gamma']:g}{mark} | {_percent(row['nudged_share'])} | "
                     f"{_percent(row['disagreements_caught'])} | {_percent(row['agreements_nudged'])} | "
                     f"{_percent(row['disagreement_rate_below'])} | {row['separation']:.2f} |")
    grid = report.get("grid")
    if grid:
        lines += ["", "Accuracy of nudging per gamma (95% Wilson interval):", "",
                  "| gamma | accuracy | items | nudged words |", "|---:|---:|---:|---:|"]
        for row in grid["rows"]:
            mark = " **(chosen)**" if row["gamma"] == grid["gamma"] else ""
            lines.append(f"| {row['gamma']:g}{mark} | {_percent(row['accuracy'])} "
                         f"[{100 * row['ci_low']:.0f}-{100 * row['ci_high']:.0f}] | {row['items']} | "
                         f"{_percent(row['nudged_word_fraction'])} |")
    return "\n".join(lines) + "\n"
