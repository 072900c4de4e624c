"""Progress of long runs (eval, calibrate's grid): a live bar per task and method on a terminal, else one line per
finished item."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

from nudging.evals import runner


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
        yield show, lambda m: progress.console.print(f"warning: {m}", style="yellow", markup=False, soft_wrap=True)
    finally:
        if bars:
            progress.stop()
