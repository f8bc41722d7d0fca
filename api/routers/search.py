"""Searches (SPEC 3.1, 3.2): jobs and operations history, as Temporal visibility queries.

A filter is a tree of ``and``/``or`` lists whose leaves are ``{"<op>": {"<field>": value}}``
with op one of eq, neq, in, gt, lt. Fields map to search attributes through a fixed table, and
every value goes into the query as an escaped literal: user input never becomes query syntax.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body
from pydantic import BaseModel, Field
from temporalio.client import Client, WorkflowExecution

from api.deps import Reader, TemporalDep
from api.errors import ApiError
from api.request_checks import CheckedRoute, bad_text
from api.routers.jobs import JOB_TYPE, OPERATION_TYPE, job_of, operation_of
from api.visibility import MAX_PAGE, MAX_PAGE_SIZE, PageRequest, all_of, list_page, literal
from core.temporal import operation_workflow_id
from models.jobs import JobList, Page
from models.operations import OperationList

router = APIRouter(prefix="/north/v80/search", tags=["search"], route_class=CheckedRoute)

_OPERATORS = {"eq": "=", "neq": "!=", "gt": ">", "lt": "<", "in": "IN"}
_DATES = {"createdDate": "StartTime", "startedDate": "StartTime", "finishedDate": "CloseTime"}
JOB_FIELDS = {
    "jobId": "WorkflowId",
    "jobStatus": "JobStatus",
    "operationName": "OperationName",
    "jobUser": "JobUser",
    "taskId": "TaskId",
    **_DATES,
}
OPERATION_FIELDS = {
    "jobId": "JobId",
    "entityId": "EntityId",
    "operationId": "WorkflowId",
    "operationName": "OperationName",
    "operationStatus": "OperationStatus",
    "operationResult": "OperationResult",
    **_DATES,
}
# Bounds of a filter: how deep and/or lists nest, how many nodes and values it has in all (an
# ``in`` list counts each of its values), and how long a value is.
MAX_FILTER_DEPTH = 8
MAX_FILTER_NODES = 100
MAX_VALUE_LENGTH = 256


class Limit(BaseModel):
    start: int = Field(default=1, ge=1, le=MAX_PAGE)
    size: int = Field(default=100, ge=1, le=MAX_PAGE_SIZE)


class SearchBody(BaseModel):
    filter: dict[str, Any] = Field(
        default={},
        description='A tree of `and`/`or` lists whose leaves are `{"<op>": {"<field>": value}}`'
        " with op one of eq, neq, in, gt, lt; at most "
        f"{MAX_FILTER_DEPTH} levels and {MAX_FILTER_NODES} nodes and values. Dates (createdDate, "
        "startedDate, finishedDate) take any ISO 8601 date or date-time; without an offset, UTC.",
        examples=[{"and": [{"eq": {"jobStatus": "IN_PROGRESS"}}]}],
    )
    limit: Limit = Limit()


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
        if not isinstance(node, dict) or len(node) != 1:
            raise ApiError(400, "A filter node has exactly one key", context=[(path, str(node))])
        if depth > MAX_FILTER_DEPTH:
            raise ApiError(
                400,
                f"A filter nests at most {MAX_FILTER_DEPTH} levels",
                context=[(path, f"deeper than {MAX_FILTER_DEPTH}")],
            )
        self.count(1, path)
        ((key, value),) = node.items()
        if key in ("and", "or"):
            if not isinstance(value, list) or not value:
                raise ApiError(400, f"'{key}' takes a non-empty list", context=[(path, key)])
            parts = [
                self.node(child, f"{path}.{key}[{i}]", depth + 1) for i, child in enumerate(value)
            ]
            return "(" + f" {key.upper()} ".join(parts) + ")"
        if key not in _OPERATORS:
            raise ApiError(400, f"Unknown filter operator '{key}'", context=[(path, key)])
        if not isinstance(value, dict) or len(value) != 1:
            raise ApiError(400, f"'{key}' takes one field", context=[(path, key)])
        ((name, operand),) = value.items()
        if name not in self.fields:
            raise ApiError(400, f"Unknown filter field '{name}'", context=[(f"{path}.{key}", name)])
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
    if not isinstance(value, str):
        raise ApiError(400, f"'{name}' takes a string", context=[(path, name)])
    why = bad_text(value)
    if why:
        raise ApiError(400, f"'{name}' {why}", context=[(path, why)])
    if len(value) > MAX_VALUE_LENGTH:
        raise ApiError(
            400,
            f"'{name}' takes at most {MAX_VALUE_LENGTH} characters",
            context=[(path, f"{len(value)} characters")],
        )
    if attribute in ("StartTime", "CloseTime"):
        try:
            value = rfc3339(value)
        except (ValueError, OverflowError) as exc:
            raise ApiError(
                400,
                f"'{name}' takes an ISO 8601 date or date-time, such as 2026-01-01T00:00:00Z",
                context=[(path, value)],
            ) from exc
    if attribute == "WorkflowId" and name == "operationId":
        value = operation_workflow_id(value)
    return literal(value)


async def _search(
    client: Client, body: SearchBody | None, workflow_type: str, fields: dict[str, str]
) -> tuple[Sequence[WorkflowExecution], int, int]:
    """The executions of one page of a search, how many pages there are, and the page number."""
    search = body or SearchBody()
    clause = translate(search.filter, fields) if search.filter else None
    query = all_of(f"WorkflowType = '{workflow_type}'", clause)
    page = PageRequest(search.limit.start, search.limit.size)
    executions, pages = await list_page(client, query, page)
    return executions, pages, page.number


# A search without a body lists everything, first page.
OptionalSearch = Annotated[SearchBody | None, Body()]


@router.post("/jobs", response_model_exclude_none=True)
async def search_jobs(_: Reader, client: TemporalDep, body: OptionalSearch = None) -> JobList:
    executions, pages, number = await _search(client, body, JOB_TYPE, JOB_FIELDS)
    jobs = await asyncio.gather(*(job_of(e) for e in executions))
    return JobList(jobs=list(jobs), page=Page(number=number, of=pages))


@router.post("/entities/operations/history", response_model_exclude_none=True)
async def search_operations(
    _: Reader,
    client: TemporalDep,
    body: OptionalSearch = None,
    flattened: bool = False,
    utc: bool = True,
    summary: bool = False,
) -> OperationList:
    # flattened, utc and summary are accepted for OpenGate clients; answers are always nested
    # objects with UTC dates (docs/api.md).
    executions, _pages, number = await _search(client, body, OPERATION_TYPE, OPERATION_FIELDS)
    operations = await asyncio.gather(*(operation_of(e) for e in executions))
    return OperationList(operations=list(operations), page={"number": number})
