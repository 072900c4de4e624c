"""`nudging eval`: parse the options, run with a progress bar per task and method, then write the report."""

from __future__ import annotations

import argparse
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from nudging.cli import chosen_methods, remote_options
from nudging.errors import InvalidArgumentError
from nudging.evals import report, runner
from nudging.evals.judge import Judge

DEFAULT_METHODS = ["base", "nudger", "nudging"]


def parse_data(values: list[str]) -> dict[str, str]:
    data = {}
    for value in values:
        task, sep, file = value.partition("=")
        if not sep or not task or not file:
            raise InvalidArgumentError(f"--data must look like TASK=FILE, got {value!r}")
        data[task] = file
    return data


def request_from(args: argparse.Namespace, warn=print) -> runner.EvalRequest:
    if args.max_new_tokens < 1:
        raise InvalidArgumentError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    out = Path(args.out)
    judge = None
    if args.judge_url or args.judge_model:
        if not (args.judge_url and args.judge_model):
            raise InvalidArgumentError("LLM-judge scoring needs both --judge-url and --judge-model")
        out.mkdir(parents=True, exist_ok=True)
        judge = Judge(args.judge_url, args.judge_model, out / "judge_cache.jsonl")
    methods, skipped = chosen_methods(args.method, args, DEFAULT_METHODS)
    for method, reason in skipped.items():
        warn(f"--method all: skipping {method}, which {reason}")
    return runner.EvalRequest(
        tasks=runner.expand_tasks(args.task), methods=methods,
        base=args.base, nudger=args.nudger, gamma=0.3 if args.gamma == "auto" else args.gamma, lookahead=args.lookahead,
        max_new_tokens=args.max_new_tokens, limit=args.limit, seed=args.seed, out=out, dtype=args.dtype,
        device=args.device, data=parse_data(args.data), judge=judge, load_options=remote_options(args),
        concurrency=args.concurrency,
    )


def main(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markdown import Markdown

    console = Console(stderr=True)
    if args.report is not None:
        folder = Path(args.out if args.report is True else args.report)
    else:
        request = request_from(args, warn=lambda m: console.print(f"warning: {m}", style="yellow"))
        loaded = None
        if args.gamma == "auto" and "nudging" in request.methods:
            from nudging.cli import load_nudger

            runner.check_request(request)
            loaded = load_nudger(args, request.max_new_tokens, methods=request.methods)  # resolves gamma
            request.gamma = loaded.config.gamma
        _run_with_progress(request, console, loaded)
        folder = request.out
    _, files = report.build(folder)
    Console().print(Markdown(files["markdown"].read_text(encoding="utf-8")))
    console.print(f"wrote {files['markdown']}, {files['csv']}, {files['chart']}", style="dim")
    return 0


def _run_with_progress(request: runner.EvalRequest, console, loaded=None) -> None:
    with progress_bars(console) as (show, warn):
        runner.run(request, on_progress=show, warn=warn, loaded=loaded)


@contextmanager
def progress_bars(console) -> Iterator[tuple[runner.Progress, Callable[[str], None]]]:
    """(on_progress, warn) for runner.run: a live bar per task and method on a terminal, else one line per item."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[accuracy]}"), TimeElapsedColumn(), TimeRemainingColumn())
    bars: dict[str, int] = {}
    progress = Progress(*columns, console=console, transient=False)

    def show(label: str, done: int, total: int, correct: int) -> None:
        if not console.is_terminal:  # a log file: one line per finished item instead of a live bar
            console.print(f"{label}: {done}/{total} done, {correct} correct", markup=False, highlight=False)
            return
        if not bars:
            progress.start()  # only once there is work to show, so an early error prints one clean line
        if label not in bars:
            bars[label] = progress.add_task(label, total=total, accuracy="")
        accuracy = f"correct {correct}/{done}" if done else ""
        progress.update(bars[label], completed=done, total=total, accuracy=accuracy)

    try:
        yield show, lambda m: progress.console.print(f"warning: {m}", style="yellow")
    finally:
        if bars:
            progress.stop()
