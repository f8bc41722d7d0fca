"""The job service under the jobs, tasks and search routers: accepting a job request, starting its
workflow, reading jobs and their operations from visibility, and sending a job its changes."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

from temporalio.client import Client, WorkflowExecution, WorkflowUpdateFailedError
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from api.errors import ApiError, ErrorCode, Ids
from api.pages import PageRequest
from api.visibility import list_page
from core.operation_types import FieldError, ParameterSchema, find_type
from core.settings import Settings
from core.temporal import (
    JOB_CHANGE,
    JOB_REPORT_MEMO,
    JOB_REQUEST_MEMO,
    JOB_STATE_TRANSITION,
    JOB_STATUS,
    JOB_TASK_MEMO,
    JOB_USER,
    JOB_WORKFLOW,
    OPERATION_MEMO,
    OPERATION_NAME,
    TASK_ID,
    TRANSITION_ERROR,
    all_of,
    equals,
    job_workflow_id,
    literal,
    of_type,
    operations_of_job,
)
from inventory.operation_types import OperationTypeStore
from inventory.store import Inventory
from models.bounds import STORED
from models.devices import ApiKey
from models.enums import JobStatus
from models.jobs import (
    EntityWithParameters,
    Job,
    JobList,
    JobPatch,
    JobReport,
    JobRequest,
    Page,
)
from models.messages import FanOutSettings, JobChange, JobInput, JobState, job_memo
from models.operations import Operation, OperationList

# A 10,000-device request could fail everywhere: the body names the first failures only.
_CONTEXT_ERRORS = 100
_DETAILED_ERRORS = 5
# Job ids are UUIDs, or ``<task id>-<time>`` for jobs a task's schedule started (at most
# MAX_JOB_ID characters).
JOB_IDS = Ids("Job", "jobId", re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$"))
_CLOSED = [status for status in JobStatus if status.is_closed]

# --- accepting and starting ---


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
    # The job's user is the key's; only a rerun names the job it reruns (``create_job``).
    update: dict[str, Any] = {"user": key.name, "parameters": parameters, "rerun_of": None}
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
            join_poll_ms=round(settings.continuous_poll_s * 1000),
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


async def start_job(
    client: Client, settings: Settings, input: JobInput, summary: str | None = None
) -> None:
    """Start a job's workflow; ``summary`` is what the Temporal UI shows for it."""
    await client.start_workflow(
        JOB_WORKFLOW,
        input,
        id=job_workflow_id(input.job_id),
        task_queue=settings.task_queue,
        static_summary=summary,
        **start_options(input),
    )


async def create_job(
    client: Client,
    settings: Settings,
    inventory: Inventory,
    key: ApiKey,
    request: JobRequest,
    rerun_of: str | None = None,
) -> Job:
    """Accept a request and start its job now: the job as it starts. A rerun names the job it
    reruns (``rerun_of``: the request's ``rerunOf``)."""
    accepted = await accept_request(request, key, inventory)
    if rerun_of is not None:
        accepted = accepted.model_copy(update={"rerun_of": rerun_of})
    input = job_input(accepted, settings, job_id=str(uuid.uuid4()), created_at=datetime.now(UTC))
    # The title is the first run's static summary, and every run's first line of details.
    title = await ui_summary(accepted, inventory)
    input = input.model_copy(update={"title": title})
    await start_job(client, settings, input, title)
    return input.view(JobState(status=initial_status(input)))


async def ui_summary(request: JobRequest, inventory: Inventory) -> str:
    """The job as an SRE reads it in the Temporal UI: ``REBOOT_EQUIPMENT on tag line-7 (1,240
    devices)``; the count is the inventory's when the job is created."""
    selection = request.target.append if request.target else None
    tagged = None
    if selection is not None and selection.tags:
        tagged = await inventory.count_with_tags(selection.tags)
    return job_title(request, tagged)


def job_title(request: JobRequest, tagged: int | None = None, task: str | None = None) -> str:
    """A job's title in the Temporal UI; ``tagged``: how many devices carry its tags (left out
    when not known, as for the jobs of a task: each counts its own when it starts), ``task``:
    the name of the task whose schedule starts it."""
    selection = request.target.append if request.target else None
    of_task = f" (task {task})" if task else ""
    rerun = f", rerun of job {request.rerun_of}" if request.rerun_of else ""
    if selection is None:
        return _fit(f"{request.name} (no target yet){of_task}")
    if selection.tags:
        tags = ", ".join(selection.tags[:3]) + (", ..." if len(selection.tags) > 3 else "")
        kind = "tag" if len(selection.tags) == 1 else "tags"
        counted = f" ({tagged:,} devices)" if tagged is not None else ""
        return _fit(f"{request.name} on {kind} {tags}{counted}{of_task}")
    count = len(selection.unique_listed()[0])
    plural = "s" if count != 1 else ""
    return _fit(f"{request.name} on {count:,} listed device{plural}{rerun}{of_task}")


