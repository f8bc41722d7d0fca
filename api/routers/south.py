"""South API (SPEC 4.2, 4.3): what devices call, each with its own key (``api.south_service``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path

from api import south_service
from api.deps import DeviceKey, TemporalDep
from api.errors import ApiError, declared
from api.request_checks import CheckedRoute
from models.devices import ApiKey
from models.operations import DeviceRequest, DeviceResponse

router = APIRouter(
    prefix="/south/v80/devices/{device_id}/operation", tags=["south"], route_class=CheckedRoute
)

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
    out_of_time = await south_service.answer(client, device_id, response)
    return {"id": response.id, "accepted": True, "outOfTime": out_of_time}


@router.get("/pending")
async def pending_operations(
    device_id: DeviceId, key: DeviceKey, client: TemporalDep
) -> dict[str, list[DeviceRequest]]:
    _own_device(key, device_id)
    return {"operations": await south_service.hand_out(client, device_id)}
