"""The task service under the tasks router (SPEC 3.3): a task is a Temporal Schedule that starts
jobs from the task's job template, once at a date or repeatedly.

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
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

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

from api.errors import ApiError, Ids
from api.job_service import accept_request, job_input, job_title, list_jobs, start_options
from api.pages import PageRequest
from api.search_filter import DATE, TEXT, Predicate, Record
from core.schedules import (
    Plan,
    ScheduleError,
    check_job_template,
    period_length,
    plan,
    shortest_gap,
)
from core.settings import Settings
from core.temporal import JOB_WORKFLOW
from inventory.store import Inventory
from models.devices import ApiKey
from models.jobs import JobList, JobRequestEnvelope
from models.tasks import Task, TaskChanges, TaskDefinition, TaskList, TaskState

TASK_PREFIX = "task-"
MAX_TASK_ID = 64
TASK_IDS = Ids(
    "Task",
    "taskId",
    re.compile(r"^task-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"),
)
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


async def create_task(
    client: Client, settings: Settings, inventory: Inventory, key: ApiKey, given: TaskDefinition
) -> Task:
    definition = await _accepted(given, key, inventory)
    now = datetime.now(UTC)
    task_id = f"{TASK_PREFIX}{uuid.uuid4()}"
    # A cron task's gaps are known only from the server's next times: it starts paused until its
    # job deadline is checked against them.
    hold = definition.schedule.cron is not None
    schedule = _schedule(
        definition, task_id, settings, _plan(definition, now), hold, note=definition.name
    )
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
        await _release_cron(handle, definition, undo=handle.delete)
    return await read_task(client, task_id)


async def _accepted(
    definition: TaskDefinition, key: ApiKey, inventory: Inventory
) -> TaskDefinition:
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


async def _release_cron(
    handle: ScheduleHandle, definition: TaskDefinition, undo: Callable[[], Awaitable[None]]
) -> None:
    """Check a cron task's job deadline against the server's next action times, then activate it;
    a deadline the gaps refuse is undone (``undo``: the schedule deleted, or put back as it was)
    and answered 400."""
    gap = shortest_gap(list((await handle.describe()).info.next_action_times))
    try:
        check_job_template(definition.schedule, definition.job.request, gap)
    except ScheduleError as exc:
        await undo()
        raise _invalid(exc) from exc
    if definition.active:
        await handle.unpause(note="cron checked")


def _schedule(
    definition: TaskDefinition, task_id: str, settings: Settings, spec: Plan, hold: bool, note: str
) -> Schedule:
    """The schedule of a task: paused while inactive, or while ``hold`` (a cron not checked yet).

    Its action starts a job from the template; Temporal appends the scheduled time to the
    workflow id, and the job (``job_id=""``) takes that id and its start time.
    """
    # Named as a job the API starts, without a device count: each job counts its own targets
    # when it starts. The title also leads every run's details (workflows/job.py).
    title = job_title(definition.job.request, task=definition.name)
    input = job_input(definition.job.request, settings, job_id="", task_id=task_id)
    input = input.model_copy(update={"title": title})
    options = start_options(input)
    action = ScheduleActionStartWorkflow(
        JOB_WORKFLOW,
        input,
        id=task_id,
        task_queue=settings.task_queue,
        typed_search_attributes=options["search_attributes"],
        memo={**options["memo"], TASK_MEMO: definition},
        static_summary=title,
    )
    return Schedule(
        action=action,
        spec=spec.spec,
        policy=POLICY,
        state=ScheduleState(
            paused=hold or not definition.active,
            note=note,
            limited_actions=spec.limited_actions,
            remaining_actions=spec.remaining_actions,
        ),
    )


# --- read ---


async def _describe(client: Client, task_id: str) -> ScheduleDescription:
    TASK_IDS.known(task_id)
    try:
        return await client.get_schedule_handle(task_id).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise TASK_IDS.not_found(task_id) from exc
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


async def _listed(client: Client) -> list[tuple[str, str]]:
    """(creation time, id) of every task the schedule listing gives, newest first. The listing
    is eventually consistent: a task deleted a moment ago may still be in it."""
    created: list[tuple[str, str]] = []
    async for entry in await client.list_schedules():
        if entry.id.startswith(TASK_PREFIX):
            memo = await entry.memo()
            created.append((str(memo.get(CREATED_MEMO, "")), entry.id))
    created.sort(reverse=True)
    return created


async def list_tasks(client: Client, page: PageRequest) -> TaskList:
    """Newest first, by the creation time in each schedule's memo; only the page is described."""
    created = await _listed(client)
    ids = [task_id for _, task_id in created[page.offset : page.offset + page.size]]
    tasks = await asyncio.gather(*(_read_if_exists(client, i) for i in ids))
    return TaskList(tasks=[t for t in tasks if t], page=page.answer(len(created)))


