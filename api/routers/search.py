"""Searches (SPEC 3.1, 3.2): jobs and operations history, as Temporal visibility queries.

A filter is a tree of ``and``/``or`` lists whose leaves are ``{"<op>": {"<field>": value}}``
with op one of eq, neq, in, gt, lt. Fields map to search attributes through a fixed table, and
every value goes into the query as an escaped literal: user input never becomes query syntax.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body
from pydantic import BaseModel, Field, ValidationError
from temporalio.client import Client, WorkflowExecution

from api.deps import Reader, TemporalDep
from api.errors import ApiError, validation_error
from api.routers.jobs import JOB_TYPE, OPERATION_TYPE, job_of, operation_of
from api.visibility import PageRequest, all_of, list_page, literal
from core.temporal import operation_workflow_id
from models.jobs import JobList, Page
from models.operations import OperationList

router = APIRouter(prefix="/north/v80/search", tags=["search"])

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


class Limit(BaseModel):
    start: int = Field(default=1, ge=1)
    size: int = Field(default=100, ge=1, le=1000)


class SearchBody(BaseModel):
    filter: dict[str, Any] = {}
    limit: Limit = Limit()


def _parse(body: Any) -> SearchBody:
    try:
        return SearchBody.model_validate(body or {})
    except ValidationError as exc:
        raise validation_error(exc) from exc


def translate(node: dict[str, Any], fields: dict[str, str], path: str = "filter") -> str:
    """One filter node as a visibility query clause."""
    if len(node) != 1:
        raise ApiError(400, "A filter node has exactly one key", context=[(path, str(node))])
    ((key, value),) = node.items()
    if key in ("and", "or"):
        if not isinstance(value, list) or not value:
            raise ApiError(400, f"'{key}' takes a non-empty list", context=[(path, key)])
        parts = [translate(child, fields, f"{path}.{key}[{i}]") for i, child in enumerate(value)]
        return "(" + f" {key.upper()} ".join(parts) + ")"
    if key not in _OPERATORS:
        raise ApiError(400, f"Unknown filter operator '{key}'", context=[(path, key)])
    if not isinstance(value, dict) or len(value) != 1:
        raise ApiError(400, f"'{key}' takes one field", context=[(path, key)])
    ((name, operand),) = value.items()
    if name not in fields:
        raise ApiError(400, f"Unknown filter field '{name}'", context=[(f"{path}.{key}", name)])
    attribute = fields[name]
    if key == "in":
        if not isinstance(operand, list) or not operand:
            raise ApiError(400, "'in' takes a non-empty list", context=[(f"{path}.in", name)])
        values = ", ".join(_value(name, attribute, v, path) for v in operand)
        return f"{attribute} IN ({values})"
    return f"{attribute} {_OPERATORS[key]} {_value(name, attribute, operand, path)}"


def _value(name: str, attribute: str, value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise ApiError(400, f"'{name}' takes a string", context=[(path, name)])
    if attribute in ("StartTime", "CloseTime"):
        try:
            datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise ApiError(
                400, f"'{name}' takes an ISO 8601 date", context=[(path, value)]
            ) from exc
    if attribute == "WorkflowId" and name == "operationId":
        value = operation_workflow_id(value)
    return literal(value)


async def _search(
    client: Client, body: Any, workflow_type: str, fields: dict[str, str]
) -> tuple[Sequence[WorkflowExecution], int, int]:
    """The executions of one page of a search, how many pages there are, and the page number."""
    search = _parse(body)
    clause = translate(search.filter, fields) if search.filter else None
    query = all_of(f"WorkflowType = '{workflow_type}'", clause)
    page = PageRequest(search.limit.start, search.limit.size)
    executions, pages = await list_page(client, query, page)
    return executions, pages, page.number


@router.post("/jobs", response_model_exclude_none=True)
async def search_jobs(
    _: Reader, client: TemporalDep, body: Annotated[Any, Body()] = None
) -> JobList:
    executions, pages, number = await _search(client, body, JOB_TYPE, JOB_FIELDS)
    jobs = await asyncio.gather(*(job_of(e) for e in executions))
    return JobList(jobs=list(jobs), page=Page(number=number, of=pages))


@router.post("/entities/operations/history", response_model_exclude_none=True)
async def search_operations(
    _: Reader,
    client: TemporalDep,
    body: Annotated[Any, Body()] = None,
    flattened: bool = False,
    utc: bool = True,
    summary: bool = False,
) -> OperationList:
    # flattened, utc and summary are accepted for OpenGate clients; answers are always nested
    # objects with UTC dates (docs/api.md).
    executions, _pages, number = await _search(client, body, OPERATION_TYPE, OPERATION_FIELDS)
    operations = await asyncio.gather(*(operation_of(e) for e in executions))
    return OperationList(operations=list(operations), page={"number": number})
