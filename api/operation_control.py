"""(beyond OpenGate) A job's operations one device at a time: cancel one operation, and rerun a
job on the devices whose operations ended a given way (docs/api.md, "Per-device control").

A cancel is the operation workflow's own ``stop`` signal, the one its job sends when the job is
cancelled: the operation closes ``CANCELLED`` ``byUser`` and reports its close to the job, whose
counters follow. A rerun reads the job's closed operations from visibility, as the listing of a
job's operations does, and creates a new job with the same request on exactly those devices.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from temporalio.client import Client, WorkflowExecutionDescription, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from api import job_service
from api.errors import ApiError, ErrorCode, Ids, validation_error
from core.settings import Settings
from core.temporal import (
    JOB_ID,
    OPERATION_RESULT,
    OPERATION_STATUS,
    OPERATION_WORKFLOW,
    OperationSignal,
    all_of,
    literal,
    operation_workflow_id,
    operations_of_job,
)
from inventory.store import Inventory
from models.devices import ApiKey
from models.enums import CancelReason, OperationStatus, ResultCode
from models.jobs import MAX_LISTED_ENTITIES, Job, JobRequest
from models.messages import JobChange, OperationRetry, OperationStop
from models.operations import Operation
from models.rerun import RerunFilter

OPERATION_IDS = Ids(
    "Operation",
    "operationId",
    re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"),
)
# After the stop signal, the answer waits this long at most for the operation to show it closed
# (seconds between two reads, growing). An operation whose request is being pushed at that
# moment closes only when the push returns: the answer is then a 202 with it still open.
_CLOSE_CHECKS = (0.05, 0.1, 0.2, 0.4, 0.8, 1.0)
# Operations read from visibility per page while a rerun gathers its devices.
_RERUN_PAGE = 1000
# A rerun lists its devices, and one job lists at most this many.
MAX_RERUN_DEVICES = MAX_LISTED_ENTITIES
# The most closed operations one rerun reads, within one HTTP request (20 pages of visibility,
# each operation's memo decoded). A filter on results is narrowed in visibility (every operation
# read matches), but a cancel reason is not a search attribute: ``byUser`` over a job whose
# 300,000 operations were cancelled by its deadline would read all of them to find a few. The
# tests lower both caps (the API runs in the test process).
MAX_RERUN_SCAN = 20_000


# --- cancel one operation ---


async def cancel_operation(
    client: Client, job_id: str, operation_id: str, key: ApiKey
) -> tuple[Operation, bool]:
    """Cancel one open operation of a job (``byUser``): the operation as it then stands, and
    whether it has closed yet. 404 for an unknown job or an operation not of this job, 409 for
    an operation already closed."""
    await job_service.read_job(client, job_id)
    handle = client.get_workflow_handle(operation_workflow_id(OPERATION_IDS.known(operation_id)))
    description = await _describe(client, job_id, operation_id)
    operation = await job_service.operation_of(description)
    if description.status != WorkflowExecutionStatus.RUNNING or operation.status.is_closed:
        raise _closed(operation_id, operation.status)
    stop = OperationStop(
        reason=CancelReason.BY_USER, description=f"the operation was cancelled by {key.name}"
    )
    try:
        await handle.signal(OperationSignal.STOP, stop)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:  # closed between the read and the signal
            raise _closed(operation_id, OperationStatus.FINISHED) from exc
        raise
    for pause in _CLOSE_CHECKS:
        await asyncio.sleep(pause)
        operation = await job_service.operation_of(await _describe(client, job_id, operation_id))
        if operation.status.is_closed:
            return operation, True
    return operation, False


async def _describe(client: Client, job_id: str, operation_id: str) -> WorkflowExecutionDescription:
    """The operation's workflow; 404 unless it is an operation of this job."""
    handle = client.get_workflow_handle(operation_workflow_id(operation_id))
    try:
        description = await handle.describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise _not_in_job(job_id, operation_id) from exc
        raise
    if (
        description.workflow_type != OPERATION_WORKFLOW
        or description.typed_search_attributes.get(JOB_ID) != job_id
    ):
        raise _not_in_job(job_id, operation_id)
    return description


# --- retry one operation ---

# Manual retries of one operation, as AWS IoT Jobs bounds them: past this, rerun the job.
MAX_MANUAL_RETRIES = 10


async def retry_operation(
    client: Client, inventory: Inventory, job_id: str, operation_id: str
) -> Operation:
    """Send a closed operation of a running job again: a new attempt of the same operation id,
    to the device as the inventory has it now. The job's counters move it back in progress.
    404 for an unknown job or an operation not of this job, 409 for an operation still open or
    retried too often or whose device is gone, 400 code 1015 for a job that is closing or closed.
    """
    await job_service.read_job(client, job_id)
    OPERATION_IDS.known(operation_id)
    # Two retries of one operation at once: the second reads the operation once the first has
    # sent it again (open: 409), never the closed run the first has just retired.
    async with _RETRIES.one_at_a_time(operation_id):
        return await _retry(client, inventory, job_id, operation_id)


