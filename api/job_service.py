"""Accepting a job request and starting its workflow: shared by the jobs and tasks routers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from temporalio.client import Client
from temporalio.common import SearchAttributePair, TypedSearchAttributes

from api.errors import ApiError, ErrorCode
from core.operation_types import FieldError, ParameterSchema, find_type
from core.settings import Settings
from core.temporal import JOB_STATUS, JOB_USER, OPERATION_NAME, TASK_ID, job_workflow_id
from inventory.operation_types import OperationTypeStore
from inventory.store import Inventory
from models.devices import ApiKey
from models.enums import JobStatus
from models.jobs import EntityWithParameters, JobRequest
from models.messages import FanOutSettings, JobInput, JobState, job_memo
from workflows.job import JobWorkflow

# A 10,000-device request could fail everywhere: the body names the first failures only.
_CONTEXT_ERRORS = 100
_DETAILED_ERRORS = 5


async def accept_request(request: JobRequest, key: ApiKey, inventory: Inventory) -> JobRequest:
    """Check a request against its operation type's schema, fill in the schema's defaults (the
    job's parameters and each device's merged ones) and stamp it with its user."""
    operation_type = await find_type(request.name, OperationTypeStore(inventory))
    if operation_type is None:
        raise ApiError(
            400,
            f"Unknown operation type {request.name}",
            ErrorCode.UNKNOWN_OPERATION_TYPE,
            [("name", request.name)],
        )
    schema = ParameterSchema(operation_type.parameters)
    parameters, errors = schema.check(request.parameters)
    update: dict[str, Any] = {"user": key.name, "parameters": parameters}
    target = request.target
    append = target.append if target else None
    if target and append and append.entities_with_parameters:
        # Each device receives its merged parameters, so those are what must conform: a job
        # may leave a required field to its devices.
        entries, errors = _per_device(schema, request.parameters, append.entities_with_parameters)
        append = append.model_copy(update={"entities_with_parameters": entries})
        update["target"] = target.model_copy(update={"append": append})
    if errors:
        raise _invalid_parameters(request.name, errors)
    return request.model_copy(update=update)


def _per_device(
    schema: ParameterSchema, job_parameters: dict[str, Any], entries: list[EntityWithParameters]
) -> tuple[list[EntityWithParameters], list[FieldError]]:
    """Each entry with its merged parameters, defaults filled in, and every failing field."""
    checked: list[EntityWithParameters] = []
    errors: list[FieldError] = []
    for i, entry in enumerate(entries):
        prefix = f"target.append.entitiesWithParameters[{i}].parameters"
        merged, failing = schema.check({**job_parameters, **entry.parameters}, prefix)
        checked.append(entry.model_copy(update={"parameters": merged}))
        errors += failing
    return checked, errors


def _invalid_parameters(name: str, errors: list[FieldError]) -> ApiError:
    details = "; ".join(f"{e.field}: {e.message}" for e in errors[:_DETAILED_ERRORS])
    return ApiError(
        400,
        f"Invalid parameters for {name}: {details}",
        ErrorCode.INVALID_REQUEST,
        [(e.field, e.message) for e in errors[:_CONTEXT_ERRORS]],
    )


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


def initial_status(input: JobInput) -> JobStatus:
    """The status a job starts in, by the rule its workflow applies (``waiting_status``)."""
    created_at = input.created_at or datetime.now(UTC)
    return input.request.waiting_status(created_at, created_at) or JobStatus.IN_PROGRESS


def start_options(input: JobInput) -> dict[str, Any]:
    """Search attributes and memo a job workflow starts with (by the API or by a schedule)."""
    pairs = [
        SearchAttributePair(OPERATION_NAME, input.request.name),
        SearchAttributePair(JOB_STATUS, initial_status(input).value),
        SearchAttributePair(JOB_USER, input.request.user or ""),
    ]
    if input.task_id:
        pairs.append(SearchAttributePair(TASK_ID, input.task_id))
    return {
        "search_attributes": TypedSearchAttributes(pairs),
        "memo": job_memo(input, JobState(status=initial_status(input))),
    }


async def start_job(client: Client, settings: Settings, input: JobInput) -> None:
    await client.start_workflow(
        JobWorkflow.run,
        input,
        id=job_workflow_id(input.job_id),
        task_queue=settings.task_queue,
        **start_options(input),
    )
