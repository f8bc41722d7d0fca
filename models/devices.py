"""Provisioned devices (SPEC 3.5) and API keys (SPEC 2)."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field, field_validator

from models.base import StrictWireModel, WireModel
from models.bounds import MAX_ID, MAX_NAME, MAX_TAG, MAX_URL, items, text
from models.enums import Role

DEVICE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$"
ADDRESS_PATTERN = r"^https?://[^\s/]+(:\d+)?(/.*)?$"


MAX_DEVICE_TAGS = 64


def _clean_tags(tags: list[str]) -> list[str]:
    return sorted(set(tags))


Tags = Annotated[
    list[Annotated[str, text(MAX_TAG, min_length=1)]],
    items(MAX_DEVICE_TAGS),
    AfterValidator(_clean_tags),
]
DeviceId = Annotated[str, Field(pattern=DEVICE_ID_PATTERN), text(MAX_ID)]
DeviceType = Annotated[str, text(MAX_NAME, min_length=1)]
Address = Annotated[str, Field(pattern=ADDRESS_PATTERN), text(MAX_URL)]


class DeviceIn(StrictWireModel):
    id: DeviceId
    type: DeviceType = "GATEWAY"
    tags: Tags = []
    address: Address | None = None


class DeviceUpdate(StrictWireModel):
    type: DeviceType | None = None
    tags: Tags | None = None
    address: Address | None = None


class Device(WireModel):
    id: str
    type: str
    tags: list[str] = []
    address: str | None = None


class ProvisionedDevice(Device):
    api_key: str


class DeviceList(WireModel):
    devices: list[Device]
    page: dict[str, int | None]


class BulkResult(WireModel):
    created: list[ProvisionedDevice]
    errors: list[dict[str, str]] = []


class ApiKeyIn(StrictWireModel):
    name: Annotated[str, text(MAX_ID, min_length=1)]
    role: Role

    @field_validator("role")
    @classmethod
    def _north_role(cls, role: Role) -> Role:
        if role is Role.DEVICE:
            raise ValueError("device keys are issued by provisioning a device")
        return role


class ApiKey(WireModel):
    id: str
    name: str
    role: Role
    device_id: str | None = None


class NewApiKey(ApiKey):
    api_key: str