async def _retry(client: Client, inventory: Inventory, job_id: str, operation_id: str) -> Operation:
    description = await _describe(client, job_id, operation_id)
    operation = await job_service.operation_of(description)
    if not operation.status.is_closed:
        raise ApiError(
            409,
            f"Operation {operation_id} is still open ({operation.status.value}): only a closed "
            "operation is retried",
            context=[("operationId", operation_id)],
        )
    retried = operation.manual_retries or 0
    if retried >= MAX_MANUAL_RETRIES:
        raise ApiError(
            409,
            f"Operation {operation_id} was retried {retried} times, the most one operation is: "
            "rerun the job on its device instead",
            context=[("operationId", operation_id)],
        )
    device = await inventory.get_device(operation.entity_id)
    if device is None:
        raise ApiError(
            409,
            f"Device {operation.entity_id} of operation {operation_id} is no longer provisioned",
            context=[("operationId", operation_id)],
        )
    retry = OperationRetry(
        operation_id=operation_id,
        device=device,
        run_id=description.run_id,
        result=operation.result,
        cancel_reason=operation.cancel_reason,
        attempts_before=operation.attempts.current,
        out_of_time=bool(operation.out_of_time),
        manual_retries=retried + 1,
    )
    try:
        await job_service.change_job(client, job_id, JobChange(retry=retry))
    except ApiError as exc:
        if exc.code == ErrorCode.JOB_STATE_TRANSITION:
            raise
        # The job refuses a retry of an operation it has open: the operation closed a moment
        # ago and its job has not counted the close yet, or another retry (through another API
        # process) sent it again since it was read here.
        raise ApiError(
            409,
            f"Operation {operation_id} is still open for its job ({exc.message}): it has just "
            "closed and the job has not counted it yet, or another retry sent it again; read "
            "it and retry once it is closed",
            context=[("operationId", operation_id)],
        ) from exc
    return await job_service.operation_of(await _describe(client, job_id, operation_id))


