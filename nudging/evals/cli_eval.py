"""`nudging eval`: parse the options, run with a progress bar per task and method, then write the report."""

from __future__ import annotations

import argparse
from pathlib import Path

from nudging.commands import at_least, chosen_methods, eval_request, load_nudger, parse_data
from nudging.errors import InvalidArgumentError
from nudging.evals import report, runner, store
from nudging.evals.judge import Judge
from nudging.evals.progress import progress_bars
from nudging.loading import AUTO
from nudging.methods import reads_gamma

DEFAULT_METHODS = ["base", "nudger", "nudging"]


def request_from(args: argparse.Namespace, warn=print) -> runner.EvalRequest:
    at_least(args, 1, "max_new_tokens")
    out = Path(args.out)
    judge = None
    if args.judge_url or args.judge_model:
        if not (args.judge_url and args.judge_model):
            raise InvalidArgumentError("LLM-judge scoring needs both --judge-url and --judge-model")
        store.make_folder(out, "--out")
        judge = Judge(args.judge_url, args.judge_model, out / "judge_cache.jsonl")
    methods, skipped = chosen_methods(args.method, args, DEFAULT_METHODS)
    for method, reason in skipped.items():
        warn(f"--method all: skipping {method}, which {reason}")
    return eval_request(
        args, tasks=runner.expand_tasks(args.task), methods=methods, gamma=None if args.gamma == AUTO else args.gamma,
        max_new_tokens=args.max_new_tokens, limit=args.limit, seed=args.seed, out=out, data=parse_data(args.data),
        judge=judge, concurrency=args.concurrency,
    )


def main(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markdown import Markdown

    console = Console(stderr=True)
    warn = lambda message: console.print(f"warning: {message}", style="yellow", markup=False, soft_wrap=True)
    if args.report is not None:
        folder = Path(args.out if args.report is True else args.report)
    else:
        request = request_from(args, warn=warn)
        loaded = None
        if args.gamma == AUTO and reads_gamma(request.methods):
            runner.check_request(request)
            loaded = load_nudger(args, request.max_new_tokens, methods=request.methods)  # resolves gamma
            request.gamma = loaded.config.gamma
        _run_with_progress(request, console, loaded)
        folder = request.out
    _, files = report.build(folder, warn)
    Console().print(Markdown(files["markdown"].read_text(encoding="utf-8")))
    console.print(f"wrote {files['markdown']}, {files['csv']}, {files['chart']}", style="dim")
    return 0


def _run_with_progress(request: runner.EvalRequest, console, loaded=None) -> None:
    with progress_bars(console) as (show, warn):
        runner.run(request, on_progress=show, warn=warn, loaded=loaded)
