"""`nudging eval --concurrency C` over two vLLM servers (demo base and demo nudger) for several C: the same items
must give the same predictions, and answer tokens per second show what vLLM's batching of concurrent requests
buys.

    python scripts/vllm_concurrency.py [--concurrency 1 4 16] [--task gsm8k] [--limit 16] [--max-new-tokens 64]

Starts the servers itself on loopback ports (vLLM from the environment scripts/setup.sh --tests builds) and
prints a markdown table. Seconds are the eval command's wall time, its start-up (tokenizers, the probe) included.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from nudging.evals.report import load_runs  # noqa: E402
from vllm_servers import start_vllm_servers, stop_vllm  # noqa: E402


def rows_of(folder: Path) -> list[dict]:
    """Every result row `nudging eval` wrote in the folder (read as `nudging eval --report` reads them)."""
    return [row for _, rows in load_runs(folder) for row in rows]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--task", default="gsm8k")
    parser.add_argument("--limit", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()
    servers = start_vllm_servers(["demo-base", "demo-nudger"])
    (_, base_url), (_, nudger_url) = servers
    results = {}
    try:
        with tempfile.TemporaryDirectory() as scratch:
            for concurrency in args.concurrency:
                out = Path(scratch) / f"c{concurrency}"
                command = [sys.executable, "-m", "nudging.cli", "eval", "--task", args.task, "--limit",
                           str(args.limit), "--method", "nudging", "--max-new-tokens", str(args.max_new_tokens),
                           "--base", f"openai:demo-base@{base_url}", "--nudger", f"openai:demo-nudger@{nudger_url}",
                           "--concurrency", str(concurrency), "--out", str(out)]
                started = time.perf_counter()
                subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
                seconds = time.perf_counter() - started
                rows = sorted(rows_of(out), key=lambda row: row["id"])
                tokens = sum(row["stats"]["answer_base_tokens"] for row in rows)
                results[concurrency] = (rows, tokens, seconds)
                print(f"concurrency {concurrency}: {tokens} answer tokens in {seconds:.1f} s", file=sys.stderr)
    finally:
        for process, _ in servers:
            stop_vllm(process)
    first = args.concurrency[0]
    reference = [row["prediction"] for row in results[first][0]]
    print(f"\n{args.task}, {args.limit} items, nudging (gamma 0.3, lookahead 16), max {args.max_new_tokens} new "
          "tokens, vLLM servers\n")
    print(f"| concurrency | predictions equal to concurrency {first} | answer tokens | seconds | answer tokens/s |")
    print("|---:|---:|---:|---:|---:|")
    for concurrency, (rows, tokens, seconds) in results.items():
        equal = sum(a == b for a, b in zip(reference, (row["prediction"] for row in rows)))
        print(f"| {concurrency} | {equal}/{len(rows)} | {tokens} | {seconds:.1f} | {tokens / seconds:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
