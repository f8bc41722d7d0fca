"""The built-in catalog of operation types (SPEC 3.4): name, parameter schema and steps."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from models.base import StrictWireModel, UtcDatetime, WireModel

# Names travel in URLs, visibility queries and device requests: keep them plain.
TYPE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"


class StepDefinition(StrictWireModel):
    name: str = Field(min_length=1, max_length=100)
    title: str | None = None
    description: str | None = None


class OperationType(WireModel):
    """The operation type object of SPEC 3.4."""

    name: str
    title: str | None = None
    description: str | None = None
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})
    steps: list[StepDefinition] = []


class OperationTypeRecord(OperationType):
    """An operation type as listed by the API: built-in or custom, and when a custom one changed."""

    custom: bool = False
    created_date: UtcDatetime | None = None
    updated_date: UtcDatetime | None = None


class OperationTypeIn(StrictWireModel):
    """The body of ``POST``/``PUT /operationTypes``; ``fromCatalog`` starts from a built-in type's
    schema and steps, and the fields given here override them."""

    name: str | None = Field(default=None, pattern=TYPE_NAME_PATTERN)
    title: str | None = Field(default=None, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    parameters: dict[str, Any] | None = None
    steps: list[StepDefinition] | None = None
    from_catalog: str | None = None


def _schema(properties: dict[str, Any] | None = None, required: list[str] | None = None) -> dict:
    schema: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": properties or {},
        "additionalProperties": False,
    }
    if required:
        schema["required"] = required
    return schema


def _steps(*names: str) -> list[StepDefinition]:
    return [StepDefinition(name=n, title=n.replace("_", " ").capitalize()) for n in names]


_VARIABLE_LIST = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {"name": {"type": "string", "minLength": 1}, "value": {}},
        "required": ["name"],
    },
}

BUILT_IN: dict[str, OperationType] = {
    t.name: t
    for t in [
        OperationType(
            name="REBOOT_EQUIPMENT",
            title="Reboot equipment",
            parameters=_schema(
                {
                    "type": {
                        "type": "string",
                        "enum": ["HARDWARE", "SOFTWARE"],
                        "default": "HARDWARE",
                    }
                }
            ),
        ),
        OperationType(name="REFRESH_INFO", title="Refresh information", parameters=_schema()),
        OperationType(
            name="EQUIPMENT_DIAGNOSTIC", title="Equipment diagnostic", parameters=_schema()
        ),
        OperationType(
            name="DIAGNOSIS",
            title="Diagnosis",
            parameters=_schema(),
            steps=_steps("PROVISION", "PRESENCE", "MODEM", "REGISTER"),
        ),
        OperationType(
            name="UPDATE",
            title="Software update",
            parameters=_schema(
                {
                    "bundleName": {"type": "string", "minLength": 1},
                    "bundleVersion": {"type": "string", "minLength": 1},
                    "deploymentElements": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "name": {"type": "string"},
                                "version": {"type": "string"},
                                "type": {"type": "string"},
                                "path": {"type": "string"},
                                "downloadUrl": {"type": "string"},
                                "order": {"type": "integer"},
                                "operation": {"type": "string"},
                            },
                            "required": ["name"],
                        },
                        "default": [],
                    },
                },
                required=["bundleName", "bundleVersion"],
            ),
            steps=_steps("BEGINUPDATE", "DOWNLOADFILE", "BEGININSTALL", "ENDINSTALL", "ENDUPDATE"),
        ),
        OperationType(
            name="SET_DEVICE_PARAMETERS",
            title="Set device parameters",
            parameters=_schema({"variableList": _VARIABLE_LIST}, required=["variableList"]),
        ),
        OperationType(
            name="GET_DEVICE_PARAMETERS",
            title="Get device parameters",
            parameters=_schema({"variableList": _VARIABLE_LIST}),
        ),
        OperationType(
            name="SET_CLOCK_EQUIPMENT",
            title="Set clock",
            parameters=_schema(
                {"datetime": {"type": "string", "format": "date-time"}}, ["datetime"]
            ),
        ),
        OperationType(name="SYNCHRONIZE_CLOCK", title="Synchronize clock", parameters=_schema()),
        OperationType(name="FACTORY_RESET", title="Factory reset", parameters=_schema()),
        OperationType(name="REFRESH_PRESENCE", title="Refresh presence", parameters=_schema()),
    ]
}
