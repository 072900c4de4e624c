"""What every subcommand shares: the model options on the command line, and turning them into a LoadSpec and a
loaded Nudger. Subcommands import this module, never `nudging.cli` (which imports them).

Flags default to None, meaning "the default of the dataclass that owns the setting" (nudging.config,
nudging.loading), so each default is written once; help texts read it from there.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from nudging import models
from nudging.backends.remote.client import ClientSettings
from nudging.backends.remote.model import PROTOCOLS
from nudging.backends.remote.spec import is_remote
from nudging.config import (
    BLEND_ALPHA, BLEND_ALPHA_RANGE, MAX_LOOKAHEAD, MAX_TOP_K, PROXY_TUNING_ALPHA, RULES, BaselineConfig, NudgingConfig,
    SamplingConfig,
)
from nudging.errors import InvalidArgumentError
from nudging.evals import runner
from nudging.loading import AUTO, LoadSpec, ModelSpecs, SharedBase, announce_auto_gamma
from nudging.methods import MODES, fitting
from nudging.nudger import Nudger


def add_model_options(parser: argparse.ArgumentParser, sampling: bool = True, key_flag: str = "--api-key",
                      several_nudgers: bool = False) -> None:
    """The model flags. --nudger is always collected as a list, so that a command that takes one nudger can say so
    when it is given twice (`one_nudger`) instead of keeping the last; `several_nudgers` only changes its help."""
    group = parser.add_argument_group("models")
    group.add_argument("--base", default=None, help="base model: hub id, folder, .gguf file, demo-base, or "
                                                    f"openai:MODEL@http://HOST:PORT/v1 (default {ModelSpecs.base})")
    several = "; repeat it to compare several nudgers with this base" if several_nudgers else ""
    group.add_argument("--nudger", action="append", default=None,
                       help="aligned nudger: hub id, folder, .gguf, demo-nudger, or openai:MODEL@URL (default "
                            f"{ModelSpecs.nudger}{several})")
    group.add_argument("--dtype", default=None, choices=models.DTYPES, help="default auto")
    group.add_argument("--device", default=None, choices=models.DEVICES, help="default auto")
    group.add_argument("--device-map", default=None, choices=models.DEVICE_MAPS,
                       help="spread each local model's layers over the GPUs, then CPU memory, then disk (accelerate)")
    group.add_argument("--quantize", default=None, choices=models.QUANTIZE,
                       help="load local models in 8 or 4 bits (bitsandbytes; CUDA only)")
    group = parser.add_argument_group("remote models (openai:MODEL@URL)")
    group.add_argument(key_flag, dest="remote_api_key", default=None,
                       help="key for the model servers (default: $NUDGING_API_KEY, then $OPENAI_API_KEY)")
    group.add_argument("--base-tokenizer", default=None, help="where to load a remote base's tokenizer (default: MODEL)")
    group.add_argument("--nudger-tokenizer", default=None, help="where to load a remote nudger's tokenizer and chat "
                                                                "template (default: MODEL)")
    group.add_argument("--remote-protocol", default=None, choices=PROTOCOLS,
                       help="how a remote base checks word boundaries: auto (the cheaper of echo and per-word, "
                            "measured; the default), echo, per-word, or chunked (the authors' 16-token requests)")
    group.add_argument("--timeout", type=float, default=None,
                       help=f"seconds to wait for a model server (default {ClientSettings.timeout:g})")
    group.add_argument("--retries", type=int, default=None, help="retries on connection errors, timeouts, 429 and "
                                                                 f"5xx (default {ClientSettings.retries})")
    group = parser.add_argument_group("nudging")
    group.add_argument("--gamma", type=gamma_value, default=None,
                       help=f"nudge where the base's top-1 probability < gamma (default {NudgingConfig.gamma}); "
                            "auto: the value `nudging calibrate` stored for this pair, else one calibrated now on "
                            "built-in prompts")
    group.add_argument("--calibration", default=None, metavar="FILE",
                       help="where calibrated gammas are stored (default: $NUDGING_CALIBRATION, else "
                            "~/.config/nudging/calibration.json)")
    group.add_argument("--lookahead", type=int, default=None, help="tokens the nudger writes per round (default "
                                                                   f"{NudgingConfig.lookahead}, at most {MAX_LOOKAHEAD})")
    group.add_argument("--rule", default=None, help=f"one of {', '.join(RULES)}: when the base counts as confident (its score >= gamma): top1 "
                       "(its top-1 probability; the paper's), entropy (exp(-entropy)), margin (top-1 minus top-2), "
                       f"agreement (top1, and the nudger writes only words that start with one of the base's top-k "
                       f"strings), window (the nudger writes until the base's mean top-1 over the next --window "
                       f"tokens of its text reaches gamma, then the base writes the rest) (default "
                       f"{NudgingConfig.rule}; docs/NUDGING_SPEC.md)")
    group.add_argument("--agreement-k", type=int, default=None, help="--rule agreement: the base's most likely "
                       f"strings a nudged word may start with (1-{MAX_TOP_K}, default {NudgingConfig.agreement_k})")
    group.add_argument("--window", type=int, default=None, metavar="W", help="--rule window: base tokens of the "
                       f"nudger's text the base's top-1 is averaged over (1-{MAX_LOOKAHEAD}, default "
                       f"{NudgingConfig.window})")
    group.add_argument("--max-nudged-fraction", type=float, default=None, metavar="F",
                       help="once the nudger has written more than F (0-1) of the answer's words, the base writes the "
                            "rest (default: no cap)")
    group = parser.add_argument_group("baselines (proxy-tuning, ensemble-text, blend)")
    group.add_argument("--anti-expert", default=None,
                       help="proxy tuning's anti-expert: the nudger's untuned base, with the same vocabulary")
    low, high = BLEND_ALPHA_RANGE
    group.add_argument("--alpha", type=float, default=None,
                       help=f"proxy tuning: base + alpha * (expert - anti-expert) (default {PROXY_TUNING_ALPHA:g}); "
                            f"blend: the nudger's weight, (1 - alpha) p_base + alpha p_nudger, from {low:g} to "
                            f"{high:g} (default {BLEND_ALPHA:g})")
    group.add_argument("--ensemble-top-k", type=int, default=None, help="ensemble-text and blend: candidate "
                       f"strings per model (1-{MAX_TOP_K}, default {BaselineConfig.top_k})")
    if not sampling:
        return
    group.add_argument("--system", default=None, help="system text for both prompts")
    group = parser.add_argument_group("sampling (default: greedy)")
    group.add_argument("--base-temperature", type=float, default=None)
    group.add_argument("--nudger-temperature", type=float, default=None)
    group.add_argument("--top-p", type=float, default=None)
    group.add_argument("--seed", type=int, default=None)


def gamma_value(text: str) -> float | str:
    if text == AUTO:
        return text
    try:
        return float(text)  # the range is checked with the other settings (one line, exit code 2)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1) or auto, got {text!r}") from None


def nudger_specs(args: argparse.Namespace) -> list[str | None]:
    """The --nudger values in the order given ([None]: the default nudger); one given twice is an error."""
    given = args.nudger if isinstance(args.nudger, list) else [args.nudger]
    for index, spec in enumerate(given):
        if spec in given[:index]:
            raise InvalidArgumentError(f"--nudger {spec} is given twice")
    return given or [None]


def one_nudger(args: argparse.Namespace) -> str | None:
    """The one --nudger of a command that takes one (None: the default)."""
    specs = nudger_specs(args)
    if len(specs) > 1:
        raise InvalidArgumentError(f"--nudger takes one nudger; several are for eval and calibrate (got {len(specs)})")
    return specs[0]


def for_nudger(args: argparse.Namespace, spec: str | None) -> argparse.Namespace:
    """The command line with only this --nudger (None: the default one)."""
    return argparse.Namespace(**{**vars(args), "nudger": spec})


def check_nudger_specs(specs: list[str | None]) -> None:
    """With several nudgers: each local spec resolves (an unknown folder fails before the first nudger's work)."""
    for spec in specs:
        if spec is not None and not is_remote(spec):
            models.resolve(spec)


def model_options(args: argparse.Namespace) -> dict[str, Any]:
    """LoadSpec.build's keywords for the models, remote servers and baselines, from the command line (None:
    the default)."""
    client = {"timeout": args.timeout, "retries": args.retries}
    return {
        "base": args.base, "nudger": one_nudger(args), "anti_expert": args.anti_expert, "dtype": args.dtype,
        "device": args.device, "device_map": args.device_map, "quantize": args.quantize, "api_key": args.remote_api_key, "base_tokenizer": args.base_tokenizer,
        "nudger_tokenizer": args.nudger_tokenizer, "remote_protocol": args.remote_protocol,
        "client_settings": ClientSettings(**{k: v for k, v in client.items() if v is not None}),
        "alpha": args.alpha, "top_k": args.ensemble_top_k, "rule": args.rule, "agreement_k": args.agreement_k,
        "window": args.window, "max_nudged_fraction": args.max_nudged_fraction,
    }


def _sampling(args: argparse.Namespace, temperature: str) -> SamplingConfig | None:
    given = {"temperature": getattr(args, temperature, None), "top_p": getattr(args, "top_p", None),
             "seed": getattr(args, "seed", None)}
    given = {key: value for key, value in given.items() if value is not None}
    return SamplingConfig(**given) if given else None  # none given: greedy, the model's default


def load_spec(args: argparse.Namespace, max_new_tokens: int | None = None, mode: str | None = None,
              methods: list[str] | None = None) -> LoadSpec:
    """The LoadSpec of a command line: checked (ranges, methods) before any model loads."""
    return LoadSpec.build(
        **model_options(args), gamma=args.gamma, lookahead=args.lookahead, max_new_tokens=max_new_tokens,
        system=getattr(args, "system", None), calibration=args.calibration, mode=mode, methods=methods,
        base_sampling=_sampling(args, "base_temperature"), nudger_sampling=_sampling(args, "nudger_temperature"),
    )


def load_nudger(args: argparse.Namespace, max_new_tokens: int | None = None, mode: str | None = None,
                methods: list[str] | None = None, spec: LoadSpec | None = None,
                shared: SharedBase | None = None) -> Nudger:
    """Load the models a command line names; with --gamma auto, say first when a calibration will run, and
    afterwards which gamma was used. `shared`: a base kept from an earlier pair, reused where it fits (and this
    pair's base kept there in turn)."""
    spec = spec or load_spec(args, max_new_tokens, mode, methods)
    notice = announce_auto_gamma(spec)
    if notice:
        print(f"nudging: --gamma auto: {notice}", file=sys.stderr)
    nudger = Nudger.from_pretrained(spec=spec, shared=shared)
    if nudger.gamma_note:
        print(f"nudging: --gamma auto: {nudger.gamma_note}", file=sys.stderr)
    return nudger


def chosen_methods(requested: list[str], args: argparse.Namespace, default: list[str]) -> tuple[list[str], dict[str, str]]:
    """The methods to run: as requested (default: `default`); "all" means every method these models can run,
    and returns the others with the reason they cannot."""
    if "all" not in requested:
        return list(dict.fromkeys(requested or default)), {}
    specs = LoadSpec.build(args.base, one_nudger(args), anti_expert=args.anti_expert).models
    return fitting(list(MODES), specs.base, specs.nudger, specs.anti_expert)


def eval_request(args: argparse.Namespace, **fields: Any) -> runner.EvalRequest:
    """An EvalRequest whose model settings come from the command line (None: LoadSpec's default)."""
    options = model_options(args)
    models = {key: options.pop(key) for key in ("base", "nudger", "dtype", "device")}
    return runner.EvalRequest(**models, lookahead=args.lookahead, load_options=options, **fields)


def parse_data(values: list[str]) -> dict[str, str]:
    """--data TASK=FILE, repeated."""
    data = {}
    for value in values:
        task, sep, file = value.partition("=")
        if not sep or not task or not file:
            raise InvalidArgumentError(f"--data must look like TASK=FILE, got {value!r}")
        data[task] = file
    return data


def at_least(args: argparse.Namespace, minimum: int, *names: str) -> None:
    """Each named integer option is at least `minimum`, else one clear error naming the flag."""
    for name in names:
        value = getattr(args, name)
        if value is not None and value < minimum:
            raise InvalidArgumentError(f"--{name.replace('_', '-')} must be at least {minimum}, got {value}")
