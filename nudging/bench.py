"""`nudging bench`: nudging against base-only greedy decoding (transformers' cached generate), in one run."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from nudging.backend import LocalModel
from nudging.errors import InvalidArgumentError
from nudging.nudger import Nudger

DEFAULT_PROMPTS = [
    'Take the last letters of each word in "Ada Lovelace" and concatenate them.',
    "What is 12 * 7? Explain briefly.",
    "Give three tips for staying focused while studying.",
    "Is a tomato a fruit or a vegetable?",
]


def read_prompts(path: str) -> list[str]:
    """One question per line, or JSONL objects with a `question` (or `prompt`) field."""
    file = Path(path)
    if not file.is_file():
        raise InvalidArgumentError(f"--prompts: no such file {path}")
    prompts = []
    for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise InvalidArgumentError(f"--prompts: line {number} of {path} is not valid JSON: {error}") from None
            text = record.get("question", record.get("prompt"))
            if not isinstance(text, str):
                raise InvalidArgumentError(f"--prompts: line {number} of {path} has no 'question' string")
            prompts.append(text)
        else:
            prompts.append(line.strip())
    if not prompts:
        raise InvalidArgumentError(f"--prompts: {path} holds no prompts")
    return prompts


def base_only(nudger: Nudger, prompt: str, max_new_tokens: int) -> tuple[int, float]:
    """(answer tokens, seconds) of the base alone, greedy: transformers' cached generate, or for a remote base
    one completion request (what serving the base without nudging costs)."""
    base = nudger.base
    if not isinstance(base, LocalModel):
        started = time.perf_counter()
        text, _ = base.greedy(prompt, max_new_tokens)
        return base.count_tokens(text), time.perf_counter() - started
    inputs = base.tokenizer(prompt, return_tensors="pt").to(base.device)
    eos = sorted(base.eos_ids)
    started = time.perf_counter()
    with torch.inference_mode():
        output = base.model.generate(
            **inputs, max_new_tokens=max_new_tokens, do_sample=False, temperature=None, top_p=None, top_k=None,
            eos_token_id=eos, pad_token_id=eos[0] if eos else None,
        )
    seconds = time.perf_counter() - started
    new = output[0, inputs["input_ids"].shape[1] :].tolist()
    return sum(1 for token in new if token not in base.eos_ids), seconds


def run(nudger: Nudger, prompts: list[str], max_new_tokens: int, progress: bool = True) -> dict:
    """Time both methods on the same prompts; ratios are per answer token."""
    nudger.generate(prompts[0], max_new_tokens=4)  # warm-up: first calls pay one-off costs
    base_only(nudger, nudger.prompts_for(prompts[0])[0], 4)
    rows = []
    for index, question in enumerate(prompts, 1):
        base_tokens, base_seconds = base_only(nudger, nudger.prompts_for(question)[0], max_new_tokens)
        result = nudger.generate(question, max_new_tokens=max_new_tokens)
        rows.append(
            {
                "prompt": question,
                "base_only": {"answer_tokens": base_tokens, "seconds": base_seconds},
                "nudging": {
                    "answer_tokens": result.stats.answer_base_tokens,
                    "seconds": result.stats.seconds,
                    "stop_reason": result.stop_reason,
                    "nudged_word_fraction": result.stats.nudged_word_fraction,
                    "nudged_token_fraction": result.stats.nudged_token_fraction,
                    "models": result.stats.models,
                    "paper_requests": result.stats.paper_requests,
                },
            }
        )
        if progress:
            print(f"[{index}/{len(prompts)}] {question[:60]}", file=sys.stderr)
    return summarize(rows, max_new_tokens)


def summarize(rows: list[dict], max_new_tokens: int) -> dict:
    def total(method: str, key: str) -> float:
        return sum(row[method][key] for row in rows)

    base_tokens, base_seconds = total("base_only", "answer_tokens"), total("base_only", "seconds")
    nudge_tokens, nudge_seconds = total("nudging", "answer_tokens"), total("nudging", "seconds")
    def per_token(name: str, unit: str) -> float | None:
        values = [row["nudging"]["models"][name].get(unit) for row in rows]
        return None if None in values else sum(values) / max(nudge_tokens, 1)

    passes = {name: per_token(name, "forward_passes") for name in ("base", "nudger")}
    requests = {name: per_token(name, "requests") for name in ("base", "nudger")}
    remote = any(value is not None for value in requests.values())
    base_per_token = base_seconds / max(base_tokens, 1)
    nudge_per_token = nudge_seconds / max(nudge_tokens, 1)
    return {
        "prompts": len(rows),
        "max_new_tokens": max_new_tokens,
        "base_only": {
            "answer_tokens": base_tokens,
            "seconds": base_seconds,
            "tokens_per_second": base_tokens / base_seconds if base_seconds else 0.0,
            "forward_passes_per_answer_token": None if remote else 1.0,
        },
        "nudging": {
            "answer_tokens": nudge_tokens,
            "seconds": nudge_seconds,
            "tokens_per_second": nudge_tokens / nudge_seconds if nudge_seconds else 0.0,
            "base_forward_passes_per_answer_token": passes["base"],
            "nudger_forward_passes_per_answer_token": passes["nudger"],
            # weighted by answer length: the share of all answer tokens that the nudger wrote
            "nudged_token_fraction": sum(
                r["nudging"]["nudged_token_fraction"] * r["nudging"]["answer_tokens"] for r in rows
            ) / max(nudge_tokens, 1),
            **({
                "base_requests_per_answer_token": requests["base"],
                "nudger_requests_per_answer_token": requests["nudger"],
                "requests_per_answer_token": sum(v for v in requests.values() if v is not None),
                "paper_requests_per_answer_token": total("nudging", "paper_requests") / max(nudge_tokens, 1),
            } if remote else {}),
        },
        "time_ratio_vs_base": nudge_per_token / base_per_token if base_per_token else 0.0,
        "rows": rows,
    }


def print_report(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    base, nudge = report["base_only"], report["nudging"]
    remote = "requests_per_answer_token" in nudge
    table = Table(title=f"nudging bench: {report['prompts']} prompts, max {report['max_new_tokens']} new tokens")
    work = ("requests/token", "paper's requests/token") if remote else (
        "base passes/token", "nudger passes/token")
    for column in ("method", "answer tokens", "seconds", "tokens/s", *work):
        table.add_column(column, justify="right" if column != "method" else "left")

    def number(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    if remote:
        table.add_row("base only (one request)", str(base["answer_tokens"]), f"{base['seconds']:.2f}",
                      f"{base['tokens_per_second']:.1f}", number(report["prompts"] / max(base["answer_tokens"], 1)), "-")
        table.add_row("nudging", str(nudge["answer_tokens"]), f"{nudge['seconds']:.2f}",
                      f"{nudge['tokens_per_second']:.1f}", number(nudge["requests_per_answer_token"]),
                      number(nudge["paper_requests_per_answer_token"]))
    else:
        table.add_row("base only (generate)", str(base["answer_tokens"]), f"{base['seconds']:.2f}",
                      f"{base['tokens_per_second']:.1f}", "1.00", "-")
        table.add_row("nudging", str(nudge["answer_tokens"]), f"{nudge['seconds']:.2f}",
                      f"{nudge['tokens_per_second']:.1f}", number(nudge["base_forward_passes_per_answer_token"]),
                      number(nudge["nudger_forward_passes_per_answer_token"]))
    console = Console(highlight=False)
    console.print(table)
    console.print(f"time per answer token, nudging / base only: {report['time_ratio_vs_base']:.2f}x  "
                  f"(nudger wrote {100 * nudge['nudged_token_fraction']:.0f}% of answer tokens)")
    if remote:
        console.print("paper's protocol: one request per lookahead, per word boundary checked and per 16 base tokens")
