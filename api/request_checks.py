"""Checks every request goes through before FastAPI reads it, so that no input, however hostile,
fails later with a 500 (a RecursionError in a JSON parser or a model, a UnicodeEncodeError when a
value reaches gRPC or SQL):

- a JSON body is valid UTF-8, nested at most ``MAX_JSON_DEPTH`` deep (measured before parsing, so
  100,000 levels cost no recursion), has no NaN/Infinity, and every key and string is valid text;
- every query and path parameter is valid text.

Valid text is Unicode without lone surrogates and without NUL; the 400 names the field.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Coroutine
from itertools import accumulate
from typing import Any

from fastapi import Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from api.errors import ApiError
from models.bounds import text_problem

# Containers of a whole body nested at most this deep; free JSON inside a body (job parameters, a
# parameter schema) has its own, smaller bound in the models.
MAX_JSON_DEPTH = 64

_BRACKETS = bytes.maketrans(b"{[}]", b"\x01\x01\xff\xff")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
# Only an escape can put a surrogate or a NUL in a parsed string: the text itself is strict UTF-8
# (no surrogates), and the parser refuses raw control characters in strings.
_SUSPECT_ESCAPE = re.compile(rb"\\u(?:[dD][89a-fA-F]|0000)")


def nesting_depth(raw: bytes) -> int:
    """How deep the containers of a JSON text nest, measured without parsing (so 100,000 levels
    cost no recursion): strings are cut out (after the escaped backslashes and quotes in them),
    brackets become +1/-1, and the depth is the highest running sum."""
    unescaped = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    outside_strings = b"".join(unescaped.split(b'"')[0::2])
    steps = outside_strings.translate(_BRACKETS, delete=_NOT_BRACKETS)
    return max(accumulate(memoryview(steps).cast("b")), default=0)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is out of range")
    return value


def _check_strings(value: Any) -> None:
    pending: list[tuple[Any, str]] = [(value, "")]
    while pending:
        node, path = pending.pop()
        if isinstance(node, str):
            why = text_problem(node)
            if why:
                field = path or "body"
                raise ApiError(400, f"Invalid text at {field}: {why}", context=[(field, why)])
        elif isinstance(node, dict):
            for key, child in node.items():
                where = f"{path}.{key}" if path else key
                pending += [(key, where), (child, where)]
        elif isinstance(node, list):
            pending += [(child, f"{path}[{i}]") for i, child in enumerate(node)]


def parse_json(raw: bytes) -> Any:
    """A request body as JSON, or a 400 in the SPEC body saying what is wrong with it."""
    if nesting_depth(raw) > MAX_JSON_DEPTH:
        raise ApiError(
            400,
            f"Invalid JSON: nested deeper than {MAX_JSON_DEPTH} levels",
            context=[("body", f"at most {MAX_JSON_DEPTH} levels")],
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(
            400,
            f"Invalid JSON: not UTF-8 ({exc.reason} at byte {exc.start})",
            context=[("body", "not UTF-8")],
        ) from None
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite)
    except json.JSONDecodeError as exc:
        raise ApiError(
            400,
            f"Invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            context=[("body", exc.msg)],
        ) from None
    except RecursionError:  # not reached after the depth check, unless the limit is raised
        raise ApiError(400, "Invalid JSON: nested too deep", context=[("body", "depth")]) from None
    except ValueError as exc:  # a number out of range, NaN or Infinity
        raise ApiError(400, f"Invalid JSON: {exc}", context=[("body", str(exc))]) from None
    if _SUSPECT_ESCAPE.search(raw):
        _check_strings(value)
    return value


def is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def check_parameters(request: Request, query_names: frozenset[str]) -> None:
    """The route's query parameters and path parameters are valid text (a 400 naming the first
    that is not); parameters the route does not take are never read, so not checked."""
    query = [(k, v) for k, v in request.query_params.multi_items() if k in query_names]
    for name, value in [*query, *request.path_params.items()]:
        why = text_problem(value) if isinstance(value, str) else None
        if why:
            raise ApiError(400, f"Invalid parameter {name}: {why}", context=[(name, why)])


def _query_names(dependant: Dependant) -> set[str]:
    names = {p.alias for p in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


class CheckedRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = parse_json(await self.body())
        return self._json


class CheckedRoute(APIRoute):
    """A route whose request is checked first, and whose JSON body is parsed by ``parse_json``
    (FastAPI then validates the parsed body against the handler's model)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        query_names = frozenset(_query_names(self.dependant))
        takes_body = self.body_field is not None

        async def checked(request: Request) -> Response:
            request = CheckedRequest(request.scope, request.receive)
            check_parameters(request, query_names)
            json_body = takes_body and is_json(request.headers.get("content-type"))
            if json_body and await request.body():
                await request.json()  # parsed and checked here, where an ApiError is answered
            return await handler(request)

        return checked
