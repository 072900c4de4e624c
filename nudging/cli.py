"""Command line: `nudging generate`, `bench`, `eval`, `serve`, `calibrate` and `setup`."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from nudging import models
from nudging.config import SamplingConfig
from nudging.errors import NudgingError
from nudging.nudger import MODES, Nudger
from nudging.remote.client import ClientSettings
from nudging.remote.model import PROTOCOLS
from nudging.result import GenerationResult
from nudging.evals.tasks import TASK_NAMES
from nudging.text import Span

NUDGER_STYLE = "bold magenta"


def _model_options(parser: argparse.ArgumentParser, sampling: bool = True, key_flag: str = "--api-key") -> None:
    group = parser.add_argument_group("models")
    group.add_argument("--base", default="demo-base",
                       help="base model: hub id, folder, .gguf file, demo-base, or openai:MODEL@http://HOST:PORT/v1")
    group.add_argument("--nudger", default="demo-nudger",
                       help="aligned nudger: hub id, folder, .gguf, demo-nudger, or openai:MODEL@URL")
    group.add_argument("--dtype", default="auto", choices=models.DTYPES)
    group.add_argument("--device", default="auto", choices=models.DEVICES)
    group = parser.add_argument_group("remote models (openai:MODEL@URL)")
    group.add_argument(key_flag, dest="remote_api_key", default=None,
                       help="key for the model servers (default: $NUDGING_API_KEY, then $OPENAI_API_KEY)")
    group.add_argument("--base-tokenizer", default=None, help="where to load a remote base's tokenizer (default: MODEL)")
    group.add_argument("--nudger-tokenizer", default=None, help="where to load a remote nudger's tokenizer and chat "
                                                                "template (default: MODEL)")
    group.add_argument("--remote-protocol", default="auto", choices=PROTOCOLS,
                       help="how a remote base checks word boundaries: auto (the cheaper of echo and per-word, "
                            "measured), echo, per-word, or chunked (the authors' 16-token requests)")
    group.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for a model server")
    group.add_argument("--retries", type=int, default=4, help="retries on connection errors, timeouts, 429 and 5xx")
    group = parser.add_argument_group("nudging")
    group.add_argument("--gamma", type=gamma_value, default=0.3,
                       help="nudge where the base's top-1 probability < gamma; auto: the value `nudging calibrate` "
                            "stored for this pair, else one calibrated now on built-in prompts")
    group.add_argument("--calibration", default=None, metavar="FILE",
                       help="where calibrated gammas are stored (default: $NUDGING_CALIBRATION, else "
                            "~/.config/nudging/calibration.json)")
    group.add_argument("--lookahead", type=int, default=16, help="tokens the nudger writes per round")
    group = parser.add_argument_group("baselines (proxy-tuning, ensemble-text)")
    group.add_argument("--anti-expert", default=None,
                       help="proxy tuning's anti-expert: the nudger's untuned base, with the same vocabulary")
    group.add_argument("--alpha", type=float, default=1.0, help="proxy tuning: base + alpha * (expert - anti-expert)")
    group.add_argument("--ensemble-top-k", type=int, default=5,
                       help="ensemble-text: candidate strings per model at a disagreement (1-20)")
    if not sampling:
        return
    group.add_argument("--system", default=None, help="system text for both prompts")
    group = parser.add_argument_group("sampling (default: greedy)")
    group.add_argument("--base-temperature", type=float, default=0.0)
    group.add_argument("--nudger-temperature", type=float, default=0.0)
    group.add_argument("--top-p", type=float, default=1.0)
    group.add_argument("--seed", type=int, default=None)


def gamma_value(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        return float(text)  # the range is checked with the other settings (one line, exit code 2)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1) or auto, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nudging", description="Inference-time alignment by nudging (ACL 2025).")
    commands = parser.add_subparsers(dest="command", required=True)

    generate = commands.add_parser("generate", help="answer a question (or several, batched)")
    generate.add_argument("question", nargs="*", help="the question (or use --base-prompt and --nudger-prompt); "
                                                      "several are answered together")
    generate.add_argument("--prompts", help="questions from a file: one per line, or JSONL with a 'question' field")
    generate.add_argument("--batch-size", type=int, default=16,
                          help="with several questions: how many are answered at once (forward passes shared)")
    generate.add_argument("--base-prompt", help="raw base prompt, used exactly as given")
    generate.add_argument("--nudger-prompt", help="raw nudger prompt, used exactly as given")
    generate.add_argument("--max-new-tokens", type=int, default=512, help="answer budget in base tokens")
    generate.add_argument("--mode", default="nudging", choices=MODES,
                          help="nudging, one model alone (base, nudger), or a baseline: " + ", ".join(MODES[3:]))
    generate.add_argument("--json", action="store_true", help="print one JSON object")
    _model_options(generate)

    bench = commands.add_parser("bench", help="time nudging and the baselines against base-only greedy decoding")
    bench.add_argument("--prompts", help="file with one question per line, or JSONL with a 'question' field")
    bench.add_argument("--method", action="append", default=[], choices=MODES + ("all",),
                       help="a method to time (repeatable; default: all that run on these models)")
    bench.add_argument("--max-new-tokens", type=int, default=128)
    bench.add_argument("--batch", type=int, default=1, metavar="N",
                       help="also run nudging over the prompts N at a time (forward passes shared) and compare "
                            "answer tokens/s with one at a time (without --prompts: N built-in prompts, up to 16)")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    _model_options(bench)

    evaluate = commands.add_parser("eval", help="score methods on the paper's benchmarks (results resume)")
    evaluate.add_argument("--task", action="append", default=[], metavar="TASK",
                          help="a benchmark (repeatable), or all: " + ", ".join(TASK_NAMES))
    evaluate.add_argument("--method", action="append", default=[], choices=MODES + ("all",),
                          help="a method (repeatable; default: base, nudger, nudging; all: every method that runs "
                               "on these models)")
    evaluate.add_argument("--limit", type=int, default=None, help="items per task: a seeded sample, the same for every method")
    evaluate.add_argument("--seed", type=int, default=0, help="seed of the sample and of the generated tasks")
    evaluate.add_argument("--out", default="eval_results", help="folder for result files, table and chart")
    evaluate.add_argument("--max-new-tokens", type=int, default=512, help="answer budget in base tokens")
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
    _model_options(evaluate, sampling=False)

    serve = commands.add_parser("serve", help="serve the pair behind an OpenAI-compatible API and a chat page")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' on /v1 requests")
    serve.add_argument("--model-name", default="nudging", help="the model id clients send")
    serve.add_argument("--mode", default="nudging", choices=MODES[:3], help="nudging, or serve one model plainly")
    serve.add_argument("--max-concurrency", type=int, default=1,
                       help="generations that run at once (on local models they share each forward pass)")
    serve.add_argument("--max-queue", type=int, default=16, help="requests that may wait; more get HTTP 429")
    serve.add_argument("--max-tokens", type=int, default=512, help="answer budget when a request sets none")
    serve.add_argument("--max-tokens-limit", type=int, default=4096, help="the largest max_tokens a request may ask")
    # sampling and the system text come with each request; --api-key is this server's own key
    _model_options(serve, sampling=False, key_flag="--remote-api-key")

    calibrate = commands.add_parser("calibrate", help="choose gamma for a model pair from where the models disagree")
    from nudging.calibrate.command import add_arguments

    add_arguments(calibrate)
    _model_options(calibrate, sampling=False)

    setup = commands.add_parser("setup", help="install and convert the demo models once")
    setup.add_argument("--models", nargs="*", default=["demo-base", "demo-nudger"])
    return parser


def _sampling(args: argparse.Namespace) -> tuple[SamplingConfig, SamplingConfig]:
    if not hasattr(args, "base_temperature"):  # commands without sampling options decode greedily
        return SamplingConfig(), SamplingConfig()
    return (
        SamplingConfig(args.base_temperature, args.top_p, args.seed),
        SamplingConfig(args.nudger_temperature, args.top_p, args.seed),
    )


def load_nudger(args: argparse.Namespace, max_new_tokens: int, mode: str = "nudging",
          methods: list[str] | None = None) -> Nudger:
    base_sampling, nudger_sampling = _sampling(args)
    uses_nudging = "nudging" in (methods or [mode])
    if args.gamma == "auto" and uses_nudging:
        announce_calibration(args)
    nudger = Nudger.from_pretrained(
        args.base, args.nudger, gamma=args.gamma, lookahead=args.lookahead, max_new_tokens=max_new_tokens,
        system=getattr(args, "system", None), calibration=args.calibration, dtype=args.dtype, device=args.device,
        base_sampling=base_sampling, nudger_sampling=nudger_sampling, mode=mode, methods=methods,
        **remote_options(args),
    )
    if nudger.gamma_note:
        print(f"nudging: --gamma auto: {nudger.gamma_note}", file=sys.stderr)
    return nudger


def announce_calibration(args: argparse.Namespace) -> None:
    """Say so before a slow calibration starts (none stored for this pair)."""
    from pathlib import Path

    from nudging.calibrate import saved

    path = Path(args.calibration) if args.calibration else saved.default_path()
    if saved.load(args.base, args.nudger, path) is None:
        print(f"nudging: --gamma auto: no calibrated gamma for this pair in {path}; calibrating on built-in "
              "prompts first (once; `nudging calibrate` gives more control)", file=sys.stderr)


def remote_options(args: argparse.Namespace) -> dict:
    """Nudger.from_pretrained's options for remote models and the baselines, from the command line."""
    return {
        "api_key": args.remote_api_key, "base_tokenizer": args.base_tokenizer,
        "nudger_tokenizer": args.nudger_tokenizer, "remote_protocol": args.remote_protocol,
        "client_settings": ClientSettings(timeout=args.timeout, retries=args.retries),
        "anti_expert": args.anti_expert, "alpha": args.alpha, "top_k": args.ensemble_top_k,
    }


