"""Dependencies: settings, the shared Temporal client and inventory, and the caller's API key."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader
from temporalio.client import Client

from api.certificates import certificate_caller
from api.errors import ApiError
from api.job_snapshots import JobSnapshots
from core.settings import Settings
from inventory.store import Inventory
from models.devices import ApiKey
from models.enums import Role


def _settings(request: Request) -> Settings:
    return request.app.state.settings


def _temporal(request: Request) -> Client:
    return request.app.state.temporal


def _inventory(request: Request) -> Inventory:
    return request.app.state.inventory


def _job_snapshots(request: Request) -> JobSnapshots:
    return request.app.state.job_snapshots


SettingsDep = Annotated[Settings, Depends(_settings)]
TemporalDep = Annotated[Client, Depends(_temporal)]
InventoryDep = Annotated[Inventory, Depends(_inventory)]
JobSnapshotsDep = Annotated[JobSnapshots, Depends(_job_snapshots)]


# The security scheme of the OpenAPI document; a missing key is our own 401 in the SPEC body.
api_key_header = APIKeyHeader(
    name="X-ApiKey",
    scheme_name="ApiKey",
    description=(
        "A north key (admin, operator, viewer) or a device's south key; over mutual TLS a client "
        "certificate may stand instead (docs/api.md, Certificates)"
    ),
    auto_error=False,
)


async def _caller(
    request: Request,
    inventory: InventoryDep,
    settings: SettingsDep,
    x_apikey: Annotated[str | None, Security(api_key_header)] = None,
) -> ApiKey:
    if x_apikey:  # a key, when sent, is who the caller is
        key = await inventory.authenticate(x_apikey)
        if key is None:
            raise ApiError(401, "Unknown API key")
        return key
    # No key: the client certificate the TLS handshake verified may name the caller.
    key = await certificate_caller(request, inventory, settings)
    if key is None:
        raise ApiError(401, "Missing X-ApiKey header")
    return key


def require(*roles: Role) -> Callable[..., Coroutine[Any, Any, ApiKey]]:
    """A dependency that lets through only keys of the given roles (403 for the others)."""

    async def check(key: Annotated[ApiKey, Depends(_caller)]) -> ApiKey:
        if key.role not in roles:
            raise ApiError(403, f"The {key.role.value} role may not do this")
        return key

    return check


NORTH_READ = (Role.ADMIN, Role.OPERATOR, Role.VIEWER)
NORTH_WRITE = (Role.ADMIN, Role.OPERATOR)

Reader = Annotated[ApiKey, Depends(require(*NORTH_READ))]
Writer = Annotated[ApiKey, Depends(require(*NORTH_WRITE))]
Admin = Annotated[ApiKey, Depends(require(Role.ADMIN))]
DeviceKey = Annotated[ApiKey, Depends(require(Role.DEVICE))]
