"""The vendor's own clients against the real stack (issue 11): every request here is sent with the
exact path, query and body the OpenGate clients send (``tests/vendor_shapes.py``, written from
their public sources: the JS client ``amplia-iiot/opengate-js`` and the Python client
``opengate-data``), and every assertion is on what those clients read from the answer: the status
codes they take as success, the top-level shapes, the fields.

The stack's Temporal dev server is shared by the whole session, so every search here filters on
something only its own test created (a job id, a task name, a custom operation type).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from jsonschema import Draft7Validator

from tests import vendor_shapes as vendor
from tests.stack import Stack, eventually
from tests.vendor_shapes import VendorRequest

TYPES = "/north/v80/operationTypes"


async def send(stack: Stack, request: VendorRequest) -> httpx.Response:
    """One request as the client writes it: the raw URL, a JSON body only when it has one."""
    if request.body is None:
        return await stack.api.request(request.method, request.url)
    return await stack.api.request(request.method, request.url, json=request.body)


async def succeeds(stack: Stack, request: VendorRequest) -> httpx.Response:
    """``request`` answered with a status its client takes as success."""
    answer = await send(stack, request)
    assert answer.status_code in request.ok, (request.method, request.url, answer.text)
    return answer


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10].upper()}"


async def custom_type(stack: Stack, name: str, **fields: Any) -> None:
    answer = await stack.api.post(TYPES, json={"name": name, **fields})
    assert answer.status_code == 201, answer.text


# --------------------------------------------------------------------------------------------
# 1. builderByOperationName: the type search, the schema, the job
# --------------------------------------------------------------------------------------------


async def load_catalog(stack: Stack) -> list[dict[str, Any]]:
    """``Operations._loadOperationCatalog``: statusCode exactly 200 and a bare array."""
    answer = await send(stack, vendor.OPERATION_TYPES_SEARCH)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert isinstance(body, list), body
    for operation_type in body:
        assert isinstance(operation_type["name"], str)
    return body


def builder_by_operation_name(catalog: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """The client's lookup: the asked name upper-cased against each ``name.toUpperCase()``."""
    found = [t for t in catalog if t["name"].upper() == name.upper()]
    assert found, f"Operation <'{name}'> unavailable."
    return found[0]


def validated(operation_type: dict[str, Any], parameters: dict[str, Any]) -> dict[str, Any]:
    """What the client does with ``parameters.schema`` before sending: compile it (Ajv 6,
    draft-07: here ``Draft7Validator``, and the keywords Ajv 6 refuses to compile), fill in the
    defaults (``useDefaults``) and validate."""
    schema = operation_type["parameters"]["schema"]
    assert vendor.ajv6_blockers(schema) == [], operation_type["name"]
    Draft7Validator.check_schema(schema)
    filled = dict(parameters)
    for key, spec in schema.get("properties", {}).items():
        if key not in filled and isinstance(spec, dict) and "default" in spec:
            filled[key] = spec["default"]
    errors = list(Draft7Validator(schema).iter_errors(filled))
    assert not errors, [e.message for e in errors]
    return filled


async def test_the_type_search_is_an_array_the_js_builder_uses(stack: Stack) -> None:
    name = unique("VENDOR_CALIBRATE")
    await custom_type(
        stack,
        name,
        title="Calibrate",
        parameters={
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "properties": {
                "level": {"type": "integer", "minimum": 0, "maximum": 10, "default": 5},
                "window": {"type": "string", "format": "duration"},  # unknown to Ajv 6
                "pair": {"type": "array", "prefixItems": [{"type": "string"}]},
            },
            "additionalProperties": False,
        },
        steps=[{"name": "MEASURE"}, {"name": "APPLY"}],
    )
    catalog = await load_catalog(stack)
    names = {t["name"] for t in catalog}
    assert {"REBOOT_EQUIPMENT", "REFRESH_INFO", "UPDATE", "DIAGNOSIS", name} <= names
    for operation_type in catalog:
        assert isinstance(operation_type["steps"], list)
        assert operation_type["applicableTo"] == ["entity.device"]
        if "parameters" in operation_type:
            schema = operation_type["parameters"]["schema"]
            assert vendor.ajv6_blockers(schema) == [], operation_type["name"]
            Draft7Validator.check_schema(schema)
    diagnosis = builder_by_operation_name(catalog, "diagnosis")
    assert [s["name"] for s in diagnosis["steps"]] == ["PROVISION", "PRESENCE", "MODEM", "REGISTER"]
    assert "parameters" not in builder_by_operation_name(catalog, "REFRESH_INFO")
    calibrate = builder_by_operation_name(catalog, name.lower())
    assert calibrate["title"] == "Calibrate"
    assert validated(calibrate, {"pair": ["a", 1]}) == {"pair": ["a", 1], "level": 5}
    assert list(Draft7Validator(calibrate["parameters"]["schema"]).iter_errors({"level": 11}))


