"""Accepting a job request and starting its workflow: shared by the jobs and tasks routers."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import ValidationError
from temporalio.client import Client
from temporalio.common import SearchAttributePair, TypedSearchAttributes

from api.errors import ApiError, ErrorCode, validation_error
from core.catalog import BUILT_IN
from core.settings import Settings
from core.temporal import JOB_STATUS, JOB_USER, OPERATION_NAME, TASK_ID, job_workflow_id
from models.devices import ApiKey
from models.enums import JobStatus
from models.jobs import JobEnvelope, JobRequest
from models.messages import FanOutSettings, JobInput, JobState, job_memo
from workflows.job import JobWorkflow


def parse_envelope(body: Any) -> JobRequest:
    """The request of a ``{"job":{"request":{...}}}`` body, or a 400 naming the failing field."""
    try:
        return JobEnvelope.model_validate(body).job.request
    except ValidationError as exc:
        raise validation_error(exc) from exc


def accept_request(request: JobRequest, key: ApiKey) -> JobRequest:
    """Check a request against the operation types and stamp it with its user."""
    if request.name not in BUILT_IN:
        raise ApiError(
            400,
            f"Unknown operation type {request.name}",
            ErrorCode.UNKNOWN_OPERATION_TYPE,
            [("name", request.name)],
        )
    return request.model_copy(update={"user": key.name})


def job_input(
    request: JobRequest,
    settings: Settings,
    job_id: str = "",
    task_id: str | None = None,
    created_at: datetime | None = None,
) -> JobInput:
    """The workflow input of a job; without a ``job_id`` (a task's template) the job takes its
    workflow's id and start time."""
    return JobInput(
        job_id=job_id,
        request=request,
        task_id=task_id,
        created_at=created_at,
        fan_out=FanOutSettings(
            window=settings.job_window,
            start_batch=settings.job_start_batch,
            page_size=settings.target_page_size,
        ),
        late_answer_grace_ms=settings.late_answer_grace_ms,
    )


def initial_status(request: JobRequest) -> JobStatus:
    if not request.active:
        return JobStatus.IDLE
    if request.schedule and request.schedule.start:
        return JobStatus.SCHEDULED
    return JobStatus.IN_PROGRESS


def start_options(input: JobInput) -> dict[str, Any]:
    """Search attributes and memo a job workflow starts with (by the API or by a schedule)."""
    pairs = [
        SearchAttributePair(OPERATION_NAME, input.request.name),
        SearchAttributePair(JOB_STATUS, initial_status(input.request).value),
        SearchAttributePair(JOB_USER, input.request.user or ""),
    ]
    if input.task_id:
        pairs.append(SearchAttributePair(TASK_ID, input.task_id))
    return {
        "search_attributes": TypedSearchAttributes(pairs),
        "memo": job_memo(input, JobState(status=initial_status(input.request))),
    }


async def start_job(client: Client, settings: Settings, input: JobInput) -> None:
    await client.start_workflow(
        JobWorkflow.run,
        input,
        id=job_workflow_id(input.job_id),
        task_queue=settings.task_queue,
        **start_options(input),
    )
