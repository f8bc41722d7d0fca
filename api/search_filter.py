"""The search filter language (SPEC 3.1, 3.2) as Temporal visibility query clauses.

A filter is a tree of ``and``/``or`` lists whose leaves are ``{"<op>": {"<field>": value}}``
with op one of eq, neq, in, gt, lt. Fields map to search attributes through a fixed table, and
every value goes into the query as an escaped literal: user input never becomes query syntax.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Body
from pydantic import BaseModel, Field

from api.errors import ApiError
from api.pages import DEFAULT_PAGE_SIZE, MAX_PAGE, MAX_PAGE_SIZE, PageRequest
from core.patterns import PatternError, check_pattern, pattern_search
from core.temporal import (
    ENTITY_ID,
    JOB_ID,
    JOB_STATUS,
    JOB_USER,
    OPERATION_NAME,
    OPERATION_RESULT,
    OPERATION_STATUS,
    TASK_ID,
    literal,
    operation_workflow_id,
)
from models.bounds import text_problem

_OPERATORS = {"eq": "=", "neq": "!=", "gt": ">", "lt": "<", "in": "IN"}
_DATES = {"createdDate": "StartTime", "startedDate": "StartTime", "finishedDate": "CloseTime"}
JOB_FIELDS = {
    "jobId": "WorkflowId",
    "jobStatus": JOB_STATUS.name,
    "operationName": OPERATION_NAME.name,
    "jobUser": JOB_USER.name,
    "taskId": TASK_ID.name,
    **_DATES,
}
OPERATION_FIELDS = {
    "jobId": JOB_ID.name,
    "entityId": ENTITY_ID.name,
    "operationId": "WorkflowId",
    "operationName": OPERATION_NAME.name,
    "operationStatus": OPERATION_STATUS.name,
    "operationResult": OPERATION_RESULT.name,
    **_DATES,
}
# Bounds of a filter: how deep and/or lists nest, how many nodes and values it has in all (an
# ``in`` list counts each of its values), and how long a value is.
MAX_FILTER_DEPTH = 8
MAX_FILTER_NODES = 100
MAX_VALUE_LENGTH = 256


def rfc3339(value: str) -> str:
    """An ISO 8601 date or date-time (``2026-01-01``, ``20260101``, ``2026-W01-1``, any offset;
    without one, UTC) as the RFC 3339 UTC form Temporal's visibility queries take."""
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    utc = parsed.astimezone(UTC)  # OverflowError next to year 1 or 9999
    fraction = f".{utc.microsecond:06d}".rstrip("0") if utc.microsecond else ""
    # Not strftime: its %Y does not pad years before 1000 on every platform.
    return (
        f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}"
        f"T{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}{fraction}Z"
    )


def _children(key: str, value: Any, path: str) -> list[tuple[Any, str]]:
    """The nodes of an ``and``/``or`` list, each with its path."""
    if not isinstance(value, list) or not value:
        raise ApiError(400, f"'{key}' takes a non-empty list", context=[(path, key)])
    return [(child, f"{path}.{key}[{i}]") for i, child in enumerate(value)]


def _field(key: str, value: Any, path: str, fields: Mapping[str, str]) -> tuple[str, Any]:
    """The one field of an operator node and its operand."""
    if not isinstance(value, dict) or len(value) != 1:
        raise ApiError(400, f"'{key}' takes one field", context=[(path, key)])
    ((name, operand),) = value.items()
    if name not in fields:
        raise ApiError(400, f"Unknown filter field '{name}'", context=[(f"{path}.{key}", name)])
    return name, operand


def _date(name: str, value: str, path: str) -> str:
    """A filter's date value in RFC 3339 UTC, or a 400 naming the node."""
    try:
        return rfc3339(value)
    except (ValueError, OverflowError) as exc:
        raise ApiError(
            400,
            f"'{name}' takes an ISO 8601 date or date-time, such as 2026-01-01T00:00:00Z",
            context=[(path, value)],
        ) from exc


