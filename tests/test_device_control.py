"""Per-device control (beyond OpenGate; issue 14) end to end on the real stack: cancel one
operation of a running job, and rerun a job on the devices whose operations ended a given way.
Simulator devices, real HTTP and Temporal, no mocks."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from temporalio.client import WorkflowExecutionStatus

from api.errors import ApiError
from api.operation_control import _rerun_request
from core.temporal import job_workflow_id, operation_workflow_id
from models.enums import CancelReason, OperationStatus, ResultCode
from models.jobs import JobRequest
from models.operations import Operation
from models.rerun import RerunFilter, cancel_reason
from simulator.fleet import Behaviour, Mode
from tests.stack import Stack, eventually, failed_workflow_tasks

JOBS = "/north/v80/operation/jobs"


async def summary_of(stack: Stack, job_id: str) -> dict[str, Any]:
    return (await stack.job(job_id))["report"]["summary"]


def spec_error(answer: Any, status: int, code: int) -> dict[str, Any]:
    """The SPEC error body of an answer, checked for its status and code."""
    assert answer.status_code == status, answer.text
    [error] = answer.json()["errors"]
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"]
    return dict(error)


async def viewer_key(stack: Stack) -> str:
    answer = await stack.api.post("/north/v80/apiKeys", json={"name": "viewer", "role": "viewer"})
    assert answer.status_code == 201, answer.text
    return str(answer.json()["apiKey"])


async def test_cancelling_one_operation_leaves_the_others_running(stack: Stack) -> None:
    # Asynchronous devices that answer 4 s after acknowledging, and one that never connects.
    await stack.sim.put("/sim/default", json={"mode": "async", "delay_ms": 4000})
    slow = [d["id"] for d in await stack.provision(10, prefix="slow-")]
    [sleepy] = [d["id"] for d in await stack.provision(1, prefix="sleepy-", reachable=False)]
    job = await stack.create_job(
        {"name": "REBOOT_EQUIPMENT", "target": {"append": {"entities": [*slow, sleepy]}}}
    )

    async def all_open() -> list[dict[str, Any]]:
        summary = await summary_of(stack, job["id"])
        assert summary["inProgress"]["started"] == 10, summary
        assert summary["inProgress"]["waitingForConnection"] == 1, summary
        operations = await stack.operations(job["id"])
        assert len(operations) == 11
        return operations

    operations = await eventually(all_open)
    by_device = {o["entityId"]: o for o in operations}
    started, waiting = by_device[slow[0]], by_device[sleepy]
    assert started["status"] == "STARTED" and waiting["status"] == "WAITING_FOR_CONNECTION"

    # A device working on its request: cancelled at once, byUser.
    answer = await stack.api.delete(f"{JOBS}/{job['id']}/operations/{started['operationId']}")
    assert answer.status_code == 200, answer.text
    cancelled = answer.json()
    assert cancelled["operationId"] == started["operationId"]
    assert cancelled["entityId"] == slow[0]
    assert (cancelled["status"], cancelled["result"]) == ("CANCELLED", "CANCELLED")
    assert cancelled["description"].startswith("byUser: ")
    assert cancelled["cancelReason"] == "byUser"
    # The others run on.
    summary = await summary_of(stack, job["id"])
    assert summary["status"] == "IN_PROGRESS"
    others = [o for o in await stack.operations(job["id"]) if o["entityId"] in slow[1:]]
    assert len(others) == 9 and all(o["status"] == "STARTED" for o in others), others

    # An operation that waits for its device to connect is cancelled too.
    answer = await stack.api.delete(f"{JOBS}/{job['id']}/operations/{waiting['operationId']}")
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "CANCELLED"
    assert answer.json()["description"].startswith("byUser: ")

    # Cancelling a closed operation is a conflict.
    again = await stack.api.delete(f"{JOBS}/{job['id']}/operations/{started['operationId']}")
    error = spec_error(again, 409, 1009)
    assert error["context"] == [{"name": "operationId", "value": started["operationId"]}]

    done = await stack.wait_finished(job["id"], timeout=60)
    summary = done["report"]["summary"]
    assert summary["total"] == 11
    assert summary["finished"]["successful"] == 9, summary
    assert summary["finished"]["cancelled"]["byUser"] == 2, summary
    assert summary["finished"]["cancelled"]["total"] == 2 and summary["finished"]["error"] == 0
    assert summary["inProgress"]["total"] == 0
    assert summary["total"] == summary["finished"]["total"] + summary["inProgress"]["total"]
    # The cancelled device's answer came after the cancel: refused, nothing counted twice.
    final = {o["entityId"]: o for o in await stack.operations(job["id"])}
    assert final[slow[0]]["status"] == "CANCELLED" and final[sleepy]["status"] == "CANCELLED"

    await rerun_the_cancelled(stack, job["id"], [slow[0], sleepy])
    _, failed = await failed_workflow_tasks(stack)
    assert failed == []


async def test_cancelling_an_operation_waiting_to_retry_closes_it_by_user(stack: Stack) -> None:
    # The device fails its first attempt; the retry is a minute away when the operator cancels.
    await stack.sim.put("/sim/default", json={"result_code": "ERROR_PROCESSING"})
    [device] = [d["id"] for d in await stack.provision(1, prefix="retrying-")]
    job = await stack.create_job(
        {
            "name": "REBOOT_EQUIPMENT",
            "target": {"append": {"entities": [device]}},
            "operationParameters": {"retries": 1, "retriesDelay": 60_000},
        }
    )

    async def first_attempt_failed() -> dict[str, Any]:
        assert (await stack.sim.get("/sim/stats")).json()["requests"] == 1
        [operation] = await stack.operations(job["id"])
        return operation

    operation = await eventually(first_attempt_failed)
    answer = await stack.api.delete(f"{JOBS}/{job['id']}/operations/{operation['operationId']}")
    assert answer.status_code == 200, answer.text
    cancelled = answer.json()
    assert (cancelled["status"], cancelled["result"]) == ("CANCELLED", "CANCELLED")
    assert cancelled["cancelReason"] == "byUser"
    summary = (await stack.wait_finished(job["id"], timeout=30))["report"]["summary"]
    assert summary["finished"]["cancelled"]["byUser"] == 1, summary
    assert summary["finished"]["error"] == 0, summary
    # The retry never went out.
    assert (await stack.sim.get("/sim/stats")).json()["requests"] == 1


async def rerun_the_cancelled(stack: Stack, job_id: str, cancelled: list[str]) -> None:
    """The cancelled devices, rerun by their cancel reason."""
    answer = await stack.api.post(f"{JOBS}/{job_id}/rerun", json={"cancelReasons": ["byUser"]})
    assert answer.status_code == 201, answer.text
    rerun = answer.json()
    assert rerun["request"]["rerunOf"] == job_id
    assert rerun["request"]["target"] == {"append": {"entities": cancelled}}
    # A sleepy device never connects: this job is cancelled, the whole of it.
    assert (await stack.api.delete(f"{JOBS}/{rerun['id']}")).status_code == 200


async def test_cancelling_an_operation_refuses_what_is_not_there(stack: Stack) -> None:
    devices = [d["id"] for d in await stack.provision(2, prefix="mute-")]
    await stack.sim.put("/sim/default", json={"mode": "silent"})
    first = await stack.create_job(
        {"name": "REBOOT_EQUIPMENT", "target": {"append": {"entities": devices[:1]}}}
    )
    second = await stack.create_job(
        {"name": "REBOOT_EQUIPMENT", "target": {"append": {"entities": devices[1:]}}}
    )

    async def opened(job_id: str) -> str:
        operations = await stack.operations(job_id)
        assert len(operations) == 1, operations
        return str(operations[0]["operationId"])

    operation = await eventually(lambda: opened(first["id"]))
    await eventually(lambda: opened(second["id"]))
    path = f"{JOBS}/{first['id']}/operations/{operation}"

    # Not this job's operation, no such operation, no such job, not an operation id.
    spec_error(await stack.api.delete(f"{JOBS}/{second['id']}/operations/{operation}"), 404, 1004)
    spec_error(await stack.api.delete(f"{JOBS}/{first['id']}/operations/{uuid.uuid4()}"), 404, 1004)
    spec_error(await stack.api.delete(f"{JOBS}/{uuid.uuid4()}/operations/{operation}"), 404, 1004)
    spec_error(await stack.api.delete(f"{JOBS}/{first['id']}/operations/nope"), 404, 1004)
    spec_error(await stack.api.delete(f"{JOBS}/{first['id']}/operations/{'a' * 65}"), 400, 1001)
    # A viewer reads; it does not cancel.
    async with stack.as_key(await viewer_key(stack)) as viewer:
        spec_error(await viewer.delete(path), 403, 1006)
    [still] = await stack.operations(first["id"])
    assert still["status"] == "STARTED"

    # Its only operation cancelled, the job has nothing left to run: it finishes.
    assert (await stack.api.delete(path)).status_code == 200
    done = await stack.wait_finished(first["id"])
    assert done["report"]["summary"]["finished"]["cancelled"]["byUser"] == 1
    assert (await stack.api.delete(f"{JOBS}/{second['id']}")).status_code == 200


async def test_retrying_one_operation_sends_it_again_and_the_counters_follow(
    stack: Stack,
) -> None:
    flaky, broken, fine, slow = [d["id"] for d in await stack.provision(4, prefix="rty-")]
    # The flaky device fails the first request of an operation and takes the next; the broken
    # one always fails; the slow one keeps the job open (8 s after acknowledging).
    stack.fleet.behaviours[flaky] = Behaviour(fail_first=1)
    stack.fleet.behaviours[broken] = Behaviour(result_code="ERROR_PROCESSING")
    stack.fleet.behaviours[slow] = Behaviour(mode=Mode.ASYNC, delay_ms=8000)
    job = await stack.create_job(
        {
            "name": "REBOOT_EQUIPMENT",
            "target": {"append": {"entities": [flaky, broken, fine, slow]}},
        }
    )
    path = f"{JOBS}/{job['id']}/operations"

    async def three_closed() -> dict[str, dict[str, Any]]:
        summary = await summary_of(stack, job["id"])
        assert summary["finished"]["error"] == 2 and summary["finished"]["successful"] == 1
        assert summary["inProgress"]["started"] == 1, summary
        return {o["entityId"]: o for o in await stack.operations(job["id"])}

    operations = await eventually(three_closed)
    first = operations[flaky]
    assert (first["status"], first["result"]) == ("FINISHED", "ERROR_PROCESSING")
    assert first["attempts"]["current"] == 1

    # Still open: nothing to retry. A viewer reads; it does not retry.
    spec_error(await stack.api.post(f"{path}/{operations[slow]['operationId']}/retry"), 409, 1009)
    async with stack.as_key(await viewer_key(stack)) as viewer:
        spec_error(await viewer.post(f"{path}/{first['operationId']}/retry"), 403, 1006)
    spec_error(await stack.api.post(f"{path}/{uuid.uuid4()}/retry"), 404, 1004)
    spec_error(await stack.api.post(f"{path}/nope/retry"), 404, 1004)
    spec_error(await stack.api.post(f"{path}/{'a' * 65}/retry"), 400, 1001)
    spec_error(
        await stack.api.post(f"{JOBS}/{uuid.uuid4()}/operations/{uuid.uuid4()}/retry"), 404, 1004
    )

    answer = await stack.api.post(f"{path}/{first['operationId']}/retry")
    assert answer.status_code == 200, answer.text
    retried = answer.json()
    assert retried["operationId"] == first["operationId"] and retried["entityId"] == flaky
    assert retried["status"] != "FINISHED" or retried["result"] == "SUCCESSFUL", retried
    assert retried["manualRetries"] == 1

    async def flaky_succeeded() -> dict[str, dict[str, Any]]:
        summary = await summary_of(stack, job["id"])
        assert summary["finished"]["successful"] == 2 and summary["finished"]["error"] == 1
        listed = await stack.operations(job["id"])
        # One execution stands for the operation: the closed one was retired.
        assert len([o for o in listed if o["entityId"] == flaky]) == 1, listed
        return {o["entityId"]: o for o in listed}

    operations = await eventually(flaky_succeeded)
    again = operations[flaky]
    assert (again["status"], again["result"]) == ("FINISHED", "SUCCESSFUL")
    assert again["attempts"]["current"] == 2 and again["manualRetries"] == 1
    # The device got the same operation twice: its first attempt and the retry.
    sent = [d.operation_id for d in stack.fleet.deliveries if d.device_id == flaky]
    assert sent == [first["operationId"], first["operationId"]]
    # In visibility, as in the Temporal UI, the new run alone.
    runs = [
        e
        async for e in stack.client.list_workflows(
            f"WorkflowId = '{operation_workflow_id(first['operationId'])}'"
        )
    ]
    assert [r.status for r in runs] == [WorkflowExecutionStatus.COMPLETED], runs

    done = await stack.wait_finished(job["id"], timeout=60)
    summary = done["report"]["summary"]
    assert (summary["total"], summary["finished"]["successful"], summary["finished"]["error"]) == (
        4,
        3,
        1,
    )
    assert summary["inProgress"]["total"] == 0
    # The job has closed: its operations are final.
    spec_error(await stack.api.post(f"{path}/{operations[broken]['operationId']}/retry"), 400, 1015)
    _, failed = await failed_workflow_tasks(stack)
    assert failed == []


async def test_retrying_an_operation_cancelled_by_timeout_replaces_its_late_window(
    stack: Stack,
) -> None:
    [mute] = [d["id"] for d in await stack.provision(1, prefix="tmo-")]
    [sleepy] = [d["id"] for d in await stack.provision(1, prefix="zzz-", reachable=False)]
    # The mute device never answers: its operation is cancelled by timeout after 1.5 s, and its
    # run stays open for a late answer (20 s in the tests). The sleepy one never connects and
    # keeps the job open until it is cancelled.
    stack.fleet.behaviours[mute] = Behaviour(mode=Mode.SILENT)
    job = await stack.create_job(
        {
            "name": "REBOOT_EQUIPMENT",
            "target": {"append": {"entities": [mute, sleepy]}},
            "operationParameters": {"timeout": 1500},
        }
    )

    async def timed_out() -> dict[str, Any]:
        summary = await summary_of(stack, job["id"])
        assert summary["finished"]["cancelled"]["byTimeout"] == 1, summary
        [operation] = [o for o in await stack.operations(job["id"]) if o["entityId"] == mute]
        return operation

    operation = await eventually(timed_out)
    assert operation["cancelReason"] == "byTimeout"
    # The device is back: the retry reaches it and it answers.
    stack.fleet.behaviours[mute] = Behaviour()
    answer = await stack.api.post(f"{JOBS}/{job['id']}/operations/{operation['operationId']}/retry")
    assert answer.status_code == 200, answer.text

    async def retried_succeeded() -> None:
        summary = await summary_of(stack, job["id"])
        assert summary["finished"]["successful"] == 1, summary
        assert summary["finished"]["cancelled"]["total"] == 0, summary

    await eventually(retried_succeeded)
    [waiting] = [o for o in await stack.operations(job["id"]) if o["entityId"] == sleepy]
    cancelled_at = datetime.now(UTC)
    answer = await stack.api.delete(f"{JOBS}/{job['id']}/operations/{waiting['operationId']}")
    assert answer.status_code == 200, answer.text
    done = await stack.wait_finished(job["id"], timeout=30)
    summary = done["report"]["summary"]
    assert summary["finished"]["successful"] == 1, summary
    assert summary["finished"]["cancelled"]["byUser"] == 1, summary
    assert summary["finished"]["cancelled"]["byTimeout"] == 0, summary
    # The job did not wait out the retired run's late window (20 s) before its last callback
    # and its close: its workflow completed right after the last operation closed.
    await stack.client.get_workflow_handle(job_workflow_id(job["id"])).result()
    assert (datetime.now(UTC) - cancelled_at).total_seconds() < 10

    # Listed once, its new run: the retired one (terminated in its late window) was deleted.
    async def listed_once() -> None:
        final = [o for o in await stack.operations(job["id"]) if o["entityId"] == mute]
        assert [(o["status"], o["result"], o["attempts"]["current"]) for o in final] == [
            ("FINISHED", "SUCCESSFUL", 2)
        ]

    await eventually(listed_once)
    _, failed = await failed_workflow_tasks(stack)
    assert failed == []


async def test_rerun_takes_exactly_the_failed_devices(stack: Stack) -> None:
    devices = [d["id"] for d in await stack.provision(30, tags=["line-7"], prefix="rr-")]
    failing = devices[3:30:4]  # 7 of the 30
    assert len(failing) == 7
    for device in failing:
        await stack.sim.put(f"/sim/devices/{device}", json={"result_code": "ERROR_PROCESSING"})
    job = await stack.create_job(
        {
            "name": "REBOOT_EQUIPMENT",
            "parameters": {"type": "SOFTWARE"},
            "target": {"append": {"tags": ["line-7"]}},
            "userNotes": "night window",
            "rollout": {"maxConcurrency": 10},
            "operationParameters": {"timeout": 30_000},
        }
    )
    done = await stack.wait_finished(job["id"])
    assert done["report"]["summary"]["finished"]["successful"] == 23
    assert done["report"]["summary"]["finished"]["error"] == 7

    async def listed() -> None:
        errors = [
            o["entityId"]
            for o in await stack.operations(job["id"])
            if o["result"] == "ERROR_PROCESSING"
        ]
        assert sorted(errors) == failing

    await eventually(listed)
    answer = await stack.api.post(
        f"{JOBS}/{job['id']}/rerun",
        json={"results": ["ERROR_PROCESSING"], "cancelReasons": ["byTimeout"]},
    )
    assert answer.status_code == 201, answer.text
    rerun = answer.json()
    assert answer.headers["Location"] == f"{JOBS}/{rerun['id']}"
    assert rerun["id"] != job["id"]
    request = rerun["request"]
    assert request["rerunOf"] == job["id"]
    assert request["target"] == {"append": {"entities": failing}}
    for field in ("name", "parameters", "userNotes", "rollout", "operationParameters"):
        assert request[field] == done["request"][field], field
    assert (await stack.job(rerun["id"]))["request"]["rerunOf"] == job["id"]

    # Those devices fail no more: the rerun reaches exactly them, and they succeed.
    for device in failing:
        await stack.sim.put(f"/sim/devices/{device}", json={})
    again = await stack.wait_finished(rerun["id"])
    assert again["report"]["summary"]["total"] == 7
    assert again["report"]["summary"]["finished"]["successful"] == 7
    assert again["request"]["rerunOf"] == job["id"]
    assert sorted(o["entityId"] for o in await stack.operations(rerun["id"])) == failing
    # The source job is as it was.
    assert (await summary_of(stack, job["id"]))["finished"]["error"] == 7


async def test_rerun_refuses_bad_filters(stack: Stack) -> None:
    devices = [d["id"] for d in await stack.provision(2, prefix="ok-")]
    job = await stack.create_job(
        {"name": "REBOOT_EQUIPMENT", "target": {"append": {"entities": devices}}}
    )
    await stack.wait_finished(job["id"])
    rerun = f"{JOBS}/{job['id']}/rerun"

    # Nothing matches: every operation succeeded.
    error = spec_error(
        await stack.api.post(rerun, json={"results": ["ERROR_PROCESSING"]}), 400, 1001
    )
    assert "No closed operation" in error["message"]
    # No filter at all, an empty one, a value that is no result or reason, an unknown field.
    spec_error(await stack.api.post(rerun, json={}), 400, 1001)
    spec_error(await stack.api.post(rerun, json={"results": [], "cancelReasons": []}), 400, 1001)
    error = spec_error(await stack.api.post(rerun, json={"results": ["BOGUS"]}), 400, 1001)
    assert error["context"][0]["name"] == "results.0"
    spec_error(await stack.api.post(rerun, json={"cancelReasons": ["byMistake"]}), 400, 1001)
    spec_error(await stack.api.post(rerun, json={"results": ["SUCCESSFUL"] * 17}), 400, 1001)
    spec_error(await stack.api.post(rerun, json={"results": ["SUCCESSFUL"], "x": 1}), 400, 1002)
    spec_error(await stack.api.post(rerun, content=b"[1,"), 400, 1001)
    # No such job; a viewer may not.
    spec_error(
        await stack.api.post(f"{JOBS}/{uuid.uuid4()}/rerun", json={"results": ["SUCCESSFUL"]}),
        404,
        1004,
    )
    async with stack.as_key(await viewer_key(stack)) as viewer:
        spec_error(await viewer.post(rerun, json={"results": ["SUCCESSFUL"]}), 403, 1006)

    # A rerun of the successful ones is a job like another; a client's own rerunOf is ignored.
    answer = await stack.api.post(rerun, json={"results": ["SUCCESSFUL"]})
    assert answer.status_code == 201, answer.text
    assert answer.json()["request"]["rerunOf"] == job["id"]
    plain = await stack.create_job(
        {
            "name": "REBOOT_EQUIPMENT",
            "target": {"append": {"entities": devices}},
            "rerunOf": job["id"],
        }
    )
    assert "rerunOf" not in plain["request"]
    for created in (answer.json(), plain):
        await stack.wait_finished(created["id"])


# --- the rules on their own ---


def operation(**fields: Any) -> Operation:
    return Operation.model_validate(
        {"operationId": "o", "jobId": "j", "entityId": "d", "name": "REBOOT_EQUIPMENT", **fields}
    )


def test_the_cancel_reason_of_a_closed_operation() -> None:
    cancelled = {"status": "CANCELLED", "result": "CANCELLED"}
    assert cancel_reason(operation(status="FINISHED", result="ERROR_PROCESSING")) is None
    assert cancel_reason(operation(status="STARTED")) is None
    for reason in (CancelReason.BY_USER, CancelReason.BY_TIMEOUT, CancelReason.BY_ENGINE):
        closed = operation(**cancelled, description=f"{reason.value}: why")
        assert cancel_reason(closed) is reason
    # The device cancelled it (its own description), or answered a cancelling code.
    assert cancel_reason(operation(**cancelled, description="stopped")) is CancelReason.BY_EXTERNAL
    for code, reason in (
        (ResultCode.ERROR_TIMEOUT, CancelReason.BY_EXTERNAL_TIMEOUT),
        (ResultCode.TIMEOUT_CANCELLED, CancelReason.BY_EXTERNAL_TIMEOUT),
        (ResultCode.CANCELLED_INTERNAL, CancelReason.BY_EXTERNAL),
    ):
        assert cancel_reason(operation(status="CANCELLED", result=code)) is reason
    # A late answer came after a cancel by timeout, whatever it says.
    late = operation(status="CANCELLED", result="SUCCESSFUL", outOfTime=True, description="ok")
    assert cancel_reason(late) is CancelReason.BY_TIMEOUT
    # Operations that record their reason say it themselves.
    recorded = operation(**cancelled, description="byUser: x", cancelReason="byEngine")
    assert cancel_reason(recorded) is CancelReason.BY_ENGINE
    assert cancel_reason(operation(status="FINISHED", result="SUCCESSFUL")) is None


def test_a_filter_matches_a_result_or_a_cancel_reason() -> None:
    rerun = RerunFilter.model_validate(
        {"results": ["ERROR_PROCESSING"], "cancelReasons": ["byTimeout"]}
    )
    assert rerun.matches(operation(status="FINISHED", result="ERROR_PROCESSING"))
    assert rerun.matches(
        operation(status="CANCELLED", result="CANCELLED", description="byTimeout: late")
    )
    assert not rerun.matches(operation(status="FINISHED", result="SUCCESSFUL"))
    assert not rerun.matches(
        operation(status="CANCELLED", result="CANCELLED", description="byUser: no")
    )
    assert not rerun.matches(operation(status=OperationStatus.STARTED))
    with pytest.raises(ValueError):
        RerunFilter.model_validate({})


def test_a_rerun_larger_than_one_job_can_carry_says_so() -> None:
    source = JobRequest.model_validate(
        {"name": "REBOOT_EQUIPMENT", "target": {"append": {"tags": ["all"]}}}
    )
    devices = [f"{i:0128d}" for i in range(10_000)]  # 1.3 MB of ids
    with pytest.raises(ApiError) as raised:
        _rerun_request("job-1", source, devices, datetime.now(UTC))
    assert raised.value.status == 400
    assert "cannot be one job" in raised.value.message


def test_a_rerun_keeps_per_device_parameters_and_a_deadline_to_come() -> None:
    source = JobRequest.model_validate(
        {
            "name": "REBOOT_EQUIPMENT",
            "target": {
                "append": {
                    "entitiesWithParameters": [
                        {"id": "b", "parameters": {"type": "SOFTWARE"}},
                        {"id": "a", "parameters": {"type": "HARDWARE"}},
                        {"id": "c"},
                    ]
                }
            },
            "active": False,
            "schedule": {"start": {"delayed": 60_000}, "stop": {"delayed": 600_000}},
        }
    )
    request = _rerun_request("job-1", source, ["a", "b"], datetime.now(UTC))
    assert request.active and request.schedule is not None
    assert request.schedule.start is None and request.schedule.stop is not None
    assert request.schedule.stop.delayed == 600_000
    assert request.target is not None and request.target.append is not None
    entries = request.target.append.entities_with_parameters or []
    assert [(e.id, e.parameters) for e in entries] == [
        ("b", {"type": "SOFTWARE"}),
        ("a", {"type": "HARDWARE"}),
    ]
