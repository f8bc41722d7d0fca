"""Schemas from API clients cannot hold the event loop: ``pattern``, ``patternProperties`` and the
``regex`` format run on RE2 (linear time), a pattern RE2 cannot take is refused when its type is
created, a schema's depth and size are bounded, and a check of parameters has a budget."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import pytest
from pydantic import ValidationError

from core.catalog import BUILT_IN
from core.operation_types import ParameterSchema, schema_errors
from core.patterns import (
    MAX_PATTERN_LENGTH,
    MAX_PATTERNS,
    PatternError,
    check_pattern,
    pattern_search,
)
from models.operation_types import MAX_SCHEMA_BYTES, MAX_SCHEMA_DEPTH, MAX_STEPS, OperationTypeIn

if TYPE_CHECKING:
    from tests.stack import Stack

TYPES = "/north/v80/operationTypes"
JOBS = "/north/v80/operation/jobs"
EVIL = "^(a+)+$"
# Python's re takes seconds on this (2^40 ways to split the a's), RE2 microseconds.
HOSTILE = "a" * 40 + "!"


def string_schema(**keywords: Any) -> dict[str, Any]:
    return {"type": "object", "properties": {"serial": {"type": "string", **keywords}}}


def nested(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


def fields(schema: Any) -> list[str]:
    return [e.field for e in schema_errors(schema)]


def failing(schema: dict[str, Any], parameters: dict[str, Any]) -> list[str]:
    return [e.field for e in ParameterSchema(schema).check(parameters)[1]]


def timed(check: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    result = check()
    return result, time.perf_counter() - started


# --- the engine: RE2 with JSON-Schema's (ECMA 262) meaning ---


@pytest.mark.parametrize(
    ("pattern", "text", "found"),
    [
        ("b", "abc", True),  # a search, not a match: JSON-Schema patterns are unanchored
        ("^b", "abc", False),
        (r"^\d{3}$", "123", True),
        (r"^\d{3}$", "123\n", False),  # ECMA's $ is the end, not before a final newline
        (r"^\d$", "٣", False),  # \d is ASCII in ECMA 262
        (r"\s", "\u00a0", True),  # ECMA's \s takes Unicode spaces
        (r"^\S$", "\u2003", False),
        (".", "\n", False),
        (".", "\u2028", False),
        (r"[\s\S]", "\n", True),
        (r"^\u00e9$", "é", True),
        (r"^\ud83d\ude00$", "😀", True),  # a surrogate pair escape is one code point
        (r"^\u{1F600}$", "😀", True),
        (r"^\cJ$", "\n", True),
        ("[]", "anything", False),
        ("^[^]$", "\n", True),
        (r"^\p{L}+$", "Ωmega", True),
        (r"\\u0041", "\\u0041", True),  # an escaped backslash then a plain u
    ],
)
def test_patterns_mean_what_ecma_262_says(pattern: str, text: str, found: bool) -> None:
    assert pattern_search(pattern, text) is found


@pytest.mark.parametrize(
    "pattern", [r"(a)\1", r"(?<n>a)\k<n>", "(?=a)a", "(?!a)b", "(?<=a)b", "(?<!a)b", "(", "a{2,1}"]
)
def test_what_re2_cannot_take_is_a_pattern_error(pattern: str) -> None:
    with pytest.raises(PatternError):
        check_pattern(pattern)


def test_patterns_are_bounded() -> None:
    with pytest.raises(PatternError, match="longer than"):
        check_pattern("a" * (MAX_PATTERN_LENGTH + 1))
    with pytest.raises(PatternError, match="too large"):
        check_pattern(r"\pL{1000}")


def test_a_catastrophic_pattern_is_checked_in_linear_time() -> None:
    schema = string_schema(pattern=EVIL)
    assert schema_errors(schema) == []
    errors, took = timed(lambda: failing(schema, {"serial": "a" * 100_000 + "!"}))
    assert errors == ["parameters.serial"]
    assert took < 0.5
    assert failing(schema, {"serial": "a" * 50}) == []


def test_pattern_properties_and_the_keywords_that_read_them_use_re2() -> None:
    evil_names = {"type": "object", "patternProperties": {EVIL: {"type": "integer"}}}
    _, took = timed(lambda: failing(evil_names, {HOSTILE * 100: 1}))
    assert took < 0.5
    closed = {**evil_names, "additionalProperties": False}
    errors, took = timed(lambda: failing(closed, {HOSTILE: 1, "aaaa": 2}))
    assert errors == [f"parameters.{HOSTILE}"]
    assert took < 0.5
    unevaluated = {**evil_names, "unevaluatedProperties": False}
    errors, took = timed(lambda: failing(unevaluated, {HOSTILE: 1, "aaaa": 2}))
    assert errors == ["parameters"]
    assert took < 0.5


def test_valid_patterns_still_validate_and_reject() -> None:
    serial = string_schema(pattern=r"^SN-\d{4}$")
    assert failing(serial, {"serial": "SN-0042"}) == []
    assert failing(serial, {"serial": "SN-42"}) == ["parameters.serial"]
    assert failing(serial, {"serial": 42}) == ["parameters.serial"]  # the type says string

    sensors = {
        "type": "object",
        "patternProperties": {r"^sensor_\d+$": {"type": "number"}},
        "additionalProperties": False,
    }
    assert failing(sensors, {"sensor_1": 1.5, "sensor_22": 3}) == []
    assert failing(sensors, {"sensor_1": "hot"}) == ["parameters.sensor_1"]
    assert failing(sensors, {"sensor_x": 1}) == ["parameters.sensor_x"]

    regex = string_schema(format="regex")
    assert failing(regex, {"serial": "^ok$"}) == []
    assert failing(regex, {"serial": r"(a)\1"}) == ["parameters.serial"]
    # A parameter's regex gets a smaller program than a schema's pattern (it comes with every job).
    assert failing(regex, {"serial": r"\pL{30}"}) == ["parameters.serial"]
    assert schema_errors(string_schema(pattern=r"\pL{30}")) == []


def test_a_lone_surrogate_in_a_parameter_is_an_error_not_a_crash() -> None:
    assert failing(string_schema(pattern="^a"), {"serial": "a\ud800"}) == ["parameters.serial"]


# --- refused when the type is created ---


@pytest.mark.parametrize(
    ("schema", "field"),
    [
        (string_schema(pattern=r"(a)\1"), "parameters.properties.serial.pattern"),
        (string_schema(pattern="(?=a)a"), "parameters.properties.serial.pattern"),
        (string_schema(pattern="(?<!a)b"), "parameters.properties.serial.pattern"),
        (
            {"type": "object", "patternProperties": {r"(x)\1": {}}},
            "parameters.patternProperties",
        ),
        (string_schema(pattern="a" * 1001), "parameters.properties.serial.pattern"),
    ],
)
def test_a_pattern_re2_cannot_take_is_refused_naming_its_field(
    schema: dict[str, Any], field: str
) -> None:
    errors = schema_errors(schema)
    assert [e.field for e in errors] == [field], errors


def test_a_schema_of_many_or_large_patterns_is_refused_quickly() -> None:
    many = {
        "type": "object",
        "properties": {f"p{i}": {"pattern": f"^{i}$"} for i in range(MAX_PATTERNS + 1)},
    }
    assert fields(many) == [f"parameters.properties.p{MAX_PATTERNS}.pattern"]
    heavy = {
        "type": "object",
        "properties": {f"p{i}": {"pattern": rf"^\pL{{30}}{i}$"} for i in range(MAX_PATTERNS)},
    }
    errors, took = timed(lambda: schema_errors(heavy))
    # Compiling stops at the pattern that passes the budget, not after all of them.
    assert [e.field for e in errors] == ["parameters.properties.p5.pattern"]
    assert "RE2 instructions" in errors[0].message
    assert took < 3.0


def test_deep_huge_or_unstorable_schemas_are_refused() -> None:
    assert fields(nested(MAX_SCHEMA_DEPTH // 2 - 1)) == []
    for levels in (MAX_SCHEMA_DEPTH, 200, 5000):
        deep = schema_errors(nested(levels))
        assert len(deep) == 1 and "deeper" in deep[0].message, levels
    huge = {"type": "object", "description": "x" * MAX_SCHEMA_BYTES}
    assert fields(huge) == ["parameters"]
    assert fields({"type": "object", "title": "\ud800"}) == ["parameters.title"]
    assert fields({"type": "object", "properties": {"\ud800": {}}}) == ["parameters.properties"]
    assert fields({"type": "object", "title": "a\x00b"}) == ["parameters.title"]
    assert fields({"type": "object", "maxProperties": float("inf")}) == ["parameters.maxProperties"]


def test_a_reference_cycle_or_a_dangling_reference_is_refused_at_creation() -> None:
    errors = schema_errors({"type": "object", "$ref": "#"})
    assert [e.field for e in errors] == ["parameters"]
    assert "$ref cycle" in errors[0].message
    dangling = schema_errors({"type": "object", "$ref": "#/$defs/missing"})
    assert [e.field for e in dangling] == ["parameters"]
    assert "unresolvable" in dangling[0].message


def test_a_schema_that_multiplies_work_stops_at_its_budget() -> None:
    # 2^30 evaluations for one integer: refused in a fraction of a second.
    definitions: dict[str, Any] = {
        f"d{i}": {"allOf": [{"$ref": f"#/$defs/d{i + 1}"}, {"$ref": f"#/$defs/d{i + 1}"}]}
        for i in range(30)
    }
    definitions["d30"] = {"type": "integer"}
    schema = {"type": "object", "$defs": definitions, "properties": {"x": {"$ref": "#/$defs/d0"}}}
    assert schema_errors(schema) == []
    (_, errors), took = timed(lambda: ParameterSchema(schema).check({"x": 1}))
    assert [e.field for e in errors] == ["parameters"]
    assert "too many steps" in errors[0].message
    assert took < 1.0


def test_large_parameters_of_a_plain_schema_fit_the_budget() -> None:
    update = ParameterSchema(BUILT_IN["UPDATE"].parameters)
    elements = [{"name": f"e{i}", "version": "1", "order": i} for i in range(5000)]
    filled = update.apply({"bundleName": "b", "bundleVersion": "1", "deploymentElements": elements})
    assert len(filled["deploymentElements"]) == 5000


def test_unique_items_is_linear_and_keeps_json_equality() -> None:
    unique = {"type": "object", "properties": {"xs": {"type": "array", "uniqueItems": True}}}
    distinct = [{"id": i, "tags": ["a", i]} for i in range(5000)]  # pairwise: ~35 s
    errors, took = timed(lambda: failing(unique, {"xs": distinct}))
    assert errors == []
    assert took < 2.0
    assert failing(unique, {"xs": [*distinct, {"tags": ["a", 7], "id": 7}]}) == ["parameters.xs"]
    assert failing(unique, {"xs": [1, 1.0]}) == ["parameters.xs"]
    assert failing(unique, {"xs": [1, True, 0, False, None]}) == []


def test_the_built_in_catalog_still_validates() -> None:
    for operation_type in BUILT_IN.values():
        assert schema_errors(operation_type.parameters) == [], operation_type.name
    reboot = ParameterSchema(BUILT_IN["REBOOT_EQUIPMENT"].parameters)
    assert reboot.apply({}) == {"type": "HARDWARE"}


# --- the body of a create/replace ---


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "has space"}, "name"),
        ({"name": "X" * 101}, "name"),
        ({"name": "X\ud800"}, "name"),
        ({"title": "t" * 201}, "title"),
        ({"title": "bad\ud800"}, "title"),
        ({"description": "nul\x00"}, "description"),
        ({"description": "d" * 2001}, "description"),
        ({"steps": [{"name": f"S{i}"} for i in range(MAX_STEPS + 1)]}, "steps"),
        ({"steps": [{"name": ""}]}, "steps"),
        ({"steps": [{"name": "S" * 101}]}, "steps"),
        ({"steps": [{"name": "S", "title": "\ud800"}]}, "steps"),
        ({"parameters": nested(200)}, "parameters"),
        ({"fromCatalog": "UPDATE/../x"}, "fromCatalog"),
    ],
)
def test_the_body_is_bounded(body: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as refused:
        OperationTypeIn.model_validate(body)
    assert refused.value.errors()[0]["loc"][0] == field


def test_a_body_within_the_bounds_is_accepted() -> None:
    body = {
        "name": "FIRMWARE_FETCH",
        "title": "t" * 200,
        "steps": [{"name": f"S{i}"} for i in range(MAX_STEPS)],
        "parameters": string_schema(pattern="^a"),
    }
    assert OperationTypeIn.model_validate(body).name == "FIRMWARE_FETCH"


# --- end to end, on the running stack ---


def context(answer: Any) -> list[str]:
    assert answer.status_code == 400, answer.text
    return [c["name"] for c in answer.json()["errors"][0]["context"]]


async def test_a_hostile_parameter_neither_blocks_nor_slows_the_api(stack: Stack) -> None:
    created = await stack.api.post(
        TYPES, json={"name": "SERIAL_CHECK", "parameters": string_schema(pattern=EVIL)}
    )
    assert created.status_code == 201, created.text

    async def timed_request(method: str, url: str, **kwargs: Any) -> tuple[Any, float]:
        started = time.perf_counter()
        answer = await stack.api.request(method, url, **kwargs)
        return answer, time.perf_counter() - started

    job = {
        "name": "SERIAL_CHECK",
        "parameters": {"serial": HOSTILE},
        "target": {"append": {"entities": ["dev-00001"]}},
    }
    (refused, job_took), (live, live_took) = await asyncio.gather(
        timed_request("POST", JOBS, json={"job": {"request": job}}),
        timed_request("GET", "/health/live"),
    )
    assert context(refused) == ["parameters.serial"]
    assert job_took < 0.5
    assert live.status_code == 200
    assert live_took < 0.5


async def test_patterns_re2_cannot_take_are_refused_at_creation(stack: Stack) -> None:
    for pattern in (r"(a)\1", "(?=a)a"):
        answer = await stack.api.post(
            TYPES, json={"name": "BACKREF", "parameters": string_schema(pattern=pattern)}
        )
        assert context(answer) == ["parameters.properties.serial.pattern"], answer.text
        assert "not a pattern" in answer.json()["errors"][0]["message"]
    assert (await stack.api.get(f"{TYPES}/BACKREF")).status_code == 404

    # Replacing a type is checked the same way.
    assert (await stack.api.post(TYPES, json={"name": "BACKREF"})).status_code == 201
    replaced = await stack.api.put(
        f"{TYPES}/BACKREF",
        json={"parameters": {"type": "object", "patternProperties": {"(?<=x)y": {}}}},
    )
    assert context(replaced) == ["parameters.patternProperties"]


async def test_a_deeply_nested_schema_is_a_clean_400(stack: Stack) -> None:
    # 200 levels pass the depth of any request body: refused before parsing, naming the body.
    answer = await stack.api.post(TYPES, json={"name": "DEEP", "parameters": nested(200)})
    assert context(answer) in (["body"], ["parameters"])
    assert answer.json()["errors"][0]["code"] == 1001
    # 41 levels is a body the API parses, and a schema deeper than a type may have.
    answer = await stack.api.post(TYPES, json={"name": "DEEP", "parameters": nested(20)})
    assert context(answer) == ["parameters"]
    assert "deeper than" in answer.json()["errors"][0]["message"]
    assert (await stack.api.get(f"{TYPES}/DEEP")).status_code == 404


async def test_valid_patterns_check_jobs_end_to_end(stack: Stack) -> None:
    schema = {
        "type": "object",
        "properties": {"serial": {"type": "string", "pattern": r"^SN-\d{4}$"}},
        "patternProperties": {r"^sensor_\d+$": {"type": "number"}},
        "additionalProperties": False,
    }
    created = await stack.api.post(TYPES, json={"name": "SENSORS", "parameters": schema})
    assert created.status_code == 201, created.text
    [device] = await stack.provision(1)

    def job(parameters: dict[str, Any]) -> dict[str, Any]:
        target = {"append": {"entities": [device["id"]]}}
        return {"job": {"request": {"name": "SENSORS", "parameters": parameters, "target": target}}}

    accepted = await stack.api.post(JOBS, json=job({"serial": "SN-0001", "sensor_7": 2.5}))
    assert accepted.status_code == 201, accepted.text
    assert context(await stack.api.post(JOBS, json=job({"serial": "SN-1"}))) == [
        "parameters.serial"
    ]
    assert context(await stack.api.post(JOBS, json=job({"sensor_7": "hot"}))) == [
        "parameters.sensor_7"
    ]
    assert context(await stack.api.post(JOBS, json=job({"sensor_x": 1}))) == ["parameters.sensor_x"]