@dataclass
class _Translation:
    fields: dict[str, str]
    nodes: int = 0

    def count(self, n: int, path: str) -> None:
        self.nodes += n
        if self.nodes > MAX_FILTER_NODES:
            raise ApiError(
                400,
                f"A filter has at most {MAX_FILTER_NODES} nodes and values",
                context=[(path, f"more than {MAX_FILTER_NODES}")],
            )

    def node(self, node: Any, path: str, depth: int) -> str:
        """One filter node as a visibility query clause."""
        key, value = _checked_node(node, path, depth, self)
        if key in ("and", "or"):
            parts = [self.node(c, at, depth + 1) for c, at in _children(key, value, path)]
            return "(" + f" {key.upper()} ".join(parts) + ")"
        if key not in _OPERATORS:
            raise ApiError(400, f"Unknown filter operator '{key}'", context=[(path, key)])
        name, operand = _field(key, value, path, self.fields)
        attribute = self.fields[name]
        where = f"{path}.{key}.{name}"
        if key == "in":
            if not isinstance(operand, list) or not operand:
                raise ApiError(400, "'in' takes a non-empty list", context=[(where, name)])
            self.count(len(operand), where)
            values = ", ".join(
                _value(name, attribute, v, f"{where}[{i}]") for i, v in enumerate(operand)
            )
            return f"{attribute} IN ({values})"
        return f"{attribute} {_OPERATORS[key]} {_value(name, attribute, operand, where)}"


def translate(node: dict[str, Any], fields: dict[str, str], path: str = "filter") -> str:
    """A filter as a visibility query clause, or a 400 naming the failing node."""
    return _Translation(fields).node(node, path, 1)


def _value(name: str, attribute: str, value: Any, path: str) -> str:
    value = _checked_text(name, value, path)
    if attribute in ("StartTime", "CloseTime"):
        value = _date(name, value, path)
    if attribute == "WorkflowId" and name == "operationId":
        value = operation_workflow_id(value)
    return literal(value)


# --- the same language over records held in memory (tasks, operation types) ---
# Tasks (Temporal Schedules) and operation types are not in workflow visibility: their listing is
# filtered here. The operators are the vendor clients' whole set (eq, neq, like, gt, lt, gte, lte,
# in); ``like`` is a regular expression searched anywhere in the value (ECMA 262 syntax on RE2,
# linear time, as OpenGate's ``like``).

Record = dict[str, str | datetime | None]
Predicate = Callable[[Record], bool]
DATE = "date"
TEXT = "text"
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "neq": operator.ne,
    "gt": operator.gt,
    "lt": operator.lt,
    "gte": operator.ge,
    "lte": operator.le,
}


@dataclass
class _Predicates:
    """Compiles a filter into a predicate; every check (shape, bounds, values) is made here,
    before any record is seen, so a bad filter is a 400 even over an empty list."""

    fields: dict[str, str]  # field -> DATE or TEXT
    ignore_case: bool
    counter: _Translation = field(default_factory=lambda: _Translation({}))

    def node(self, node: Any, path: str, depth: int) -> Predicate:
        key, value = _checked_node(node, path, depth, self.counter)
        if key in ("and", "or"):
            parts = [self.node(c, at, depth + 1) for c, at in _children(key, value, path)]
            combine = all if key == "and" else any
            return lambda record: combine(part(record) for part in parts)
        if key not in (*_COMPARE, "in", "like"):
            raise ApiError(400, f"Unknown filter operator '{key}'", context=[(path, key)])
        name, operand = _field(key, value, path, self.fields)
        return self.leaf(key, name, operand, f"{path}.{key}.{name}")

    def leaf(self, key: str, name: str, operand: Any, where: str) -> Predicate:
        if key == "in":
            if not isinstance(operand, list) or not operand:
                raise ApiError(400, "'in' takes a non-empty list", context=[(where, name)])
            self.counter.count(len(operand), where)
            wanted = {self.operand(name, v, f"{where}[{i}]") for i, v in enumerate(operand)}
            return lambda record: self.value(record, name) in wanted
        if key == "like":
            if self.fields[name] == DATE:
                raise ApiError(
                    400, f"'like' does not take the date '{name}'", context=[(where, name)]
                )
            regex = self.regex(name, operand, where)
            return lambda record: _search(regex, record.get(name))
        expected = self.operand(name, operand, where)
        compare = _COMPARE[key]

        def holds(record: Record) -> bool:
            found = self.value(record, name)
            return found is not None and compare(found, expected)

        return holds

    def operand(self, name: str, value: Any, where: str) -> str | datetime:
        text = _checked_text(name, value, where)
        if self.fields[name] == DATE:
            return datetime.fromisoformat(_date(name, text, where))
        return text.casefold() if self.ignore_case else text

    def value(self, record: Record, name: str) -> str | datetime | None:
        found = record.get(name)
        if isinstance(found, str) and self.ignore_case:
            return found.casefold()
        return found

    def regex(self, name: str, value: Any, where: str) -> str:
        pattern = _checked_text(name, value, where)
        pattern = f"(?i){pattern}" if self.ignore_case else pattern
        try:
            check_pattern(pattern)
        except PatternError as exc:
            raise ApiError(400, f"'{name}': {exc}", context=[(where, pattern)]) from exc
        return pattern


