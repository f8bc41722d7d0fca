"""Provisioning (SPEC 3.5): the devices jobs target, each with its own south key."""

from __future__ import annotations

import csv
import io
import json
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request, Response
from pydantic import TypeAdapter, ValidationError

from api.deps import InventoryDep, Reader, Writer
from api.errors import ApiError, validation_error
from inventory.store import DeviceExists, DeviceNotFound
from models.devices import BulkResult, Device, DeviceIn, DeviceList, DeviceUpdate, ProvisionedDevice

router = APIRouter(prefix="/north/v80/provision/devices", tags=["devices"])

MAX_BULK = 100_000
_bulk_adapter = TypeAdapter(list[DeviceIn])


def _not_found(device_id: str) -> ApiError:
    return ApiError(404, f"Device {device_id} not found", context=[("id", device_id)])


@router.post("", status_code=201)
async def provision_device(
    _: Writer, inventory: InventoryDep, response: Response, body: Annotated[Any, Body()] = None
) -> ProvisionedDevice:
    try:
        device = DeviceIn.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc) from exc
    try:
        created, errors = await inventory.create_devices([device])
    except DeviceExists:
        errors, created = [{"id": device.id}], []
    if errors:
        raise ApiError(409, f"Device {device.id} already exists", context=[("id", device.id)])
    response.headers["Location"] = f"/north/v80/provision/devices/{device.id}"
    return created[0]


@router.post("/bulk", status_code=201)
async def provision_bulk(_: Writer, inventory: InventoryDep, request: Request) -> BulkResult:
    """Provision many devices from a JSON array or a CSV file (header ``id,type,tags,address``;
    tags separated by ``;``). Ids already provisioned are reported in ``errors``."""
    raw = await request.body()
    content_type = request.headers.get("content-type", "")
    try:
        rows: Any = _csv_rows(raw) if "csv" in content_type else json.loads(raw or b"null")
    except (ValueError, csv.Error) as exc:
        raise ApiError(400, f"Unreadable body: {exc}") from exc
    try:
        devices = _bulk_adapter.validate_python(rows)
    except ValidationError as exc:
        raise validation_error(exc, prefix="devices") from exc
    if len(devices) > MAX_BULK:
        raise ApiError(400, f"At most {MAX_BULK} devices per bulk request")
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
    return rows


@router.get("")
async def list_devices(
    _: Reader,
    inventory: InventoryDep,
    tag: str | None = None,
    start: Annotated[int, Query(ge=1)] = 1,
    size: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> DeviceList:
    devices, total = await inventory.list_devices(tag, start, size)
    return DeviceList(devices=devices, page={"number": start, "of": max(1, -(-total // size))})


@router.get("/{device_id}")
async def get_device(device_id: str, _: Reader, inventory: InventoryDep) -> Device:
    device = await inventory.get_device(device_id)
    if device is None:
        raise _not_found(device_id)
    return device


@router.put("/{device_id}")
async def update_device(
    device_id: str, _: Writer, inventory: InventoryDep, body: Annotated[Any, Body()] = None
) -> Device:
    try:
        update = DeviceUpdate.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc) from exc
    try:
        return await inventory.update_device(device_id, update)
    except DeviceNotFound as exc:
        raise _not_found(device_id) from exc


@router.delete("/{device_id}", status_code=200)
async def delete_device(device_id: str, _: Writer, inventory: InventoryDep) -> dict[str, str]:
    if not await inventory.delete_device(device_id):
        raise _not_found(device_id)
    return {"id": device_id}
