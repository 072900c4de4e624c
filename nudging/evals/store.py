"""Append-only JSON-lines files that survive a kill: each line is written whole and flushed to disk."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator


def repair(path: Path) -> None:
    """Drop a last line cut short by a kill, so the next append starts on a line of its own."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if data.endswith(b"\n"):
        return
    with path.open("r+b") as handle:
        handle.truncate(data.rfind(b"\n") + 1)


def read_rows(path: Path) -> Iterator[dict[str, Any]]:
    if not path.is_file():
        return
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a partial last line from a killed run
            if isinstance(row, dict):
                yield row


def append_row(path: Path, row: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
