"""Jobs (SPEC 3.1): create, read, list, and the operations of a job."""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response
from pydantic import ValidationError
from temporalio.client import Client, WorkflowExecution, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from api.deps import InventoryDep, Reader, SettingsDep, TemporalDep, Writer
from api.errors import ApiError, ErrorCode
from api.job_service import accept_request, initial_status, job_input, start_job
from api.request_checks import CheckedRoute
from api.visibility import MAX_PAGE, MAX_PAGE_SIZE, PageRequest, all_of, equals, list_page
from core.temporal import (
    JOB_CHANGE,
    JOB_ID,
    JOB_STATUS,
    JOB_USER,
    OPERATION_NAME,
    TASK_ID,
    job_workflow_id,
)
from models.bounds import STORED
from models.enums import JobStatus
from models.jobs import (
    Job,
    JobEnvelope,
    JobList,
    JobPatchEnvelope,
    JobReport,
    JobRequest,
    Page,
)
from models.messages import (
    JOB_REPORT_MEMO,
    JOB_REQUEST_MEMO,
    JOB_TASK_MEMO,
    JobChange,
    JobState,
)
from models.operations import Operation, OperationList
from workflows.job import TRANSITION_ERROR
from workflows.operation import OPERATION_MEMO

router = APIRouter(prefix="/north/v80/operation/jobs", tags=["jobs"], route_class=CheckedRoute)

JOB_TYPE = "JobWorkflow"
OPERATION_TYPE = "OperationWorkflow"


@router.post("", status_code=201, response_model_exclude_none=True)
async def create_job(
    key: Writer,
    client: TemporalDep,
    settings: SettingsDep,
    inventory: InventoryDep,
    response: Response,
    body: JobEnvelope,
) -> Job:
    request = await accept_request(body.job.request, key, inventory)
    input = job_input(request, settings, job_id=str(uuid.uuid4()), created_at=datetime.now(UTC))
    await start_job(client, settings, input)
    response.headers["Location"] = f"/north/v80/operation/jobs/{input.job_id}"
    return input.view(JobState(status=initial_status(input)))


async def read_job(client: Client, job_id: str) -> Job:
    """The job as its workflow last published it (describe reads the workflow's current memo)."""
    handle = client.get_workflow_handle(job_workflow_id(job_id))
    try:
        description = await handle.describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise ApiError(404, f"Job {job_id} not found", context=[("jobId", job_id)]) from exc
        raise
    if description.workflow_type != JOB_TYPE:
        raise ApiError(404, f"Job {job_id} not found", context=[("jobId", job_id)])
    return await job_of(description)


async def job_of(execution: WorkflowExecution) -> Job:
    memo = await execution.memo()
    return Job(
        id=execution.id,
        task_id=memo.get(JOB_TASK_MEMO),
        # Read as stored: a request accepted under older bounds is still shown (models/bounds.py).
        request=JobRequest.model_validate(memo[JOB_REQUEST_MEMO], context=STORED),
        report=JobReport.model_validate(memo[JOB_REPORT_MEMO], context=STORED),
    )


# Job ids are UUIDs, or ``<task id>-<time>`` for jobs a task's schedule started.
MAX_JOB_ID = 200
_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$")
# A job id in a path: longer is a 400, another shape is no job of ours (404).
JobId = Annotated[str, Path(max_length=MAX_JOB_ID)]
# Query values that become visibility query literals.
MAX_FILTER_VALUE = 256


def _job_id(job_id: str) -> str:
    if not _JOB_ID.match(job_id):
        raise ApiError(404, f"Job {job_id} not found", context=[("jobId", job_id)])
    return job_id


@router.get("/{job_id}", response_model_exclude_none=True)
async def get_job(job_id: JobId, _: Reader, client: TemporalDep) -> Job:
    return await read_job(client, _job_id(job_id))


@router.get("/{job_id}/operations", response_model_exclude_none=True)
async def list_job_operations(
    job_id: JobId,
    _: Reader,
    client: TemporalDep,
    start: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1,
    size: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 100,
) -> OperationList:
    job_id = _job_id(job_id)
    await read_job(client, job_id)  # 404 for an unknown job
    query = all_of(f"WorkflowType = '{OPERATION_TYPE}'", equals(JOB_ID.name, job_id))
    executions, pages = await list_page(client, query, PageRequest(start, size))
    operations = await asyncio.gather(*(operation_of(e) for e in executions))
    return OperationList(operations=list(operations), page={"number": start, "of": pages})


async def operation_of(execution: WorkflowExecution) -> Operation:
    return await execution.memo_value(OPERATION_MEMO, type_hint=Operation)


@router.get("", response_model_exclude_none=True)
async def list_jobs(
    _: Reader,
    client: TemporalDep,
    status: JobStatus | None = None,
    name: Annotated[str | None, Query(max_length=MAX_FILTER_VALUE)] = None,
    user: Annotated[str | None, Query(max_length=MAX_FILTER_VALUE)] = None,
    task_id: Annotated[str | None, Query(alias="taskId", max_length=MAX_FILTER_VALUE)] = None,
    start: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1,
    size: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 100,
) -> JobList:
    query = all_of(
        f"WorkflowType = '{JOB_TYPE}'",
        equals(JOB_STATUS.name, status.value if status else None),
        equals(OPERATION_NAME.name, name),
        equals(JOB_USER.name, user),
        equals(TASK_ID.name, task_id),
    )
    executions, pages = await list_page(client, query, PageRequest(start, size))
    jobs = await asyncio.gather(*(job_of(e) for e in executions))
    return JobList(jobs=list(jobs), page=Page(number=start, of=pages))


async def change_job(client: Client, job_id: str, change: JobChange) -> Job:
    """Send a change to a job the caller has read (so it exists); a transition its life cycle
    forbids is 400 code 1015."""
    handle = client.get_workflow_handle(job_workflow_id(job_id))
    try:
        return await handle.execute_update(JOB_CHANGE, change, result_type=Job)
    except WorkflowUpdateFailedError as exc:
        message = getattr(exc.cause, "message", str(exc.cause))
        if message == TRANSITION_ERROR:
            raise ApiError(400, TRANSITION_ERROR, ErrorCode.JOB_STATE_TRANSITION) from exc
        raise ApiError(400, message, context=[("jobId", job_id)]) from exc
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:  # the job's workflow has closed
            raise ApiError(400, TRANSITION_ERROR, ErrorCode.JOB_STATE_TRANSITION) from exc
        raise


@router.put("/{job_id}", response_model_exclude_none=True)
async def update_job(job_id: JobId, _: Writer, client: TemporalDep, body: JobPatchEnvelope) -> Job:
    job_id = _job_id(job_id)
    patch = body.job.request
    current = await read_job(client, job_id)
    if current.report.summary.status.is_closed:
        raise ApiError(400, TRANSITION_ERROR, ErrorCode.JOB_STATE_TRANSITION)
    try:
        request = patch.applied_to(current.request)
    except (ValueError, ValidationError) as exc:
        raise ApiError(400, f"Invalid change: {exc}", context=[("job.request", str(exc))]) from exc
    return await change_job(client, job_id, JobChange(request=request))


@router.delete("/{job_id}", response_model_exclude_none=True)
async def cancel_job(job_id: JobId, _: Writer, client: TemporalDep) -> Job:
    job_id = _job_id(job_id)
    current = await read_job(client, job_id)
    if current.report.summary.status.is_closed:
        raise ApiError(400, TRANSITION_ERROR, ErrorCode.JOB_STATE_TRANSITION)
    return await change_job(client, job_id, JobChange(cancel=True))
