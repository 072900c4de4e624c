"""The errors a client of `nudging serve` sees: small exception classes, the one table that gives every error type
its HTTP status, and the one function that turns an error into OpenAI's error body.

Anything the table does not name is a server error (500): the client gets a request id, the server's log gets
the traceback under that id, and no exception text leaves the server.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from fastapi.exceptions import RequestValidationError

from nudging.errors import InvalidArgumentError, NudgingError, PromptTooLongError, RemoteError
from nudging.serve.protocol import ErrorBody, ErrorDetail, new_id

log = logging.getLogger("nudging.serve")


class ServeError(Exception):
    """An error the server reports on purpose; its class decides the status (STATUSES)."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.param = param
        self.code = code


class InvalidRequest(ServeError):
    """A request the server cannot read: not JSON, a bad header."""


class Unauthorized(ServeError):
    """A missing or wrong API key."""


class UnknownModel(ServeError):
    """The request names a model this server does not serve."""


class LengthRequired(ServeError):
    """A POST without a Content-Length header."""


class BodyTooLarge(ServeError):
    """A body over the server's size limit."""


class Unprocessable(ServeError):
    """A well-formed request with a value out of range, or a combination this server cannot serve."""


class TooManyRequests(ServeError):
    """Every generation slot and every waiting place is taken."""


class ClientClosed(ServeError):
    """The client went away before its answer was ready (nobody reads the response)."""


@dataclass(frozen=True)
class Status:
    status: int
    kind: str  # OpenAI's error "type"
    code: str | None  # OpenAI's error "code", unless the error brings its own


# The one table: an error gets the row of the first class of its MRO found here.
STATUSES: dict[type[BaseException], Status] = {
    InvalidRequest: Status(400, "invalid_request_error", "invalid_request"),
    PromptTooLongError: Status(400, "invalid_request_error", "context_length_exceeded"),
    InvalidArgumentError: Status(400, "invalid_request_error", "invalid_value"),
    NudgingError: Status(400, "invalid_request_error", "invalid_request"),
    Unauthorized: Status(401, "authentication_error", "invalid_api_key"),
    UnknownModel: Status(404, "invalid_request_error", "model_not_found"),
    LengthRequired: Status(411, "invalid_request_error", "length_required"),
    BodyTooLarge: Status(413, "invalid_request_error", "body_too_large"),
    Unprocessable: Status(422, "invalid_request_error", "invalid_value"),
    TooManyRequests: Status(429, "rate_limit_error", "too_many_requests"),
    ClientClosed: Status(499, "invalid_request_error", "client_closed"),
    RemoteError: Status(502, "server_error", "upstream_error"),  # a model server behind this one failed
    Exception: Status(500, "server_error", "internal_error"),
}

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


def status_of(error: BaseException) -> Status:
    for kind in type(error).__mro__:
        if kind in STATUSES:
            return STATUSES[kind]
    return STATUSES[Exception]


def problem(error: BaseException) -> tuple[int, ErrorBody]:
    """The status and body a client gets for `error`; a server error is logged with its traceback."""
    if isinstance(error, RequestValidationError):
        error = _from_validation(error)
    row = status_of(error)
    if row.status == 500:
        request_id = new_id("req")
        log.error("unexpected error, request id %s", request_id, exc_info=(type(error), error, error.__traceback__))
        detail = ErrorDetail(message=f"internal server error (request id {request_id})", type=row.kind,
                             code=row.code, request_id=request_id)
        return row.status, ErrorBody(error=detail)
    if row.status == 502:
        log.warning("a model server failed: %s", error)
    param, code = (error.param, error.code or row.code) if isinstance(error, ServeError) else (None, row.code)
    return row.status, ErrorBody(error=ErrorDetail(message=str(error), type=row.kind, param=param, code=code))


def _from_validation(error: RequestValidationError) -> ServeError:
    errors: list[dict[str, Any]] = list(error.errors())
    if any(e.get("type") == "json_invalid" for e in errors):
        return InvalidRequest("the request body is not valid JSON", code="invalid_json")
    if any(tuple(e.get("loc", ())) == ("body",) for e in errors):
        return InvalidRequest("the request body must be a JSON object, sent with Content-Type: application/json",
                              code="invalid_body")
    first = errors[0]
    location = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
    message = first.get("msg", "invalid value")
    return Unprocessable(f"{location}: {message}" if location else message, param=location or None)


def documented(*statuses: int, json_route: bool = True) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the error statuses a route sends, each with the error body. A route whose
    own responses are not JSON (the chat page) names the body's schema, which the JSON routes put in the
    document: FastAPI would file a `model` under the route's own media type."""
    def entry(status: int) -> dict[str, Any]:
        if json_route:
            return {"model": ErrorBody, "description": DESCRIPTIONS[status]}
        schema = {"$ref": f"#/components/schemas/{ErrorBody.__name__}"}
        return {"description": DESCRIPTIONS[status], "content": {"application/json": {"schema": schema}}}

    return {status: entry(status) for status in sorted(set(statuses))}
