"""`nudging eval`: parse the options, run with a progress bar per task and method (and nudger), then write the
report.

With several --nudger, each nudger's methods run in turn, one nudger loaded at a time (a local base is loaded
once and kept for the next nudger); methods that use no nudger (base, in-context) run with the first only.
"""

from __future__ import annotations

import argparse
import gc
from pathlib import Path

from nudging.commands import (at_least, check_nudger_specs, chosen_methods, eval_request, for_nudger, load_nudger,
                              nudger_specs, parse_data)
from nudging.errors import InvalidArgumentError
from nudging.evals import report, runner, store
from nudging.evals.judge import Judge
from nudging.evals.progress import progress_bars
from nudging.loading import AUTO, ModelSpecs, SharedBase
from nudging.methods import reads_gamma
from nudging.names import short_names

DEFAULT_METHODS = ["base", "nudger", "nudging"]
Plan = list[tuple[argparse.Namespace, runner.EvalRequest]]  # (the command line with one nudger, its request)


def plan(args: argparse.Namespace, warn=print) -> Plan:
    """One request per nudger, in the order given: the first runs every method, the others only the methods that
    use a nudger. Everything is checked before anything runs."""
    at_least(args, 1, "max_new_tokens")
    specs = nudger_specs(args)
    several = len(specs) > 1
    if several:
        check_nudger_specs(specs)
    out = Path(args.out)
    judge = None
    if args.judge_url or args.judge_model:
        if not (args.judge_url and args.judge_model):
            raise InvalidArgumentError("LLM-judge scoring needs both --judge-url and --judge-model")
        store.make_folder(out, "--out")
        judge = Judge(args.judge_url, args.judge_model, out / "judge_cache.jsonl")
    names = short_names(spec or ModelSpecs.nudger for spec in specs)
    planned: Plan = []
    for index, spec in enumerate(specs):
        one = for_nudger(args, spec)
        name = names[spec or ModelSpecs.nudger]
        methods, skipped = chosen_methods(args.method, one, DEFAULT_METHODS)
        for method, reason in skipped.items():
            if index == 0 or runner.uses_nudger(method):
                warn(f"--method all: skipping {method}{f' with nudger {name}' if several else ''}, which {reason}")
        if index > 0:
            methods = [method for method in methods if runner.uses_nudger(method)]
        if not methods:
            continue
        request = eval_request(
            one, tasks=runner.expand_tasks(args.task), methods=methods,
            gamma=None if args.gamma == AUTO else args.gamma, max_new_tokens=args.max_new_tokens, limit=args.limit,
            seed=args.seed, out=out, data=parse_data(args.data), judge=judge, concurrency=args.concurrency,
            nudger_label=name if several else None,
        )
        runner.check_request(request)
        planned.append((one, request))
    return planned


def main(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markdown import Markdown

    console = Console(stderr=True)
    warn = lambda message: console.print(f"warning: {message}", style="yellow", markup=False, soft_wrap=True)
    if args.report is not None:
        folder = Path(args.out if args.report is True else args.report)
    else:
        planned = plan(args, warn=warn)
        _run_with_progress(planned, args.gamma == AUTO, console)
        folder = Path(args.out)
    _, files = report.build(folder, warn)
    Console().print(Markdown(files["markdown"].read_text(encoding="utf-8")))
    console.print(f"wrote {files['markdown']}, {files['csv']}, {files['chart']}", style="dim")
    return 0


def _run_with_progress(planned: Plan, gamma_auto: bool, console) -> None:
    """Each request in turn; the models of one are let go before the next loads its nudger."""
    shared = SharedBase()
    with progress_bars(console) as (show, warn):
        for one, request in planned:
            loaded = None
            if gamma_auto and reads_gamma(request.methods):  # the gamma stored for this pair, or one calibrated now
                loaded = load_nudger(one, request.max_new_tokens, methods=request.methods, shared=shared)
                request.gamma = loaded.config.gamma
            runner.run(request, on_progress=show, warn=warn, loaded=loaded, shared=shared)
            del loaded
            gc.collect()  # the last nudger's weights, before the next one loads
