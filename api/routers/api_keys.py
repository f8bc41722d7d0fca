"""API key management (SPEC 2), for admins only."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body
from pydantic import ValidationError

from api.deps import Admin, InventoryDep
from api.errors import ApiError, validation_error
from models.devices import ApiKey, ApiKeyIn, NewApiKey

router = APIRouter(prefix="/north/v80/apiKeys", tags=["api keys"])


@router.post("", status_code=201)
async def create_key(
    _: Admin, inventory: InventoryDep, body: Annotated[Any, Body()] = None
) -> NewApiKey:
    try:
        wanted = ApiKeyIn.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc) from exc
    return await inventory.create_key(wanted.name, wanted.role)


@router.get("")
async def list_keys(_: Admin, inventory: InventoryDep) -> dict[str, list[ApiKey]]:
    return {"apiKeys": await inventory.list_keys()}


@router.delete("/{key_id}")
async def delete_key(key_id: str, _: Admin, inventory: InventoryDep) -> dict[str, str]:
    if not await inventory.delete_key(key_id):
        raise ApiError(404, f"API key {key_id} not found", context=[("id", key_id)])
    return {"id": key_id}
