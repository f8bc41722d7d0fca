"""Hostile input at the API layer (issue 9): every answer is a clean 4xx (or a 500 with a
correlation id) in the SPEC error body, the body limit holds while a body streams in, search dates
are what Temporal's visibility takes, and the OpenAPI document says what the API does."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import pytest_asyncio
import schemathesis
from temporalio.testing import WorkflowEnvironment

from inventory.store import Inventory
from tests.stack import Stack, eventually, running_stack

JOBS = "/north/v80/operation/jobs"
DEVICES = "/north/v80/provision/devices"
SEARCH_JOBS = "/north/v80/search/jobs"
SEARCH_OPERATIONS = "/north/v80/search/entities/operations/history"
JSON = {"Content-Type": "application/json"}
SMALL_LIMIT = 256 * 1024


def spec_error(answer: httpx.Response, status: int) -> dict[str, Any]:
    """The one error of a SPEC error body, after checking the status and the body's shape."""
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    body = answer.json()
    assert set(body) == {"errors"} and len(body["errors"]) == 1, body
    error = body["errors"][0]
    assert isinstance(error["code"], int) and isinstance(error["message"], str), error
    assert set(error) <= {"code", "message", "context"}, error
    for item in error.get("context", []):
        assert set(item) == {"name", "value"} and isinstance(item["value"], str), error
    return error


def named(error: dict[str, Any]) -> list[str]:
    return [c["name"] for c in error.get("context", [])]


# --- the body limit ---


