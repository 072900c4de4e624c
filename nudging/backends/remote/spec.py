"""`openai:MODEL@http://HOST:PORT/v1`: a model served behind an OpenAI-compatible API."""

from __future__ import annotations

import os
from dataclasses import dataclass

from nudging.errors import InvalidArgumentError

PREFIX = "openai:"
KEY_VARIABLES = ("NUDGING_API_KEY", "OPENAI_API_KEY")


@dataclass(frozen=True)
class RemoteSpec:
    model: str  # the name the server knows the model by
    base_url: str  # up to and including /v1

    def __str__(self) -> str:
        return f"{PREFIX}{self.model}@{self.base_url}"


def is_remote(spec: object) -> bool:
    return isinstance(spec, str) and spec.startswith(PREFIX)


def parse(spec: str) -> RemoteSpec:
    """Split `openai:MODEL@URL`; the URL must be http(s) and is kept as given (without a trailing slash)."""
    body = spec[len(PREFIX):]
    model, at, url = body.rpartition("@")
    if not at or not model or not url.startswith(("http://", "https://")):
        raise InvalidArgumentError(
            f"remote model spec {spec!r} must look like openai:MODEL@http://HOST:PORT/v1 "
            "(MODEL as the server names it, then the URL of its OpenAI-compatible API)"
        )
    return RemoteSpec(model, url.rstrip("/"))


def api_key_from_env(explicit: str | None) -> str | None:
    """The key given on the command line or in Python, else $NUDGING_API_KEY, else $OPENAI_API_KEY."""
    if explicit:
        return explicit
    for name in KEY_VARIABLES:
        if os.environ.get(name):
            return os.environ[name]
    return None
