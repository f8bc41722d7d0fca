"""Tasks (SPEC 3.3): jobs created by a Temporal Schedule, once at a date or repeatedly
(``api.task_service``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from api import task_service
from api.deps import InventoryDep, Reader, SettingsDep, TemporalDep, Writer
from api.errors import declared
from api.pages import Paging
from api.request_checks import CheckedRoute
from api.task_service import MAX_TASK_ID
from models.jobs import JobList
from models.tasks import Task, TaskChangesEnvelope, TaskEnvelope, TaskList

PATH = "/north/v80/operation/tasks"
router = APIRouter(prefix=PATH, tags=["tasks"], route_class=CheckedRoute)

# A task id in a path: longer is a 400, another shape is no task of ours (404).
TaskId = Annotated[str, Path(max_length=MAX_TASK_ID)]


@router.post("", status_code=201, response_model_exclude_none=True, responses=declared(409))
async def create_task(
    key: Writer,
    client: TemporalDep,
    settings: SettingsDep,
    inventory: InventoryDep,
    response: Response,
    body: TaskEnvelope,
) -> Task:
    task = await task_service.create_task(client, settings, inventory, key, body.task)
    response.headers["Location"] = f"{PATH}/{task.id}"
    return task


@router.get("/{task_id}", response_model_exclude_none=True)
async def get_task(task_id: TaskId, _: Reader, client: TemporalDep) -> Task:
    return await task_service.read_task(client, task_id)


@router.get("", response_model_exclude_none=True)
async def list_tasks(_: Reader, client: TemporalDep, page: Paging) -> TaskList:
    """Newest first, by the creation time in each schedule's memo; only the page is described."""
    return await task_service.list_tasks(client, page)


@router.get("/{task_id}/jobs", response_model_exclude_none=True)
async def list_task_jobs(task_id: TaskId, _: Reader, client: TemporalDep, page: Paging) -> JobList:
    """The jobs a task created, newest first; they stay listed after the task is deleted."""
    return await task_service.task_jobs(client, task_id, page)


@router.put("/{task_id}", response_model_exclude_none=True)
async def update_task(
    task_id: TaskId,
    key: Writer,
    client: TemporalDep,
    settings: SettingsDep,
    body: TaskChangesEnvelope,
) -> Task:
    return await task_service.update_task(client, settings, key, task_id, body.task)


@router.delete("/{task_id}", response_model_exclude_none=True)
async def delete_task(task_id: TaskId, _: Writer, client: TemporalDep) -> Task:
    """Deletes the schedule (no more jobs); the jobs it created stay, running or readable."""
    return await task_service.delete_task(client, task_id)