async def test_the_type_search_filters_on_name_at_both_paths(stack: Stack) -> None:
    name = unique("VENDOR_PROBE")
    await custom_type(stack, name)
    paths = ("/search/operationTypes", "/operationTypes/search")
    filters: list[tuple[dict[str, Any], set[str]]] = [
        ({"eq": {"name": "reboot_equipment"}}, {"REBOOT_EQUIPMENT"}),
        ({"in": {"name": ["REFRESH_INFO", name.lower()]}}, {"REFRESH_INFO", name}),
        ({"like": {"name": "^refresh_"}}, {"REFRESH_INFO", "REFRESH_PRESENCE"}),
        ({"and": [{"like": {"name": "VENDOR_PROBE"}}, {"neq": {"name": "x"}}]}, {name}),
    ]
    for path in paths:
        for filter_, expected in filters:
            request = VendorRequest("POST", path, body={"filter": filter_})
            answer = await succeeds(stack, request)
            assert {t["name"] for t in answer.json()} == expected, (path, filter_)
    everything = await succeeds(stack, VendorRequest("POST", paths[1], body={"filter": {}}))
    first_two = await succeeds(
        stack,
        VendorRequest("POST", paths[0], body={"filter": {}, "limit": {"start": 1, "size": 2}}),
    )
    assert first_two.json() == everything.json()[:2]
    bad = await send(stack, VendorRequest("POST", paths[0], body={"filter": {"eq": {"x": "1"}}}))
    assert bad.status_code == 400
    # What /operationTypes and /operationTypes/catalog serve is unchanged.
    listed = (await stack.api.get(TYPES)).json()["operationTypes"]
    assert name in {t["name"] for t in listed}
    assert all("$schema" in t["parameters"] for t in listed if not t.get("custom"))
    catalog = (await send(stack, vendor.OPERATION_TYPES_CATALOG)).json()["operationTypes"]
    assert "REBOOT_EQUIPMENT" in {t["name"] for t in catalog}


async def test_a_job_built_by_operation_name(stack: Stack) -> None:
    devices = [d["id"] for d in await stack.provision(2, prefix="js-build-")]
    operation_type = builder_by_operation_name(await load_catalog(stack), "reboot_equipment")
    parameters = validated(operation_type, {})
    assert parameters == {"type": "HARDWARE"}
    request = vendor.job_request(operation_type["name"], entities=devices, parameters=parameters)
    answer = await succeeds(stack, vendor.job_create(request))
    job_id = answer.headers["Location"].rsplit("/", 1)[-1]
    assert job_id == answer.json()["id"]
    done = await stack.wait_finished(job_id)
    assert done["report"]["summary"]["finished"]["successful"] == 2
    assert done["request"]["parameters"] == {"type": "HARDWARE"}
    # The client's job deadline is 43,200 ms (it means 30 days): the job ran well within it.
    assert done["request"]["schedule"]["stop"] == {"delayed": vendor.DEFAULT_JOB_STOP_DELAYED_MS}


async def test_a_job_built_with_per_device_parameters(stack: Stack) -> None:
    devices = [d["id"] for d in await stack.provision(2, prefix="js-each-")]
    operation_type = builder_by_operation_name(await load_catalog(stack), "REBOOT_EQUIPMENT")
    # appendEntitiesBy.list with {"id","parameters"} entries only (a list mixing bare ids with
    # such entries is two kinds of target, which the SPEC refuses: 400).
    request = vendor.job_request(
        operation_type["name"],
        entities_with_parameters=[
            {"id": devices[0], "parameters": {}},
            {"id": devices[1], "parameters": {"type": "SOFTWARE"}},
        ],
        parameters=validated(operation_type, {}),
    )
    answer = await succeeds(stack, vendor.job_create(request))
    job_id = answer.headers["Location"].rsplit("/", 1)[-1]
    await stack.wait_finished(job_id)
    sent = {o["entityId"]: o["parameters"] for o in await stack.operations(job_id)}
    assert sent == {devices[0]: {"type": "HARDWARE"}, devices[1]: {"type": "SOFTWARE"}}


