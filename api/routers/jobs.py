"""Jobs (SPEC 3.1): create, read, list, change and cancel, and the operations of a job."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from api import job_service
from api.deps import InventoryDep, Reader, SettingsDep, TemporalDep, Writer
from api.job_service import MAX_JOB_ID
from api.pages import Paging
from api.request_checks import CheckedRoute
from models.enums import JobStatus
from models.jobs import Job, JobEnvelope, JobList, JobPatchEnvelope
from models.operations import OperationList

PATH = "/north/v80/operation/jobs"
router = APIRouter(prefix=PATH, tags=["jobs"], route_class=CheckedRoute)

# A job id in a path: longer is a 400, another shape is no job of ours (404).
JobId = Annotated[str, Path(max_length=MAX_JOB_ID)]
# Query values that become visibility query literals.
MAX_FILTER_VALUE = 256
FilterValue = Annotated[str | None, Query(max_length=MAX_FILTER_VALUE)]


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
async def get_job(job_id: JobId, _: Reader, client: TemporalDep) -> Job:
    return await job_service.read_job(client, job_id)


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
async def update_job(job_id: JobId, _: Writer, client: TemporalDep, body: JobPatchEnvelope) -> Job:
    return await job_service.update_job(client, job_id, body.job.request)


@router.delete("/{job_id}", response_model_exclude_none=True)
async def cancel_job(job_id: JobId, _: Writer, client: TemporalDep) -> Job:
    return await job_service.cancel_job(client, job_id)
