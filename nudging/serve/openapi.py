"""The server's OpenAPI document: the responses each route declares (its answer, streamed or not, and every error
status it can send, with OpenAI's error body), the chunk schemas the streamed answers refer to, and the server's
own limit on max_tokens."""

from __future__ import annotations

from typing import Any, Callable

from fastapi import FastAPI
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from nudging.config import ServerSettings
from nudging.serve.protocol import (
    ChatCompletionChunk, ChatCompletionRequest, CompletionChunk, CompletionRequest, ErrorBody,
)

Responses = dict[int | str, dict[str, Any]]
SCHEMAS = "#/components/schemas/"
BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")

# The statuses each route can send besides 200 (the middleware's 400/401/413 on every guarded route).
GUARDED = (400, 401, 413, 500)
POSTED = GUARDED + (411, 422)
GENERATES = POSTED + (404, 429, 502)

DESCRIPTIONS = {
    400: "Invalid request: not JSON, a bad header, a prompt too long for the context window, or a value the "
         "engine refuses",
    401: "Missing or wrong API key",
    404: "Unknown model",
    411: "A POST without Content-Length",
    413: "Request body too large",
    422: "A value out of range, or parameters this server cannot serve together",
    429: "Too many requests: every generation slot and waiting place is taken; retry later",
    500: "Internal server error: the body carries a request id to look up in the server's log",
    502: "A model server behind this one failed",
}


def documented(*statuses: int, json_route: bool = True) -> Responses:
    """OpenAPI `responses` entries for the error statuses a route sends, each with the error body. A route whose
    own responses are not JSON (the chat page) names the body's schema, which the JSON routes put in the
    document: FastAPI would file a `model` under the route's own media type."""
    def entry(status: int) -> dict[str, Any]:
        if json_route:
            return {"model": ErrorBody, "description": DESCRIPTIONS[status]}
        schema = {"$ref": SCHEMAS + ErrorBody.__name__}
        return {"description": DESCRIPTIONS[status], "content": {"application/json": {"schema": schema}}}

    return {status: entry(status) for status in sorted(set(statuses))}


def generation(answer: type[BaseModel], chunk: type[BaseModel]) -> Responses:
    """A generating route's responses: its answer as JSON, or with stream: true as server-sent events (each
    event's data one chunk as JSON, or the error body for an error after the stream began; the last [DONE])."""
    either = {"anyOf": [{"$ref": SCHEMAS + chunk.__name__}, {"$ref": SCHEMAS + ErrorBody.__name__}]}
    data_json = {"type": "string", "contentMediaType": "application/json", "contentSchema": either}
    event = {"type": "object", "required": ["data"],
             "properties": {"data": {"anyOf": [{"const": "[DONE]"}, data_json]}}}
    ok = {"model": answer, "content": {"text/event-stream": {"schema": event}},
          "description": "The answer: JSON, or server-sent events with stream: true"}
    return {200: ok, **documented(*GENERATES)}


def completed(app: FastAPI, settings: ServerSettings) -> Callable[[], dict[str, Any]]:
    """app.openapi, with what FastAPI cannot see added: the schemas of the streamed chunks (no route returns them
    as a model), number ranges exactly as the request models give them, and this server's limit on max_tokens."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        document = build()  # FastAPI keeps the document it builds and returns it again
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        if CompletionChunk.__name__ in schemas:
            return document
        _, chunks = models_json_schema([(CompletionChunk, "serialization"), (ChatCompletionChunk, "serialization")],
                                       ref_template=SCHEMAS + "{model}")
        for name, schema in chunks["$defs"].items():
            schemas.setdefault(name, schema)
        for request in (CompletionRequest, ChatCompletionRequest):
            exact = request.model_json_schema()["properties"]
            for name, field in schemas[request.__name__]["properties"].items():
                # FastAPI's document model reads bounds as floats: 2**63 - 1 would round up to 2**63
                for branch, given in zip(field.get("anyOf", []), exact[name].get("anyOf", [])):
                    branch.update({key: given[key] for key in BOUNDS if key in given})
            for name in ("max_tokens", "max_completion_tokens"):
                for branch in schemas[request.__name__]["properties"].get(name, {}).get("anyOf", []):
                    if branch.get("type") == "integer":
                        branch["maximum"] = settings.max_tokens_limit
        return document

    return openapi
