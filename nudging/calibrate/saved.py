"""The calibrated gamma of each model pair, kept in one small JSON file that `--gamma auto` reads.

The file is $NUDGING_CALIBRATION, else $XDG_CONFIG_HOME/nudging/calibration.json (~/.config/...), or the path
given with `--calibration`. It maps a pair (base spec, nudger spec; local paths made absolute) to the chosen
gamma and how it was chosen; it is rewritten whole through a temporary file, so a kill never leaves half of it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from nudging.errors import InvalidArgumentError
from nudging.backends.remote.spec import is_remote


@dataclass
class SavedGamma:
    gamma: float
    method: str  # "separation" (agreement positions) or "accuracy" (a grid on labelled items)
    interval: tuple[float, float]  # 95% interval of the chosen value
    source: str  # what it was measured on, e.g. "16 built-in prompts" or "gsm8k, 20 items"
    base: str
    nudger: str
    date: str = ""
    rule: str = "top1"  # the score gamma was calibrated for (nudging.rules)

    def describe(self, path: Path) -> str:
        low, high = self.interval
        rule, _, window = self.rule.partition("-")  # "window-4": the window rule's score over 4 positions
        for_rule = f" with --rule {rule}" + (f" --window {window}" if window else "") if rule != "top1" else ""
        return (f"gamma {self.gamma:g} (calibrated for this pair{for_rule} by {self.method} on {self.source}, "
                f"95% interval {low:g}-{high:g}, {self.date[:10]}; stored in {path})")


def default_path() -> Path:
    configured = os.environ.get("NUDGING_CALIBRATION")
    if configured:
        return Path(configured)
    config_home = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(config_home) / "nudging" / "calibration.json"


def pair_key(base: str, nudger: str, rule: str = "top1") -> str:
    def canonical(spec: str) -> str:
        if is_remote(spec) or not Path(spec).exists():
            return spec
        return str(Path(spec).resolve())

    return f"{canonical(base)} | {canonical(nudger)}" + (f" | rule={rule}" if rule != "top1" else "")


def _read_all(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise InvalidArgumentError(f"calibration file {path} is not readable JSON ({error}); fix or delete it") from None
    if not isinstance(data, dict) or not isinstance(data.get("pairs", {}), dict):
        raise InvalidArgumentError(f"calibration file {path} should hold {{\"pairs\": {{...}}}}; fix or delete it")
    return data


def load(base: str, nudger: str, path: Path | None = None, rule: str = "top1") -> SavedGamma | None:
    """The stored choice for this pair (and the score of `rule`), or None."""
    path = path or default_path()
    entry = _read_all(path).get("pairs", {}).get(pair_key(base, nudger, rule))
    if entry is None:
        return None
    try:
        saved = SavedGamma(**{**entry, "interval": tuple(entry["interval"])})
    except (TypeError, KeyError) as error:
        raise InvalidArgumentError(f"calibration file {path}: the entry for this pair is malformed ({error})") from None
    if not isinstance(saved.gamma, (int, float)) or not 0 < saved.gamma < 1:
        raise InvalidArgumentError(f"calibration file {path}: stored gamma {saved.gamma!r} is not in (0, 1)")
    return saved


def save(saved: SavedGamma, path: Path | None = None) -> Path:
    """Store (or replace) the choice for its pair; returns the file written."""
    path = path or default_path()
    data = _read_all(path)
    data.setdefault("pairs", {})
    if not saved.date:
        saved.date = datetime.now(timezone.utc).isoformat(timespec="seconds")
    data["pairs"][pair_key(saved.base, saved.nudger, saved.rule)] = asdict(saved)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    partial.replace(path)
    return path
