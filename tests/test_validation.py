"""Parameter schemas: checking a schema, checking parameters, filling defaults, naming fields."""

from __future__ import annotations

from typing import Any

import pytest

from core.catalog import BUILT_IN
from core.operation_types import (
    FieldError,
    InvalidParameters,
    ParameterSchema,
    UnknownCatalogEntry,
    resolve_definition,
    schema_errors,
)
from models.operation_types import OperationTypeIn, StepDefinition

FIRMWARE = {
    "type": "object",
    "properties": {
        "url": {"type": "string", "format": "uri"},
        "retries": {"type": "integer", "minimum": 0, "maximum": 5, "default": 3},
        "options": {
            "type": "object",
            "properties": {"verify": {"type": "boolean", "default": True}},
            "default": {},
        },
    },
    "required": ["url"],
    "additionalProperties": False,
}


def fields(errors: list[FieldError]) -> list[str]:
    return [e.field for e in errors]


def failing(schema: dict[str, Any], parameters: dict[str, Any]) -> list[str]:
    with pytest.raises(InvalidParameters) as caught:
        ParameterSchema(schema).apply(parameters)
    return fields(caught.value.errors)


def test_reboot_defaults_to_hardware() -> None:
    schema = ParameterSchema(BUILT_IN["REBOOT_EQUIPMENT"].parameters)
    assert schema.apply({}) == {"type": "HARDWARE"}
    assert schema.apply({"type": "SOFTWARE"}) == {"type": "SOFTWARE"}


def test_reboot_refuses_a_value_outside_the_enum_and_unknown_properties() -> None:
    reboot = BUILT_IN["REBOOT_EQUIPMENT"].parameters
    assert failing(reboot, {"type": "SOFT"}) == ["parameters.type"]
    assert failing(reboot, {"force": True}) == ["parameters.force"]


def test_defaults_fill_nested_objects_without_touching_the_input() -> None:
    given = {"url": "https://example.com/fw.bin"}
    filled = ParameterSchema(FIRMWARE).apply(given)
    assert filled == {**given, "retries": 3, "options": {"verify": True}}
    assert given == {"url": "https://example.com/fw.bin"}


def test_defaults_are_not_shared_between_calls() -> None:
    schema = ParameterSchema(BUILT_IN["UPDATE"].parameters)
    first = schema.apply({"bundleName": "b", "bundleVersion": "1"})
    first["deploymentElements"].append({"name": "x"})
    second = schema.apply({"bundleName": "b", "bundleVersion": "1"})
    assert second["deploymentElements"] == []


def test_every_failing_field_is_named() -> None:
    assert sorted(failing(FIRMWARE, {"retries": 9, "extra": 1})) == [
        "parameters.extra",
        "parameters.retries",
        "parameters.url",
    ]


@pytest.mark.parametrize("url", ["not a uri", "example.com/fw.bin", "http://exa mple.com"])
def test_uri_format_is_checked(url: str) -> None:
    assert failing(FIRMWARE, {"url": url}) == ["parameters.url"]


def test_date_time_format_is_checked() -> None:
    clock = BUILT_IN["SET_CLOCK_EQUIPMENT"].parameters
    assert failing(clock, {"datetime": "tomorrow"}) == ["parameters.datetime"]
    ParameterSchema(clock).apply({"datetime": "2026-11-22T10:15:30Z"})


def test_array_items_are_named_by_index_under_the_prefix() -> None:
    schema = ParameterSchema(BUILT_IN["SET_DEVICE_PARAMETERS"].parameters)
    _, errors = schema.check({"variableList": [{"name": "a"}, {"value": 1}]}, prefix="p")
    assert fields(errors) == ["p.variableList[1].name"]


def test_integer_bounds_and_types() -> None:
    base = {"url": "https://example.com"}
    assert failing(FIRMWARE, {**base, "retries": -1}) == ["parameters.retries"]
    assert failing(FIRMWARE, {**base, "retries": "2"}) == ["parameters.retries"]
    assert ParameterSchema(FIRMWARE).apply({**base, "retries": 5})["retries"] == 5


def test_the_catalog_schemas_are_valid() -> None:
    for operation_type in BUILT_IN.values():
        assert schema_errors(operation_type.parameters) == [], operation_type.name


@pytest.mark.parametrize(
    ("schema", "field"),
    [
        ({"type": "nonsense"}, "parameters.type"),
        ({"type": "object", "properties": {"a": {"minimum": "x"}}}, "parameters.properties.a"),
        ({"type": "array"}, "parameters.type"),
        ({"type": "object", "properties": {"a": {"pattern": "("}}}, "parameters.properties.a"),
        ({"type": "object", "$ref": "https://example.com/s.json"}, "parameters.$ref"),
        ({"$schema": "http://json-schema.org/draft-04/schema#"}, "parameters.$schema"),
        ("object", "parameters"),
    ],
)
def test_invalid_schemas_are_refused(schema: Any, field: str) -> None:
    errors = schema_errors(schema)
    assert errors
    assert any(e.field.startswith(field) for e in errors), errors


def test_from_catalog_copies_schema_and_steps_and_the_body_overrides() -> None:
    update = BUILT_IN["UPDATE"]
    copied = resolve_definition("MY_UPDATE", OperationTypeIn(from_catalog="UPDATE"))
    assert copied.name == "MY_UPDATE"
    assert copied.parameters == update.parameters
    assert copied.steps == update.steps
    assert copied.title == update.title

    steps = [StepDefinition(name="ONLY")]
    overridden = resolve_definition(
        "MY_UPDATE", OperationTypeIn(from_catalog="UPDATE", title="Mine", steps=steps)
    )
    assert overridden.title == "Mine"
    assert overridden.steps == steps
    assert overridden.parameters == update.parameters


def test_from_catalog_needs_a_built_in_type() -> None:
    with pytest.raises(UnknownCatalogEntry):
        resolve_definition("X", OperationTypeIn(from_catalog="NO_SUCH_TYPE"))


def test_a_type_without_a_schema_takes_any_object() -> None:
    plain = resolve_definition("PLAIN", OperationTypeIn())
    assert schema_errors(plain.parameters) == []
    assert ParameterSchema(plain.parameters).apply({"anything": 1}) == {"anything": 1}
