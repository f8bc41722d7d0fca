"""The south protocol end to end (SPEC 4): asynchronous and multi-step answers, sleepy devices,
timeouts and late answers, retries, and what a device may and may not do."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.stack import Stack, eventually

JOBS = "/north/v80/operation/jobs"


def south(device_id: str, what: str) -> str:
    return f"/south/v80/devices/{device_id}/operation/{what}"


def answer_body(operation_id: str, device_id: str, result: str | None, steps=()) -> dict:
    response: dict[str, Any] = {
        "id": operation_id,
        "deviceId": device_id,
        "name": "REBOOT_EQUIPMENT",
        "timestamp": 1763800001000,
        "steps": [
            {"name": s, "timestamp": 1763800001000, "result": "SUCCESSFUL", "description": s}
            for s in steps
        ],
    }
    if result:
        response["resultCode"] = result
    return {"version": "1.0", "operation": {"response": response}}


async def only_operation(stack: Stack, job_id: str, status: str | None = None) -> dict[str, Any]:
    async def listed() -> dict[str, Any]:
        operations = await stack.operations(job_id)
        assert len(operations) == 1
        assert status is None or operations[0]["status"] == status, operations[0]
        return operations[0]

    return await eventually(listed)


async def test_async_device_with_three_partial_answers(stack: Stack) -> None:
    device = (await stack.provision(1))[0]["id"]
    await stack.sim.put(
        f"/sim/devices/{device}",
        json={"mode": "async", "steps": ["DOWNLOAD", "INSTALL", "VERIFY"], "step_interval_ms": 400},
    )
    job = await stack.create_job(
        {"name": "REBOOT_EQUIPMENT", "target": {"append": {"entities": [device]}}}
    )

    async def started() -> None:
        summary = (await stack.job(job["id"]))["report"]["summary"]
        assert summary["inProgress"]["started"] == 1, summary

    await eventually(started, interval=0.05)
    done = await stack.wait_finished(job["id"])
    assert done["report"]["summary"]["finished"]["successful"] == 1
    assert done["report"]["summary"]["inProgress"]["total"] == 0

    operation = await only_operation(stack, job["id"], "FINISHED")
    assert operation["result"] == "SUCCESSFUL"
    assert [s["name"] for s in operation["steps"]] == ["DOWNLOAD", "INSTALL", "VERIFY"]
    assert all(s["result"] == "SUCCESSFUL" and s["timestamp"] for s in operation["steps"])
    # The device got the request once, and answered 3 partial answers and a final one.
    assert (await stack.sim.get("/sim/stats")).json()["requests"] == 1
    assert stack.fleet.answers_sent == 4


async def test_update_reports_its_five_catalog_steps(stack: Stack) -> None:
    device = (await stack.provision(1))[0]["id"]
    await stack.sim.put(f"/sim/devices/{device}", json={"mode": "async", "step_interval_ms": 10})
    job = await stack.create_job(
        {
            "name": "UPDATE",
            "parameters": {"bundleName": "fw", "bundleVersion": "2.0"},
            "target": {"append": {"entities": [device]}},
        }
    )
    await stack.wait_finished(job["id"])
    operation = await only_operation(stack, job["id"], "FINISHED")
    assert [s["name"] for s in operation["steps"]] == [
        "BEGINUPDATE",
        "DOWNLOADFILE",
        "BEGININSTALL",
        "ENDINSTALL",
        "ENDUPDATE",
    ]


async def test_sleepy_device_collects_its_operation_by_polling(stack: Stack) -> None:
    device = (await stack.provision(1, reachable=False, prefix="sleepy-"))[0]
    key = {"X-ApiKey": device["apiKey"]}
    job = await stack.create_job(
        {"name": "REBOOT_EQUIPMENT", "target": {"append": {"entities": [device["id"]]}}}
    )

    async def waiting() -> None:
        summary = (await stack.job(job["id"]))["report"]["summary"]
        assert summary["inProgress"]["waitingForConnection"] == 1, summary

    await eventually(waiting)
    operation = await only_operation(stack, job["id"], "WAITING_FOR_CONNECTION")

    first = await stack.api.get(south(device["id"], "pending"), headers=key)
    assert first.status_code == 200, first.text
    handed = first.json()["operations"]
    assert len(handed) == 1
    request = handed[0]["operation"]["request"]
    assert request["id"] == operation["operationId"] and request["deviceId"] == device["id"]
    assert request["name"] == "REBOOT_EQUIPMENT"
    second = await stack.api.get(south(device["id"], "pending"), headers=key)
    assert second.json() == {"operations": []}
    await only_operation(stack, job["id"], "STARTED")

    posted = await stack.api.post(
        south(device["id"], "response"),
        json=answer_body(request["id"], device["id"], "SUCCESSFUL", ["REBOOT_EQUIPMENT"]),
        headers=key,
    )
    assert posted.status_code == 200, posted.text
    done = await stack.wait_finished(job["id"])
    assert done["report"]["summary"]["finished"]["successful"] == 1
    again = await stack.api.post(
        south(device["id"], "response"),
        json=answer_body(request["id"], device["id"], "SUCCESSFUL"),
        headers=key,
    )
    assert again.status_code == 409


async def test_concurrent_polls_never_share_an_operation(stack: Stack) -> None:
    device = (await stack.provision(1, reachable=False, prefix="sleepy-"))[0]
    key = {"X-ApiKey": device["apiKey"]}
    jobs = [
        await stack.create_job(
            {"name": "REFRESH_INFO", "target": {"append": {"entities": [device["id"]]}}}
        )
        for _ in range(4)
    ]
    for job in jobs:
        await only_operation(stack, job["id"], "WAITING_FOR_CONNECTION")

    async def waiting_listed() -> None:
        query = (
            f"WorkflowType = 'OperationWorkflow' AND EntityId = '{device['id']}' "
            "AND OperationStatus = 'WAITING_FOR_CONNECTION'"
        )
        assert (await stack.client.count_workflows(query)).count == 4

    await eventually(waiting_listed)
    polls = await asyncio.gather(
        *(stack.api.get(south(device["id"], "pending"), headers=key) for _ in range(2))
    )
    batches = [[o["operation"]["request"]["id"] for o in p.json()["operations"]] for p in polls]
    assert not set(batches[0]) & set(batches[1])
    assert len(batches[0]) + len(batches[1]) == 4


async def test_timeout_then_late_answer_is_counted_out_of_time(stack: Stack) -> None:
    device = (await stack.provision(1))[0]["id"]
    await stack.sim.put(f"/sim/devices/{device}", json={"mode": "silent"})
    job = await stack.create_job(
        {
            "name": "REBOOT_EQUIPMENT",
            "target": {"append": {"entities": [device]}},
            "operationParameters": {"timeout": 1500},
        }
    )
    operation = await only_operation(stack, job["id"], "CANCELLED")
    assert operation["description"].startswith("byTimeout")
    summary = (await stack.job(job["id"]))["report"]["summary"]
    assert summary["status"] == "FINISHED"
    assert summary["finished"]["cancelled"]["byTimeout"] == 1

    late = await stack.api.post(
        south(device, "response"),
        json=answer_body(operation["operationId"], device, "SUCCESSFUL", ["REBOOT_EQUIPMENT"]),
        headers={"X-ApiKey": stack.fleet.keys[device]},
    )
    assert late.status_code == 200, late.text
    assert late.json()["outOfTime"] is True

    async def counted() -> dict[str, Any]:
        summary = (await stack.job(job["id"]))["report"]["summary"]
        assert summary["finishedOutOfTime"] == {"total": 1, "successful": 1, "error": 0}, summary
        return summary

    summary = await eventually(counted)
    assert summary["finished"]["cancelled"]["byTimeout"] == 1
    assert summary["total"] == 1
    operation = await only_operation(stack, job["id"])
    assert operation["outOfTime"] is True and operation["result"] == "SUCCESSFUL"
    assert operation["status"] == "CANCELLED"
    assert [s["name"] for s in operation["steps"]] == ["REBOOT_EQUIPMENT"]


async def test_retries_resend_the_same_operation_id(stack: Stack) -> None:
    device = (await stack.provision(1))[0]["id"]
    await stack.sim.put(
        f"/sim/devices/{device}", json={"fail_first": 2, "fail_code": "ERROR_PROCESSING"}
    )
    job = await stack.create_job(
        {
            "name": "REBOOT_EQUIPMENT",
            "target": {"append": {"entities": [device]}},
            "operationParameters": {
                "retries": 3,
                "retriesDelay": 100,
                "retryResultList": ["ERROR_PROCESSING"],
            },
        }
    )
    done = await stack.wait_finished(job["id"])
    assert done["report"]["summary"]["finished"]["successful"] == 1
    operation = await only_operation(stack, job["id"], "FINISHED")
    assert operation["result"] == "SUCCESSFUL"
    assert operation["attempts"] == {"current": 3, "total": 4}
    received = (await stack.sim.get("/sim/deliveries", params={"deviceId": device})).json()
    assert [d["operation_id"] for d in received["deliveries"]] == [operation["operationId"]] * 3


async def test_a_device_cannot_answer_for_another(stack: Stack) -> None:
    a, b = (d["id"] for d in await stack.provision(2, reachable=False, prefix="sleepy-"))
    job = await stack.create_job(
        {"name": "REBOOT_EQUIPMENT", "target": {"append": {"entities": [b]}}}
    )
    operation = await only_operation(stack, job["id"], "WAITING_FOR_CONNECTION")
    key_a = {"X-ApiKey": stack.fleet.keys[a]}

    # A's key, for B's device path: 403. A's own path, B's operation: 403, and nothing leaks.
    for path_device, body_device in ((b, b), (a, a)):
        answer = await stack.api.post(
            south(path_device, "response"),
            json=answer_body(operation["operationId"], body_device, "SUCCESSFUL"),
            headers=key_a,
        )
        assert answer.status_code == 403, answer.text
        assert b not in answer.text and operation["operationId"] not in answer.text
    assert (await stack.api.get(south(b, "pending"), headers=key_a)).status_code == 403
    assert (await only_operation(stack, job["id"]))["status"] == "WAITING_FOR_CONNECTION"
    # A north key is not a device key.
    assert (await stack.api.get(south(b, "pending"))).status_code == 403


async def test_bad_device_answers_are_4xx_and_harmless(stack: Stack) -> None:
    device = (await stack.provision(1, reachable=False, prefix="sleepy-"))[0]["id"]
    key = {"X-ApiKey": stack.fleet.keys[device]}
    job = await stack.create_job(
        {"name": "REBOOT_EQUIPMENT", "target": {"append": {"entities": [device]}}}
    )
    operation = await only_operation(stack, job["id"], "WAITING_FOR_CONNECTION")
    url = south(device, "response")

    malformed = await stack.api.post(
        url, content=b'{"operation": ', headers={**key, "Content-Type": "application/json"}
    )
    assert malformed.status_code == 400 and malformed.json()["errors"][0]["code"] == 1001
    wrong_type = answer_body(operation["operationId"], device, "SUCCESSFUL")
    wrong_type["operation"]["response"]["steps"] = "all of them"
    answer = await stack.api.post(url, json=wrong_type, headers=key)
    assert answer.status_code == 400
    assert answer.json()["errors"][0]["context"][0]["name"] == "operation.response.steps"
    unknown_code = answer_body(operation["operationId"], device, "GREAT_SUCCESS")
    assert (await stack.api.post(url, json=unknown_code, headers=key)).status_code == 400
    huge = b'{"version": "' + b"x" * (stack.settings.max_body_bytes + 10) + b'"}'
    too_big = await stack.api.post(
        url, content=huge, headers={**key, "Content-Type": "application/json"}
    )
    assert too_big.status_code == 413
    unknown = answer_body("7b0e3a4c-0000-4000-8000-000000000000", device, "SUCCESSFUL")
    assert (await stack.api.post(url, json=unknown, headers=key)).status_code == 404
    no_key = await stack.api.post(url, json=unknown, headers={"X-ApiKey": ""})
    assert no_key.status_code == 401

    # The operation is untouched by all of that, and still completes normally.
    assert (await only_operation(stack, job["id"]))["status"] == "WAITING_FOR_CONNECTION"
    good = answer_body(operation["operationId"], device, "SUCCESSFUL")
    assert (await stack.api.post(url, json=good, headers=key)).status_code == 200
    done = await stack.wait_finished(job["id"])
    assert done["report"]["summary"]["finished"]["successful"] == 1


async def test_a_flaky_device_is_pushed_again_until_it_takes_the_request(stack: Stack) -> None:
    device = (await stack.provision(1))[0]["id"]
    # More failures than one push retries (3): the operation waits for connection, then the
    # engine pushes again after its back-off.
    await stack.sim.put(f"/sim/devices/{device}", json={"http_fail_first": 4})
    job = await stack.create_job(
        {"name": "REBOOT_EQUIPMENT", "target": {"append": {"entities": [device]}}}
    )
    done = await stack.wait_finished(job["id"], timeout=60)
    assert done["report"]["summary"]["finished"]["successful"] == 1
    assert stack.fleet.http_failures[device] == 4
    stats = (await stack.sim.get("/sim/stats")).json()
    assert stats["requests"] == 1 and stats["duplicates"] == 0


async def test_a_burst_of_partial_answers_loses_none_and_keeps_order(stack: Stack) -> None:
    device = (await stack.provision(1))[0]["id"]
    await stack.sim.put(f"/sim/devices/{device}", json={"mode": "silent"})
    job = await stack.create_job(
        {
            "name": "UPDATE",
            "parameters": {"bundleName": "fw", "bundleVersion": "3"},
            "target": {"append": {"entities": [device]}},
        }
    )
    operation = await only_operation(stack, job["id"], "STARTED")
    key = {"X-ApiKey": stack.fleet.keys[device]}
    names = [f"STEP_{i:02d}" for i in range(25)]
    for name in names:  # one after the other, as fast as the API takes them
        answer = await stack.api.post(
            south(device, "response"),
            json=answer_body(operation["operationId"], device, None, [name]),
            headers=key,
        )
        assert answer.status_code == 200
    final = answer_body(operation["operationId"], device, "SUCCESSFUL", ["STEP_03"])
    assert (
        await stack.api.post(south(device, "response"), json=final, headers=key)
    ).status_code == 200
    await stack.wait_finished(job["id"])
    done = await only_operation(stack, job["id"], "FINISHED")
    # Every step kept, in arrival order; the final answer's STEP_03 replaced the earlier one.
    assert [s["name"] for s in done["steps"]] == names


async def test_ack_timeout_bounds_the_wait_for_the_device(stack: Stack) -> None:
    device = (await stack.provision(1))[0]["id"]
    # The device takes 5 s to answer the push; with ackTimeout 500 ms the engine stops waiting,
    # the operation waits for connection, and the device's own answer closes it.
    await stack.sim.put(f"/sim/devices/{device}", json={"mode": "sync", "delay_ms": 5000})
    job = await stack.create_job(
        {
            "name": "REBOOT_EQUIPMENT",
            "target": {"append": {"entities": [device]}},
            "operationParameters": {"ackTimeout": 500},
        }
    )
    operation = await only_operation(stack, job["id"], "WAITING_FOR_CONNECTION")
    answer = await stack.api.post(
        south(device, "response"),
        json=answer_body(operation["operationId"], device, "SUCCESSFUL"),
        headers={"X-ApiKey": stack.fleet.keys[device]},
    )
    assert answer.status_code == 200
    done = await stack.wait_finished(job["id"])
    assert done["report"]["summary"]["finished"]["successful"] == 1
