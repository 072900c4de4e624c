"""Reading result files back (a resume, the report, calibrate's grid): the rows and settings whose fields have the
types the readers use. A line that is not a JSON object, lacks a field or holds one of the wrong type (a file
edited by hand, or written by something else) is named, with its line number, in one warning and left out: its
item is answered again on the next run, and nothing else in the file is lost.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterator

from nudging.evals import store

Warn = Callable[[str], None]
NUMBER = (int, float)
NONE = type(None)
# field: (the types it may have, whether a row must have it)
ROW_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "id": ((str,), True),
    "kind": ((str,), False),
    "gold": ((str,), False),
    "prompt": ((str,), False),
    "prediction": ((str,), False),
    "options": ((list,), False),
    "correct": ((bool, NONE), False),
    "rating": ((*NUMBER, NONE), False),
    "ended_by_itself": ((bool,), False),
    "error": ((str, NONE), False),
    "judge": ((dict,), False),
    "stats": ((dict,), False),
}
STATS_FIELDS = ("nudged_words", "total_words", "seconds")  # the numbers the report adds up
SETTINGS_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "task": ((str,), True),
    "method": ((str,), True),
    "key": ((str,), True),
    "max_new_tokens": ((int,), True),
    "gamma": ((*NUMBER, NONE), False),
    "base": ((str, NONE), False),
    "nudger": ((str, NONE), False),
}


def problem(record: Any, fields: dict[str, tuple[tuple[type, ...], bool]]) -> str | None:
    """What is wrong with a record for its readers, or None."""
    if not isinstance(record, dict):
        return f"not a JSON object but {type(record).__name__}"
    for name, (types, required) in fields.items():
        if name not in record:
            if required:
                return f"no '{name}'"
            continue
        if not isinstance(record[name], types) or (isinstance(record[name], bool) and bool not in types):
            return f"'{name}' is {type(record[name]).__name__} {json.dumps(record[name])[:40]}, not " + \
                " or ".join("null" if t is NONE else t.__name__ for t in types)
    return None


def row_problem(row: Any) -> str | None:
    found = problem(row, ROW_FIELDS)
    if found is not None:
        return found
    if "kind" in row and "gold" not in row and "judge" not in row and not row.get("error"):
        return "no 'gold' to score its prediction against"
    if not all(isinstance(option, str) for option in row.get("options") or ()):
        return "'options' holds something other than texts"
    stats = row.get("stats") or {}
    for name in STATS_FIELDS:
        if name in stats and (isinstance(stats[name], bool) or not isinstance(stats[name], NUMBER)):
            return f"'stats.{name}' is not a number"
    return None


def read_rows(path: Path, warn: Warn, then: str) -> Iterator[dict[str, Any]]:
    """The usable rows of a result file; each other line gets one warning, naming it and saying `then`."""
    def bad(number: int, reason: str) -> None:
        warn(f"{path} line {number}: {reason}; {then}")

    for number, row in store.read_numbered(path, bad):
        reason = row_problem(row)
        if reason is None:
            yield row
        else:
            bad(number, reason)


def read_settings(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(the settings of a result file, None), or (None, what is wrong with its settings file)."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        return None, f"cannot be read: {error}"
    reason = problem(meta, SETTINGS_FIELDS)
    return (meta, None) if reason is None else (None, reason)
