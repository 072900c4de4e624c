"""Short names of model specs, for table labels, progress lines and titles."""

from __future__ import annotations

from typing import Iterable

from nudging.backends.remote.spec import PREFIX


def short_name(spec: str) -> str:
    """The last part of a spec: a folder's, file's or hub id's last path part; for `openai:MODEL@URL`, MODEL's."""
    if spec.startswith(PREFIX):
        spec = spec[len(PREFIX):].rpartition("@")[0] or spec
    return spec.rstrip("/").rpartition("/")[2] or spec


def short_names(specs: Iterable[str]) -> dict[str, str]:
    """Each spec's short name, or the whole spec where two of them would share one."""
    specs = list(dict.fromkeys(specs))
    shorts = [short_name(spec) for spec in specs]
    return {spec: short if shorts.count(short) == 1 else spec for spec, short in zip(specs, shorts)}
