"""Hostile input (issue 9, "What we saw"): every category of bad input a hostile client tried,
sent to the real stack (dev server, worker, API over HTTP, simulated devices).

Each hostile request gets a clean 4xx in the SPEC error body (``{"errors":[{"code","message",
...}]}``, JSON) within a second, or is accepted and processed to a closed job; never a 500. The
whole module shares one stack, so the last test can check that after all of it the stack still
serves a normal job and the devices provisioned first are all still there.

Text that is not valid Unicode (a lone surrogate, NUL) is sent as raw JSON bytes holding the
escape (``\\ud800``), since httpx's JSON encoder would refuse it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from temporalio.testing import WorkflowEnvironment

from tests.stack import Stack, eventually, failed_workflow_tasks, running_stack

NORTH = "/north/v80"
JOBS = f"{NORTH}/operation/jobs"
DEVICES = f"{NORTH}/provision/devices"
BULK = f"{DEVICES}/bulk"
TYPES = f"{NORTH}/operationTypes"
TASKS = f"{NORTH}/operation/tasks"
SEARCH_JOBS = f"{NORTH}/search/jobs"
SEARCH_OPERATIONS = f"{NORTH}/search/entities/operations/history"

# The documented bounds (docs/api.md, "Limits").
DAY_MS = 86_400_000
MAX_OPERATION_MS = 30 * DAY_MS  # timeout, ackTimeout, connectionTimeout
MAX_RETRY_DELAY_MS = DAY_MS
MAX_RETRIES = 100
MAX_DELAY_MS = 365 * DAY_MS  # schedule.start.delayed, schedule.stop.delayed
MAX_ID = 128
MAX_TAG = 128
MAX_STEPS = 100

# Every refusal comes within this many seconds.
FAST = 1.0
# A streamed upload is answered only once the client has written all of it (httpx reads the
# answer after the body; the server discards what it does not read): up to 60 MiB on loopback.
STREAMED_FAST = 2.0
# An error body stays small, however much the request got wrong.
ERROR_BODY_BYTES = 64 * 1024
# How long an accepted job may take to close.
CLOSES_WITHIN = 20.0

KEPT_TAG = "hostile-kept"  # the devices provisioned first, checked by the last test
FREE_TYPE = "HOSTILE_FREE"  # a custom type without a schema: it takes any parameters
SURROGATE = "\\ud800"  # JSON escapes, sent as they are
NUL = "\\u0000"
HOLE = "@@HOSTILE@@"  # where a body template takes the hostile text
UID = "@@UID@@"  # where it takes a fresh suffix (so no case collides with another)


# --- the stack shared by the module ---


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def hostile(
    env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    path: Path = tmp_path_factory.mktemp("hostile")
    async with running_stack(env, path) as stack:
        await stack.provision(3, tags=[KEPT_TAG], prefix="keep-")
        free = await stack.api.post(TYPES, json={"name": FREE_TYPE})
        assert free.status_code == 201, free.text
        yield stack


def kept(stack: Stack) -> list[str]:
    return sorted(d for d in stack.fleet.keys if d.startswith("keep-"))


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def baseline_job(hostile: Stack) -> str:
    """A normal job, run to the end before the hostile requests that need one to find."""
    created = await hostile.create_job(
        {"name": "REBOOT_EQUIPMENT", "target": {"append": {"tags": [KEPT_TAG]}}}
    )
    await hostile.wait_finished(created["id"])
    return str(created["id"])


# --- what a client sees ---


async def timed(request: Awaitable[httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    answer = await request
    return answer, time.monotonic() - started


def spec_errors(answer: httpx.Response) -> list[dict[str, Any]]:
    """The SPEC error body of an answer (JSON, a non-empty list of {code:int, message:str})."""
    content_type = answer.headers.get("content-type", "")
    assert content_type.startswith("application/json"), (content_type, answer.text[:300])
    body = answer.json()
    errors = body["errors"]
    assert isinstance(errors, list) and errors, body
    for error in errors:
        assert isinstance(error["code"], int) and not isinstance(error["code"], bool), error
        assert isinstance(error["message"], str) and error["message"], error
        for entry in error.get("context", []):
            assert isinstance(entry["name"], str), error
    return list(errors)


def context_names(errors: list[dict[str, Any]]) -> list[str]:
    return [c["name"] for e in errors for c in e.get("context", [])]


def assert_refused(
    answer: httpx.Response,
    elapsed: float,
    statuses: tuple[int, ...] = (400,),
    field: str | None = None,
    within: float = FAST,
) -> dict[str, Any]:
    """A clean refusal: one of ``statuses``, the SPEC body, within ``within`` seconds, and (when
    given) a context entry whose name ends in ``field``. Returns the first error."""
    assert answer.status_code in statuses, (answer.status_code, answer.text[:500])
    errors = spec_errors(answer)
    assert elapsed < within, f"answered in {elapsed:.2f} s"
    if field is not None:
        names = context_names(errors)
        assert any(n.endswith(field) for n in names), (field, names, errors[0]["message"][:300])
    return errors[0]


async def discard_if_created(stack: Stack, answer: httpx.Response) -> None:
    """A job accepted where it should have been refused is stopped, so it cannot hold up the
    tests after it (the test still fails on its status)."""
    if answer.status_code != 201 or "id" not in (body := answer.json()):
        return
    if str(body["id"]).startswith("task-"):
        await stack.api.delete(f"{TASKS}/{body['id']}")
        return
    with contextlib.suppress(Exception):  # already closed, or not a job (a device, a type)
        await stack.client.get_workflow_handle(body["id"]).terminate("hostile input test")


async def closes(stack: Stack, job_id: str, timeout: float = CLOSES_WITHIN) -> dict[str, Any]:
    """The job, once FINISHED or CANCELLED (within ``timeout`` seconds)."""

    async def closed() -> dict[str, Any]:
        job = await stack.job(job_id)
        assert job["report"]["summary"]["status"] in ("FINISHED", "CANCELLED"), job["report"]
        return job

    return await eventually(closed, timeout=timeout, interval=0.3)


def raw(body: Any, hole: str = "") -> bytes:
    """``body`` as JSON bytes, with ``hole`` (a JSON escape) where the template says HOLE."""
    text = json.dumps(body).replace(HOLE, hole).replace(UID, uuid.uuid4().hex[:8])
    return text.encode()


JSON = {"Content-Type": "application/json"}


async def send(
    stack: Stack, method: str, path: str, content: bytes, headers: dict[str, str] | None = None
) -> tuple[httpx.Response, float]:
    return await timed(
        stack.api.request(method, path, content=content, headers={**JSON, **(headers or {})})
    )


def job_body(device: str = "keep-00001", **request: Any) -> dict[str, Any]:
    return {
        "job": {
            "request": {
                "name": "REBOOT_EQUIPMENT",
                "target": {"append": {"entities": [device]}},
                **request,
            }
        }
    }


def nest(path: str, value: Any) -> dict[str, Any]:
    """``{"a": {"b": value}}`` for ``"a.b"``."""
    result: Any = value
    for part in reversed(path.split(".")):
        result = {part: result}
    return dict(result)


def task_body(schedule: dict[str, Any], name: str = "hostile") -> dict[str, Any]:
    template = {
        "request": {
            "name": "REBOOT_EQUIPMENT",
            "target": {"append": {"entities": ["keep-00001"]}},
        }
    }
    return {"task": {"name": name, "schedule": schedule, "job": template}}


# --- requests that are not what a route takes at all ---

MALFORMED: list[tuple[str, str, str, bytes | None, tuple[int, ...]]] = [
    ("unknown route", "GET", f"{NORTH}/nothing/here", None, (404,)),
    ("wrong method", "PATCH", JOBS, None, (405,)),
    ("truncated JSON", "POST", JOBS, b'{"job": ', (400,)),
    ("invalid UTF-8", "POST", JOBS, b'{"job": "\xff\xfe"}', (400,)),
    ("a list for an object", "POST", JOBS, b"[]", (400,)),
    ("an empty body", "POST", JOBS, b"", (400,)),
    ("NaN duration", "POST", JOBS,
     b'{"job":{"request":{"name":"REBOOT_EQUIPMENT","target":{"append":{"entities":["keep-00001"]}},'
     b'"operationParameters":{"timeout":NaN}}}}', (400,)),
    ("Infinity delay", "POST", JOBS,
     b'{"job":{"request":{"name":"REBOOT_EQUIPMENT","target":{"append":{"entities":["keep-00001"]}},'
     b'"schedule":{"start":{"delayed":Infinity}}}}}', (400,)),
    ("a 400-digit number", "POST", JOBS,
     b'{"job":{"request":{"name":"REBOOT_EQUIPMENT","target":{"append":{"entities":["keep-00001"]}},'
     b'"operationParameters":{"timeout":' + b"9" * 400 + b"}}}}", (400,)),
    ("bulk CSV with a NUL id", "POST", BULK, b"id,type\nnul-\x00,GW\n", (400,)),
    ("bulk CSV in invalid UTF-8", "POST", BULK, b"id,type\n\xff\xfe,GW\n", (400,)),
    ("NUL in a path id", "GET", f"{DEVICES}/a%00b", None, (400, 404)),
    ("a surrogate in a path id", "GET", f"{DEVICES}/a%ED%A0%80b", None, (400, 404)),
    ("a job id that is no id", "GET", f"{JOBS}/%ED%A0%80", None, (400, 404)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path", "content", "statuses"),
    [m[1:] for m in MALFORMED],
    ids=[m[0] for m in MALFORMED],
)
async def test_a_malformed_request_is_a_4xx_in_the_spec_body(
    hostile: Stack, method: str, path: str, content: bytes | None, statuses: tuple[int, ...]
) -> None:
    content_type = "text/csv" if path == BULK else "application/json"
    headers = {"Content-Type": content_type} if content is not None else {}
    answer, elapsed = await timed(
        hostile.api.request(method, path, content=content, headers=headers)
    )
    await discard_if_created(hostile, answer)
    assert_refused(answer, elapsed, statuses)


@pytest.mark.parametrize("tag", ["%00", "%ED%A0%80", "t" * 129], ids=["NUL", "surrogate", "long"])
async def test_a_hostile_tag_filter_is_refused_or_finds_nothing(hostile: Stack, tag: str) -> None:
    answer, elapsed = await timed(hostile.api.get(f"{DEVICES}?tag={tag}"))
    if answer.status_code == 200:
        assert elapsed < FAST, elapsed
        assert answer.json()["devices"] == []
    else:
        assert_refused(answer, elapsed)


# --- durations: past a bound, a 400 naming the field (they froze jobs for good) ---

DURATIONS = [
    ("operationParameters.timeout", MAX_OPERATION_MS),
    ("operationParameters.ackTimeout", MAX_OPERATION_MS),
    ("operationParameters.connectionTimeout", MAX_OPERATION_MS),
    ("operationParameters.retriesDelay", MAX_RETRY_DELAY_MS),
    ("operationParameters.retries", MAX_RETRIES),
    ("schedule.start.delayed", MAX_DELAY_MS),
    ("schedule.stop.delayed", MAX_DELAY_MS),
]
PAST_BOUND = "bound+1"
HUGE = [1e30, 2**62, 2**63, -1, PAST_BOUND]


@pytest.mark.parametrize("value", HUGE, ids=["1e30", "2^62", "2^63", "-1", PAST_BOUND])
@pytest.mark.parametrize(("field", "bound"), DURATIONS, ids=[d[0] for d in DURATIONS])
async def test_a_duration_past_its_bound_is_a_400_naming_it(
    hostile: Stack, field: str, bound: int, value: Any
) -> None:
    given = bound + 1 if value == PAST_BOUND else value
    answer, elapsed = await timed(hostile.api.post(JOBS, json=job_body(**nest(field, given))))
    await discard_if_created(hostile, answer)
    assert_refused(answer, elapsed, field=field)


def _ahead(days: int) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize("date", ["400 days", "9999-12-31T23:59:59Z", "9999-12-31T23:59:59-01:00"])
@pytest.mark.parametrize("moment", ["start", "stop"])
async def test_a_date_more_than_a_year_ahead_is_a_400_naming_it(
    hostile: Stack, moment: str, date: str
) -> None:
    given = _ahead(400) if date == "400 days" else date
    body = job_body(schedule={moment: {"date": given}})
    answer, elapsed = await timed(hostile.api.post(JOBS, json=body))
    await discard_if_created(hostile, answer)
    assert_refused(answer, elapsed, field=f"schedule.{moment}.date")


@pytest.mark.parametrize(
    "date", ["0001-01-01T00:00:00Z", "0001-01-01T00:00:00+01:00", "1969-12-31T23:59:59Z"]
)
@pytest.mark.parametrize("moment", ["start", "stop"])
async def test_a_date_long_past_is_refused_or_run_to_the_end(
    hostile: Stack, moment: str, date: str
) -> None:
    body = job_body(schedule={moment: {"date": date}})
    answer, elapsed = await timed(hostile.api.post(JOBS, json=body))
    if answer.status_code == 201:
        closed = await closes(hostile, answer.json()["id"])
        assert closed["request"]["schedule"][moment]["date"]  # the job reads back whole
    else:
        assert_refused(answer, elapsed, field=f"schedule.{moment}.date")


async def test_values_at_the_bounds_are_accepted_and_the_jobs_close(hostile: Stack) -> None:
    longest = {
        "timeout": MAX_OPERATION_MS,
        "ackTimeout": MAX_OPERATION_MS,
        "connectionTimeout": MAX_OPERATION_MS,
        "retries": MAX_RETRIES,
        "retriesDelay": MAX_RETRY_DELAY_MS,
    }
    running = await hostile.create_job(
        {
            "name": "REBOOT_EQUIPMENT",
            "target": {"append": {"entities": ["keep-00001"]}},
            "operationParameters": longest,
            "schedule": {"stop": {"delayed": MAX_DELAY_MS}},
        }
    )
    later = await hostile.create_job(
        {
            "name": "REBOOT_EQUIPMENT",
            "target": {"append": {"entities": ["keep-00002"]}},
            "schedule": {"start": {"delayed": MAX_DELAY_MS}},
        }
    )
    dated = await hostile.create_job(
        {
            "name": "REBOOT_EQUIPMENT",
            "target": {"append": {"entities": ["keep-00003"]}},
            "schedule": {"start": {"date": _ahead(364)}, "stop": {"date": _ahead(365)}},
        }
    )
    done = await hostile.wait_finished(running["id"], timeout=CLOSES_WITHIN)
    assert done["report"]["summary"]["finished"]["successful"] == 1
    for job in (later, dated):
        assert job["report"]["summary"]["status"] == "SCHEDULED"
        deleted = await hostile.api.delete(f"{JOBS}/{job['id']}")
        assert deleted.status_code == 200, deleted.text
        closed = await closes(hostile, job["id"])
        assert closed["report"]["summary"]["status"] == "CANCELLED"


async def test_a_put_is_held_to_the_same_bounds(hostile: Stack) -> None:
    idle = await hostile.create_job(
        {"name": "REBOOT_EQUIPMENT", "active": False, "target": {"append": {"entities": ["x-1"]}}}
    )
    url = f"{JOBS}/{idle['id']}"
    for moment in ("start", "stop"):
        for value in (1e30, 2**63):
            body = {"job": {"request": {"schedule": {moment: {"delayed": value}}}}}
            answer, elapsed = await timed(hostile.api.put(url, json=body))
            assert_refused(answer, elapsed, field=f"schedule.{moment}.delayed")
    notes = {"job": {"request": {"userNotes": f"x{HOLE}"}}}
    for hole in (SURROGATE, NUL):
        answer, elapsed = await send(hostile, "PUT", url, raw(notes, hole))
        assert_refused(answer, elapsed, field="userNotes")
    assert (await hostile.api.delete(url)).status_code == 200
    closed = await closes(hostile, idle["id"])
    assert closed["report"]["summary"]["status"] == "CANCELLED"


# --- text: valid Unicode only, ids without '/' ---

TEXT: list[tuple[str, str, str, Any]] = [
    ("job entity id", "POST", JOBS, job_body(f"dev-{HOLE}")),
    ("job tag", "POST", JOBS,
     {"job": {"request": {"name": "REBOOT_EQUIPMENT", "target": {"append": {"tags": [HOLE]}}}}}),
    ("job entitiesWithParameters id", "POST", JOBS,
     {"job": {"request": {"name": "REBOOT_EQUIPMENT",
                          "target": {"append": {"entitiesWithParameters": [{"id": HOLE}]}}}}}),
    ("job userNotes", "POST", JOBS, job_body(userNotes=f"notes {HOLE}")),
    ("job operation type name", "POST", JOBS,
     {"job": {"request": {"name": f"REBOOT{HOLE}",
                          "target": {"append": {"entities": ["keep-00001"]}}}}}),
    ("job parameter value", "POST", JOBS,
     {"job": {"request": {"name": FREE_TYPE, "parameters": {"p": HOLE},
                          "target": {"append": {"entities": ["keep-00001"]}}}}}),
    ("device id", "POST", DEVICES, {"id": f"text-{UID}-{HOLE}"}),
    ("device tag", "POST", DEVICES, {"id": f"text-{UID}", "tags": [f"t{HOLE}"]}),
    ("device type", "POST", DEVICES, {"id": f"text-{UID}", "type": f"GW{HOLE}"}),
    ("bulk device id", "POST", BULK, [{"id": f"text-{UID}-{HOLE}"}]),
    ("search jobs value", "POST", SEARCH_JOBS, {"filter": {"and": [{"eq": {"jobUser": HOLE}}]}}),
    ("search operations value", "POST", SEARCH_OPERATIONS,
     {"filter": {"eq": {"entityId": f"x{HOLE}"}}}),
    ("task timezone", "POST", TASKS,
     task_body({"cron": "0 9 * * *", "timezone": f"Europe/Madrid{HOLE}"})),
    ("task name", "POST", TASKS,
     task_body({"repeating": {"period": {"each": 1, "unit": "HOURS"}}}, name=f"t{HOLE}")),
    ("operation type name", "POST", TYPES, {"name": f"T_{UID}{HOLE}"}),
]  # fmt: skip


@pytest.mark.parametrize("hole", [SURROGATE, NUL], ids=["lone surrogate", "NUL"])
@pytest.mark.parametrize(
    ("method", "path", "body"), [t[1:] for t in TEXT], ids=[t[0] for t in TEXT]
)
async def test_text_that_is_not_valid_unicode_is_a_400(
    hostile: Stack, method: str, path: str, body: Any, hole: str
) -> None:
    answer, elapsed = await send(hostile, method, path, raw(body, hole))
    await discard_if_created(hostile, answer)
    assert_refused(answer, elapsed)


SLASHED: list[tuple[str, str, Any]] = [
    ("job entity id", JOBS, job_body("dev/00001")),
    ("job entitiesWithParameters id", JOBS,
     {"job": {"request": {"name": "REBOOT_EQUIPMENT",
                          "target": {"append": {"entitiesWithParameters": [{"id": "a/b"}]}}}}}),
    ("device id", DEVICES, {"id": "slash/00001"}),
    ("bulk device id", BULK, [{"id": "slash/00002"}]),
]  # fmt: skip


@pytest.mark.parametrize(("path", "body"), [s[1:] for s in SLASHED], ids=[s[0] for s in SLASHED])
async def test_an_id_with_a_slash_is_a_400(hostile: Stack, path: str, body: Any) -> None:
    answer, elapsed = await timed(hostile.api.post(path, json=body))
    await discard_if_created(hostile, answer)
    assert_refused(answer, elapsed)


# --- sizes: what would not fit in Temporal is refused before anything starts ---


def listing(ids: list[str], name: str = "REBOOT_EQUIPMENT") -> dict[str, Any]:
    return {"job": {"request": {"name": name, "target": {"append": {"entities": ids}}}}}


def _many_parameters() -> dict[str, Any]:
    # 10,000 entries (the most a job may list) of short ids and shallow parameters: ~2.3 MB.
    entries = [{"id": f"big-{i:05d}", "parameters": {"note": "x" * 190}} for i in range(10_000)]
    return {
        "job": {
            "request": {
                "name": FREE_TYPE,
                "target": {"append": {"entitiesWithParameters": entries}},
            }
        }
    }


SIZES: list[tuple[str, str, Callable[[], Any], tuple[int, ...], str | None]] = [
    ("10,000 ids of 300 chars", JOBS,
     lambda: listing([f"{i:05d}" + "x" * 295 for i in range(10_000)]), (400, 413), None),
    ("10,000 ids of 100 chars (each within bounds)", JOBS,
     lambda: listing([f"{i:05d}" + "x" * 95 for i in range(10_000)]), (400, 413), "tag"),
    ("2 MB of entitiesWithParameters", JOBS, _many_parameters, (400, 413), "tag"),
    ("2.5 MB of userNotes", JOBS, lambda: job_body(userNotes="n" * 2_500_000), (400, 413), None),
    ("10,001 listed ids", JOBS, lambda: listing([f"d-{i}" for i in range(10_001)]), (400,), None),
    ("job entity id of 129 chars", JOBS, lambda: job_body("d" * (MAX_ID + 1)), (400,), None),
    ("job tag of 129 chars", JOBS,
     lambda: {"job": {"request": {"name": "REBOOT_EQUIPMENT",
                                  "target": {"append": {"tags": ["t" * (MAX_TAG + 1)]}}}}},
     (400,), None),
    ("device id of 129 chars", DEVICES, lambda: {"id": "d" * (MAX_ID + 1)}, (400,), None),
    ("device tag of 129 chars", DEVICES,
     lambda: {"id": "size-tag", "tags": ["t" * (MAX_TAG + 1)]}, (400,), None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("path", "build", "statuses", "says"), [s[1:] for s in SIZES], ids=[s[0] for s in SIZES]
)
async def test_an_oversized_request_is_refused_before_anything_starts(
    hostile: Stack,
    path: str,
    build: Callable[[], Any],
    statuses: tuple[int, ...],
    says: str | None,
) -> None:
    content = json.dumps(build()).encode()
    answer, elapsed = await send(hostile, "POST", path, content)
    await discard_if_created(hostile, answer)
    error = assert_refused(answer, elapsed, statuses)
    # The refusal names the first failures, it does not echo a megabyte of them.
    assert len(answer.content) < ERROR_BODY_BYTES, f"a {len(answer.content)}-byte error body"
    if says is not None:
        assert says in error["message"].lower(), error["message"][:300]


# --- JSON nested hundreds (and thousands) of levels deep ---


def _deep(depth: int, leaf: str = "1") -> str:
    return '{"a":' * depth + leaf + "}" * depth


def _deep_filter(depth: int) -> str:
    return '{"and":[' * depth + '{"eq":{"jobStatus":"FINISHED"}}' + "]}" * depth


DEEP: list[tuple[str, str, Callable[[int], str]]] = [
    ("job parameters", JOBS,
     lambda d: '{"job":{"request":{"name":"' + FREE_TYPE + '","target":{"append":{"entities":'
               '["keep-00001"]}},"parameters":' + _deep(d) + "}}}"),
    ("operation type schema", TYPES,
     lambda d: '{"name":"DEEP_' + str(d) + '","parameters":' + _deep(d) + "}"),
    ("bulk provisioning JSON", BULK,
     lambda d: '[{"id":"deep-' + str(d) + '","type":' + _deep(d, '"GW"') + "}]"),
    ("search filter", SEARCH_JOBS, lambda d: '{"filter":' + _deep_filter(d) + "}"),
]  # fmt: skip


@pytest.mark.parametrize("depth", [500, 5000])
@pytest.mark.parametrize(("path", "build"), [d[1:] for d in DEEP], ids=[d[0] for d in DEEP])
async def test_deeply_nested_json_is_a_400(
    hostile: Stack, path: str, build: Callable[[int], str], depth: int
) -> None:
    answer, elapsed = await send(hostile, "POST", path, build(depth).encode())
    await discard_if_created(hostile, answer)
    assert_refused(answer, elapsed)


# --- search dates: what the API accepts, Temporal's visibility takes ---


@pytest.mark.parametrize(
    "date", ["2026-01-01", "20260101", "2026-W01-1", "2026-01-01T00:00:00+02:00"]
)
async def test_a_search_date_in_any_iso_form_finds_the_jobs_after_it(
    hostile: Stack, baseline_job: str, date: str
) -> None:
    body = {
        "filter": {"and": [{"gt": {"createdDate": date}}, {"eq": {"jobId": baseline_job}}]},
        "limit": {"start": 1, "size": 10},
    }

    async def found() -> None:
        answer, elapsed = await timed(hostile.api.post(SEARCH_JOBS, json=body))
        assert answer.status_code == 200, answer.text[:500]
        assert elapsed < FAST, elapsed
        assert [j["id"] for j in answer.json()["jobs"]] == [baseline_job]

    await eventually(found, timeout=10)


@pytest.mark.parametrize("date", ["not-a-date", "2026-13-45", "2026-01-01T25:00:00Z"])
@pytest.mark.parametrize("path", [SEARCH_JOBS, SEARCH_OPERATIONS], ids=["jobs", "operations"])
async def test_a_search_date_that_is_no_date_is_a_400(hostile: Stack, path: str, date: str) -> None:
    body = {"filter": {"and": [{"gt": {"createdDate": date}}]}}
    answer, elapsed = await timed(hostile.api.post(path, json=body))
    assert_refused(answer, elapsed)


# --- numbers in listings and tasks ---

BIG = 9_223_372_036_854_775_807  # 2^63 - 1


@pytest.mark.parametrize(
    "params",
    [{"start": BIG}, {"start": 2**64}, {"start": -1}, {"size": BIG}, {"start": "1e3"}],
    ids=["start 2^63-1", "start 2^64", "start -1", "size 2^63-1", "start 1e3"],
)
async def test_a_device_listing_page_out_of_range_is_a_400(
    hostile: Stack, params: dict[str, Any]
) -> None:
    answer, elapsed = await timed(hostile.api.get(DEVICES, params=params))
    assert_refused(answer, elapsed)


@pytest.mark.parametrize(
    ("method", "path", "request_args"),
    [
        ("GET", JOBS, {"params": {"start": BIG}}),
        ("GET", f"{JOBS}/{{job}}/operations", {"params": {"start": BIG}}),
        ("POST", SEARCH_JOBS, {"json": {"limit": {"start": BIG, "size": 1000}}}),
        ("POST", SEARCH_OPERATIONS, {"json": {"limit": {"start": BIG, "size": 1000}}}),
        ("GET", TASKS, {"params": {"start": BIG}}),
    ],
    ids=["jobs", "job operations", "search jobs", "search operations", "tasks"],
)
async def test_a_huge_page_number_is_refused_or_an_empty_page(
    hostile: Stack, baseline_job: str, method: str, path: str, request_args: dict[str, Any]
) -> None:
    url = path.format(job=baseline_job)
    answer, elapsed = await timed(hostile.api.request(method, url, **request_args))
    if answer.status_code == 200:
        assert elapsed < FAST, elapsed
        listed = answer.json()
        assert all(v == [] for v in listed.values() if isinstance(v, list)), listed
    else:
        assert_refused(answer, elapsed)


HOURLY = {"repeating": {"period": {"each": 1, "unit": "HOURS"}}}
TASK_NUMBERS: list[tuple[str, dict[str, Any], str]] = [
    ("period each 1e15", {"repeating": {"period": {"each": 1e15, "unit": "MINUTES"}}},
     "schedule.repeating.period.each"),
    ("period each 2^63", {"repeating": {"period": {"each": 2**63, "unit": "DAYS"}}},
     "schedule.repeating.period.each"),
    ("stop executions 2^63", {**HOURLY, "stop": {"executions": 2**63}},
     "schedule.stop.executions"),
    ("stop executions 1e30", {**HOURLY, "stop": {"executions": 1e30}},
     "schedule.stop.executions"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("schedule", "field"), [t[1:] for t in TASK_NUMBERS], ids=[t[0] for t in TASK_NUMBERS]
)
async def test_a_task_number_past_its_bound_is_a_400_naming_it(
    hostile: Stack, schedule: dict[str, Any], field: str
) -> None:
    answer, elapsed = await timed(hostile.api.post(TASKS, json=task_body(schedule)))
    await discard_if_created(hostile, answer)
    assert_refused(answer, elapsed, field=field)


# --- the body limit counts bytes as they arrive ---


async def _padded(head: bytes, tail: bytes, total: int) -> AsyncIterator[bytes]:
    """Valid JSON of ``total`` bytes (``head``, whitespace, ``tail``), chunked, no length."""
    yield head
    remaining = total - len(head) - len(tail)
    chunk = b" " * 65_536
    while remaining > 0:
        piece = chunk[: min(remaining, len(chunk))]
        remaining -= len(piece)
        yield piece
    yield tail


MIB = 1024 * 1024
STREAMED: list[tuple[str, str, bytes, bytes, int | None]] = [
    ("60 MiB to bulk", BULK, b'[{"id":"stream-00001"}', b"]", 60 * MIB),
    ("limit + 1 MiB to bulk", BULK, b'[{"id":"stream-00002"}', b"]", None),
    ("limit + 1 MiB to jobs", JOBS, json.dumps(job_body())[:-1].encode(), b"}", None),
]


@pytest.mark.parametrize(
    ("path", "head", "tail", "total"), [s[1:] for s in STREAMED], ids=[s[0] for s in STREAMED]
)
async def test_a_chunked_body_past_the_limit_is_a_413(
    hostile: Stack, path: str, head: bytes, tail: bytes, total: int | None
) -> None:
    size = total or hostile.settings.max_body_bytes + MIB
    request = hostile.api.post(
        path, content=_padded(head, tail, size), headers=JSON, timeout=httpx.Timeout(15.0)
    )
    answer, elapsed = await timed(request)
    await discard_if_created(hostile, answer)
    assert_refused(answer, elapsed, (413,), within=STREAMED_FAST)
    for device_id in ("stream-00001", "stream-00002"):
        assert (await hostile.api.get(f"{DEVICES}/{device_id}")).status_code == 404


# --- south: a bad answer is a 400, and the device's next good answer is applied ---


def south_url(device_id: str) -> str:
    return f"/south/v80/devices/{device_id}/operation/response"


def answer_body(
    operation_id: str, device_id: str, result: str | None = None, **response: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": operation_id,
        "deviceId": device_id,
        "name": "REBOOT_EQUIPMENT",
        "timestamp": 1763800001000,
        "steps": [
            {"name": "REBOOT", "timestamp": 1763800001000, "result": "SUCCESSFUL"},
        ],
        **response,
    }
    if result:
        body["resultCode"] = result
    return {"version": "1.0", "operation": {"response": body}}


def _steps(count: int, timestamp: int = 1763800001000) -> list[dict[str, Any]]:
    return [{"name": f"S{i}", "timestamp": timestamp, "result": "SUCCESSFUL"} for i in range(count)]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def open_operation(hostile: Stack) -> dict[str, str]:
    """An operation sent to a device that acknowledges and leaves the answering to the test."""
    [device] = await hostile.provision(1, prefix="south-")
    answered = await hostile.sim.put(f"/sim/devices/{device['id']}", json={"mode": "silent"})
    assert answered.status_code == 200
    job = await hostile.create_job(
        {
            "name": "REBOOT_EQUIPMENT",
            "target": {"append": {"entities": [device["id"]]}},
            "operationParameters": {"timeout": 600_000},
        }
    )

    async def started() -> dict[str, Any]:
        operations = await hostile.operations(job["id"])
        assert len(operations) == 1 and operations[0]["status"] == "STARTED", operations
        return operations[0]

    operation = await eventually(started)
    return {
        "device": device["id"],
        "key": device["apiKey"],
        "job": job["id"],
        "operation": operation["operationId"],
    }


SOUTH: list[tuple[str, Callable[[str, str], Any], str | None, str]] = [
    ("step timestamp 1e18",
     lambda o, d: answer_body(o, d, steps=_steps(1, 10**18)), None, "steps"),
    ("step timestamp -1e18",
     lambda o, d: answer_body(o, d, steps=_steps(1, -(10**18))), None, "steps"),
    ("resultDescription lone surrogate",
     lambda o, d: answer_body(o, d, resultDescription=HOLE), SURROGATE, "resultDescription"),
    ("resultDescription NUL",
     lambda o, d: answer_body(o, d, resultDescription=HOLE), NUL, "resultDescription"),
    ("101 steps", lambda o, d: answer_body(o, d, steps=_steps(MAX_STEPS + 1)), None, "steps"),
    ("50,000 steps", lambda o, d: answer_body(o, d, steps=_steps(50_000)), None, "steps"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("build", "hole", "field"), [s[1:] for s in SOUTH], ids=[s[0] for s in SOUTH]
)
async def test_a_bad_device_answer_is_a_400(
    hostile: Stack,
    open_operation: dict[str, str],
    build: Callable[[str, str], Any],
    hole: str | None,
    field: str,
) -> None:
    device = open_operation["device"]
    content = raw(build(open_operation["operation"], device), hole or "")
    answer, elapsed = await send(
        hostile, "POST", south_url(device), content, {"X-ApiKey": open_operation["key"]}
    )
    assert_refused(answer, elapsed)
    assert any(field in n for n in context_names(spec_errors(answer))), answer.text[:300]


async def test_after_bad_answers_the_final_answer_is_applied(
    hostile: Stack, open_operation: dict[str, str]
) -> None:
    device = open_operation["device"]
    final = answer_body(open_operation["operation"], device, "SUCCESSFUL")
    answer = await hostile.api.post(
        south_url(device), json=final, headers={"X-ApiKey": open_operation["key"]}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] is True
    done = await hostile.wait_finished(open_operation["job"], timeout=CLOSES_WITHIN)
    assert done["report"]["summary"]["finished"]["successful"] == 1

    async def applied() -> dict[str, Any]:
        operations = await hostile.operations(open_operation["job"])
        assert len(operations) == 1 and operations[0]["status"] == "FINISHED", operations
        return operations[0]

    operation = await eventually(applied)
    assert operation["result"] == "SUCCESSFUL"
    assert [s["name"] for s in operation["steps"]] == ["REBOOT"]


# --- regular expressions of custom types run in linear time ---

REGEX_TYPE = {
    "name": "HOSTILE_REGEX",
    "parameters": {
        "type": "object",
        "properties": {"p": {"type": "string", "pattern": "^(a+)+$"}},
    },
}


def _regex_job(length: int) -> dict[str, Any]:
    return {
        "job": {
            "request": {
                "name": REGEX_TYPE["name"],
                "parameters": {"p": "a" * length + "!"},
                "target": {"append": {"entities": ["keep-00001"]}},
            }
        }
    }


async def test_a_catastrophic_pattern_neither_blocks_nor_hangs(hostile: Stack) -> None:
    created, elapsed = await timed(hostile.api.post(TYPES, json=REGEX_TYPE))
    if created.status_code != 201:  # refusing such a pattern at creation is fine too
        assert_refused(created, elapsed, field="parameters")
        return
    # A backtracking engine takes seconds on 26 characters (a minute on 30): fail fast first.
    probe, elapsed = await timed(hostile.api.post(JOBS, json=_regex_job(26)))
    await discard_if_created(hostile, probe)
    assert_refused(probe, elapsed, field="parameters.p")

    posted = asyncio.create_task(timed(hostile.api.post(JOBS, json=_regex_job(30))))
    await asyncio.sleep(0.005)  # the POST is in the API when the probe comes
    live, live_elapsed = await timed(hostile.api.get("/health/live"))
    answer, elapsed = await posted
    await discard_if_created(hostile, answer)
    assert live.status_code == 200 and live_elapsed < 0.5, live_elapsed
    assert_refused(answer, elapsed, field="parameters.p")


# --- the beyond-OpenGate rollout fields at the edges of their bounds run to the end ---
# (Their refusals are in tests/test_validation.py, on the API alone.)

EDGE_ROLLOUTS: dict[str, dict[str, Any]] = {
    # The rate grows fivefold with each operation, up to its default ceiling of 100,000.
    "fastest growth": {"rate": {"basePerMinute": 60, "incrementFactor": 5.0, "every": 1,
                                "criterion": "succeeded"}},
    "highest rate": {"rate": {"basePerMinute": 100_000, "incrementFactor": 5.0, "every": 1,
                              "criterion": "notified", "maxPerMinute": 100_000}},
    "constant rate": {"rate": {"basePerMinute": 60, "incrementFactor": 1.0, "every": 1_000_000,
                               "criterion": "notified"}},
    # Three devices: the count takes them all, the groups after it are empty and pass at once.
    "empty groups": {"groups": [{"name": "all", "count": 3, "successThreshold": 100,
                                 "errorThreshold": 0},
                                {"name": "none", "percent": 50}, {"name": "rest", "percent": 100}],
                     "rate": {"basePerMinute": 100_000, "incrementFactor": 5.0, "every": 1,
                              "criterion": "succeeded"}},
    "a single group": {"groups": [{"name": "only", "percent": 0.001, "successThreshold": 100}]},
}  # fmt: skip


async def test_rollouts_at_their_bounds_run_to_finished(hostile: Stack) -> None:
    jobs = {
        case: await hostile.create_job(
            {"name": "REBOOT_EQUIPMENT", "target": {"append": {"tags": [KEPT_TAG]}}, "rollout": r}
        )
        for case, r in EDGE_ROLLOUTS.items()
    }
    for case, job in jobs.items():
        done = await hostile.wait_finished(job["id"], timeout=CLOSES_WITHIN)
        summary = done["report"]["summary"]
        assert (summary["total"], summary["finished"]["successful"]) == (3, 3), (case, summary)
        groups = done["report"].get("groups")
        if groups is not None:
            assert sum(g["total"] for g in groups) == 3, (case, groups)
            assert all(g["status"] == "DONE" for g in groups), (case, groups)
    groups = (await hostile.job(jobs["empty groups"]["id"]))["report"]["groups"]
    assert [(g["name"], g["total"], g["successful"]) for g in groups] == [
        ("all", 3, 3),
        ("none", 0, 0),
        ("rest", 0, 0),
    ]
    _, failed = await failed_workflow_tasks(hostile)
    assert failed == []


# --- after all of that (keep this test last) ---


async def test_the_stack_still_serves_a_normal_job_and_keeps_its_devices(hostile: Stack) -> None:
    devices = kept(hostile)
    assert len(devices) == 3
    for device_id in devices:
        answer = await hostile.api.get(f"{DEVICES}/{device_id}")
        assert answer.status_code == 200, answer.text
        assert answer.json()["tags"] == [KEPT_TAG]
    listed = await hostile.api.get(DEVICES, params={"tag": KEPT_TAG})
    assert sorted(d["id"] for d in listed.json()["devices"]) == devices

    created = await hostile.create_job(
        {"name": "REBOOT_EQUIPMENT", "target": {"append": {"tags": [KEPT_TAG]}}}
    )
    job = await hostile.wait_finished(created["id"], timeout=CLOSES_WITHIN)
    assert job["report"]["summary"]["finished"]["successful"] == 3
    assert (await hostile.api.get("/health/ready")).status_code == 200
    seen, failed = await failed_workflow_tasks(hostile)
    assert seen >= 10 and failed == [], (seen, failed)
