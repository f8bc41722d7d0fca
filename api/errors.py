"""The SPEC error body, ``{"errors":[{"code","message","context":[{"name","value"}]}]}``, for every
error the API answers with: ours, FastAPI's validation and routing errors, and an unexpected
exception (a 500 carrying a correlation id that is also in the log, with the traceback)."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.temporal import QueryValueError

log = logging.getLogger(__name__)

CORRELATION_HEADER = "X-Correlation-Id"


class ErrorCode(IntEnum):
    """Error codes of the body; 1015 is OpenGate's, the others are this project's (docs/api.md)."""

    INTERNAL = 1000
    INVALID_REQUEST = 1001
    FORBIDDEN_FIELD = 1002
    UNKNOWN_OPERATION_TYPE = 1003
    NOT_FOUND = 1004
    UNAUTHORIZED = 1005
    FORBIDDEN = 1006
    CONFLICT = 1009
    BODY_TOO_LARGE = 1013
    JOB_STATE_TRANSITION = 1015
    UNAVAILABLE = 1020


_DEFAULT_CODES = {
    400: ErrorCode.INVALID_REQUEST,
    401: ErrorCode.UNAUTHORIZED,
    403: ErrorCode.FORBIDDEN,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.INVALID_REQUEST,
    409: ErrorCode.CONFLICT,
    413: ErrorCode.BODY_TOO_LARGE,
    500: ErrorCode.INTERNAL,
    503: ErrorCode.UNAVAILABLE,
}


# The body as models, for the OpenAPI document (every error answer is declared with it).
class ErrorContext(BaseModel):
    name: str
    value: str


class ErrorDetail(BaseModel):
    code: int
    message: str
    context: list[ErrorContext] = Field(default_factory=list)


class ErrorBody(BaseModel):
    errors: list[ErrorDetail] = Field(min_length=1)


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        code: int | None = None,
        context: Sequence[tuple[str, Any]] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code if code is not None else _DEFAULT_CODES.get(status, status)
        self.context = context
        self.headers = headers

    def response(self) -> JSONResponse:
        return error_response(self.status, self.code, self.message, self.context, self.headers)


def _text(value: Any) -> str:
    # An error may echo what the client sent: a lone surrogate in it would make the answer itself
    # fail to encode (a 500 instead of the 4xx), so such characters are shown escaped.
    return str(value).encode("utf-8", "backslashreplace").decode("utf-8")


@dataclass(frozen=True)
class Ids:
    """The ids of one kind of resource: the 404 naming one, and a check of an id's shape, so that
    an id no such resource could have is not found without asking a store."""

    kind: str  # as the message names it: "Job"
    field: str  # as the error's context names it: "jobId"
    shape: re.Pattern[str]

    def not_found(self, value: str) -> ApiError:
        return ApiError(404, f"{self.kind} {value} not found", context=[(self.field, value)])

    def known(self, value: str) -> str:
        """The id, if such a resource could have it; else a 404."""
        if not self.shape.match(value):
            raise self.not_found(value)
        return value


def error_response(
    status: int,
    code: int,
    message: str,
    context: Sequence[tuple[str, Any]] = (),
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    error: dict[str, Any] = {"code": int(code), "message": _text(message)}
    if context:
        error["context"] = [{"name": _text(name), "value": _text(value)} for name, value in context]
    return JSONResponse({"errors": [error]}, status_code=status, headers=dict(headers or {}))


# A 10,000-device request can fail on every device: the body names the first failures only.
MAX_CONTEXT_ERRORS = 100
MAX_MESSAGE_ERRORS = 5


def validation_error(exc: ValidationError | RequestValidationError, prefix: str = "") -> ApiError:
    """A 400 naming each failing field (the first ``MAX_CONTEXT_ERRORS``), as a dotted path in
    the SPEC's camelCase names."""
    failures = exc.errors()
    context: list[tuple[str, Any]] = []
    for err in failures[:MAX_CONTEXT_ERRORS]:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")]
        field = ".".join(filter(None, [prefix, *loc])) or "body"
        context.append((field, err.get("msg", "invalid")))
    details = "; ".join(f"{field}: {why}" for field, why in context[:MAX_MESSAGE_ERRORS])
    if len(failures) > MAX_MESSAGE_ERRORS:
        details += f" (and {len(failures) - MAX_MESSAGE_ERRORS} more)"
    forbidden = any(e.get("type") == "extra_forbidden" for e in failures)
    code = ErrorCode.FORBIDDEN_FIELD if forbidden else ErrorCode.INVALID_REQUEST
    message = "Forbidden field" if forbidden else "Invalid request"
    return ApiError(400, f"{message}: {details}", code, context)


def _routing_message(request: Request, exc: StarletteHTTPException) -> str:
    if exc.status_code == 404 and exc.detail == "Not Found":
        return f"No route {request.method} {request.url.path}"
    if exc.status_code == 405:
        return f"Method {request.method} is not allowed on {request.url.path}"
    return str(exc.detail)


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _request_validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_error(exc).response()

    @app.exception_handler(QueryValueError)
    async def _query_value(_: Request, exc: QueryValueError) -> JSONResponse:
        # Every value of a visibility query comes from the request: one it cannot take is a 400.
        return ApiError(400, str(exc)).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _DEFAULT_CODES.get(exc.status_code, exc.status_code)
        return error_response(
            exc.status_code, code, _routing_message(request, exc), headers=exc.headers
        )


class WatchedSend:
    """Passes a response's messages on and notes when it has started: past that, an error can no
    longer be answered with a body."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)


class ServerErrors:
    """Outermost middleware: an exception no handler took becomes a 500 in the SPEC body with a
    correlation id, logged with its traceback under the same id, so a client's report finds it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        watched = WatchedSend(send)
        try:
            await self.app(scope, receive, watched)
        except Exception:
            correlation = uuid.uuid4().hex
            log.exception(
                "Unexpected error (correlation id %s) on %s %s",
                correlation,
                scope.get("method"),
                scope.get("path"),
            )
            if watched.started:  # too late for an error body: the server closes the connection
                raise
            response = error_response(
                500,
                ErrorCode.INTERNAL,
                f"Internal error; quote correlation id {correlation}",
                [("correlationId", correlation)],
                {CORRELATION_HEADER: correlation},
            )
            await response(scope, receive, send)


MEANINGS = {
    400: "Invalid request: the SPEC error body names each failing field in `context`",
    401: "Missing or unknown X-ApiKey",
    403: "The key's role or device may not do this",
    404: "Not found",
    409: "Conflict with the current state",
    413: "Body larger than the configured limit (FLEET_MAX_BODY_BYTES)",
    500: "Unexpected error: the message and the X-Correlation-Id header carry the id in the log",
    503: "Not ready",
}


def declared(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """Error answers of a route for the OpenAPI document, each with the SPEC error body."""
    return {s: {"model": ErrorBody, "description": MEANINGS[s]} for s in statuses}
