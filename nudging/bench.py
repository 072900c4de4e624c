"""`nudging bench`: nudging against base-only greedy decoding (transformers' cached generate), in one run."""

from __future__ import annotations

import sys
import time

from nudging.errors import InvalidArgumentError, PromptTooLongError
from nudging.nudger import Nudger


def base_only(nudger: Nudger, prompt: str, max_new_tokens: int) -> tuple[int, float]:
    """(answer tokens, seconds) of the base alone, greedy: transformers' cached generate, or for a remote base
    one completion request (what serving the base without nudging costs)."""
    started = time.perf_counter()
    tokens = nudger.base.plain_decode(prompt, max_new_tokens)
    return tokens, time.perf_counter() - started


def run(
    nudger: Nudger, prompts: list[str], max_new_tokens: int, methods: list[str],
    skipped: dict[str, str] | None = None, progress: bool = True, batch: int = 1,
) -> dict:
    """Time base-only decoding and every method on the same prompts, in one run; ratios are per answer token.
    With batch > 1, nudging also answers the prompts `batch` at a time (nudging.backends.batch), against one at a time."""
    check_batch(batch, methods)
    skipped = dict(skipped or {})
    for method in list(methods):  # warm-up: first calls pay one-off costs
        try:
            nudger.generate(prompts[0], mode=method, max_new_tokens=4)
        except PromptTooLongError as error:
            skipped[method] = f"cannot run here: {error}"
            methods = [m for m in methods if m != method]
    if not methods:
        raise InvalidArgumentError("no method to time: " + "; ".join(f"{m} {why}" for m, why in skipped.items()))
    base_only(nudger, nudger.prompts_for(prompts[0])[0], 4)
    rows = []
    for index, question in enumerate(prompts, 1):
        base_tokens, base_seconds = base_only(nudger, nudger.prompts_for(question)[0], max_new_tokens)
        row = {"prompt": question, "base_only": {"answer_tokens": base_tokens, "seconds": base_seconds}}
        for method in methods:
            result = nudger.generate(question, mode=method, max_new_tokens=max_new_tokens)
            row[method] = {
                "text": result.text,
                "answer_tokens": result.stats.answer_base_tokens,
                "seconds": result.stats.seconds,
                "stop_reason": result.stop_reason,
                "nudged_token_fraction": result.stats.nudged_token_fraction,
                "models": result.stats.models,
                "paper_requests": result.stats.paper_requests,
            }
        rows.append(row)
        if progress:
            print(f"[{index}/{len(prompts)}] {question[:60]}", file=sys.stderr)
    report = summarize(rows, max_new_tokens, methods, skipped)
    if batch > 1:
        report["batch"] = batched(nudger, rows, max_new_tokens, batch, progress)
    return report


def check_batch(batch: int, methods: list[str]) -> None:
    """--batch N is at least 1, and above 1 it needs nudging among the methods (checked before models load)."""
    if batch < 1:
        raise InvalidArgumentError(f"--batch must be at least 1, got {batch}")
    if batch > 1 and "nudging" not in methods:
        raise InvalidArgumentError("--batch times nudging in batches: include --method nudging (or all)")


def batched(nudger: Nudger, rows: list[dict], max_new_tokens: int, batch: int, progress: bool) -> dict:
    """Nudging over the same prompts, `batch` at a time, against the one-at-a-time answers of this run."""
    if progress:
        print(f"[batch] {len(rows)} prompts, {batch} at a time", file=sys.stderr)
    lanes = nudger.lanes(min(batch, len(rows)))
    started = time.perf_counter()
    results = lanes[0].generate_batch([row["prompt"] for row in rows], lanes=lanes, max_new_tokens=max_new_tokens)
    seconds = time.perf_counter() - started
    tokens = sum(result.stats.answer_base_tokens for result in results)
    one_tokens = sum(row["nudging"]["answer_tokens"] for row in rows)
    one_seconds = sum(row["nudging"]["seconds"] for row in rows)
    same = sum(result.text == row["nudging"]["text"] and result.stop_reason == row["nudging"]["stop_reason"]
               for result, row in zip(results, rows))
    packed = {role: model.packed.stats.to_dict() for role in ("base", "nudger")
              if (model := getattr(lanes[0], role)) is not None and hasattr(model, "packed")}
    one_rate = one_tokens / one_seconds if one_seconds else 0.0
    rate = tokens / seconds if seconds else 0.0
    return {
        "size": min(batch, len(rows)),
        "prompts": len(rows),
        "one_at_a_time": {"answer_tokens": one_tokens, "seconds": one_seconds, "tokens_per_second": one_rate},
        "batched": {"answer_tokens": tokens, "seconds": seconds, "tokens_per_second": rate},
        "speedup": rate / one_rate if one_rate else 0.0,
        "same_answers": same,
        "packed_passes": packed,  # per model: packed passes, lanes per pass
    }


