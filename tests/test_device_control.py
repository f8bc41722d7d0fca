"""Per-device control (beyond OpenGate; issue 14) end to end on the real stack: cancel one
operation of a running job, and rerun a job on the devices whose operations ended a given way.
Simulator devices, real HTTP and Temporal, no mocks."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from temporalio.client import WorkflowExecutionStatus

from api import job_service, operation_control
from api.errors import ApiError
from api.operation_control import _rerun_request
from core.temporal import job_workflow_id, operation_workflow_id
from models.devices import Device
from models.enums import CancelReason, OperationStatus, ResultCode
from models.jobs import JobRequest
from models.messages import JobChange, OperationRetry
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
        listed = await stack.operations(job["id"])
        assert len(listed) == 1, listed  # visibility lists it a moment after its start
        return listed[0]

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
    # The same for a retry: an operation of another job through this job's path, an operation
    # id of no job at all (the job is found, the operation is not), no such job.
    retry = spec_error(
        await stack.api.post(f"{JOBS}/{second['id']}/operations/{operation}/retry"), 404, 1004
    )
    assert retry["context"] == [{"name": "operationId", "value": operation}]
    spec_error(
        await stack.api.post(f"{JOBS}/{first['id']}/operations/{uuid.uuid4()}/retry"), 404, 1004
    )
    spec_error(
        await stack.api.post(f"{JOBS}/{uuid.uuid4()}/operations/{operation}/retry"), 404, 1004
    )
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

    closed_run = (
        await stack.client.get_workflow_handle(
            operation_workflow_id(first["operationId"])
        ).describe()
    ).run_id
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

    await _a_stale_retry_moves_nothing(stack, job["id"], first["operationId"], flaky, closed_run)
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


async def _a_stale_retry_moves_nothing(
    stack: Stack, job_id: str, operation_id: str, device_id: str, closed_run: str
) -> None:
    """What another API process sends that read the closed run before the retry, once the new
    attempt has closed too: the job refuses it (a later run replaced that one), nothing moves."""
    stale = OperationRetry(
        operation_id=operation_id,
        device=Device(id=device_id, type="GATEWAY", address=stack.sim_url),
        run_id=closed_run,
        result=ResultCode.ERROR_PROCESSING,
        attempts_before=1,
    )
    with pytest.raises(ApiError) as refused:
        await job_service.change_job(stack.client, job_id, JobChange(retry=stale))
    assert "retried since it was read" in refused.value.message
    summary = await summary_of(stack, job_id)
    assert (summary["finished"]["successful"], summary["finished"]["error"]) == (2, 1), summary
    assert len([d for d in stack.fleet.deliveries if d.device_id == device_id]) == 2


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


async def test_two_retries_at_once_send_one_attempt_and_retries_are_capped(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The cap, lowered from 10 (the API runs in this process): the third retry is refused.
    monkeypatch.setattr(operation_control, "MAX_MANUAL_RETRIES", 2)
    [device] = [d["id"] for d in await stack.provision(1, prefix="twice-")]
    [sleepy] = [d["id"] for d in await stack.provision(1, prefix="nap-", reachable=False)]
    # Every attempt fails after a second; the sleepy device keeps the job open for the retries.
    stack.fleet.behaviours[device] = Behaviour(result_code="ERROR_PROCESSING", delay_ms=1000)
    job = await stack.create_job(
        {"name": "REBOOT_EQUIPMENT", "target": {"append": {"entities": [device, sleepy]}}}
    )
    path = f"{JOBS}/{job['id']}/operations"

    async def listed_failed(manual_retries: int | None) -> dict[str, Any]:
        # One run listed (a retired one leaves visibility within a second or so), counted.
        listed = [o for o in await stack.operations(job["id"]) if o["entityId"] == device]
        assert len(listed) == 1, listed
        operation = listed[0]
        assert (operation["status"], operation.get("result")) == ("FINISHED", "ERROR_PROCESSING")
        assert operation.get("manualRetries") == manual_retries, operation
        summary = await summary_of(stack, job["id"])
        assert summary["finished"]["error"] == 1 and summary["inProgress"]["total"] == 1, summary
        assert summary["total"] == 2, summary
        return operation

    operation = await eventually(lambda: listed_failed(None))
    retry = f"{path}/{operation['operationId']}/retry"
    current = stack.client.get_workflow_handle(operation_workflow_id(operation["operationId"]))

    async def closed(manual_retries: int) -> None:
        # The current run, read from Temporal: no wait for visibility.
        now = await job_service.operation_of(await current.describe())
        assert (now.status, now.manual_retries) == (OperationStatus.FINISHED, manual_retries), now

    async def answered(status: int, says: str) -> None:
        # Until its job has counted the close, a retry is refused as still open (409): the
        # operator tries again. Such a refusal sends nothing.
        answer = await stack.api.post(retry)
        assert (answer.status_code, says in answer.text) == (status, True), answer.text

    # Two operators retry it at the same moment: one new attempt, the other a conflict.
    answers = await asyncio.gather(stack.api.post(retry), stack.api.post(retry))
    assert sorted(a.status_code for a in answers) == [200, 409], [a.text for a in answers]
    conflict = spec_error(next(a for a in answers if a.status_code == 409), 409, 1009)
    assert conflict["context"] == [{"name": "operationId", "value": operation["operationId"]}]
    await eventually(lambda: closed(1))
    # The second of the cap's two retries, then one past it.
    await eventually(lambda: answered(200, operation["operationId"]))
    await eventually(lambda: closed(2))
    await eventually(lambda: answered(409, "retried 2 times, the most one operation is: rerun"))

    # The device got the operation three times: its first attempt and the two retries.
    sent = [d.operation_id for d in stack.fleet.deliveries if d.device_id == device]
    assert sent == [operation["operationId"]] * 3, sent
    await eventually(lambda: listed_failed(2))
    [waiting] = [o for o in await stack.operations(job["id"]) if o["entityId"] == sleepy]
    assert (await stack.api.delete(f"{path}/{waiting['operationId']}")).status_code == 200
    done = (await stack.wait_finished(job["id"], timeout=30))["report"]["summary"]
    assert (done["total"], done["finished"]["error"], done["finished"]["cancelled"]["byUser"]) == (
        2,
        1,
        1,
    ), done
    assert done["total"] == done["inProgress"]["total"] + done["finished"]["total"]
    _, failed_tasks = await failed_workflow_tasks(stack)
    assert failed_tasks == []


async def test_a_rerun_is_bounded_and_takes_a_running_job_or_a_rerun(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Both caps lowered (the API runs in this process): a rerun lists at most 3 devices, and
    # reads at most 4 operations (10,000 and 20,000 in production).
    monkeypatch.setattr(operation_control, "MAX_RERUN_DEVICES", 3)
    monkeypatch.setattr(operation_control, "MAX_RERUN_SCAN", 4)
    failing = [d["id"] for d in await stack.provision(2, prefix="bad-")]
    mute = [d["id"] for d in await stack.provision(5, prefix="mum-")]
    [sleepy] = [d["id"] for d in await stack.provision(1, prefix="doze-", reachable=False)]
    for device in failing:
        stack.fleet.behaviours[device] = Behaviour(result_code="ERROR_PROCESSING")
    for device in mute:  # never answers: cancelled by timeout after 1.5 s
        stack.fleet.behaviours[device] = Behaviour(mode=Mode.SILENT)
    job = await stack.create_job(
        {
            "name": "REBOOT_EQUIPMENT",
            "target": {"append": {"entities": [*failing, *mute, sleepy]}},
            "operationParameters": {"timeout": 1500},
        }
    )
    rerun = f"{JOBS}/{job['id']}/rerun"

    async def closed_but_one() -> None:
        summary = await summary_of(stack, job["id"])
        assert summary["status"] == "IN_PROGRESS", summary
        assert summary["finished"]["error"] == 2, summary
        assert summary["finished"]["cancelled"]["byTimeout"] == 5, summary
        closed = [
            o for o in await stack.operations(job["id"]) if o["status"] != "WAITING_FOR_CONNECTION"
        ]
        assert len(closed) == 7 and all(o["status"] in ("FINISHED", "CANCELLED") for o in closed)

    await eventually(closed_but_one)

    # Five operations match, more than a rerun may list.
    error = spec_error(
        await stack.api.post(rerun, json={"cancelReasons": ["byTimeout"]}), 400, 1001
    )
    assert "More than 3 operations" in error["message"], error
    # No operation was cancelled by a user, but the search index has no cancel reasons: the
    # rerun would read every cancelled operation to find out, past its bound of 4.
    error = spec_error(await stack.api.post(rerun, json={"cancelReasons": ["byUser"]}), 400, 1001)
    assert "reads at most 4" in error["message"], error
    assert error["context"] == [{"name": "cancelReasons", "value": "byUser"}]
    # A device's cancelling codes are in the index: nothing read, nothing matches.
    error = spec_error(
        await stack.api.post(rerun, json={"cancelReasons": ["byExternalTimeout"]}), 400, 1001
    )
    assert "nothing to rerun" in error["message"], error

    await rerun_a_running_job_and_its_rerun(stack, job["id"], failing)

    # The source job, cancelled, adds up: nothing of it moved.
    assert (await stack.api.delete(f"{JOBS}/{job['id']}")).status_code == 200

    async def cancelled() -> dict[str, Any]:
        summary = await summary_of(stack, job["id"])
        assert summary["status"] == "CANCELLED", summary
        return summary

    summary = await eventually(cancelled)
    finished = summary["finished"]
    assert (summary["total"], finished["error"], finished["cancelled"]["byTimeout"]) == (8, 2, 5)
    assert finished["cancelled"]["byUser"] == 1 and summary["inProgress"]["total"] == 0, summary
    assert summary["total"] == finished["total"]


async def rerun_a_running_job_and_its_rerun(stack: Stack, job_id: str, failing: list[str]) -> None:
    """A job still running is rerun on the operations closed so far; a rerun is rerun too, and
    names the rerun it reruns."""
    answer = await stack.api.post(f"{JOBS}/{job_id}/rerun", json={"results": ["ERROR_PROCESSING"]})
    assert answer.status_code == 201, answer.text
    first = answer.json()
    assert first["request"]["rerunOf"] == job_id
    assert first["request"]["target"] == {"append": {"entities": failing}}
    assert (await summary_of(stack, job_id))["status"] == "IN_PROGRESS"
    await stack.wait_finished(first["id"])

    async def listed_errors() -> None:
        errors = [
            o for o in await stack.operations(first["id"]) if o["result"] == "ERROR_PROCESSING"
        ]
        assert len(errors) == 2, errors

    await eventually(listed_errors)
    for device in failing:  # fixed: the rerun of the rerun succeeds
        stack.fleet.behaviours[device] = Behaviour()
    answer = await stack.api.post(
        f"{JOBS}/{first['id']}/rerun", json={"results": ["ERROR_PROCESSING"]}
    )
    assert answer.status_code == 201, answer.text
    second = answer.json()
    assert second["request"]["rerunOf"] == first["id"]
    assert second["request"]["target"] == {"append": {"entities": failing}}
    again = (await stack.wait_finished(second["id"]))["report"]["summary"]
    assert (again["total"], again["finished"]["successful"]) == (2, 2), again


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


def test_a_rerun_narrows_in_the_index_what_results_tell_apart() -> None:
    def query(**body: list[str]) -> str:
        return operation_control._narrowed(RerunFilter.model_validate(body))

    assert "(OperationResult IN ('ERROR_PROCESSING'))" in query(results=["ERROR_PROCESSING"])
    external = query(cancelReasons=["byExternalTimeout"])
    assert "OperationResult IN ('ERROR_TIMEOUT', 'TIMEOUT_CANCELLED')" in external
    assert "OperationResult IN ('CANCELLED')" in query(cancelReasons=["byUser"])
    # A late answer (byTimeout) carries any code, an operation of older code reads back as
    # byEngine whatever its result: every cancelled operation is read.
    for reasons in (["byTimeout"], ["byUser", "byEngine"]):
        assert "OperationResult" not in query(cancelReasons=reasons), reasons
    both = query(results=["ERROR_PROCESSING"], cancelReasons=["byUser"])
    assert " OR " in both and both.count("OperationResult IN") == 2


async def test_retries_of_one_operation_are_taken_one_at_a_time() -> None:
    locks = operation_control._KeyedLocks()
    order: list[str] = []

    async def retry(key: str, name: str) -> None:
        async with locks.one_at_a_time(key):
            order.append(f"{name} in")
            await asyncio.sleep(0.01)
            order.append(f"{name} out")

    await asyncio.gather(retry("op", "a"), retry("op", "b"), retry("other", "c"))
    assert order.index("a out") < order.index("b in") or order.index("b out") < order.index("a in")
    assert order.index("c in") < max(order.index("a out"), order.index("b out"))
    assert locks._locks == {}  # nothing kept once no one holds them