# --------------------------------------------------------------------------------------------
# 2. Tasks
# --------------------------------------------------------------------------------------------

MADRID = timezone(timedelta(hours=1))
NEW_YORK = timezone(timedelta(hours=-5))


def pattern_task(kind: str, start: datetime, name: str, devices: list[str]) -> VendorRequest:
    repeating = {
        "weekly": vendor.weekly_pattern(start, ["MON", "THU"]),
        "monthly": vendor.monthly_pattern(start, 1, ["JAN", "JUL"]),
        "yearly": vendor.yearly_pattern(start, 1, "JUL"),
    }[kind]
    job = vendor.job_request("REBOOT_EQUIPMENT", entities=devices, parameters={})
    return vendor.task_create(
        job, name=name, start=start, repeating=repeating, now=datetime.now(UTC), stop=5
    )


async def create_task(stack: Stack, request: VendorRequest) -> str:
    """``Operation.execute()`` for a task: any 2xx, the id is the last segment of Location."""
    answer = await succeeds(stack, request)
    task_id = answer.headers["Location"].rsplit("/", 1)[-1]
    assert task_id == answer.json()["id"]
    return task_id


async def read_task(stack: Stack, task_id: str) -> dict[str, Any]:
    """``findPeriodicityById``: 200, the task object (``body["task"]`` or the body)."""
    answer = await send(stack, vendor.TASK_GET.format(task_id=task_id))
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    task: dict[str, Any] = body.get("task", body)
    assert task
    return task


@pytest.mark.parametrize("zone", [MADRID, NEW_YORK, UTC], ids=["+01:00", "-05:00", "+00:00"])
@pytest.mark.parametrize("kind", ["weekly", "monthly", "yearly"])
async def test_pattern_tasks_as_the_js_client_writes_them(
    stack: Stack, kind: str, zone: timezone
) -> None:
    [device] = [d["id"] for d in await stack.provision(1, prefix="js-task-")]
    start = (datetime.now(UTC) + timedelta(days=2)).astimezone(zone).replace(microsecond=0)
    name = unique("js-task")
    request = pattern_task(kind, start, name, [device])
    assert request.body["task"]["schedule"]["start"]["date"].endswith(vendor.js_offset(start))
    task_id = await create_task(stack, request)
    task = await read_task(stack, task_id)
    # What the client reads back: the dates (parsed with new Date), the pattern, the job.
    schedule = task["schedule"]
    assert datetime.fromisoformat(schedule["start"]["date"]) == start
    assert schedule["start"]["date"].endswith("Z")
    pattern = schedule["repeating"]["pattern"]
    # As sent, offset included (as real OpenGate reads it back): the days are the offset's days.
    assert pattern["time"] == vendor.js_time(start), pattern
    if kind == "monthly":
        assert pattern["monthly"] == {"day": 1, "months": ["JAN", "JUL"]}
    if kind == "yearly":
        assert pattern["yearly"] == {"day": 1, "month": "JUL"}
    assert task["job"]["request"]["name"] == "REBOOT_EQUIPMENT"
    assert task["state"] == "ACTIVE" and task["nextExecution"]
    await succeeds(stack, vendor.TASK_DELETE.format(task_id=task_id))


