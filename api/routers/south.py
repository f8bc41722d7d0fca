"""South API (SPEC 4.2, 4.3): what devices call, each with its own key.

A device's answers become ``device_response`` signals to its operation workflow; a poll for
pending work hands out each waiting operation through the workflow's ``hand_out`` update, whose
validator makes sure an operation is handed out once, even to concurrent polls.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from api.deps import DeviceKey, TemporalDep
from api.errors import ApiError, declared
from api.request_checks import CheckedRoute
from api.visibility import all_of, equals
from core.temporal import ENTITY_ID, OPERATION_STATUS, operation_workflow_id
from models.devices import ApiKey
from models.enums import OperationStatus
from models.operations import DeviceRequest, DeviceResponse
from workflows.operation import LATE_ANSWERS_UNTIL_MEMO, OperationWorkflow

router = APIRouter(
    prefix="/south/v80/devices/{device_id}/operation", tags=["south"], route_class=CheckedRoute
)

# How many waiting operations one poll hands out at the most.
MAX_HANDED_OUT = 100
MAX_DEVICE_ID = 128
# The device of the path: longer is a 400; any other is another device than the key's (403).
DeviceId = Annotated[str, Path(max_length=MAX_DEVICE_ID)]


def _own_device(key: ApiKey, device_id: str) -> None:
    if key.device_id != device_id:
        raise ApiError(403, "This key may act only for its own device")


@router.post("/response", responses=declared(409))
async def operation_response(
    device_id: DeviceId, key: DeviceKey, client: TemporalDep, body: DeviceResponse
) -> dict[str, Any]:
    _own_device(key, device_id)
    response = body.operation.response
    if response.device_id != device_id:
        raise ApiError(
            400,
            "deviceId in the body is not the device of the path",
            context=[("operation.response.deviceId", response.device_id)],
        )
    out_of_time = await _check_open(client, response.id, device_id)
    handle = client.get_workflow_handle(operation_workflow_id(response.id))
    try:
        await handle.signal(OperationWorkflow.device_response, response)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:  # closed between the check and the signal
            raise _finished(response.id) from exc
        raise
    return {"id": response.id, "accepted": True, "outOfTime": out_of_time}


def _unknown(operation_id: str) -> ApiError:
    return ApiError(404, f"Operation {operation_id} not found", context=[("id", operation_id)])


def _finished(operation_id: str) -> ApiError:
    return ApiError(
        409, f"Operation {operation_id} is already finished", context=[("id", operation_id)]
    )


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


@router.get("/pending")
async def pending_operations(
    device_id: DeviceId, key: DeviceKey, client: TemporalDep
) -> dict[str, list[DeviceRequest]]:
    _own_device(key, device_id)
    query = all_of(
        "WorkflowType = 'OperationWorkflow'",
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
            handed_out.append(await handle.execute_update(OperationWorkflow.hand_out))
        except (WorkflowUpdateFailedError, RPCError):
            continue  # handed out to another poll, or no longer waiting: not this poll's
    return {"operations": handed_out}
