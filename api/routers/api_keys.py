"""API key management (SPEC 2), for admins only."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Path

from api.deps import Admin, InventoryDep
from api.errors import Ids
from api.request_checks import CheckedRoute
from models.devices import ApiKey, ApiKeyIn, NewApiKey

router = APIRouter(prefix="/north/v80/apiKeys", tags=["api keys"], route_class=CheckedRoute)

# Key ids are 16 hex digits (inventory.keys); anything else is no key of ours.
MAX_KEY_ID = 32
KEY_IDS = Ids("API key", "id", re.compile(r"^[0-9a-f]{1,32}$"))


@router.post("", status_code=201)
async def create_key(_: Admin, inventory: InventoryDep, wanted: ApiKeyIn) -> NewApiKey:
    return await inventory.create_key(wanted.name, wanted.role)


@router.get("")
async def list_keys(_: Admin, inventory: InventoryDep) -> dict[str, list[ApiKey]]:
    return {"apiKeys": await inventory.list_keys()}


@router.delete("/{key_id}")
async def delete_key(
    key_id: Annotated[str, Path(max_length=MAX_KEY_ID)], _: Admin, inventory: InventoryDep
) -> dict[str, str]:
    if not await inventory.delete_key(KEY_IDS.known(key_id)):
        raise KEY_IDS.not_found(key_id)
    return {"id": key_id}