async def test_task_read_pause_resume_delete(stack: Stack) -> None:
    [device] = [d["id"] for d in await stack.provision(1, prefix="js-period-")]
    start = datetime.now(MADRID).replace(microsecond=0) + timedelta(hours=1)
    job = vendor.job_request(
        "REBOOT_EQUIPMENT",
        entities=[device],
        parameters={},
        job_timeout_ms=vendor.period_job_timeout_ms(2, "HOURS"),
    )
    task_id = await create_task(
        stack,
        vendor.task_create(
            job,
            name=f"REBOOT_EQUIPMENT {unique('key')}",
            start=start,
            repeating=vendor.period_repeating(2, "HOURS"),
            now=datetime.now(UTC),
            description="every two hours",
        ),
    )
    task = await read_task(stack, task_id)
    assert task["schedule"]["repeating"]["period"] == {"each": 2, "unit": "HOURS"}
    assert task["description"] == "every two hours"
    pause = vendor.task_set_active(False).format(task_id=task_id)
    assert (await send(stack, pause)).status_code == 200
    assert (await read_task(stack, task_id))["state"] == "PAUSED"
    resume = vendor.task_set_active(True).format(task_id=task_id)
    assert (await send(stack, resume)).status_code == 200
    assert (await read_task(stack, task_id))["state"] == "ACTIVE"
    update = vendor.task_update_schedule(
        start=start + timedelta(days=1),
        repeating=vendor.period_repeating(3, "HOURS"),
        now=datetime.now(UTC),
        stop=10,
    ).format(task_id=task_id)
    await succeeds(stack, update)
    assert (await read_task(stack, task_id))["schedule"]["stop"] == {"executions": 10}
    deleted = await send(stack, vendor.TASK_DELETE.format(task_id=task_id))
    assert deleted.status_code == 200  # exactly: the client rejects a 204
    gone = await send(stack, vendor.TASK_GET.format(task_id=task_id))
    assert gone.status_code == 404


# --------------------------------------------------------------------------------------------
# 3. Job control and reading
# --------------------------------------------------------------------------------------------


async def summary_status(stack: Stack, job_id: str) -> str:
    """``findById`` then ``report.summary.status`` (body["job"] or the body)."""
    answer = await send(stack, vendor.JOB_GET.format(job_id=job_id))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    status: str = body.get("job", body)["report"]["summary"]["status"]
    return status


async def status_becomes(stack: Stack, job_id: str, status: str) -> None:
    async def check() -> None:
        assert await summary_status(stack, job_id) == status

    await eventually(check, timeout=30)


async def test_job_pause_resume_cancel_as_the_js_client_does(stack: Stack) -> None:
    await stack.provision(2, tags=["madrid"], prefix="js-madrid-")
    answer = await succeeds(stack, vendor.JOB_CREATE_WITH_TAG_DELAYED)
    job_id = answer.headers["Location"].rsplit("/", 1)[-1]
    assert await summary_status(stack, job_id) == "SCHEDULED"
    pause = vendor.JOB_PAUSE.format(job_id=job_id)
    assert (await send(stack, pause)).status_code == 200
    await status_becomes(stack, job_id, "IDLE")
    assert (await send(stack, vendor.JOB_RESUME.format(job_id=job_id))).status_code == 200
    await status_becomes(stack, job_id, "SCHEDULED")
    assert (await send(stack, vendor.JOB_CANCEL.format(job_id=job_id))).status_code == 200
    # The vendor's feature reads CANCELLED right after; ours passes through CANCELLING.
    await status_becomes(stack, job_id, "CANCELLED")
    refused = await send(stack, pause)
    assert refused.status_code == 400
    error = refused.json()["errors"][0]
    # The vendor's feature expects "Job state transition error." (with a period); the SPEC's
    # message has none.
    assert error["code"] == 1015 and error["message"].startswith("Job state transition error")


async def test_execute_now_in_the_intended_shape(stack: Stack) -> None:
    devices = [d["id"] for d in await stack.provision(2, prefix="js-now-")]
    request = vendor.job_request(
        "REBOOT_EQUIPMENT", entities=devices, parameters={}, start=60, job_timeout_ms=300_000
    )
    answer = await succeeds(stack, vendor.job_create(request))
    job_id = answer.json()["id"]
    assert await summary_status(stack, job_id) == "SCHEDULED"
    # The JS client as shipped sends this body to PUT /operation (no job id) and then activates
    # the job (vendor.execute_now_as_sent; its own scenario is @ignore): that path is not ours to
    # serve. The intended request is the PUT of the job itself, tested here.
    now = await send(stack, vendor.EXECUTE_NOW_INTENDED.format(job_id=job_id))
    assert now.status_code == 200, now.text
    done = await stack.wait_finished(job_id, timeout=30)
    assert done["report"]["summary"]["finished"]["successful"] == 2


