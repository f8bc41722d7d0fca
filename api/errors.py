"""The SPEC error body, ``{"errors":[{"code","message","context":[{"name","value"}]}]}``, for every
error the API answers with, including FastAPI's own validation and routing errors."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import IntEnum
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException


class ErrorCode(IntEnum):
    """Error codes of the body; 1015 is OpenGate's, the others are this project's (docs/api.md)."""

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
    503: ErrorCode.UNAVAILABLE,
}


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


def error_response(
    status: int,
    code: int,
    message: str,
    context: Sequence[tuple[str, Any]] = (),
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    error: dict[str, Any] = {"code": int(code), "message": message}
    if context:
        error["context"] = [{"name": name, "value": str(value)} for name, value in context]
    return JSONResponse({"errors": [error]}, status_code=status, headers=dict(headers or {}))


def validation_error(exc: ValidationError | RequestValidationError, prefix: str = "") -> ApiError:
    """A 400 naming each failing field, as a dotted path in the SPEC's camelCase names."""
    context: list[tuple[str, Any]] = []
    messages: list[str] = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")]
        field = ".".join(filter(None, [prefix, *loc])) or "body"
        context.append((field, err.get("msg", "invalid")))
        messages.append(f"{field}: {err.get('msg', 'invalid')}")
    forbidden = any(e.get("type") == "extra_forbidden" for e in exc.errors())
    code = ErrorCode.FORBIDDEN_FIELD if forbidden else ErrorCode.INVALID_REQUEST
    message = "Forbidden field" if forbidden else "Invalid request"
    return ApiError(400, f"{message}: {'; '.join(messages)}", code, context)


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _request_validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_error(exc).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _DEFAULT_CODES.get(exc.status_code, exc.status_code)
        return error_response(exc.status_code, code, str(exc.detail), headers=exc.headers)