class _KeyedLocks:
    """One lock per key, held only while someone uses it (so the map stays small, and no lock
    outlives the event loop it was made in)."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def one_at_a_time(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key) or (asyncio.Lock(), 0)
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


_RETRIES = _KeyedLocks()


def _not_in_job(job_id: str, operation_id: str) -> ApiError:
    return ApiError(
        404,
        f"Operation {operation_id} not found in job {job_id}",
        context=[("operationId", operation_id)],
    )


def _closed(operation_id: str, status: OperationStatus) -> ApiError:
    return ApiError(
        409,
        f"Operation {operation_id} is already closed ({status.value})",
        context=[("operationId", operation_id)],
    )


# --- rerun a job on some of its devices ---


async def rerun_job(
    client: Client,
    settings: Settings,
    inventory: Inventory,
    key: ApiKey,
    job_id: str,
    rerun: RerunFilter,
) -> Job:
    """A new job with the request of job ``job_id`` on exactly the devices whose closed
    operations the filter matches, linked to it by ``rerunOf``."""
    source = await job_service.read_job(client, job_id)
    devices = await _matching_devices(client, source.id, rerun)
    if not devices:
        raise ApiError(
            400,
            f"No closed operation of job {job_id} matches the filter: nothing to rerun",
            context=[("jobId", job_id)],
        )
    if len(devices) > MAX_RERUN_DEVICES:
        raise ApiError(
            400,
            f"More than {MAX_RERUN_DEVICES:,} operations of job {job_id} match the filter: a "
            f"rerun lists its devices, and one job lists at most {MAX_RERUN_DEVICES:,}",
            context=[("jobId", job_id)],
        )
    request = _rerun_request(job_id, source.request, devices, datetime.now(UTC))
    return await job_service.create_job(
        client, settings, inventory, key, request, rerun_of=source.id
    )


async def _matching_devices(client: Client, job_id: str, rerun: RerunFilter) -> list[str]:
    """The devices of the job's closed operations that match, each once, by id; one more than
    a job may list at most. A 400 once more than ``MAX_RERUN_SCAN`` operations were read."""
    query = all_of(operations_of_job(job_id), _narrowed(rerun))
    devices: dict[str, None] = {}
    read = 0
    async for execution in client.list_workflows(query, page_size=_RERUN_PAGE):
        read += 1
        if read > MAX_RERUN_SCAN:
            raise _too_many_to_read(job_id, rerun)
        operation = await job_service.operation_of(execution)
        if rerun.matches(operation):
            devices[operation.entity_id] = None
            if len(devices) > MAX_RERUN_DEVICES:
                break
    return sorted(devices)


def _too_many_to_read(job_id: str, rerun: RerunFilter) -> ApiError:
    reasons = [r.value for r in rerun.cancel_reasons or []]
    return ApiError(
        400,
        f"Job {job_id} has more than {MAX_RERUN_SCAN:,} closed operations this filter may match, "
        f"and one rerun reads at most {MAX_RERUN_SCAN:,}: the search index holds results but "
        f"not cancel reasons. Narrow the filter (a device's codes in results instead of "
        "byExternal or byExternalTimeout), or list the devices from the job's operations "
        "(GET …/operations, each with its cancelReason) and create a job on them",
        context=[("cancelReasons", ", ".join(reasons))] if reasons else [("jobId", job_id)],
    )


# The results an operation closed with each cancel reason has in the search index (its
# OperationResult): an engine's cancel has CANCELLED, a device's its own code. A cancel by
# timeout may carry any code (a late answer's), and ``byEngine`` is also what an operation of
# older code that recorded no reason reads back as, whatever its result: neither is narrowed.
_RESULTS_OF_REASON: dict[CancelReason, tuple[ResultCode, ...] | None] = {
    CancelReason.BY_USER: (ResultCode.CANCELLED,),
    CancelReason.BY_EXTERNAL: (ResultCode.CANCELLED, ResultCode.CANCELLED_INTERNAL),
    CancelReason.BY_EXTERNAL_TIMEOUT: (ResultCode.ERROR_TIMEOUT, ResultCode.TIMEOUT_CANCELLED),
    CancelReason.BY_TIMEOUT: None,
    CancelReason.BY_ENGINE: None,
}


def _narrowed(rerun: RerunFilter) -> str:
    """The visibility clause of the closed operations that may match (the filter itself is
    applied to each operation object, where the cancel reason is)."""
    closed = _is_in(OPERATION_STATUS.name, [s.value for s in OperationStatus if s.is_closed])
    kinds = []
    if rerun.results:
        kinds.append(_is_in(OPERATION_RESULT.name, [r.value for r in rerun.results]))
    if rerun.cancel_reasons:
        cancelled = f"{OPERATION_STATUS.name} = {literal(OperationStatus.CANCELLED.value)}"
        narrowing = [_RESULTS_OF_REASON.get(reason) for reason in rerun.cancel_reasons]
        if all(results is not None for results in narrowing):
            codes = [code.value for results in narrowing for code in results or ()]
            cancelled = f"({cancelled} AND {_is_in(OPERATION_RESULT.name, codes)})"
        kinds.append(cancelled)
    return f"{closed} AND ({' OR '.join(kinds)})"


def _is_in(attribute: str, values: list[str]) -> str:
    return f"{attribute} IN ({', '.join(literal(v) for v in dict.fromkeys(values))})"


def _rerun_request(
    job_id: str, source: JobRequest, devices: list[str], now: datetime
) -> JobRequest:
    """The source job's request on ``devices``: the same type, parameters (each device's own,
    for a job on ``entitiesWithParameters``), operation parameters, rollout, notes and
    callback; active, started at once, not continuous, and with the source's deadline unless it
    has passed."""
    selection = source.target.append if source.target else None
    # In the order of the source job's list (a canary first stays first); by id for tags.
    listed = selection.listed_ids() if selection is not None else []
    order = {d: i for i, d in reversed(list(enumerate(listed)))}
    ordered = sorted(devices, key=lambda d: (order.get(d, len(order)), d))
    data: dict[str, Any] = source.model_dump(exclude_none=True)
    if selection is not None and selection.entities_with_parameters:
        own = {e.id: e.parameters for e in selection.entities_with_parameters}
        entries = [{"id": d, "parameters": own.get(d, {})} for d in ordered]
        data["target"] = {"append": {"entities_with_parameters": entries}}
    else:
        data["target"] = {"append": {"entities": ordered}}
    data["active"] = True
    # A rerun is of the devices listed: it does not wait for more (a continuous source's
    # rerun runs once on the devices it names).
    data["continuous"] = False
    stop = source.schedule.stop if source.schedule else None
    data.pop("schedule", None)
    if stop is not None and (stop.date is None or stop.date > now):
        data["schedule"] = {"stop": stop.model_dump(exclude_none=True)}
    try:
        return JobRequest.model_validate(data)
    except ValidationError as exc:
        problem = validation_error(exc, "job.request")
        raise ApiError(
            400,
            f"The rerun of job {job_id} on {len(devices):,} devices cannot be one job: "
            f"{problem.message}",
            context=problem.context,
        ) from exc
