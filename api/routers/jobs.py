"""Jobs (SPEC 3.1): create, read, list, change and cancel, and the operations of a job; (beyond
OpenGate) cancel one operation of a job, and rerun a job on some of its devices."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from api import job_service, operation_control
from api.deps import InventoryDep, JobSnapshotsDep, Reader, SettingsDep, TemporalDep, Writer
from api.errors import declared
from api.pages import Paging
from api.request_checks import CheckedRoute
from models.enums import JobStatus
from models.jobs import MAX_JOB_ID, Job, JobEnvelope, JobList, JobPatchEnvelope
from models.operations import Operation, OperationList
from models.rerun import RerunFilter

PATH = "/north/v80/operation/jobs"
router = APIRouter(prefix=PATH, tags=["jobs"], route_class=CheckedRoute)

# A job id in a path: longer is a 400, another shape is no job of ours (404).
JobId = Annotated[str, Path(max_length=MAX_JOB_ID)]
# Query values that become visibility query literals.
MAX_FILTER_VALUE = 256
FilterValue = Annotated[str | None, Query(max_length=MAX_FILTER_VALUE)]
# An operation id in a path (a UUID): longer is a 400, another shape is no operation (404).
MAX_OPERATION_ID = 64
OperationId = Annotated[str, Path(max_length=MAX_OPERATION_ID)]


@router.post("", status_code=201, response_model_exclude_none=True)
async def create_job(
    key: Writer,
    client: TemporalDep,
    settings: SettingsDep,
    inventory: InventoryDep,
    response: Response,
    body: JobEnvelope,
) -> Job:
    job = await job_service.create_job(client, settings, inventory, key, body.job.request)
    response.headers["Location"] = f"{PATH}/{job.id}"
    return job


@router.get("/{job_id}", response_model_exclude_none=True)
async def get_job(job_id: JobId, _: Reader, snapshots: JobSnapshotsDep) -> Job:
    # While clients watch a job, it is answered from a snapshot at most 3 s old (docs/api.md).
    return await snapshots.read(job_id)


@router.get("/{job_id}/operations", response_model_exclude_none=True)
async def list_job_operations(
    job_id: JobId, _: Reader, client: TemporalDep, page: Paging
) -> OperationList:
    return await job_service.job_operations(client, job_id, page)


@router.get("", response_model_exclude_none=True)
async def list_jobs(
    _: Reader,
    client: TemporalDep,
    page: Paging,
    status: JobStatus | None = None,
    name: FilterValue = None,
    user: FilterValue = None,
    task_id: Annotated[str | None, Query(alias="taskId", max_length=MAX_FILTER_VALUE)] = None,
) -> JobList:
    return await job_service.list_jobs(client, page, status, name, user, task_id)


@router.put("/{job_id}", response_model_exclude_none=True)
async def update_job(
    job_id: JobId,
    _: Writer,
    client: TemporalDep,
    snapshots: JobSnapshotsDep,
    body: JobPatchEnvelope,
) -> Job:
    job = await job_service.update_job(client, job_id, body.job.request)
    snapshots.store(job)
    return job


@router.delete("/{job_id}", response_model_exclude_none=True)
async def cancel_job(
    job_id: JobId, _: Writer, client: TemporalDep, snapshots: JobSnapshotsDep
) -> Job:
    job = await job_service.cancel_job(client, job_id)
    snapshots.store(job)
    return job


@router.delete(
    "/{job_id}/operations/{operation_id}",
    response_model_exclude_none=True,
    responses={
        202: {
            "model": Operation,
            "description": "Cancel sent; the operation closes once its push in flight returns",
        },
        **declared(409),
    },
)
async def cancel_operation(
    job_id: JobId, operation_id: OperationId, key: Writer, client: TemporalDep, response: Response
) -> Operation:
    """(beyond OpenGate) Cancel one operation of the job (``byUser``); the job's counters
    follow."""
    operation, closed = await operation_control.cancel_operation(client, job_id, operation_id, key)
    if not closed:
        response.status_code = 202
    return operation


@router.post(
    "/{job_id}/operations/{operation_id}/retry",
    response_model_exclude_none=True,
    responses=declared(409),
)
async def retry_operation(
    job_id: JobId,
    operation_id: OperationId,
    _: Writer,
    client: TemporalDep,
    inventory: InventoryDep,
) -> Operation:
    """(beyond OpenGate) Send a closed operation of a running job again, as a new attempt of
    the same operation; the job's counters follow."""
    return await operation_control.retry_operation(client, inventory, job_id, operation_id)


@router.post("/{job_id}/rerun", status_code=201, response_model_exclude_none=True)
async def rerun_job(
    job_id: JobId,
    key: Writer,
    client: TemporalDep,
    settings: SettingsDep,
    inventory: InventoryDep,
    response: Response,
    body: RerunFilter,
) -> Job:
    """(beyond OpenGate) A new job with this job's request on exactly the devices whose closed
    operations match ``results`` or ``cancelReasons``; it carries ``request.rerunOf``."""
    job = await operation_control.rerun_job(client, settings, inventory, key, job_id, body)
    response.headers["Location"] = f"{PATH}/{job.id}"
    return job


@router.post("/{job_id}/groups/next", response_model_exclude_none=True)
async def start_next_group(
    job_id: JobId, _: Writer, client: TemporalDep, snapshots: JobSnapshotsDep
) -> Job:
    """(beyond OpenGate) Start the next group of a staged rollout now, whatever the previous
    group's outcome; a job its group paused runs on."""
    job = await job_service.start_next_group(client, job_id)
    snapshots.store(job)
    return job