async def test_job_operations_pages_as_the_js_client_reads_them(stack: Stack) -> None:
    devices = [d["id"] for d in await stack.provision(12, prefix="js-ops-")]
    request = vendor.job_request("REFRESH_INFO", entities=devices)
    job_id = (await succeeds(stack, vendor.job_create(request))).json()["id"]
    await stack.wait_finished(job_id)
    first = await succeeds(stack, vendor.JOB_OPERATIONS.format(job_id=job_id))
    assert "start=1&size=10" in vendor.JOB_OPERATIONS.url
    assert len(first.json()["operations"]) == 10
    assert all(o["name"] == "REFRESH_INFO" for o in first.json()["operations"])
    second = replace_query(vendor.JOB_OPERATIONS.format(job_id=job_id), start="2")
    assert len((await succeeds(stack, second)).json()["operations"]) == 2
    past = replace_query(vendor.JOB_OPERATIONS.format(job_id=job_id), start="3")
    answer = await send(stack, past)
    assert answer.status_code == 200 and answer.json()["operations"] == []  # a 204 is rejected
    unknown = await send(stack, vendor.JOB_OPERATIONS.format(job_id=str(uuid.uuid4())))
    assert unknown.status_code == 404


def replace_query(request: VendorRequest, **values: str) -> VendorRequest:
    return VendorRequest(
        request.method, request.path, request.body, {**request.query, **values}, request.ok
    )


# --------------------------------------------------------------------------------------------
# 4. Searches and summaries
# --------------------------------------------------------------------------------------------


async def js_paged(
    stack: Stack, template: VendorRequest, key: str, filter_: dict[str, Any], size: int
) -> list[dict[str, Any]]:
    """``BaseSearch.executeWithAsyncPaging``: start at 1, next page while a page is full."""
    found: list[dict[str, Any]] = []
    start = 1
    while True:
        body = vendor.js_search_body(filter_, size=size, start=start)
        answer = await send(stack, VendorRequest(template.method, template.path, body))
        if start > 1 and answer.status_code != 200:
            return found
        assert answer.status_code == 200, answer.text
        page = answer.json()[key]
        found += page
        if len(page) < size:
            return found
        start += 1


async def finished_job(stack: Stack, name: str, devices: list[str]) -> str:
    request = vendor.job_request(name, entities=devices, parameters={})
    job_id: str = (await succeeds(stack, vendor.job_create(request))).json()["id"]
    await stack.wait_finished(job_id)
    return job_id


async def test_job_search_pages_as_the_js_client_does(stack: Stack) -> None:
    name = unique("VENDOR_JOBS")
    await custom_type(stack, name)
    [device] = [d["id"] for d in await stack.provision(1, prefix="js-jobs-")]
    ids = {await finished_job(stack, name, [device]) for _ in range(3)}
    by_name = {"and": [{"eq": {"operationName": name}}]}
    found = await js_paged(stack, vendor.JS_SEARCH_JOBS, "jobs", by_name, size=2)
    assert {j["id"] for j in found} == ids and len(found) == 3
    one = next(iter(ids))
    answer = await succeeds(
        stack, replace_body(vendor.JS_SEARCH_JOBS, {"filter": {"eq": {"jobId": one}}})
    )
    assert [j["id"] for j in answer.json()["jobs"]] == [one]


def replace_body(request: VendorRequest, filter_part: dict[str, Any]) -> VendorRequest:
    return VendorRequest(request.method, request.path, {**request.body, **filter_part})


async def test_task_search_pages_as_the_js_client_does(stack: Stack) -> None:
    [device] = [d["id"] for d in await stack.provision(1, prefix="js-search-")]
    prefix = unique("searched")
    start = (datetime.now(UTC) + timedelta(days=3)).astimezone(MADRID).replace(microsecond=0)
    ids = [
        await create_task(stack, pattern_task("weekly", start, f"{prefix}-{n}", [device]))
        for n in range(3)
    ]
    by_name = {"like": {"name": f"^{prefix}-"}}
    found = await js_paged(stack, vendor.JS_SEARCH_TASKS, "tasks", by_name, size=2)
    assert sorted(t["id"] for t in found) == sorted(ids)
    assert all(t["state"] == "ACTIVE" and t["job"]["request"] for t in found)
    await succeeds(stack, vendor.task_set_active(False).format(task_id=ids[0]))
    paused = {"and": [{"eq": {"state": "PAUSED"}}, {"in": {"id": ids}}]}
    answer = await succeeds(stack, replace_body(vendor.JS_SEARCH_TASKS, {"filter": paused}))
    body = answer.json()
    assert [t["id"] for t in body["tasks"]] == [ids[0]] and body["page"]["number"] == 1
    later = {"and": [{"gt": {"startDate": start.isoformat()}}, {"in": {"taskId": ids}}]}
    answer = await succeeds(stack, replace_body(vendor.JS_SEARCH_TASKS, {"filter": later}))
    assert answer.json()["tasks"] == []
    past_the_end = vendor.js_search_body(by_name, size=1000, start=2)
    answer = await succeeds(stack, VendorRequest("POST", "/search/tasks", past_the_end))
    assert answer.json()["tasks"] == [] and answer.json()["page"]["number"] == 2
    for task_id in ids:
        await succeeds(stack, vendor.TASK_DELETE.format(task_id=task_id))


