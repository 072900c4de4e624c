"""Append-only JSON-lines files that survive a kill: each line is written whole and flushed to disk."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Iterator

from nudging.errors import InvalidArgumentError


def repair(path: Path) -> None:
    """Drop a last line cut short by a kill, so the next append starts on a line of its own."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if data.endswith(b"\n"):
        return
    with path.open("r+b") as handle:
        handle.truncate(data.rfind(b"\n") + 1)


def read_numbered(path: Path, on_bad: Callable[[int, str], None] | None = None) -> Iterator[tuple[int, Any]]:
    """(line number, value) of each JSON line; `on_bad(number, reason)` hears of the lines that are not JSON."""
    if not path.is_file():
        return
    with path.open(encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as error:
                if on_bad is not None:
                    on_bad(number, f"not JSON ({error.msg})")


def read_rows(path: Path) -> Iterator[dict[str, Any]]:
    """The JSON objects of a file, one a line; other lines (a partial last line from a killed run) are passed."""
    for _, row in read_numbered(path):
        if isinstance(row, dict):
            yield row


def make_folder(path: Path, flag: str) -> Path:
    """The folder, created if missing; a path that is a file or cannot be created is one clear error."""
    if path.exists() and not path.is_dir():
        raise InvalidArgumentError(f"{flag}: {path} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InvalidArgumentError(f"{flag}: cannot create the folder {path}: {error.strerror or error}") from None
    return path


def append_row(path: Path, row: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
