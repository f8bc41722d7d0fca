"""Provisioning (SPEC 3.5): the devices jobs target, each with its own south key."""

from __future__ import annotations

import csv
import io
import re
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import TypeAdapter, ValidationError

from api.deps import InventoryDep, Reader, Writer
from api.errors import ApiError, Ids, declared, validation_error
from api.pages import Paging
from api.request_checks import CheckedRoute, is_json, parse_json
from inventory.store import DeviceExists, DeviceNotFound
from models.devices import (
    DEVICE_ID_PATTERN,
    BulkResult,
    Device,
    DeviceIn,
    DeviceList,
    DeviceUpdate,
    ProvisionedDevice,
)

router = APIRouter(
    prefix="/north/v80/provision/devices", tags=["devices"], route_class=CheckedRoute
)

MAX_BULK = 100_000
MAX_DEVICE_ID = 128
MAX_TAG = 128
_bulk_adapter = TypeAdapter(list[DeviceIn])
DEVICE_IDS = Ids("Device", "id", re.compile(DEVICE_ID_PATTERN))
# A device id in a path: longer is a 400, another shape is no device of ours (404).
DeviceId = Annotated[str, Path(max_length=MAX_DEVICE_ID)]

# The bulk body is read by hand (JSON or CSV): its two forms are declared here.
_BULK_BODY = {
    "requestBody": {
        "required": True,
        "description": "A JSON array of devices, or CSV with the header `id,type,tags,address` "
        "(tags separated by `;`).",
        "content": {
            "application/json": {
                "schema": {
                    "type": "array",
                    "items": {"$ref": "#/components/schemas/DeviceIn"},
                    "maxItems": MAX_BULK,
                }
            },
            "text/csv": {"schema": {"type": "string"}},
        },
    }
}


@router.post("", status_code=201, responses=declared(409))
async def provision_device(
    _: Writer, inventory: InventoryDep, response: Response, device: DeviceIn
) -> ProvisionedDevice:
    try:
        created, errors = await inventory.create_devices([device])
    except DeviceExists:
        errors, created = [{"id": device.id}], []
    if errors:
        raise ApiError(409, f"Device {device.id} already exists", context=[("id", device.id)])
    response.headers["Location"] = f"/north/v80/provision/devices/{device.id}"
    return created[0]


@router.post("/bulk", status_code=201, responses=declared(400, 409, 413), openapi_extra=_BULK_BODY)
async def provision_bulk(_: Writer, inventory: InventoryDep, request: Request) -> BulkResult:
    """Provision many devices from a JSON array or a CSV file (header ``id,type,tags,address``;
    tags separated by ``;``). Ids already provisioned are reported in ``errors``."""
    content_type = request.headers.get("content-type", "")
    if "csv" in content_type:
        try:
            rows: Any = _csv_rows(await request.body())
        except (ValueError, csv.Error) as exc:
            raise ApiError(400, f"Unreadable CSV body: {exc}", context=[("body", exc)]) from exc
    elif is_json(content_type):
        rows = await request.json()  # parse_json, through the route's CheckedRequest
    elif not content_type:
        rows = parse_json(await request.body())
    else:
        raise ApiError(
            400,
            f"Unsupported content type {content_type}: send application/json or text/csv",
            context=[("Content-Type", content_type)],
        )
    if isinstance(rows, list) and len(rows) > MAX_BULK:
        raise ApiError(
            400, f"At most {MAX_BULK} devices per bulk request", context=[("devices", len(rows))]
        )
    try:
        devices = _bulk_adapter.validate_python(rows)
    except ValidationError as exc:
        raise validation_error(exc, prefix="devices") from exc
    try:
        created, errors = await inventory.create_devices(devices)
    except DeviceExists as exc:
        raise ApiError(409, "A device in the request was provisioned concurrently") from exc
    return BulkResult(created=created, errors=errors)


def _csv_rows(raw: bytes) -> list[dict[str, Any]]:
    reader = csv.DictReader(io.StringIO(raw.decode("utf-8-sig")))
    if not reader.fieldnames or "id" not in reader.fieldnames:
        raise ValueError("the CSV needs a header line with at least an 'id' column")
    rows = []
    for line in reader:
        row: dict[str, Any] = {"id": line.get("id", "")}
        if line.get("type"):
            row["type"] = line["type"]
        if line.get("address"):
            row["address"] = line["address"]
        row["tags"] = [t.strip() for t in (line.get("tags") or "").split(";") if t.strip()]
        rows.append(row)
        if len(rows) > MAX_BULK:
            break
    return rows


@router.get("")
async def list_devices(
    _: Reader,
    inventory: InventoryDep,
    page: Paging,
    tag: Annotated[str | None, Query(max_length=MAX_TAG)] = None,
) -> DeviceList:
    devices, total = await inventory.list_devices(tag, page.number, page.size)
    return DeviceList(devices=devices, page=page.answer(total).model_dump())


@router.get("/{device_id}")
async def get_device(device_id: DeviceId, _: Reader, inventory: InventoryDep) -> Device:
    device = await inventory.get_device(DEVICE_IDS.known(device_id))
    if device is None:
        raise DEVICE_IDS.not_found(device_id)
    return device


@router.put("/{device_id}")
async def update_device(
    device_id: DeviceId, _: Writer, inventory: InventoryDep, update: DeviceUpdate
) -> Device:
    try:
        return await inventory.update_device(DEVICE_IDS.known(device_id), update)
    except DeviceNotFound as exc:
        raise DEVICE_IDS.not_found(device_id) from exc


@router.delete("/{device_id}", status_code=200)
async def delete_device(device_id: DeviceId, _: Writer, inventory: InventoryDep) -> dict[str, str]:
    if not await inventory.delete_device(DEVICE_IDS.known(device_id)):
        raise DEVICE_IDS.not_found(device_id)
    return {"id": device_id}