async def test_history_search_with_the_python_clients_flags_and_paging(stack: Stack) -> None:
    devices = [d["id"] for d in await stack.provision(5, prefix="py-history-")]
    job_id = await finished_job(stack, "REBOOT_EQUIPMENT", devices)
    by_job = {"and": [{"eq": {"jobId": job_id}}]}
    request = vendor.py_history_search(by_job)
    assert "flattened=False&utc=False&summary=False&defaultSorted=False&caseSensitive=False" in (
        request.url
    )
    # The pager of opengate-data: pages 1, 2, 3... until a 204 or an empty page.
    seen: list[str] = []
    for start in range(1, 10):
        answer = await send(stack, vendor.py_history_search(by_job, start=start, size=2))
        if answer.status_code == 204 or not answer.json().get("operations"):
            break
        assert answer.status_code == 200, answer.text
        seen += [o["entityId"] for o in answer.json()["operations"]]
    else:
        pytest.fail("the history never answered an empty page")
    assert start == 4 and sorted(seen) == sorted(devices)
    # One page of 1000 (the client's default), an unknown flag ignored.
    one = vendor.py_history_search(by_job)
    answer = await succeeds(stack, replace_query(one, unknownFlag="True", utc="True"))
    assert len(answer.json()["operations"]) == 5
    js = await js_paged(stack, vendor.JS_SEARCH_HISTORY, "operations", by_job, size=2)
    assert sorted(o["entityId"] for o in js) == sorted(devices)


async def test_job_and_history_summaries(stack: Stack) -> None:
    name = unique("VENDOR_SUMMARY")
    await custom_type(stack, name)
    devices = [d["id"] for d in await stack.provision(3, prefix="js-summary-")]
    await stack.sim.put(f"/sim/devices/{devices[2]}", json={"result_code": "ERROR_PROCESSING"})
    done = [await finished_job(stack, name, devices) for _ in range(2)]
    waiting = vendor.job_request(name, entities=devices, parameters={}, start=60)
    scheduled = (await succeeds(stack, vendor.job_create(waiting))).json()["id"]
    by_name = {"and": [{"eq": {"operationName": name}}]}

    jobs = await succeeds(stack, replace_body(vendor.JS_SEARCH_JOBS_SUMMARY, {"filter": by_name}))
    assert jobs.json() == {
        "summary": {
            "count": 3,
            "name": {"count": 1, "list": [{"name": name, "count": 3}]},
            "status": {
                "count": 2,
                "list": [{"name": "FINISHED", "count": 2}, {"name": "SCHEDULED", "count": 1}],
            },
        }
    }
    history = await succeeds(
        stack, replace_body(vendor.JS_SEARCH_HISTORY_SUMMARY, {"filter": by_name})
    )
    summary = history.json()["summary"]
    assert summary["count"] == 6
    assert summary["name"] == {"count": 1, "list": [{"name": name, "count": 6}]}
    assert summary["status"] == {"count": 1, "list": [{"name": "FINISHED", "count": 6}]}
    results = {e["name"]: e["count"] for e in summary["result"]["list"]}
    assert results == {"SUCCESSFUL": 4, "ERROR_PROCESSING": 2}
    assert summary["result"]["count"] == 2
    one_job = {"filter": {"eq": {"jobId": done[0]}}}
    answer = await succeeds(stack, replace_body(vendor.JS_SEARCH_HISTORY_SUMMARY, one_job))
    assert answer.json()["summary"]["count"] == 3
    nothing = {"filter": {"eq": {"jobId": str(uuid.uuid4())}}}
    answer = await succeeds(stack, replace_body(vendor.JS_SEARCH_JOBS_SUMMARY, nothing))
    assert answer.json()["summary"] == {
        "count": 0,
        "name": {"count": 0, "list": []},
        "status": {"count": 0, "list": []},
    }
    assert (await send(stack, vendor.JOB_CANCEL.format(job_id=scheduled))).status_code == 200
