"""Compare the remote protocols on the demo pair served over HTTP: requests per answer, and how often the
authors' 16-token chunks (re-tokenizing the text between requests) change an answer against one streamed
base stage per takeover, which follows the spec exactly.

    python scripts/remote_protocols.py [--server nudging|llama-cpp|vllm] [--gsm8k 20] [--max-new-tokens 128]

Starts the two servers itself on loopback ports, runs the bench's demo prompts plus the first GSM8K items of
the eval's seeded sample, and prints a markdown table (and --json FILE for the rows).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from nudging import Nudger, models  # noqa: E402
from nudging.prompts import DEFAULT_PROMPTS  # noqa: E402
from nudging.evals.examples import SYSTEM_PROMPT  # noqa: E402
from nudging.evals.tasks import get_task, load_examples, select  # noqa: E402

PROTOCOLS = ("per-word", "echo", "chunked")


def start(kind: str):
    if kind == "vllm":
        from vllm_servers import start_vllm_servers

        (base, base_url), (nudger, nudger_url) = start_vllm_servers(["demo-base", "demo-nudger"])
        return [base, nudger], base_url, nudger_url
    if kind == "llama-cpp":
        from llama_servers import start_llama_server

        base = start_llama_server(str(models.demo_gguf("demo-base")), "demo-base")
        nudger = start_llama_server(str(models.demo_gguf("demo-nudger")), "demo-nudger")
        return [base[0], nudger[0]], base[1], nudger[1]
    from servers import start_server

    base = start_server("demo-base", "demo-nudger", "--mode", "base", "--model-name", "demo-base")
    nudger = start_server("demo-base", "demo-nudger", "--mode", "nudger", "--model-name", "demo-nudger")
    return [base[0], nudger[0]], base[1] + "/v1", nudger[1] + "/v1"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", choices=("nudging", "llama-cpp", "vllm"), default="nudging")
    parser.add_argument("--gsm8k", type=int, default=20, help="GSM8K items added to the 4 demo prompts")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--protocols", nargs="+", default=list(PROTOCOLS), choices=PROTOCOLS)
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()

    task = get_task("gsm8k")
    items = select(load_examples(task)[0], args.gsm8k, 0) if args.gsm8k else []
    questions = [(q, None) for q in DEFAULT_PROMPTS] + [(task.render(e), SYSTEM_PROMPT) for e in items]
    processes, base_url, nudger_url = start(args.server)
    rows = []
    try:
        pairs = {p: Nudger.from_pretrained(f"openai:demo-base@{base_url}", f"openai:demo-nudger@{nudger_url}",
                                           max_new_tokens=args.max_new_tokens, remote_protocol=p)
                 for p in args.protocols}
        for index, (question, system) in enumerate(questions, 1):
            row = {"question": question}
            for protocol, pair in pairs.items():
                result = pair.generate(question, system=system)
                row[protocol] = {"text": result.text, "stop_reason": result.stop_reason,
                                 "seconds": result.stats.seconds, "paper_requests": result.stats.paper_requests,
                                 "answer_tokens": result.stats.answer_base_tokens, **{
                                     f"{name}_{key}": value for name, work in result.stats.models.items()
                                     for key, value in work.items()}}
            rows.append(row)
            print(f"[{index}/{len(questions)}] " + "  ".join(
                f"{p}: {row[p]['base_requests'] + row[p]['nudger_requests']} req" for p in pairs), file=sys.stderr)
    finally:
        for process in processes:
            if args.server == "vllm":
                from vllm_servers import stop_vllm

                stop_vllm(process)  # and its engine processes
            else:
                process.terminate()
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    reference = args.protocols[0]
    print(f"\n{len(rows)} prompts ({len(DEFAULT_PROMPTS)} demo prompts + {len(items)} GSM8K items), "
          f"max {args.max_new_tokens} new tokens, server: {args.server}\n")
    print(f"| protocol | answers equal to {reference} | requests / answer | base requests / answer | "
          "paper's protocol, requests / answer | base tokens read / answer | re-tokenized chunks | seconds / answer |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    n = len(rows)
    for protocol in args.protocols:
        def mean(key: str) -> float:
            return sum(r[protocol][key] for r in rows) / n
        equal = sum(r[protocol]["text"] == r[reference]["text"] for r in rows)
        print(f"| {protocol} | {equal}/{n} | {mean('base_requests') + mean('nudger_requests'):.1f} | "
              f"{mean('base_requests'):.1f} | {mean('paper_requests'):.1f} | {mean('base_tokens_received'):.1f} | "
              f"{sum(r[protocol]['base_retokenized_chunks'] for r in rows)} | {mean('seconds'):.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
