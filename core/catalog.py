"""The built-in catalog of operation types (SPEC 3.4): name, parameter schema and steps."""

from __future__ import annotations

from typing import Any

from models.operation_types import OperationType, StepDefinition


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
