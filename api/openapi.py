"""The OpenAPI document as the API really behaves: every error answer declared with the SPEC
error body, the X-ApiKey security scheme, and no 422 (FastAPI's default, never sent here: a
validation error is a 400)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from api.errors import MEANINGS, ErrorBody

DESCRIPTION = """\
Every error answer has the body
`{{"errors":[{{"code":1001,"message":"...","context":[{{"name":"<field>","value":"..."}}]}}]}}`:
400 for invalid input (the field is named in `context`; code 1002 for a field that is not
allowed), 401 without a known `X-ApiKey`, 403 for a role or device that may not, 404, 409 for a
state conflict, 413 for a body over {max_body_bytes} bytes (counted as it arrives, chunked or not),
500 with a correlation id (also in the `X-Correlation-Id` header and in the server's log).
A JSON body must be UTF-8, nested at most 64 levels deep, and its text (like every query and path
parameter) free of lone surrogates and NUL characters.
"""

_ERROR_REF = "#/components/schemas/ErrorBody"
_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


def _statuses(operation: dict[str, Any]) -> set[int]:
    """The errors any route answers, from what it takes: a key, parameters, a body."""
    statuses = {500}
    parameters = operation.get("parameters", [])
    if operation.get("security"):
        statuses |= {401, 403}
    if parameters or "requestBody" in operation:
        statuses.add(400)
    if "requestBody" in operation:
        statuses.add(413)
    if any(p.get("in") == "path" for p in parameters):
        statuses.add(404)
    return statuses


def honest(document: dict[str, Any]) -> dict[str, Any]:
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    error_schema = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(error_schema.pop("$defs", {}))
    schemas.setdefault("ErrorBody", error_schema)
    for path_item in document.get("paths", {}).values():
        for method, operation in path_item.items():
            if method not in _METHODS:
                continue
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            for status in sorted(_statuses(operation)):
                responses.setdefault(
                    str(status),
                    {
                        "description": MEANINGS[status],
                        "content": {"application/json": {"schema": {"$ref": _ERROR_REF}}},
                    },
                )
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    return document


def install(app: FastAPI) -> None:
    def document() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = honest(
                get_openapi(
                    title=app.title,
                    version=app.version,
                    summary=app.summary,
                    description=app.description,
                    routes=app.routes,
                    tags=app.openapi_tags,
                    servers=app.servers,
                )
            )
        return app.openapi_schema

    app.openapi = document  # type: ignore[method-assign]
