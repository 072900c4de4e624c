"""Command line: `nudging generate`, `bench`, `eval`, `serve`, `calibrate` and `setup`."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from nudging import __version__, models, prompts
from nudging.calibrate import command as calibrate_command
from nudging.commands import add_model_options, at_least, chosen_methods, load_nudger, load_spec, one_nudger
from nudging.config import BATCH_SIZE, NudgingConfig, ServerSettings
from nudging.errors import InvalidArgumentError, NudgingError
from nudging.evals import cli_eval
from nudging.evals.tasks import TASK_NAMES
from nudging.methods import MODES
from nudging.result import GenerationResult
from nudging.text import Span, check_stops, check_unicode

NUDGER_STYLE = "bold magenta"
ONE_NUDGER = ("generate", "bench", "serve")  # eval and calibrate compare several


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nudging", description="Inference-time alignment by nudging (ACL 2025).")
    parser.add_argument("--version", action="version", version=f"nudging {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    generate = commands.add_parser("generate", help="answer a question (or several, batched)")
    generate.add_argument("question", nargs="*", help="the question (or use --base-prompt and --nudger-prompt); "
                                                      "several are answered together")
    generate.add_argument("--prompts", help="questions from a file: one per line, or JSONL with a 'question' field "
                                            "(or raw 'base_prompt' and 'nudger_prompt' fields, used exactly as given)")
    generate.add_argument("--batch-size", type=int, default=BATCH_SIZE,
                          help="with several questions: how many are answered at once (forward passes shared)")
    generate.add_argument("--base-prompt", help="raw base prompt, used exactly as given")
    generate.add_argument("--nudger-prompt", help="raw nudger prompt, used exactly as given")
    generate.add_argument("--max-new-tokens", type=int, default=None,
                          help=f"answer budget in base tokens (default {NudgingConfig.max_new_tokens})")
    generate.add_argument("--stop", action="append", default=None, metavar="TEXT",
                          help="end the answer before this text, and stop decoding once it is written (repeatable)")
    generate.add_argument("--mode", default="nudging", choices=MODES,
                          help="nudging, one model alone (base, nudger), nudging with another rule or the cap, or a "
                               "baseline: " + ", ".join(MODES[3:]))
    generate.add_argument("--json", action="store_true", help="print one JSON object")
    add_model_options(generate)

    bench = commands.add_parser("bench", help="time nudging and the baselines against base-only greedy decoding")
    bench.add_argument("--prompts", help="file with one question per line, or JSONL with a 'question' field")
    bench.add_argument("--method", action="append", default=[], choices=MODES + ("all",),
                       help="a method to time (repeatable; default: all that run on these models)")
    bench.add_argument("--max-new-tokens", type=int, default=128)
    bench.add_argument("--batch", type=int, default=1, metavar="N",
                       help="also run nudging over the prompts N at a time (forward passes shared) and compare "
                            "answer tokens/s with one at a time (without --prompts: N built-in prompts, up to 16)")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    add_model_options(bench)

    evaluate = commands.add_parser("eval", help="score methods on the paper's benchmarks (results resume)")
    evaluate.add_argument("--task", action="append", default=[], metavar="TASK",
                          help="a benchmark (repeatable), or all: " + ", ".join(TASK_NAMES))
    evaluate.add_argument("--method", action="append", default=[], choices=MODES + ("all",),
                          help="a method (repeatable; default: base, nudger, nudging; all: every method that runs "
                               "on these models)")
    evaluate.add_argument("--limit", type=int, default=None, help="items per task: a seeded sample, the same for every method")
    evaluate.add_argument("--seed", type=int, default=0, help="seed of the sample and of the generated tasks")
    evaluate.add_argument("--out", default="eval_results", help="folder for result files, table and chart")
    evaluate.add_argument("--max-new-tokens", type=int, default=None,
                          help=f"answer budget in base tokens (default {NudgingConfig.max_new_tokens})")
    evaluate.add_argument("--data", action="append", default=[], metavar="TASK=FILE",
                          help="items of TASK from a .jsonl/.json/.csv file (fields: question, answer, options, id)")
    evaluate.add_argument("--judge-url", help="OpenAI-compatible endpoint for LLM-judge scoring, e.g. http://host:8000/v1")
    evaluate.add_argument("--judge-model", help="model name to send to the judge endpoint")
    evaluate.add_argument("--concurrency", type=int, default=1,
                          help="items answered at once: local models run their forward passes together (16 "
                               "is about 2x faster than 1 on the demo pair on a CPU); remote ones send that many "
                               "requests at once")
    evaluate.add_argument("--report", metavar="DIR", nargs="?", const=True, default=None,
                          help="only rebuild the table and chart from the result files in DIR (default: --out)")
    add_model_options(evaluate, sampling=False, several_nudgers=True)

    serve = commands.add_parser("serve", help="serve the pair behind an OpenAI-compatible API and a chat page")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' on /v1 requests")
    serve.add_argument("--model-name", default=None,
                       help=f"the model id clients send (default {ServerSettings.model_name})")
    serve.add_argument("--mode", default="nudging", choices=MODES[:3], help="nudging, or serve one model plainly")
    serve.add_argument("--max-concurrency", type=int, default=None,
                       help="generations that run at once (on local models they share each forward pass; default "
                            f"{ServerSettings.max_concurrency})")
    serve.add_argument("--max-queue", type=int, default=None,
                       help=f"requests that may wait; more get HTTP 429 (default {ServerSettings.max_queue})")
    serve.add_argument("--max-tokens", type=int, default=None, help="answer budget when a request sets none "
                                                                    f"(default {NudgingConfig.max_new_tokens})")
    serve.add_argument("--max-tokens-limit", type=int, default=None, help="the largest max_tokens a request may "
                                                                         f"ask (default {ServerSettings.max_tokens_limit})")
    # sampling and the system text come with each request; --api-key is this server's own key
    add_model_options(serve, sampling=False, key_flag="--remote-api-key")

    calibrate = commands.add_parser("calibrate", help="choose gamma for a model pair from where the models disagree")
    calibrate_command.add_arguments(calibrate)
    add_model_options(calibrate, sampling=False, several_nudgers=True)

    setup = commands.add_parser("setup", help="fetch and convert built-in models once (default: the demo pair)")
    setup.add_argument("--models", nargs="*", default=None, metavar="MODEL",
                       help="model specs to fetch and convert (default: demo-base demo-nudger)")
    setup.add_argument("--all", action="store_true",
                       help="every built-in model: " + ", ".join(models.BUILT_IN_MODELS))
    return parser


def cmd_generate(args: argparse.Namespace) -> int:
    questions: list[str | dict] = [check_unicode(question, "QUESTION") for question in args.question]
    for flag in ("base_prompt", "nudger_prompt", "system"):
        if getattr(args, flag) is not None:
            check_unicode(getattr(args, flag), f"--{flag.replace('_', '-')}")
    check_stops(args.stop, "--stop")
    if args.prompts:
        questions += prompts.read_prompts(args.prompts, raw=True)
    if len(questions) > 1 or args.prompts:
        return generate_many(args, questions)
    args.question = questions[0] if questions else None
    if args.question is None and (args.base_prompt is None or args.nudger_prompt is None) and args.mode == "nudging":
        raise NudgingError("give a QUESTION, or both --base-prompt and --nudger-prompt")
    if args.question is None and args.base_prompt is None and args.nudger_prompt is None:
        raise NudgingError("give a QUESTION, or a raw prompt for the model of --mode")
    nudger = load_nudger(args, args.max_new_tokens, args.mode)
    if args.json:
        result = nudger.generate(
            args.question, base_prompt=args.base_prompt, nudger_prompt=args.nudger_prompt, mode=args.mode,
            stop=args.stop,
        )
        print(json.dumps(result.to_dict(), ensure_ascii=False))
        return 0
    from rich.console import Console

    console = Console(highlight=False)

    def show(span: Span) -> None:
        console.print(span.text, style=NUDGER_STYLE if span.source == "nudger" else None, end="", markup=False)

    result = nudger.generate(
        args.question, base_prompt=args.base_prompt, nudger_prompt=args.nudger_prompt, mode=args.mode,
        stop=args.stop, on_span=show,
    )
    console.print()
    console.print(summary_line(result), style="dim", markup=False, soft_wrap=True)
    return 0


def generate_many(args: argparse.Namespace, questions: list[str | dict]) -> int:
    """Several questions (or raw prompt pairs), `--batch-size` at a time; the answers are printed in their order."""
    if args.base_prompt is not None or args.nudger_prompt is not None:
        raise NudgingError("--base-prompt/--nudger-prompt take one answer; give several questions without them")
    at_least(args, 1, "batch_size")
    nudger = load_nudger(args, args.max_new_tokens, args.mode)
    progress = None if args.json else lambda index, result: print(
        f"[{index + 1}/{len(questions)}] done", file=sys.stderr)
    results = nudger.generate_batch(questions, batch_size=args.batch_size, mode=args.mode, stop=args.stop,
                                    on_result=progress)
    if args.json:
        for question, result in zip(questions, results):
            asked = question if isinstance(question, dict) else {"question": question}
            print(json.dumps({**asked, **result.to_dict()}, ensure_ascii=False))
        return 0
    from rich.console import Console

    console = Console(highlight=False)
    for question, result in zip(questions, results):
        title = question if isinstance(question, str) else question.get("base_prompt", question.get("nudger_prompt"))
        console.print(f"\n# {title}", style="bold", markup=False)
        for span in result.spans:
            console.print(span.text, style=NUDGER_STYLE if span.source == "nudger" else None, end="", markup=False)
        console.print()
        console.print(summary_line(result), style="dim", markup=False, soft_wrap=True)
    return 0


def summary_line(result: GenerationResult) -> str:
    stats = result.stats
    parts = [f"stop: {result.stop_reason}"]
    if result.mode not in ("nudging", "base", "nudger", "in-context"):
        parts.append(f"{stats.nudged_words}/{stats.total_words} words off the base's own choice")
    if result.mode == "nudging":
        parts.append(f"rounds {stats.rounds}")
        parts.append(
            f"nudger wrote {stats.nudged_words}/{stats.total_words} words ({100 * stats.nudged_word_fraction:.0f}%)"
        )
    parts.append(f"{stats.answer_base_tokens} answer tokens")
    for name, work in stats.models.items():
        if not any(work.values()):
            continue
        if "requests" in work:
            parts.append(f"{name}: {work['requests']} requests")
        else:
            parts.append(f"{name}: {work['forward_passes']} passes, {work['tokens_processed']} tokens")
    parts.append(f"{stats.seconds:.1f} s")
    return " · ".join(parts)


def cmd_bench(args: argparse.Namespace) -> int:
    from nudging import bench

    questions = prompts.read_prompts(args.prompts) if args.prompts else prompts.default_prompts(args.batch)
    methods, skipped = chosen_methods(args.method or ["all"], args, default=[])
    bench.check_batch(args.batch, methods)
    nudger = load_nudger(args, args.max_new_tokens, methods=methods)
    report = bench.run(nudger, questions, args.max_new_tokens, methods, skipped, progress=not args.json,
                       batch=args.batch)
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
    else:
        bench.print_report(report)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from nudging.serve import server

    at_least(args, 1, "port", "max_concurrency", "max_tokens", "max_tokens_limit")
    at_least(args, 0, "max_queue")
    spec = load_spec(args, args.max_tokens, args.mode)  # settings checked before the slow model load
    server.check_port_free(args.host, args.port)
    nudger = load_nudger(args, spec=spec)
    args.max_tokens = nudger.config.max_new_tokens  # the answer budget when a request sets none
    return server.serve(nudger, args)


def cmd_setup(args: argparse.Namespace) -> int:
    if args.all and args.models:
        raise InvalidArgumentError("setup: give --models or --all, not both")
    specs = models.BUILT_IN_MODELS if args.all else (args.models or list(models.DEMO_MODELS))
    for spec in specs:
        folder = models.resolve(spec)
        print(f"{spec}: ready in {folder}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {
        "generate": cmd_generate, "bench": cmd_bench, "eval": cli_eval.main, "serve": cmd_serve,
        "calibrate": calibrate_command.main, "setup": cmd_setup,
    }
    try:
        if args.command in ONE_NUDGER:
            one_nudger(args)  # before anything else runs
        return handlers[args.command](args)
    except NudgingError as error:
        print(f"nudging: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nudging: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
