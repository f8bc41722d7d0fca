"""The service under the south router: a device's answers become ``device_response`` signals to
its operation workflow; a poll for pending work hands out each waiting operation through the
workflow's ``hand_out`` update, whose validator makes sure an operation is handed out once, even
to concurrent polls."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from temporalio.client import Client, WorkflowExecutionStatus, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from api.errors import ApiError
from core.temporal import (
    ENTITY_ID,
    HAND_OUT,
    LATE_ANSWERS_UNTIL_MEMO,
    OPERATION_STATUS,
    OPERATION_WORKFLOW,
    OperationSignal,
    all_of,
    equals,
    of_type,
    operation_workflow_id,
)
from models.enums import OperationStatus
from models.operations import DeviceRequest, DeviceResponseBody

# How many waiting operations one poll hands out at the most.
MAX_HANDED_OUT = 100


def _unknown(operation_id: str) -> ApiError:
    return ApiError(404, f"Operation {operation_id} not found", context=[("id", operation_id)])


def _finished(operation_id: str) -> ApiError:
    return ApiError(
        409, f"Operation {operation_id} is already finished", context=[("id", operation_id)]
    )


async def answer(client: Client, device_id: str, response: DeviceResponseBody) -> bool:
    """Pass a device's answer to its operation; True for an answer that came late (out of time)."""
    out_of_time = await _check_open(client, response.id, device_id)
    handle = client.get_workflow_handle(operation_workflow_id(response.id))
    try:
        await handle.signal(OperationSignal.DEVICE_RESPONSE, response)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:  # closed between the check and the signal
            raise _finished(response.id) from exc
        raise
    return out_of_time


async def _check_open(client: Client, operation_id: str, device_id: str) -> bool:
    """404/403/409 unless the operation takes this device's answer; True for a late answer."""
    try:
        uuid.UUID(operation_id)
    except ValueError as exc:
        raise _unknown(operation_id) from exc
    handle = client.get_workflow_handle(operation_workflow_id(operation_id))
    try:
        description = await handle.describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise _unknown(operation_id) from exc
        raise
    attributes = description.typed_search_attributes
    if attributes.get(ENTITY_ID) != device_id:
        raise ApiError(403, "This operation is not this device's")
    if description.status != WorkflowExecutionStatus.RUNNING:
        raise _finished(operation_id)
    status = OperationStatus(attributes.get(OPERATION_STATUS) or OperationStatus.PENDING_EXECUTION)
    if not status.is_closed:
        return False
    late_until = await description.memo_value(LATE_ANSWERS_UNTIL_MEMO, default=None)
    if late_until and datetime.fromisoformat(late_until) > datetime.now(UTC):
        return True
    raise _finished(operation_id)


async def hand_out(client: Client, device_id: str) -> list[DeviceRequest]:
    """The device's operations waiting for it to connect, oldest first, each handed out once."""
    query = all_of(
        of_type(OPERATION_WORKFLOW),
        "ExecutionStatus = 'Running'",
        equals(ENTITY_ID.name, device_id),
        equals(OPERATION_STATUS.name, OperationStatus.WAITING_FOR_CONNECTION.value),
    )
    waiting = [e async for e in client.list_workflows(query, limit=MAX_HANDED_OUT)]
    waiting.sort(key=lambda e: e.start_time)
    handed_out: list[DeviceRequest] = []
    for execution in waiting:
        handle = client.get_workflow_handle(execution.id)
        try:
            handed_out.append(await handle.execute_update(HAND_OUT, result_type=DeviceRequest))
        except (WorkflowUpdateFailedError, RPCError):
            continue  # handed out to another poll, or no longer waiting: not this poll's
    return handed_out
