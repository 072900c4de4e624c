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
from starlette.exceptions import HTTPException

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


class UnknownRoute(ServeError):
    """A path this server has no route for."""


class MethodNotAllowed(ServeError):
    """A route asked with a method it does not take."""


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
    UnknownRoute: Status(404, "invalid_request_error", "unknown_url"),
    MethodNotAllowed: Status(405, "invalid_request_error", "method_not_allowed"),
    LengthRequired: Status(411, "invalid_request_error", "length_required"),
    BodyTooLarge: Status(413, "invalid_request_error", "body_too_large"),
    Unprocessable: Status(422, "invalid_request_error", "invalid_value"),
    TooManyRequests: Status(429, "rate_limit_error", "too_many_requests"),
    ClientClosed: Status(499, "invalid_request_error", "client_closed"),
    RemoteError: Status(502, "server_error", "upstream_error"),  # a model server behind this one failed
    Exception: Status(500, "server_error", "internal_error"),
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
    elif isinstance(error, HTTPException):
        error = _from_http(error)
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


def _from_http(error: HTTPException) -> Exception:
    """The errors FastAPI and Starlette raise themselves: a body that cannot be decoded, no route, a wrong method
    (any other is unexpected, a server error)."""
    if error.status_code == 400:
        return InvalidRequest("the request body could not be read: send JSON encoded as UTF-8", code="invalid_json")
    if error.status_code == 404:
        return UnknownRoute("no such route; this server's routes are listed in /openapi.json")
    if error.status_code == 405:
        allowed = (error.headers or {}).get("Allow", "another method")
        return MethodNotAllowed(f"this route takes {allowed} only")
    return error


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