async def _read_if_exists(client: Client, task_id: str) -> Task | None:
    # The schedule list is eventually consistent: a task deleted a moment ago may still be listed.
    try:
        return await read_task(client, task_id)
    except ApiError:
        return None


# The fields of ``POST /search/tasks``: the task's own, its job's operation name, and its dates
# (the creation, the next execution, the schedule's start and stop).
TASK_SEARCH_FIELDS = {
    "id": TEXT,
    "taskId": TEXT,
    "name": TEXT,
    "description": TEXT,
    "state": TEXT,
    "operationName": TEXT,
    "createdDate": DATE,
    "nextExecution": DATE,
    "startDate": DATE,
    "stopDate": DATE,
}
# Schedules described at once by a task search.
_CONCURRENT_DESCRIBES = 16


def _record(task: Task, created: str) -> Record:
    schedule = task.schedule
    return {
        "id": task.id,
        "taskId": task.id,
        "name": task.name,
        "description": task.description,
        "state": task.state.value,
        "operationName": task.job.request.name,
        "createdDate": _instant(created),
        "nextExecution": task.next_execution,
        "startDate": schedule.start.date if schedule.start else None,
        "stopDate": schedule.stop.date if schedule.stop else None,
    }


def _instant(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


async def search_tasks(client: Client, matches: Predicate, page: PageRequest) -> TaskList:
    """One page of the tasks ``matches`` selects, newest first. Schedules are not in workflow
    visibility: every listed task is described (a few at a time) and filtered here."""
    created = await _listed(client)
    slots = asyncio.Semaphore(_CONCURRENT_DESCRIBES)

    async def read(task_id: str) -> Task | None:
        async with slots:
            return await _read_if_exists(client, task_id)

    tasks = await asyncio.gather(*(read(task_id) for _, task_id in created))
    found = [
        task
        for task, (when, _) in zip(tasks, created, strict=True)
        if task is not None and matches(_record(task, when))
    ]
    return TaskList(
        tasks=found[page.offset : page.offset + page.size], page=page.answer(len(found))
    )


async def task_jobs(client: Client, task_id: str, page: PageRequest) -> JobList:
    """The jobs a task created, newest first; they stay listed after the task is deleted."""
    return await list_jobs(client, page, task_id=TASK_IDS.known(task_id))


# --- update and delete ---


async def update_task(
    client: Client, settings: Settings, key: ApiKey, task_id: str, changes: TaskChanges
) -> Task:
    description = await _describe(client, task_id)
    current = await definition_of(client, description)
    fields = changes.model_dump(exclude_unset=True, by_alias=False)
    definition = current.model_copy(
        update={k: getattr(changes, k) for k in fields if getattr(changes, k) is not None}
    )
    new_plan = _plan(definition, datetime.now(UTC)) if changes.schedule else None
    hold = new_plan is not None and definition.schedule.cron is not None
    note = f"{'paused' if not definition.active else 'active'} by {key.name}"

    def updater(update: ScheduleUpdateInput) -> ScheduleUpdate:
        old = update.description.schedule
        # A new schedule starts a new count of executions; an unchanged one keeps its count.
        kept = new_plan or Plan(
            spec=old.spec,
            limited_actions=old.state.limited_actions,
            remaining_actions=old.state.remaining_actions,
        )
        return ScheduleUpdate(schedule=_schedule(definition, task_id, settings, kept, hold, note))

    handle = client.get_schedule_handle(task_id)
    try:
        await handle.update(updater)
    except RPCError as exc:
        raise _refused(exc) from exc
    if hold:

        async def put_back() -> None:
            await handle.update(lambda _: ScheduleUpdate(schedule=description.schedule))

        await _release_cron(handle, definition, undo=put_back)
    return await read_task(client, task_id)


async def delete_task(client: Client, task_id: str) -> Task:
    """Deletes the schedule (no more jobs); the jobs it created stay, running or readable."""
    task = await read_task(client, task_id)
    try:
        await client.get_schedule_handle(task_id).delete()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise TASK_IDS.not_found(task_id) from exc
        raise
    return task
