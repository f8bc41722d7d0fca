"""Tasks (SPEC 3.3): jobs created by a Temporal Schedule, once at a date or repeatedly.

The schedule (id ``task-<uuid>``) is the task: its spec and state are the task's schedule and
state, and its action starts a job workflow from the task's job template. The task's definition
rides in the action's memo, so a PUT changes the spec, the state and the definition in one
conflict-checked update; the schedule's own memo is a creation record for the Temporal UI, since
Temporal refuses memo updates on schedules.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleDescription,
    ScheduleHandle,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.service import RPCError, RPCStatusCode

from api.deps import InventoryDep, Reader, SettingsDep, TemporalDep, Writer
from api.errors import ApiError, declared
from api.job_service import accept_request, job_input, start_options
from api.request_checks import CheckedRoute
from api.routers.jobs import JOB_TYPE, job_of
from api.visibility import MAX_PAGE, MAX_PAGE_SIZE, PageRequest, all_of, equals, list_page
from core.schedules import (
    Plan,
    ScheduleError,
    check_job_template,
    period_length,
    plan,
    shortest_gap,
)
from core.settings import Settings
from core.temporal import TASK_ID
from models.devices import ApiKey
from models.jobs import JobList, JobRequestEnvelope, Page
from models.tasks import (
    Task,
    TaskChangesEnvelope,
    TaskDefinition,
    TaskEnvelope,
    TaskList,
    TaskState,
)
from workflows.job import JobWorkflow

router = APIRouter(prefix="/north/v80/operation/tasks", tags=["tasks"], route_class=CheckedRoute)

TASK_PREFIX = "task-"
MAX_TASK_ID = 64
# A task id in a path: longer is a 400, another shape is no task of ours (404).
TaskId = Annotated[str, Path(max_length=MAX_TASK_ID)]
_TASK_ID = re.compile(r"^task-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
# Memo keys: the definition (schedule memo at creation, and the action's memo, kept current),
# and the creation record shown in the Temporal UI's Schedules view.
TASK_MEMO = "task"
NAME_MEMO = "name"
DESCRIPTION_MEMO = "description"
CREATED_MEMO = "createdAt"
# A task's jobs never overlap: a run that comes while the previous job is still open is skipped
# (its deadline being shorter than the period, that happens only past a late deadline).
POLICY = SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP)


# --- create ---


@router.post("", status_code=201, response_model_exclude_none=True, responses=declared(409))
async def create_task(
    key: Writer,
    client: TemporalDep,
    settings: SettingsDep,
    inventory: InventoryDep,
    response: Response,
    body: TaskEnvelope,
) -> Task:
    definition = await _accepted(body.task, key, inventory)
    now = datetime.now(UTC)
    spec = _plan(definition, now)
    task_id = f"{TASK_PREFIX}{uuid.uuid4()}"
    # A cron task's gaps are known only from the server's next times: it starts paused until its
    # job deadline is checked against them.
    hold = definition.schedule.cron is not None
    schedule = _schedule(definition, task_id, settings, spec, paused=hold or not definition.active)
    try:
        handle = await client.create_schedule(
            task_id,
            schedule,
            memo={
                NAME_MEMO: definition.name,
                DESCRIPTION_MEMO: definition.description,
                CREATED_MEMO: now.isoformat(),
                TASK_MEMO: definition,
            },
        )
    except ScheduleAlreadyRunningError as exc:  # a uuid collision: never in practice
        raise ApiError(409, f"Task {task_id} exists") from exc
    except RPCError as exc:
        raise _refused(exc) from exc
    if hold:
        await _release_cron(handle, definition)
    response.headers["Location"] = f"/north/v80/operation/tasks/{task_id}"
    return await read_task(client, task_id)


async def _accepted(definition: TaskDefinition, key: ApiKey, inventory: Any) -> TaskDefinition:
    request = await accept_request(definition.job.request, key, inventory)
    return definition.model_copy(update={"job": JobRequestEnvelope(request=request)})


def _plan(definition: TaskDefinition, now: datetime) -> Plan:
    try:
        result = plan(definition.schedule, now)
        check_job_template(
            definition.schedule, definition.job.request, period_length(definition.schedule)
        )
    except ScheduleError as exc:
        raise _invalid(exc) from exc
    return result


def _invalid(exc: ScheduleError) -> ApiError:
    # Named like the body's validation errors: the dotted path from the envelope.
    return ApiError(400, f"Invalid schedule: {exc.message}", context=[(f"task.{exc.field}", exc)])


def _refused(exc: RPCError) -> ApiError | RPCError:
    """What the server refuses in a spec we let through (a cron field out of range)."""
    if exc.status == RPCStatusCode.INVALID_ARGUMENT:
        return _invalid(ScheduleError("schedule", exc.message))
    return exc


async def _release_cron(handle: ScheduleHandle, definition: TaskDefinition) -> None:
    """Check a cron task's job deadline against the server's next action times, then activate it
    (or delete it and answer 400)."""
    description = await handle.describe()
    gap = shortest_gap(list(description.info.next_action_times))
    try:
        check_job_template(definition.schedule, definition.job.request, gap)
    except ScheduleError as exc:
        await handle.delete()
        raise _invalid(exc) from exc
    if definition.active:
        await handle.unpause(note="cron checked")


def _schedule(
    definition: TaskDefinition, task_id: str, settings: Settings, spec: Plan, paused: bool
) -> Schedule:
    return Schedule(
        action=_action(definition, task_id, settings),
        spec=spec.spec,
        policy=POLICY,
        state=ScheduleState(
            paused=paused,
            note=definition.name,
            limited_actions=spec.limited_actions,
            remaining_actions=spec.remaining_actions,
        ),
    )


def _action(
    definition: TaskDefinition, task_id: str, settings: Settings
) -> ScheduleActionStartWorkflow:
    """Start a job from the template; Temporal appends the scheduled time to the workflow id, and
    the job (``job_id=""``) takes that id and its start time."""
    input = job_input(definition.job.request, settings, job_id="", task_id=task_id)
    options = start_options(input)
    return ScheduleActionStartWorkflow(
        JobWorkflow.run,
        input,
        id=task_id,
        task_queue=settings.task_queue,
        typed_search_attributes=options["search_attributes"],
        memo={**options["memo"], TASK_MEMO: definition},
        static_summary=f"Task {definition.name}",
    )


# --- read ---


def _task_id(task_id: str) -> str:
    if not _TASK_ID.match(task_id):
        raise ApiError(404, f"Task {task_id} not found", context=[("taskId", task_id)])
    return task_id


async def _describe(client: Client, task_id: str) -> ScheduleDescription:
    try:
        return await client.get_schedule_handle(_task_id(task_id)).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise ApiError(404, f"Task {task_id} not found", context=[("taskId", task_id)]) from exc
        raise


async def definition_of(client: Client, description: ScheduleDescription) -> TaskDefinition:
    action = description.schedule.action
    assert isinstance(action, ScheduleActionStartWorkflow) and action.memo is not None
    [definition] = await client.data_converter.decode(
        [action.memo[TASK_MEMO]], type_hints=[TaskDefinition]
    )
    assert isinstance(definition, TaskDefinition)
    return definition


def state_of(description: ScheduleDescription) -> TaskState:
    state = description.schedule.state
    if (state.limited_actions and state.remaining_actions <= 0) or not (
        description.info.next_action_times
    ):
        return TaskState.FINISHED
    return TaskState.PAUSED if state.paused else TaskState.ACTIVE


async def task_of(client: Client, description: ScheduleDescription) -> Task:
    definition = await definition_of(client, description)
    state = state_of(description)
    next_times = description.info.next_action_times
    return Task(
        id=description.id,
        name=definition.name,
        description=definition.description,
        active=not description.schedule.state.paused,
        state=state,
        # Temporal still computes next times while paused; a paused task has no next execution.
        next_execution=next_times[0] if state == TaskState.ACTIVE else None,
        schedule=definition.schedule,
        job=definition.job,
    )


async def read_task(client: Client, task_id: str) -> Task:
    return await task_of(client, await _describe(client, task_id))


@router.get("/{task_id}", response_model_exclude_none=True)
async def get_task(task_id: TaskId, _: Reader, client: TemporalDep) -> Task:
    return await read_task(client, task_id)


@router.get("", response_model_exclude_none=True)
async def list_tasks(
    _: Reader,
    client: TemporalDep,
    start: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1,
    size: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 100,
) -> TaskList:
    """Newest first, by the creation time in each schedule's memo; only the page is described."""
    created: list[tuple[str, str]] = []
    async for entry in await client.list_schedules():
        if entry.id.startswith(TASK_PREFIX):
            memo = await entry.memo()
            created.append((str(memo.get(CREATED_MEMO, "")), entry.id))
    created.sort(reverse=True)
    page = PageRequest(start, size)
    ids = [task_id for _, task_id in created[page.offset : page.offset + size]]
    tasks = await asyncio.gather(*(_read_if_exists(client, i) for i in ids))
    pages = max(1, -(-len(created) // size))
    return TaskList(tasks=[t for t in tasks if t], page=Page(number=start, of=pages))


async def _read_if_exists(client: Client, task_id: str) -> Task | None:
    # The schedule list is eventually consistent: a task deleted a moment ago may still be listed.
    try:
        return await read_task(client, task_id)
    except ApiError:
        return None


@router.get("/{task_id}/jobs", response_model_exclude_none=True)
async def list_task_jobs(
    task_id: TaskId,
    _: Reader,
    client: TemporalDep,
    start: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1,
    size: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 100,
) -> JobList:
    """The jobs a task created, newest first; they stay listed after the task is deleted."""
    query = all_of(f"WorkflowType = '{JOB_TYPE}'", equals(TASK_ID.name, _task_id(task_id)))
    executions, pages = await list_page(client, query, PageRequest(start, size))
    jobs = await asyncio.gather(*(job_of(e) for e in executions))
    return JobList(jobs=list(jobs), page=Page(number=start, of=pages))


# --- update and delete ---


@router.put("/{task_id}", response_model_exclude_none=True)
async def update_task(
    task_id: TaskId,
    key: Writer,
    client: TemporalDep,
    settings: SettingsDep,
    body: TaskChangesEnvelope,
) -> Task:
    changes = body.task
    description = await _describe(client, task_id)
    current = await definition_of(client, description)
    fields = changes.model_dump(exclude_unset=True, by_alias=False)
    definition = current.model_copy(
        update={k: getattr(changes, k) for k in fields if getattr(changes, k) is not None}
    )
    new_spec = _plan(definition, datetime.now(UTC)) if changes.schedule else None
    hold = new_spec is not None and definition.schedule.cron is not None

    def updater(update: ScheduleUpdateInput) -> ScheduleUpdate:
        old = update.description.schedule
        state = old.state
        schedule = Schedule(
            action=_action(definition, task_id, settings),
            spec=new_spec.spec if new_spec else old.spec,
            policy=POLICY,
            # A new schedule starts a new count of executions.
            state=ScheduleState(
                paused=hold or not definition.active,
                note=f"{'paused' if not definition.active else 'active'} by {key.name}",
                limited_actions=new_spec.limited_actions if new_spec else state.limited_actions,
                remaining_actions=(
                    new_spec.remaining_actions if new_spec else state.remaining_actions
                ),
            ),
        )
        return ScheduleUpdate(schedule=schedule)

    handle = client.get_schedule_handle(task_id)
    try:
        await handle.update(updater)
    except RPCError as exc:
        raise _refused(exc) from exc
    if hold:
        await _release_updated_cron(handle, description, definition)
    return await read_task(client, task_id)


async def _release_updated_cron(
    handle: ScheduleHandle, previous: ScheduleDescription, definition: TaskDefinition
) -> None:
    """As ``_release_cron``, but a refused cron puts the previous schedule back."""
    gap = shortest_gap(list((await handle.describe()).info.next_action_times))
    try:
        check_job_template(definition.schedule, definition.job.request, gap)
    except ScheduleError as exc:
        await handle.update(lambda _: ScheduleUpdate(schedule=previous.schedule))
        raise _invalid(exc) from exc
    if definition.active:
        await handle.unpause(note="cron checked")


@router.delete("/{task_id}", response_model_exclude_none=True)
async def delete_task(task_id: TaskId, _: Writer, client: TemporalDep) -> Task:
    """Deletes the schedule (no more jobs); the jobs it created stay, running or readable."""
    task = await read_task(client, task_id)
    try:
        await client.get_schedule_handle(task_id).delete()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise ApiError(404, f"Task {task_id} not found", context=[("taskId", task_id)]) from exc
        raise
    return task