def summarize(rows: list[dict], max_new_tokens: int, methods: list[str], skipped: dict[str, str]) -> dict:
    def total(method: str, key: str) -> float:
        return sum(row[method][key] for row in rows)

    base_tokens, base_seconds = total("base_only", "answer_tokens"), total("base_only", "seconds")
    base_per_token = base_seconds / max(base_tokens, 1)
    summaries = {}
    for method in methods:
        tokens, seconds = total(method, "answer_tokens"), total(method, "seconds")
        per_token = seconds / max(tokens, 1)
        work: dict[str, dict[str, float]] = {}
        for role in rows[0][method]["models"]:
            for unit in ("forward_passes", "requests"):
                values = [row[method]["models"][role].get(unit) for row in rows]
                if None not in values and sum(values):
                    work.setdefault(role, {})[unit] = sum(values) / max(tokens, 1)
        remote = any("requests" in units for units in work.values())
        # everything each model did for this method, summed over the prompts (passes, tokens fed, logit rows,
        # seconds inside its passes; or requests by kind)
        totals = {role: {key: sum(row[method]["models"][role][key] for row in rows)
                         for key in rows[0][method]["models"][role]} for role in rows[0][method]["models"]}
        summaries[method] = {
            "answer_tokens": tokens,
            "seconds": seconds,
            "tokens_per_second": tokens / seconds if seconds else 0.0,
            "seconds_per_answer_token": per_token,
            "time_ratio_vs_base": per_token / base_per_token if base_per_token else 0.0,
            # weighted by answer length: the share of all answer tokens off the base's own choice
            "nudged_token_fraction": sum(
                r[method]["nudged_token_fraction"] * r[method]["answer_tokens"] for r in rows) / max(tokens, 1),
            "ended_by_itself": sum(r[method]["stop_reason"] in ("eos", "nudger_eos", "stop") for r in rows),
            "work_per_answer_token": work,  # forward passes (local) or requests (remote) per model
            "models": totals,
            **({"paper_requests_per_answer_token": total(method, "paper_requests") / max(tokens, 1)}
               if remote and method in ("nudging", "ensemble-text") else {}),
        }
    if "nudging" in summaries:
        reference = summaries["nudging"]["seconds_per_answer_token"]
        for summary in summaries.values():
            summary["time_ratio_vs_nudging"] = summary["seconds_per_answer_token"] / reference if reference else 0.0
    return {
        "prompts": len(rows),
        "max_new_tokens": max_new_tokens,
        "base_only": {"answer_tokens": base_tokens, "seconds": base_seconds,
                      "tokens_per_second": base_tokens / base_seconds if base_seconds else 0.0},
        "methods": summaries,
        "skipped": skipped,
        "rows": rows,
    }


def print_report(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    base, methods = report["base_only"], report["methods"]
    roles = [r for r in ("base", "nudger", "anti_expert") if any(r in m["work_per_answer_token"] for m in methods.values())]
    remote = any("requests" in units for m in methods.values() for units in m["work_per_answer_token"].values())
    unit = "req" if remote else "passes"
    table = Table(title=f"nudging bench: {report['prompts']} prompts, max {report['max_new_tokens']} new tokens")
    for column in ("method", "tokens", "ended", "s", "tok/s", "x base", "x nudging", "off base",
                   *(f"{role.replace('_', '-')} {unit}/tok" for role in roles)):
        table.add_column(column, justify="left" if column == "method" else "right")
    table.add_row("base only", str(base["answer_tokens"]), "-", f"{base['seconds']:.1f}",
                  f"{base['tokens_per_second']:.1f}", "1.00", "-", "-", *("-" for _ in roles))
    for name, summary in methods.items():
        work = summary["work_per_answer_token"]
        cells = [next(iter(work[role].values())) if role in work else None for role in roles]
        ratio = summary.get("time_ratio_vs_nudging")
        table.add_row(name, str(summary["answer_tokens"]), f"{summary['ended_by_itself']}/{report['prompts']}",
                      f"{summary['seconds']:.1f}", f"{summary['tokens_per_second']:.1f}",
                      f"{summary['time_ratio_vs_base']:.2f}", "-" if ratio is None else f"{ratio:.2f}",
                      f"{100 * summary['nudged_token_fraction']:.0f}%",
                      *("-" if cell is None else f"{cell:.2f}" for cell in cells))
    console = Console(highlight=False)
    console.print(table)
    console.print("x base, x nudging: time per answer token against base only (one call: transformers' generate, or "
                  "one request) and against nudging, in this run. ended: answers that ended before the budget. off "
                  "base: answer tokens the base would not have written itself.", style="dim")
    for name, summary in methods.items():
        inside = [f"{role.replace('_', '-')} {work['seconds']:.1f} s in {work['forward_passes']:.0f} passes "
                  f"({work['tokens_processed']:.0f} tokens fed, {work['logit_rows']:.0f} logit rows)"
                  for role, work in summary["models"].items() if work.get("forward_passes")]
        if inside:
            console.print(f"{name}, inside the models: " + "; ".join(inside), style="dim")
        if "paper_requests_per_answer_token" in summary:
            console.print(f"{name}: the authors' protocol would send {summary['paper_requests_per_answer_token']:.2f} "
                          "requests per answer token", style="dim")
    for name, reason in report["skipped"].items():
        console.print(f"{name}: not run, {reason}", style="yellow")
    if "batch" in report:
        b = report["batch"]
        one, many = b["one_at_a_time"], b["batched"]
        console.print(f"nudging, {b['prompts']} prompts {b['size']} at a time: {many['tokens_per_second']:.2f} answer "
                      f"tokens/s against {one['tokens_per_second']:.2f} one at a time ({b['speedup']:.2f}x); same "
                      f"answers {b['same_answers']}/{b['prompts']}; lanes per pass: "
                      + ", ".join(f"{role} {stats['lanes_per_pass']:.1f}" for role, stats in b["packed_passes"].items()))