def chosen_methods(requested: list[str], args: argparse.Namespace, default: list[str]) -> tuple[list[str], dict[str, str]]:
    """The methods to run: as requested (default: `default`); "all" means every method these models can run,
    and returns the others with the reason they cannot."""
    from nudging.methods import fitting

    if "all" not in requested:
        return list(dict.fromkeys(requested or default)), {}
    return fitting(list(MODES), args.base, args.nudger, args.anti_expert)


def cmd_generate(args: argparse.Namespace) -> int:
    questions = list(args.question)
    if args.prompts:
        from nudging.bench import read_prompts

        questions += read_prompts(args.prompts)
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
            args.question, base_prompt=args.base_prompt, nudger_prompt=args.nudger_prompt, mode=args.mode
        )
        print(json.dumps(result.to_dict(), ensure_ascii=False))
        return 0
    from rich.console import Console

    console = Console(highlight=False)

    def show(span: Span) -> None:
        console.print(span.text, style=NUDGER_STYLE if span.source == "nudger" else None, end="", markup=False)

    result = nudger.generate(
        args.question, base_prompt=args.base_prompt, nudger_prompt=args.nudger_prompt, mode=args.mode, on_span=show
    )
    console.print()
    console.print(summary_line(result), style="dim", markup=False, soft_wrap=True)
    return 0


