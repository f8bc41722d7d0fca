"""Searches (SPEC 3.1-3.4): jobs and operations history as Temporal visibility queries (the filter
language: ``api.search_filter``), their summaries as count queries, tasks (Temporal Schedules,
filtered as listed) and operation types (OpenGate's shape, for the vendor's builders)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import InventoryDep, Reader, TemporalDep
from api.job_service import find_operations, job_list
from api.request_checks import CheckedRoute
from api.routers.catalog import search_types
from api.search_filter import (
    JOB_FIELDS,
    OPERATION_FIELDS,
    OptionalSearch,
    OptionalTypeSearch,
    SearchBody,
    TypeSearchBody,
    predicate,
)
from api.task_service import TASK_SEARCH_FIELDS, search_tasks
from api.visibility import Counter, CountGroup
from core.catalog import BUILT_IN
from core.temporal import (
    JOB_STATUS,
    JOB_WORKFLOW,
    OPERATION_NAME,
    OPERATION_RESULT,
    OPERATION_STATUS,
    OPERATION_WORKFLOW,
    all_of,
    of_type,
)
from inventory.operation_types import OperationTypeStore
from inventory.store import Inventory
from models.base import WireModel
from models.enums import JobStatus, OperationStatus, ResultCode
from models.jobs import JobList
from models.operation_types import OpenGateOperationType
from models.operations import OperationList
from models.tasks import TaskList

router = APIRouter(prefix="/north/v80/search", tags=["search"], route_class=CheckedRoute)


class JobsSummary(WireModel):
    """``count``: the matching items; each group: how they spread over its values."""

    count: int
    name: CountGroup
    status: CountGroup


class OperationsSummary(JobsSummary):
    result: CountGroup


class JobsSummaryAnswer(WireModel):
    summary: JobsSummary


class OperationsSummaryAnswer(WireModel):
    summary: OperationsSummary


# The OpenGate clients' query flags: accepted, spelled as Python writes booleans or not.
Flag = Annotated[bool, Query()]


@router.post("/jobs", response_model_exclude_none=True)
async def search_jobs(_: Reader, client: TemporalDep, body: OptionalSearch = None) -> JobList:
    search = body or SearchBody()
    return await job_list(client, search.clause(JOB_FIELDS), search.page)


@router.post("/jobs/summary")
async def summarize_jobs(
    _: Reader, client: TemporalDep, inventory: InventoryDep, body: OptionalSearch = None
) -> JobsSummaryAnswer:
    """Counts of the matching jobs by operation name and status (``limit`` is ignored)."""
    search = body or SearchBody()
    counter = Counter(client, all_of(of_type(JOB_WORKFLOW), search.clause(JOB_FIELDS)))
    total, names, statuses = await asyncio.gather(
        counter.count(),
        counter.group(OPERATION_NAME.name, await _type_names(inventory)),
        counter.group(JOB_STATUS.name, [s.value for s in JobStatus]),
    )
    return JobsSummaryAnswer(summary=JobsSummary(count=total, name=names, status=statuses))


@router.post("/entities/operations/history", response_model_exclude_none=True)
async def search_operations(
    _: Reader,
    client: TemporalDep,
    body: OptionalSearch = None,
    flattened: Flag = False,
    utc: Flag = True,
    summary: Flag = False,
    default_sorted: Annotated[bool, Query(alias="defaultSorted")] = False,
    case_sensitive: Annotated[bool, Query(alias="caseSensitive")] = False,
) -> OperationList:
    # The flags of OpenGate's clients are accepted (others are ignored); answers are always
    # nested objects with UTC dates in visibility's order, and values match as given
    # (docs/api.md). The page is its number alone (SPEC 3.2); past the end, an empty list.
    search = body or SearchBody()
    query = all_of(of_type(OPERATION_WORKFLOW), search.clause(OPERATION_FIELDS))
    operations, _page = await find_operations(client, query, search.page)
    return OperationList(operations=operations, page={"number": search.page.number})


@router.post("/entities/operations/history/summary")
async def summarize_operations(
    _: Reader, client: TemporalDep, inventory: InventoryDep, body: OptionalSearch = None
) -> OperationsSummaryAnswer:
    """Counts of the matching operations by name, status and result (``limit`` is ignored)."""
    search = body or SearchBody()
    query = all_of(of_type(OPERATION_WORKFLOW), search.clause(OPERATION_FIELDS))
    counter = Counter(client, query)
    total, names, statuses, results = await asyncio.gather(
        counter.count(),
        counter.group(OPERATION_NAME.name, await _type_names(inventory)),
        counter.group(OPERATION_STATUS.name, [s.value for s in OperationStatus]),
        counter.group(OPERATION_RESULT.name, [r.value for r in ResultCode]),
    )
    return OperationsSummaryAnswer(
        summary=OperationsSummary(count=total, name=names, status=statuses, result=results)
    )


@router.post("/tasks", response_model_exclude_none=True)
async def search_task_list(_: Reader, client: TemporalDep, body: OptionalSearch = None) -> TaskList:
    """Tasks by ``id``/``taskId``, ``name``, ``description``, ``state``, ``operationName`` and
    the dates ``createdDate``, ``nextExecution``, ``startDate``, ``stopDate``; newest first."""
    search = body or SearchBody()
    return await search_tasks(client, predicate(search.filter, TASK_SEARCH_FIELDS), search.page)


@router.post("/operationTypes", response_model_exclude_none=True)
async def search_operation_types(
    _: Reader, inventory: InventoryDep, body: OptionalTypeSearch = None
) -> list[OpenGateOperationType]:
    """A bare JSON array of the matching built-in and custom types (also served at
    ``POST /operationTypes/search``)."""
    search = body or TypeSearchBody()
    return await search_types(inventory, search.filter, search.page)


async def _type_names(inventory: Inventory) -> list[str]:
    """Every operation name a job may carry: the catalog and the custom types."""
    custom = await OperationTypeStore(inventory).list_types()
    return [*BUILT_IN, *(t.name for t in custom)]
