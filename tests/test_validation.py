"""Parameter schemas: checking a schema, checking parameters, filling defaults, naming fields;
and the bounds of the beyond-OpenGate rollout fields (``rollout.groups``, ``rollout.rate``) over
HTTP, on the API alone: a request refused by validation never reaches Temporal, so these tests
need no server (a fake client fails any test whose request gets that far)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, NoReturn, cast

import httpx
import pytest
import pytest_asyncio
from temporalio.client import Client

from api.app import create_app
from core.catalog import BUILT_IN
from core.operation_types import (
    FieldError,
    InvalidParameters,
    ParameterSchema,
    UnknownCatalogEntry,
    resolve_definition,
    schema_errors,
)
from core.settings import Settings
from inventory.keys import new_key
from models.jobs import MAX_FACTOR, JobEnvelope, RolloutRate
from models.messages import JobState
from models.operation_types import OperationTypeIn, StepDefinition
from workflows.policies import current_rate

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


# --- rollout.groups and rollout.rate over HTTP, on the API alone ---

JOBS = "/north/v80/operation/jobs"
RATE = {"basePerMinute": 60, "incrementFactor": 2, "every": 20, "criterion": "succeeded"}


class _NoTemporal:
    """Stands for the Temporal client: a request that passed validation would reach it."""

    def __getattr__(self, name: str) -> NoReturn:
        raise AssertionError(f"the request reached Temporal ({name}): it was not refused")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def api(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[httpx.AsyncClient]:
    _, admin_key, _ = new_key()
    database = tmp_path_factory.mktemp("api-only") / "inventory.db"
    settings = Settings(
        _env_file=None,
        bootstrap_admin_key=admin_key,
        database_url=f"sqlite+aiosqlite:///{database}",
    )
    app = create_app(settings, temporal_client=cast(Client, _NoTemporal()))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://api",
            headers={"X-ApiKey": admin_key, "Content-Type": "application/json"},
        ) as client,
    ):
        yield client


def _job(rollout: str) -> bytes:
    """A job request whose ``rollout`` is this JSON text, sent as it is (NaN and 1e400 too)."""
    return (
        '{"job":{"request":{"name":"REBOOT_EQUIPMENT","target":{"append":{"tags":["t"]}},'
        + '"rollout":'
        + rollout
        + "}}}"
    ).encode()


async def _refused(api: httpx.AsyncClient, rollout: str, field: str, code: int = 1001) -> str:
    """The job is a 400 in the SPEC body whose context names ``field`` (under job.request);
    its message."""
    answer = await api.post(JOBS, content=_job(rollout))
    assert answer.status_code == 400, answer.text
    [error] = answer.json()["errors"]
    assert error["code"] == code, error
    names = [c["name"] for c in error["context"]]
    wanted = field if field == "body" else f"job.request.rollout.{field}"
    assert wanted in names, (wanted, names, error["message"])
    return str(error["message"])


def _groups(*groups: str) -> str:
    return '{"groups":[' + ",".join(groups) + "]}"


def _group(fields: str = '"count":1', name: str = '"a"') -> str:
    return f'{{"name":{name},{fields}}}'


GROUPS: list[tuple[str, str, str]] = [
    # Shares that cannot all be given: the later groups would be empty (DONE at once).
    ("percents summing to 120", _groups(_group('"percent":60'), _group('"percent":60', '"b"')),
     "groups"),
    ("the groups before the last take 100%",
     _groups(_group('"percent":50'), _group('"percent":50', '"b"'), _group('"percent":100', '"c"')),
     "groups"),
    ("a first group of 100% before a count", _groups(_group('"percent":100'), _group(name='"b"')),
     "groups"),
    ("the same name twice", _groups(_group('"percent":10'), _group('"percent":10')), "groups"),
    ("no group", _groups(), "groups"),
    ("21 groups", _groups(*(_group(name=f'"g{i}"') for i in range(21))), "groups"),
    ("not a list", '{"groups":{"name":"a","count":1}}', "groups"),
    # Sizes.
    ("percent 0", _groups(_group('"percent":0')), "groups.0.percent"),
    ("percent -1", _groups(_group('"percent":-1')), "groups.0.percent"),
    ("percent 100.5", _groups(_group('"percent":100.5')), "groups.0.percent"),
    ("percent 1e308", _groups(_group('"percent":1e308')), "groups.0.percent"),
    ("percent 2^63", _groups(_group(f'"percent":{2**63}')), "groups.0.percent"),
    ("percent a string", _groups(_group('"percent":"half"')), "groups.0.percent"),
    ("count 0", _groups(_group('"count":0')), "groups.0.count"),
    ("count -1", _groups(_group('"count":-1')), "groups.0.count"),
    ("count 1.5", _groups(_group('"count":1.5')), "groups.0.count"),
    ("count 1e308", _groups(_group('"count":1e308')), "groups.0.count"),
    ("count 2^63", _groups(_group(f'"count":{2**63}')), "groups.0.count"),
    ("count past 1,000,000", _groups(_group('"count":1000001')), "groups.0.count"),
    ("percent and count", _groups(_group('"percent":10,"count":5')), "groups.0"),
    ("count and tags", _groups(_group('"count":5,"tags":["t"]')), "groups.0"),
    ("no size", _groups('{"name":"a"}'), "groups.0"),
    ("no tags in tags", _groups(_group('"tags":[]')), "groups.0.tags"),
    # Thresholds.
    ("successThreshold -1", _groups(_group('"count":1,"successThreshold":-1')),
     "groups.0.successThreshold"),
    ("successThreshold 100.01", _groups(_group('"count":1,"successThreshold":100.01')),
     "groups.0.successThreshold"),
    ("successThreshold 1e308", _groups(_group('"count":1,"successThreshold":1e308')),
     "groups.0.successThreshold"),
    ("errorThreshold 2^63", _groups(_group(f'"count":1,"errorThreshold":{2**63}')),
     "groups.0.errorThreshold"),
    ("errorThreshold -1e308", _groups(_group('"count":1,"errorThreshold":-1e308')),
     "groups.0.errorThreshold"),
    # Names: shown in the report and in the reason a group paused the job.
    ("no name", _groups('{"count":1}'), "groups.0.name"),
    ("an empty name", _groups(_group(name='""')), "groups.0.name"),
    ("a blank name", _groups(_group(name='"   "')), "groups.0.name"),
    ("a name of 65 characters", _groups(_group(name=json.dumps("x" * 65))), "groups.0.name"),
    ("a name with a newline", _groups(_group(name='"canary\\nPAUSED"')), "groups.0.name"),
    ("a name with an escape sequence", _groups(_group(name='"\\u001b[2Jcanary"')),
     "groups.0.name"),
    ("a name with a C1 control", _groups(_group(name='"a\\u0085b"')), "groups.0.name"),
    ("a name with a bidi override", _groups(_group(name='"a\\u202eb"')), "groups.0.name"),
    ("a name that is a number", _groups(_group(name="5")), "groups.0.name"),
    # Not JSON numbers: refused with the body, before any field is read.
    ("percent NaN", _groups(_group('"percent":NaN')), "body"),
    ("count Infinity", _groups(_group('"count":Infinity')), "body"),
    ("successThreshold 1e400", _groups(_group('"count":1,"successThreshold":1e400')), "body"),
]  # fmt: skip


@pytest.mark.parametrize(("rollout", "field"), [g[1:] for g in GROUPS], ids=[g[0] for g in GROUPS])
async def test_a_hostile_rollout_group_is_a_400_naming_the_field(
    api: httpx.AsyncClient, rollout: str, field: str
) -> None:
    await _refused(api, rollout, field)


def _rate(**changes: Any) -> str:
    """A rate with ``changes`` (values as JSON text; None drops the field)."""
    fields = {k: json.dumps(v) for k, v in RATE.items()} | changes
    return '{"rate":{' + ",".join(f'"{k}":{v}' for k, v in fields.items() if v is not None) + "}}"


RATES: list[tuple[str, str, str]] = [
    ("basePerMinute 0", _rate(basePerMinute="0"), "rate.basePerMinute"),
    ("basePerMinute -60", _rate(basePerMinute="-60"), "rate.basePerMinute"),
    ("basePerMinute 1.5", _rate(basePerMinute="1.5"), "rate.basePerMinute"),
    ("basePerMinute 2^63", _rate(basePerMinute=str(2**63)), "rate.basePerMinute"),
    ("basePerMinute 1e308", _rate(basePerMinute="1e308"), "rate.basePerMinute"),
    ("basePerMinute past 100,000", _rate(basePerMinute="100001"), "rate.basePerMinute"),
    ("no basePerMinute", _rate(basePerMinute=None), "rate.basePerMinute"),
    ("incrementFactor 0.99", _rate(incrementFactor="0.99"), "rate.incrementFactor"),
    ("incrementFactor 0", _rate(incrementFactor="0"), "rate.incrementFactor"),
    ("incrementFactor -2", _rate(incrementFactor="-2"), "rate.incrementFactor"),
    ("incrementFactor 5.01", _rate(incrementFactor="5.01"), "rate.incrementFactor"),
    ("incrementFactor 1e308", _rate(incrementFactor="1e308"), "rate.incrementFactor"),
    ("incrementFactor 2^63", _rate(incrementFactor=str(2**63)), "rate.incrementFactor"),
    ("incrementFactor a string", _rate(incrementFactor='"double"'), "rate.incrementFactor"),
    ("every 0", _rate(every="0"), "rate.every"),
    ("every -1", _rate(every="-1"), "rate.every"),
    ("every 2^63", _rate(every=str(2**63)), "rate.every"),
    ("every 0.5", _rate(every="0.5"), "rate.every"),
    ("criterion unknown", _rate(criterion='"failed"'), "rate.criterion"),
    ("criterion in capitals", _rate(criterion='"SUCCEEDED"'), "rate.criterion"),
    ("criterion null", _rate(criterion="null"), "rate.criterion"),
    ("no criterion", _rate(criterion=None), "rate.criterion"),
    ("maxPerMinute below basePerMinute", _rate(maxPerMinute="30"), "rate.maxPerMinute"),
    ("maxPerMinute 0", _rate(maxPerMinute="0"), "rate.maxPerMinute"),
    ("maxPerMinute 2^63", _rate(maxPerMinute=str(2**63)), "rate.maxPerMinute"),
    ("not an object", '{"rate":[60,2,20]}', "rate"),
    # Not JSON numbers: refused with the body, before any field is read.
    ("basePerMinute NaN", _rate(basePerMinute="NaN"), "body"),
    ("incrementFactor NaN", _rate(incrementFactor="NaN"), "body"),
    ("incrementFactor Infinity", _rate(incrementFactor="Infinity"), "body"),
    ("every -Infinity", _rate(every="-Infinity"), "body"),
    ("maxPerMinute 1e400", _rate(maxPerMinute="1e400"), "body"),
]


@pytest.mark.parametrize(("rollout", "field"), [r[1:] for r in RATES], ids=[r[0] for r in RATES])
async def test_a_hostile_rollout_rate_is_a_400_naming_the_field(
    api: httpx.AsyncClient, rollout: str, field: str
) -> None:
    await _refused(api, rollout, field)


async def test_an_unknown_rate_field_is_a_forbidden_field(api: httpx.AsyncClient) -> None:
    message = await _refused(api, _rate(burst="10"), "rate.burst", code=1002)
    assert message.startswith("Forbidden field"), message


async def test_a_refusal_says_why(api: httpx.AsyncClient) -> None:
    over = _groups(_group('"percent":60'), _group('"percent":60', '"b"'))
    assert "sum to 120, over 100" in await _refused(api, over, "groups")
    twice = _groups(_group('"percent":10', '"wave"'), _group('"percent":10', '"wave"'))
    assert "unique: 'wave'" in await _refused(api, twice, "groups")
    below = _rate(maxPerMinute="30")
    assert "basePerMinute (60)" in await _refused(api, below, "rate.maxPerMinute")


def _request(rollout: dict[str, Any]) -> dict[str, Any]:
    target = {"append": {"tags": ["t"]}}
    return {"job": {"request": {"name": "REBOOT_EQUIPMENT", "target": target, "rollout": rollout}}}


@pytest.mark.parametrize(
    "groups",
    [
        [{"name": "only", "percent": 37, "errorThreshold": 0}],  # one group: every device
        [{"name": "only", "count": 1_000_000, "successThreshold": 100, "errorThreshold": 100}],
        # The documented idiom: the last group says 100, "the rest".
        [{"name": "canary", "percent": 1}, {"name": "wave", "count": 5000},
         {"name": "rest", "percent": 100}],
        [{"name": "a", "percent": 33.3}, {"name": "b", "percent": 33.3},
         {"name": "c", "percent": 33.4}],
        [{"name": "a", "percent": 99.9}, {"name": "b", "tags": ["t"]}],
        # A last group smaller than what is left still takes the rest (docs/api.md).
        [{"name": "a", "percent": 10}, {"name": "b", "percent": 20}],
        [{"name": "Wave 2 — línea 7 🚀", "count": 1}, {"name": "wave 2 — línea 7 🚀", "count": 1}],
    ],
    ids=["single", "single by count", "canary wave rest", "thirds", "then a tag", "small last",
         "unicode names"],
)  # fmt: skip
def test_groups_at_the_edges_are_accepted(groups: list[dict[str, Any]]) -> None:
    JobEnvelope.model_validate(_request({"groups": groups}))


@pytest.mark.parametrize(
    "rate",
    [
        {**RATE, "incrementFactor": MAX_FACTOR, "every": 1},
        {**RATE, "incrementFactor": 1.0, "every": 1_000_000, "criterion": "notified"},
        {**RATE, "basePerMinute": 100_000, "maxPerMinute": 100_000},
        {**RATE, "basePerMinute": 1, "maxPerMinute": 1},
    ],
    ids=["fastest growth", "constant", "highest", "lowest"],
)
def test_rates_at_the_edges_are_accepted_and_their_arithmetic_holds(rate: dict[str, Any]) -> None:
    request = JobEnvelope.model_validate(_request({"rate": rate})).job.request
    assert request.rollout is not None and request.rollout.rate is not None
    parsed: RolloutRate = request.rollout.rate
    # However far the rate has grown, it is a whole number within its bounds: a float
    # overflow here would fail the job's workflow task on every retry.
    for progress in (0, 1, 20, 10**6, 10**12):
        state = JobState(rate_started=progress, rate_at=datetime.now(UTC))
        per_minute = current_rate(parsed, state)
        assert parsed.base_per_minute <= per_minute <= parsed.ceiling, (progress, per_minute)
