"""Provisioned devices (SPEC 3.5) and API keys (SPEC 2)."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field, field_validator

from models.base import StrictWireModel, WireModel
from models.enums import Role

DEVICE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$"
ADDRESS_PATTERN = r"^https?://[^\s/]+(:\d+)?(/.*)?$"


def _clean_tags(tags: list[str]) -> list[str]:
    if any(not t or len(t) > 128 for t in tags):
        raise ValueError("tags are non-empty strings of at most 128 characters")
    return sorted(set(tags))


Tags = Annotated[list[str], AfterValidator(_clean_tags)]


class DeviceIn(StrictWireModel):
    id: str = Field(pattern=DEVICE_ID_PATTERN)
    type: str = "GATEWAY"
    tags: Tags = []
    address: str | None = Field(default=None, pattern=ADDRESS_PATTERN)


class DeviceUpdate(StrictWireModel):
    type: str | None = None
    tags: Tags | None = None
    address: str | None = Field(default=None, pattern=ADDRESS_PATTERN)


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
    name: str = Field(min_length=1, max_length=128)
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
