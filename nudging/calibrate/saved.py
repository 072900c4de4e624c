"""The calibrated gamma of each model pair, kept in one small JSON file that `--gamma auto` reads.

The file is $NUDGING_CALIBRATION, else $XDG_CONFIG_HOME/nudging/calibration.json (~/.config/...), or the path
given with `--calibration`. It maps a pair (base spec, nudger spec; local paths made absolute) to the chosen
gamma and how it was chosen ("pairs"), and, where `calibrate --task` compared several nudgers, a base and the set
of nudgers to the most accurate one ("best_nudgers"); it is rewritten whole through a temporary file, so a kill
never leaves half of it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from nudging.errors import InvalidArgumentError
from nudging.backends.remote.spec import is_remote

PARTS = ("pairs", "best_nudgers")  # the file's two maps: a gamma per pair, a best nudger per comparison


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


@dataclass
class BestNudger:
    """For one base and a set of nudgers compared on labelled items: the most accurate pair (ties: the nudger
    named first), each at its own chosen gamma."""

    nudger: str
    gamma: float
    accuracy: float
    candidates: list[str]  # every nudger compared, in the order given
    accuracies: dict[str, float]  # each candidate's accuracy at its own chosen gamma
    source: str
    base: str
    date: str = ""
    rule: str = "top1"

    def describe(self) -> str:
        return (f"nudger {self.nudger} with gamma {self.gamma:g} ({100 * self.accuracy:.1f}% on {self.source}; "
                f"best of {len(self.candidates)} nudgers for this base)")


def default_path() -> Path:
    configured = os.environ.get("NUDGING_CALIBRATION")
    if configured:
        return Path(configured)
    config_home = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(config_home) / "nudging" / "calibration.json"


def _canonical(spec: str) -> str:
    if is_remote(spec) or not Path(spec).exists():
        return spec
    return str(Path(spec).resolve())


def pair_key(base: str, nudger: str, rule: str = "top1") -> str:
    return f"{_canonical(base)} | {_canonical(nudger)}" + (f" | rule={rule}" if rule != "top1" else "")


def best_key(base: str, candidates: list[str], rule: str = "top1") -> str:
    """The key of a comparison: the base and the sorted set of nudgers compared (their order does not matter)."""
    nudgers = " + ".join(sorted({_canonical(spec) for spec in candidates}))
    return f"{_canonical(base)} | {nudgers}" + (f" | rule={rule}" if rule != "top1" else "")


def _read_all(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise InvalidArgumentError(f"calibration file {path} is not readable JSON ({error}); fix or delete it") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(part, {}), dict) for part in PARTS):
        raise InvalidArgumentError(f"calibration file {path} should hold {{\"pairs\": {{...}}}} (and maybe "
                                   "{\"best_nudgers\": {...}}); fix or delete it")
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


def load_best(base: str, candidates: list[str], path: Path | None = None, rule: str = "top1") -> BestNudger | None:
    """The stored best nudger for this base among these nudgers (in any order), or None."""
    path = path or default_path()
    entry = _read_all(path).get("best_nudgers", {}).get(best_key(base, candidates, rule))
    if entry is None:
        return None
    try:
        return BestNudger(**entry)
    except TypeError as error:
        raise InvalidArgumentError(f"calibration file {path}: the best-nudger entry for these nudgers is malformed "
                                   f"({error})") from None


def save(saved: SavedGamma, path: Path | None = None) -> Path:
    """Store (or replace) the choice for its pair; returns the file written."""
    return _store("pairs", pair_key(saved.base, saved.nudger, saved.rule), saved, path)


def save_best(best: BestNudger, path: Path | None = None) -> Path:
    """Store (or replace) the best nudger for its base and candidates; returns the file written."""
    return _store("best_nudgers", best_key(best.base, best.candidates, best.rule), best, path)


def _store(part: str, key: str, entry: SavedGamma | BestNudger, path: Path | None) -> Path:
    path = path or default_path()
    data = _read_all(path)
    data.setdefault(part, {})
    if not entry.date:
        entry.date = datetime.now(timezone.utc).isoformat(timespec="seconds")
    data[part][key] = asdict(entry)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    partial.replace(path)
    return path
