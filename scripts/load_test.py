#!/usr/bin/env python3
"""Load test of `nudging serve` on loopback: many concurrent clients, some streaming, some leaving early.

Starts its own server (tiny test models by default, or --base/--nudger specs), or uses --url. Bounded in
requests and in time. Checks that every finished answer equals the same prompt's answer asked alone (greedy
decoding is deterministic), that no request is lost, and that the server is still up and idle at the end;
prints throughput and latency percentiles.

    python scripts/load_test.py --requests 200 --clients 16
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

PROMPTS = ["The cat reads", "A bird sings", "The dog sees", "Zoë writes", "We walk home", "The sun is"]


@dataclass
class Outcome:
    kind: str  # whole, stream, leave
    status: int
    seconds: float
    first_piece: float | None = None
    text: str = ""
    tokens: int = 0
    error: str = ""


@dataclass
class Report:
    outcomes: list[Outcome] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    seconds: float = 0.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def ask(client: httpx.AsyncClient, kind: str, prompt: str, max_tokens: int) -> Outcome:
    body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens}
    started = time.perf_counter()
    if kind == "whole":
        response = await client.post("/v1/chat/completions", json=body)
        seconds = time.perf_counter() - started
        if response.status_code != 200:
            return Outcome(kind, response.status_code, seconds, error=response.text[:200])
        data = response.json()
        return Outcome(kind, 200, seconds, text=data["choices"][0]["message"]["content"],
                       tokens=data["usage"]["completion_tokens"])
    text, first = "", None
    async with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as response:
        if response.status_code != 200:
            await response.aread()
            return Outcome(kind, response.status_code, time.perf_counter() - started, error=response.text[:200])
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                return Outcome(kind, 500, time.perf_counter() - started, error=chunk["error"]["message"])
            delta = chunk["choices"][0]["delta"].get("content") if chunk["choices"] else None
            if delta:
                first = first if first is not None else time.perf_counter() - started
                text += delta
                if kind == "leave":
                    break  # close the connection after the first piece
    return Outcome(kind, 200, time.perf_counter() - started, first, text)


async def run_load(url: str, requests: int, clients: int, max_tokens: int, deadline_s: float) -> Report:
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=deadline_s, limits=limits) as client:
        expected = {}
        for prompt in PROMPTS:  # each answer alone, before the load
            alone = await ask(client, "whole", prompt, max_tokens)
            if alone.status != 200:
                raise SystemExit(f"server refused a lone request: {alone.status} {alone.error}")
            expected[prompt] = alone.text
        report = Report()
        queue: asyncio.Queue[int] = asyncio.Queue()
        for index in range(requests):
            queue.put_nowait(index)

        async def worker() -> None:
            while not queue.empty():
                index = queue.get_nowait()
                kind = ("whole", "stream", "whole", "leave")[index % 4]
                prompt = PROMPTS[index % len(PROMPTS)]
                try:
                    outcome = await ask(client, kind, prompt, max_tokens)
                except httpx.HTTPError as error:
                    outcome = Outcome(kind, 0, 0.0, error=f"{type(error).__name__}: {error}")
                report.outcomes.append(outcome)
                want = expected[prompt]
                if outcome.status == 200 and (outcome.text != want if kind != "leave" else not want.startswith(outcome.text)):
                    report.wrong.append(f"{kind} {prompt!r}: {outcome.text!r} != {want!r}")

        started = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(clients))), timeout=deadline_s)
        report.seconds = time.perf_counter() - started
        return report


def print_report(report: Report, health_after: dict, requests: int, clients: int) -> bool:
    done = [o for o in report.outcomes if o.status == 200]
    refused = [o for o in report.outcomes if o.status == 429]
    failed = [o for o in report.outcomes if o.status not in (200, 429)]
    latencies = [o.seconds for o in done if o.kind != "leave"]
    firsts = [o.first_piece for o in done if o.first_piece is not None]
    print(f"{requests} requests from {clients} clients in {report.seconds:.1f} s "
          f"({len(report.outcomes) / report.seconds:.1f} requests/s)")
    print(f"finished {len(done)} (whole {sum(o.kind == 'whole' for o in done)}, streamed "
          f"{sum(o.kind == 'stream' for o in done)}, left early {sum(o.kind == 'leave' for o in done)}), "
          f"refused (429) {len(refused)}, failed {len(failed)}, wrong answers {len(report.wrong)}")
    if latencies:
        print(f"latency of finished answers: p50 {percentile(latencies, .5):.2f} s, p90 {percentile(latencies, .9):.2f} s, "
              f"p99 {percentile(latencies, .99):.2f} s, mean {statistics.mean(latencies):.2f} s")
    if firsts:
        print(f"time to first piece (streams): p50 {percentile(firsts, .5):.2f} s, p90 {percentile(firsts, .9):.2f} s")
    tokens = sum(o.tokens for o in done)
    if tokens:
        print(f"completion tokens of whole answers: {tokens} ({tokens / report.seconds:.1f} tokens/s)")
    print(f"server after the load: {health_after}")
    for line in report.wrong[:5] + [f"failed: {o.kind} {o.status} {o.error}" for o in failed[:5]]:
        print("  " + line)
    lost = requests - len(report.outcomes)
    ok = not failed and not report.wrong and lost == 0 and health_after.get("status") == "ok" \
        and health_after.get("running") == 0
    print("PASS" if ok else f"FAIL (lost {lost})")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="an already running server (loopback only); default: start one")
    parser.add_argument("--base", help="base model spec for the started server (default: a tiny test model)")
    parser.add_argument("--nudger", help="nudger spec for the started server (default: a tiny test model)")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--max-concurrency", type=int, default=2)
    parser.add_argument("--max-queue", type=int, default=32)
    parser.add_argument("--deadline", type=float, default=600, help="seconds before the test gives up")
    args = parser.parse_args()
    if args.url and httpx.URL(args.url).host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("--url must be a loopback address")
    process = None
    if args.url is None:
        from servers import start_server

        base, nudger = args.base, args.nudger
        if base is None or nudger is None:
            folder = Path(tempfile.mkdtemp(prefix="nudging-load-"))
            base, nudger = tiny_pair(folder)
        process, url = start_server(base, nudger, "--max-concurrency", str(args.max_concurrency),
                                    "--max-queue", str(args.max_queue))
    else:
        url = args.url
    try:
        report = asyncio.run(run_load(url, args.requests, args.clients, args.max_tokens, args.deadline))
        time.sleep(1.0)  # let generations of clients that left notice it
        health_after = httpx.get(url + "/health", timeout=10).json()
        return 0 if print_report(report, health_after, args.requests, args.clients) else 1
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=30)


def tiny_pair(folder: Path) -> tuple[str, str]:
    from tiny import save_tiny_models

    folders = save_tiny_models(folder, ("base", "nudger"))
    return folders["base"], folders["nudger"]


if __name__ == "__main__":
    sys.exit(main())