@pytest_asyncio.fixture(loop_scope="session")
async def small_stack(env: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[Stack]:
    async with running_stack(env, tmp_path, max_body_bytes=SMALL_LIMIT) as running:
        yield running


async def _raw_upload(
    stack: Stack, path: str, head: dict[str, str], chunks: int, chunk: bytes
) -> tuple[int, bytes, int]:
    """Send a request whose body is ``chunks`` chunks (chunked encoding unless ``head`` has a
    Content-Length) while reading the answer; stop sending as soon as the answer comes, as a
    client would. Returns the status, the answer's body and how many body bytes were sent."""
    url = urlsplit(stack.api_url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    chunked = "Content-Length" not in head
    lines = [f"POST {path} HTTP/1.1", f"Host: {url.netloc}", f"X-ApiKey: {stack.admin_key}"]
    lines += [f"{k}: {v}" for k, v in head.items()]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    answer = asyncio.create_task(reader.readuntil(b"\r\n\r\n"))
    sent = 0
    try:
        for _ in range(chunks):
            if answer.done():
                break
            framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" if chunked else chunk
            writer.write(framed)
            sent += len(chunk)
            drained = asyncio.ensure_future(writer.drain())
            await asyncio.wait({drained, answer}, return_when=asyncio.FIRST_COMPLETED)
            if not drained.done():  # the server takes no more, and has answered
                drained.cancel()
                break
            drained.result()
        else:
            if chunked:
                writer.write(b"0\r\n\r\n")
                await writer.drain()
    except ConnectionError:
        pass  # the server may stop taking the body: its answer is what counts
    head_bytes = await asyncio.wait_for(answer, 30)
    status = int(head_bytes.split(b" ", 2)[1])
    length = int(re.search(rb"(?i)content-length: *(\d+)", head_bytes)[1])  # type: ignore[index]
    body = await asyncio.wait_for(reader.readexactly(length), 30)
    writer.close()
    return status, body, sent


def _spec_413(status: int, body: bytes) -> None:
    assert status == 413, body
    [error] = json.loads(body)["errors"]
    assert error["code"] == 1013 and "bytes" in error["message"]


async def test_a_chunked_body_past_the_limit_is_413_before_it_is_all_sent(
    small_stack: Stack,
) -> None:
    total_chunks = 1024  # 64 MiB in 64 KiB chunks, 256 times the limit
    chunk = b" " * 65536
    for path in (JOBS, f"{DEVICES}/bulk"):
        status, body, sent = await _raw_upload(small_stack, path, JSON, total_chunks, chunk)
        _spec_413(status, body)
        # The answer came while the upload was still going: the server did not wait for it all.
        assert sent < total_chunks * len(chunk) // 4, sent
    # The API still serves normal requests.
    assert (await small_stack.api.get(DEVICES)).status_code == 200


async def test_a_content_length_past_the_limit_is_refused_before_reading(
    small_stack: Stack,
) -> None:
    head = {**JSON, "Content-Length": str(SMALL_LIMIT * 1000)}
    # Not a byte of the body is sent, and the 413 comes anyway.
    status, body, sent = await _raw_upload(small_stack, JOBS, head, 0, b"")
    _spec_413(status, body)
    assert sent == 0


async def test_a_body_just_under_the_limit_is_read(small_stack: Stack) -> None:
    padding = " " * (SMALL_LIMIT - 100)
    body = f'{{"name": "ok-key",{padding}"role": "viewer"}}'.encode()

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(body), 10_000):
            yield body[i : i + 10_000]

    answer = await small_stack.api.post("/north/v80/apiKeys", content=chunks(), headers=JSON)
    assert answer.status_code == 201, answer.text


# --- every error in the SPEC body ---


async def test_unknown_routes_and_methods_answer_in_the_spec_body(stack: Stack) -> None:
    assert spec_error(await stack.api.get("/no/such/route"), 404)["code"] == 1004
    assert spec_error(await stack.as_key("").get("/north/v80/nothing"), 404)["code"] == 1004
    not_allowed = await stack.api.delete(JOBS)
    spec_error(not_allowed, 405)
    assert not_allowed.headers["Allow"]
    spec_error(await stack.api.patch(f"{DEVICES}/dev-1", json={}), 405)


async def test_an_unexpected_error_is_a_500_with_a_correlation_id_in_the_log(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(self: Inventory) -> None:
        raise RuntimeError("the database went away")

    monkeypatch.setattr(Inventory, "list_keys", broken)
    with caplog.at_level(logging.ERROR, logger="api.errors"):
        answer = await stack.api.get("/north/v80/apiKeys")
    error = spec_error(answer, 500)
    correlation = answer.headers["X-Correlation-Id"]
    assert error["code"] == 1000
    assert correlation in error["message"]
    assert error["context"] == [{"name": "correlationId", "value": correlation}]
    assert "database went away" not in answer.text  # the details stay in the log
    [record] = [r for r in caplog.records if correlation in r.getMessage()]
    assert record.exc_info and "database went away" in str(record.exc_info[1])
    monkeypatch.undo()
    assert (await stack.api.get("/north/v80/apiKeys")).status_code == 200


HOSTILE_BODIES = [
    ("500 levels", b"[" * 500 + b"]" * 500),
    ("100,000 levels", b"[" * 100_000 + b"]" * 100_000),
    ("100,000 unclosed levels", b'{"job":' + b"[" * 100_000),
    ("deep parameters", b'{"job":{"request":{"name":"REBOOT_EQUIPMENT","parameters":'
     + b'{"a":' * 300 + b"1" + b"}" * 300 + b"}}}"),
    ("lone surrogate", b'{"job":{"request":{"name":"\\ud800"}}}'),
    ("lone low surrogate in a key", b'{"job":{"request":{"name":"X","\\udc00":1}}}'),
    ("NUL", b'{"job":{"request":{"name":"REBOOT\\u0000"}}}'),
    ("invalid UTF-8", b'{"job":{"request":{"name":"\xff\xfe"}}}'),
    ("encoded surrogate", b'{"job":{"request":{"name":"\xed\xa0\x80"}}}'),
    ("NaN", b'{"job":{"request":{"name":"X","parameters":{"a":NaN}}}}'),
    ("huge number", b'{"job":{"request":{"name":"X","parameters":{"a":1e999}}}}'),
    ("huge integer", b'{"job":{"request":{"name":"X","parameters":{"a":' + b"9" * 5000 + b"}}}}"),
    ("malformed", b'{"job": '),
    ("empty", b""),
    ("not an object", b"[]"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "body"), HOSTILE_BODIES, ids=[c for c, _ in HOSTILE_BODIES])
async def test_hostile_json_is_a_quick_400(stack: Stack, case: str, body: bytes) -> None:
    targets = [
        JOBS,
        f"{DEVICES}/bulk",
        SEARCH_JOBS,
        "/north/v80/operationTypes",
        "/north/v80/operation/tasks",
    ]
    for path in targets:
        began = time.monotonic()
        answer = await stack.api.post(path, content=body, headers=JSON)
        if (case, path) in (("empty", SEARCH_JOBS), ("not an object", f"{DEVICES}/bulk")):
            continue  # a search without a body lists everything; bulk takes an empty list
        spec_error(answer, 400)
        assert time.monotonic() - began < 1, (case, path)


async def test_bad_text_is_named(stack: Stack) -> None:
    surrogate = b'{"job":{"request":{"name":"REBOOT_EQUIPMENT","target":{"append":' \
        b'{"entities":["ok","\\ud800"]}}}}}'  # fmt: skip
    error = spec_error(await stack.api.post(JOBS, content=surrogate, headers=JSON), 400)
    assert named(error) == ["job.request.target.append.entities[1]"]
    error = spec_error(await stack.api.get(DEVICES, params={"tag": "a\x00b"}), 400)
    assert named(error) == ["tag"]
    error = spec_error(await stack.api.get(f"{DEVICES}/dev%00one"), 400)
    assert named(error) == ["device_id"]
    # A query parameter the route does not take is not read, so not refused.
    assert (await stack.api.get(DEVICES, params={"other": "\x00"})).status_code == 200


async def test_a_surrogate_anywhere_in_the_bulk_csv_or_json_is_a_400(stack: Stack) -> None:
    body = b'[{"id":"dev-1","tags":["\\udfff"]}]'
    error = spec_error(await stack.api.post(f"{DEVICES}/bulk", content=body, headers=JSON), 400)
    assert named(error) == ["[0].tags[0]"]
    csv = b"id,type\ndev-1,\xed\xa0\x80\n"
    answer = await stack.api.post(
        f"{DEVICES}/bulk", content=csv, headers={"Content-Type": "text/csv"}
    )
    spec_error(answer, 400)
    answer = await stack.api.post(
        f"{DEVICES}/bulk", content=b"id", headers={"Content-Type": "application/xml"}
    )
    spec_error(answer, 400)


async def test_pages_and_path_ids_are_bounded(stack: Stack) -> None:
    for path in (DEVICES, JOBS, "/north/v80/operation/tasks"):
        for start in ("9223372036854775807", "1000001", "0", "-1", "x"):
            error = spec_error(await stack.api.get(path, params={"start": start}), 400)
            assert named(error) == ["start"], (path, start)
        assert (await stack.api.get(path, params={"start": 1_000_000})).status_code == 200
    huge = {"limit": {"start": 2**63}}
    assert named(spec_error(await stack.api.post(SEARCH_JOBS, json=huge), 400)) == ["limit.start"]
    long_id = "a" * 5000
    for path in (
        f"{JOBS}/{long_id}",
        f"{JOBS}/{long_id}/operations",
        f"{DEVICES}/{long_id}",
        f"/north/v80/operation/tasks/{long_id}",
        f"/north/v80/operationTypes/{long_id}",
        f"/north/v80/apiKeys/{long_id}",
    ):
        method = "DELETE" if "apiKeys" in path else "GET"
        spec_error(await stack.api.request(method, path), 400)
    for path in (
        f"{JOBS}/bad%20id",
        f"{DEVICES}/bad%20id",
        "/north/v80/operation/tasks/bad%20id",
        "/north/v80/operationTypes/bad%20name",
        "/north/v80/apiKeys/XYZ",
    ):
        method = "DELETE" if "apiKeys" in path else "GET"
        assert spec_error(await stack.api.request(method, path), 404)["code"] == 1004
    answer = await stack.api.post(
        "/south/v80/devices/" + "d" * 500 + "/operation/response", json={}
    )
    spec_error(answer, 403)  # the admin key is no device's: refused before the path is read


# --- search ---

PAST_DATES = [
    "2020-01-01",
    "20200101",
    "2020-W01-1",
    "2020-01-01T10:00:00+01:00",
    "2020-01-01T10:00:00-05:30",
    "2020-01-01T10:00:00",
    "2020-01-01T10:00:00.5Z",
    "2020-01-01T10:00:00.123456Z",
    "2020-01-01 10:00",
    "20200101T100000Z",
]
BAD_DATES = ["tomorrow", "2020-13-01", "2020-01-01T25:00", "", "0001-01-01T00:00:00+01:00", 12]


async def test_search_dates_are_normalised_for_temporal(stack: Stack) -> None:
    [device] = await stack.provision(1)
    job = await stack.create_job(
        {"name": "REBOOT_EQUIPMENT", "target": {"append": {"entities": [device["id"]]}}}
    )
    this_job = {"eq": {"jobId": job["id"]}}

    async def found(filter: dict[str, Any]) -> list[str]:
        answer = await stack.api.post(SEARCH_JOBS, json={"filter": filter})
        assert answer.status_code == 200, (filter, answer.text)
        return [j["id"] for j in answer.json()["jobs"]]

    async def visible() -> None:
        assert await found(this_job) == [job["id"]]

    await eventually(visible)
    for date in PAST_DATES:
        assert await found({"and": [this_job, {"gt": {"createdDate": date}}]}) == [job["id"]]
        assert await found({"and": [this_job, {"lt": {"startedDate": date}}]}) == []
    assert await found({"and": [this_job, {"gt": {"createdDate": "2099-12-31"}}]}) == []
    assert await found({"and": [this_job, {"lt": {"createdDate": "2099-W52-7"}}]}) == [job["id"]]
    edge = {"in": {"finishedDate": ["0001-01-01", "9999-12-31T23:59:59.999999Z"]}}
    await found(edge)
    for what in (SEARCH_JOBS, SEARCH_OPERATIONS):
        for date in PAST_DATES:
            answer = await stack.api.post(what, json={"filter": {"neq": {"finishedDate": date}}})
            assert answer.status_code == 200, (date, answer.text)
        for bad in BAD_DATES:
            answer = await stack.api.post(what, json={"filter": {"gt": {"createdDate": bad}}})
            error = spec_error(answer, 400)
            assert named(error) == ["filter.gt.createdDate"], (bad, error)


async def test_search_filters_are_bounded(stack: Stack) -> None:
    leaf: dict[str, Any] = {"eq": {"jobStatus": "FINISHED"}}
    node = leaf
    for _ in range(7):  # 8 levels: accepted
        node = {"and": [node]}
    assert (await stack.api.post(SEARCH_JOBS, json={"filter": node})).status_code == 200
    too_deep = {"or": [node]}
    spec_error(await stack.api.post(SEARCH_JOBS, json={"filter": too_deep}), 400)
    wide = {"or": [leaf] * 100}
    spec_error(await stack.api.post(SEARCH_JOBS, json={"filter": wide}), 400)
    long_in = {"in": {"jobStatus": ["FINISHED"] * 101}}
    spec_error(await stack.api.post(SEARCH_JOBS, json={"filter": long_in}), 400)
    fits = {"in": {"jobStatus": ["FINISHED"] * 99}}
    assert (await stack.api.post(SEARCH_JOBS, json={"filter": fits})).status_code == 200
    long_value = {"eq": {"jobUser": "u" * 257}}
    spec_error(await stack.api.post(SEARCH_JOBS, json={"filter": long_value}), 400)
    for bad in ({"eq": {"jobUser": "a\x00"}}, {"eq": {"jobUser": "\ud800"}}):
        body = json.dumps({"filter": bad}).encode()  # ensure_ascii: the escapes reach the API
        error = spec_error(await stack.api.post(SEARCH_JOBS, content=body, headers=JSON), 400)
        assert named(error) == ["filter.eq.jobUser"]
    assert (await stack.api.post(SEARCH_JOBS)).status_code == 200  # no body: everything


# --- the OpenAPI document ---


async def test_the_openapi_document_describes_the_api(stack: Stack) -> None:
    answer = await stack.as_key("").get("/openapi.json")
    assert answer.status_code == 200
    document = answer.json()
    text = answer.text
    assert '"422"' not in text and "HTTPValidationError" not in text
    schemathesis.openapi.from_dict(document).validate()  # a valid OpenAPI 3.1 document
    assert document["openapi"].startswith("3.1")
    schemes = document["components"]["securitySchemes"]
    assert schemes["ApiKey"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-ApiKey",
        "description": schemes["ApiKey"]["description"],
    }
    schemas = document["components"]["schemas"]
    assert {*re.findall(r'"#/components/schemas/([^"]+)"', text)} <= set(schemas)
    error_ref = {"$ref": "#/components/schemas/ErrorBody"}
    operations = [
        (path, method, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]
    assert len(operations) >= 30
    for path, method, operation in operations:
        where = f"{method.upper()} {path}"
        responses = operation["responses"]
        if path.startswith("/health/"):
            assert "security" not in operation, where
        else:
            assert operation["security"] == [{"ApiKey": []}], where
            assert {"401", "403"} <= set(responses), where
            assert all(p["name"] != "X-ApiKey" for p in operation.get("parameters", [])), where
        for status, declared in responses.items():
            if status.startswith(("4", "5")):
                assert declared["content"]["application/json"]["schema"] == error_ref, where
        # Actions that take no body (beyond OpenGate: the next rollout group, one retry).
        if path.endswith(("/groups/next", "/retry")):
            assert "requestBody" not in operation, where
            assert "400" in responses, where
            continue
        if method in ("post", "put") and "search" not in path:
            content = operation["requestBody"]["content"]
            assert operation["requestBody"].get("required"), where
            assert {"400", "413"} <= set(responses), where
            for media in content.values():
                schema = media["schema"]
                assert (
                    "$ref" in schema
                    or "$ref" in schema.get("items", {})
                    or (media is content.get("text/csv"))
                ), where
        if "{" in path:
            assert "404" in responses, where
    bulk = document["paths"][f"{DEVICES}/bulk"]["post"]["requestBody"]["content"]
    assert set(bulk) == {"application/json", "text/csv"}
    assert bulk["application/json"]["schema"]["items"] == {"$ref": "#/components/schemas/DeviceIn"}
    created = document["paths"][DEVICES]["post"]["responses"]
    assert "409" in created
    docs = await stack.as_key("").get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