def generate_many(args: argparse.Namespace, questions: list[str]) -> int:
    """Several questions, `--batch-size` at a time; the answers are printed in the order of the questions."""
    if args.base_prompt is not None or args.nudger_prompt is not None:
        raise NudgingError("--base-prompt/--nudger-prompt take one answer; give several questions without them")
    if args.batch_size < 1:
        raise NudgingError(f"--batch-size must be at least 1, got {args.batch_size}")
    nudger = load_nudger(args, args.max_new_tokens, args.mode)
    progress = None if args.json else lambda index, result: print(
        f"[{index + 1}/{len(questions)}] done", file=sys.stderr)
    results = nudger.generate_batch(questions, batch_size=args.batch_size, mode=args.mode, on_result=progress)
    if args.json:
        for question, result in zip(questions, results):
            print(json.dumps({"question": question, **result.to_dict()}, ensure_ascii=False))
        return 0
    from rich.console import Console

    console = Console(highlight=False)
    for question, result in zip(questions, results):
        console.print(f"\n# {question}", style="bold", markup=False)
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

    prompts = bench.read_prompts(args.prompts) if args.prompts else bench.default_prompts(args.batch)
    methods, skipped = chosen_methods(args.method or ["all"], args, default=[])
    bench.check_batch(args.batch, methods)
    nudger = load_nudger(args, args.max_new_tokens, methods=methods)
    report = bench.run(nudger, prompts, args.max_new_tokens, methods, skipped, progress=not args.json,
                       batch=args.batch)
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
    else:
        bench.print_report(report)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from nudging.evals import cli_eval

    return cli_eval.main(args)


def cmd_serve(args: argparse.Namespace) -> int:
    from nudging.serve import server

    for name in ("port", "max_concurrency", "max_tokens", "max_tokens_limit"):
        if getattr(args, name) < 1:
            raise NudgingError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.max_queue < 0:
        raise NudgingError(f"--max-queue must be at least 0, got {args.max_queue}")
    server.check_port_free(args.host, args.port)  # before the slow model load
    nudger = load_nudger(args, args.max_tokens, args.mode)
    return server.serve(nudger, args)


def cmd_calibrate(args: argparse.Namespace) -> int:
    from nudging.calibrate import command

    return command.main(args, lambda a: load_nudger(a, a.max_new_tokens, "nudging"))


def cmd_setup(args: argparse.Namespace) -> int:
    for spec in args.models:
        folder = models.resolve(spec)
        print(f"{spec}: ready in {folder}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {
        "generate": cmd_generate, "bench": cmd_bench, "eval": cmd_eval, "serve": cmd_serve, "calibrate": cmd_calibrate,
        "setup": cmd_setup,
    }
    try:
        return handlers[args.command](args)
    except NudgingError as error:
        print(f"nudging: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nudging: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