def _search(pattern: str, value: str | datetime | None) -> bool:
    return isinstance(value, str) and pattern_search(pattern, value)


def _checked_node(node: Any, path: str, depth: int, counter: _Translation) -> tuple[str, Any]:
    if not isinstance(node, dict) or len(node) != 1:
        raise ApiError(400, "A filter node has exactly one key", context=[(path, str(node))])
    if depth > MAX_FILTER_DEPTH:
        raise ApiError(
            400,
            f"A filter nests at most {MAX_FILTER_DEPTH} levels",
            context=[(path, f"deeper than {MAX_FILTER_DEPTH}")],
        )
    counter.count(1, path)
    ((key, value),) = node.items()
    return key, value


def _checked_text(name: str, value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise ApiError(400, f"'{name}' takes a string", context=[(path, name)])
    why = text_problem(value)
    if why:
        raise ApiError(400, f"'{name}' {why}", context=[(path, why)])
    if len(value) > MAX_VALUE_LENGTH:
        raise ApiError(
            400,
            f"'{name}' takes at most {MAX_VALUE_LENGTH} characters",
            context=[(path, f"{len(value)} characters")],
        )
    return value


def predicate(
    node: dict[str, Any], fields: dict[str, str], *, ignore_case: bool = False
) -> Predicate:
    """A filter as a predicate over records (``fields``: each field's kind, DATE or TEXT); an
    empty filter takes everything. A 400 naming the failing node, before any record is read."""
    if not node:
        return lambda record: True
    return _Predicates(fields, ignore_case).node(node, "filter", 1)


# --- the bodies of the searches ---


class Limit(BaseModel):
    start: int = Field(default=1, ge=1, le=MAX_PAGE)
    size: int = Field(default=DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE)


_FILTER_DESCRIPTION = (
    'A tree of `and`/`or` lists whose leaves are `{"<op>": {"<field>": value}}`; at most '
    f"{MAX_FILTER_DEPTH} levels and {MAX_FILTER_NODES} nodes and values. Dates take any ISO 8601 "
    "date or date-time; without an offset, UTC."
)


class SearchBody(BaseModel):
    """The body of every search; fields the vendor clients add (``sort``) are ignored."""

    filter: dict[str, Any] = Field(
        default={},
        description=f"{_FILTER_DESCRIPTION} Operators eq, neq, in, gt, lt (jobs, operations); "
        "also like, gte, lte (tasks, operation types).",
        examples=[{"and": [{"eq": {"jobStatus": "IN_PROGRESS"}}]}],
    )
    limit: Limit = Limit()

    def clause(self, fields: dict[str, str]) -> str | None:
        """The filter as a query clause over ``fields`` (none for an empty filter)."""
        return translate(self.filter, fields) if self.filter else None

    @property
    def page(self) -> PageRequest:
        return PageRequest(self.limit.start, self.limit.size)


class TypeSearchBody(BaseModel):
    """The body of the operation-type search: without a ``limit``, every match."""

    filter: dict[str, Any] = Field(
        default={},
        description=f"{_FILTER_DESCRIPTION} Fields name, title, description (any case); "
        "operators eq, neq, in, like (a regular expression), gt, lt, gte, lte.",
        examples=[{"eq": {"name": "REBOOT_EQUIPMENT"}}],
    )
    limit: Limit | None = None

    @property
    def page(self) -> PageRequest | None:
        return None if self.limit is None else PageRequest(self.limit.start, self.limit.size)


# A search without a body lists everything, first page.
OptionalSearch = Annotated[SearchBody | None, Body()]
OptionalTypeSearch = Annotated[TypeSearchBody | None, Body()]