# A title is one line in the Temporal UI's list of workflows: up to three tags of 128 characters
# and a task name of 200 would make it a paragraph, so it is cut. (The dev server takes a static
# summary of any size; 200,000 bytes were accepted.)
_TITLE_LENGTH = 200


def _fit(title: str) -> str:
    return title if len(title) <= _TITLE_LENGTH else f"{title[: _TITLE_LENGTH - 1]}…"


# --- reading ---


async def read_job(client: Client, job_id: str) -> Job:
    """The job as its workflow last published it (describe reads the workflow's current memo); an
    id no job of ours could have is not found without asking Temporal."""
    workflow_id = job_workflow_id(JOB_IDS.known(job_id))
    try:
        description = await client.get_workflow_handle(workflow_id).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise JOB_IDS.not_found(job_id) from exc
        raise
    if description.workflow_type != JOB_WORKFLOW:
        raise JOB_IDS.not_found(job_id)
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


async def operation_of(execution: WorkflowExecution) -> Operation:
    return await execution.memo_value(OPERATION_MEMO, type_hint=Operation)


async def job_list(client: Client, clause: str | None, page: PageRequest) -> JobList:
    """One page of the jobs ``clause`` selects (all jobs without one)."""
    query = all_of(of_type(JOB_WORKFLOW), clause)
    jobs, answer = await list_page(client, query, page, job_of)
    return JobList(jobs=jobs, page=answer)


async def list_jobs(
    client: Client,
    page: PageRequest,
    status: JobStatus | None = None,
    name: str | None = None,
    user: str | None = None,
    task_id: str | None = None,
) -> JobList:
    """One page of the jobs with these search attributes (each filter optional)."""
    clause = all_of(
        equals(JOB_STATUS.name, status.value if status else None),
        equals(OPERATION_NAME.name, name),
        equals(JOB_USER.name, user),
        equals(TASK_ID.name, task_id),
    )
    return await job_list(client, clause, page)


async def find_operations(
    client: Client, query: str, page: PageRequest
) -> tuple[list[Operation], Page]:
    """One page of the operations ``query`` selects, and the page of the answer."""
    return await list_page(client, query, page, operation_of)


async def job_operations(client: Client, job_id: str, page: PageRequest) -> OperationList:
    """One page of a job's operations; 404 for an unknown job."""
    await read_job(client, job_id)
    operations, answer = await find_operations(client, operations_of_job(job_id), page)
    return OperationList(operations=operations, page=answer.model_dump(exclude_none=True))


async def open_jobs_of_type(client: Client, name: str) -> int:
    """How many open jobs run operation type ``name``. A FINISHED or CANCELLED job's workflow may
    still run a while to count late answers; it is not open."""
    query = all_of(
        of_type(JOB_WORKFLOW),
        "ExecutionStatus = 'Running'",
        equals(OPERATION_NAME.name, name),
        *(f"{JOB_STATUS.name} != {literal(s.value)}" for s in _CLOSED),
    )
    return (await client.count_workflows(query)).count


# --- changing ---


def _transition_error() -> ApiError:
    return ApiError(400, TRANSITION_ERROR, ErrorCode.JOB_STATE_TRANSITION)


async def change_job(client: Client, job_id: str, change: JobChange) -> Job:
    """Send a change to a job the caller has read (so it exists). Whether the job may change is
    its workflow's to say: a transition its life cycle forbids (its update validator's
    ``JOB_STATE_TRANSITION``, or a workflow already closed) is 400 code 1015."""
    handle = client.get_workflow_handle(job_workflow_id(job_id))
    try:
        return await handle.execute_update(JOB_CHANGE, change, result_type=Job)
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        if isinstance(cause, ApplicationError) and cause.type == JOB_STATE_TRANSITION:
            raise _transition_error() from exc
        message = getattr(cause, "message", str(cause))
        raise ApiError(400, message, context=[("jobId", job_id)]) from exc
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:  # the job's workflow has closed
            raise _transition_error() from exc
        raise


async def update_job(client: Client, job_id: str, patch: JobPatch) -> Job:
    """Apply a PUT's patch to the job's current request and send the job the result."""
    current = await read_job(client, job_id)
    try:
        request = patch.applied_to(current.request)
    except ValueError as exc:  # a pydantic ValidationError too: the patched request as a whole
        raise ApiError(400, f"Invalid change: {exc}", context=[("job.request", str(exc))]) from exc
    return await change_job(client, job_id, JobChange(request=request))


async def cancel_job(client: Client, job_id: str) -> Job:
    await read_job(client, job_id)  # 404 for an unknown job
    return await change_job(client, job_id, JobChange(cancel=True))


async def start_next_group(client: Client, job_id: str) -> Job:
    """(beyond OpenGate) Release the next group of a staged rollout (workflows/groups.py); a job
    without groups, or whose groups have all started, is a 400 saying so."""
    await read_job(client, job_id)  # 404 for an unknown job
    return await change_job(client, job_id, JobChange(next_group=True))
