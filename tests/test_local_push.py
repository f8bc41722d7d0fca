"""The first push of an operation runs as a local activity, in the operation's first workflow
task. A signal that reached the operation while that push ran would make Temporal refuse the
task's completion, and the task would run again (on any worker: the push again); so the job's
orders (a pause's hold, here) go by update, which waits for that task instead. With two workers,
every device gets its request once and no completion is refused (issue 12)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio.api.enums.v1 import EventType, WorkflowTaskFailedCause

from activities.devices import Delivery, RecentLocalPushes, SendRequestResult
from core.temporal import operations_of_job
from models.operations import DeviceResponseBody
from simulator.fleet import Behaviour
from tests.stack import Stack, eventually
from worker import running_worker

DEVICES = 300
JOBS = "/north/v80/operation/jobs"


async def _set_active(stack: Stack, job_id: str, active: bool) -> None:
    answer = await stack.api.put(f"{JOBS}/{job_id}", json={"job": {"request": {"active": active}}})
    assert answer.status_code == 200, answer.text


async def test_pauses_during_local_pushes_reach_each_device_once(stack: Stack) -> None:
    await stack.provision(DEVICES, tags=["paused"])
    stack.fleet.default = Behaviour(delay_ms=500)  # each push takes 500 ms: 100 a second
    async with running_worker(stack.settings):  # a second worker, with a client of its own
        job = await stack.create_job(
            {
                "name": "REBOOT_EQUIPMENT",
                "target": {"append": {"tags": ["paused"]}},
                "rollout": {"maxConcurrency": 50},
            }
        )
        # Three pauses, each while about 50 pushes are under way, and each well before the
        # last device is started (seconds, while a pause takes under one to answer): a job whose
        # every operation has closed finishes even while paused, and the resume is then refused.
        for pause_at in (30, 90, 150):

            async def reached(count: int = pause_at) -> None:
                assert (await stack.sim.get("/sim/stats")).json()["requests"] >= count

            await eventually(reached, timeout=60, interval=0.02)
            await _set_active(stack, job["id"], False)
            # Once the pause has answered, no device gets a request until the resume: pushes
            # under way finished before the answer, operations not started yet are held.
            held_at = (await stack.sim.get("/sim/stats")).json()["requests"]
            await asyncio.sleep(1.0)
            assert (await stack.sim.get("/sim/stats")).json()["requests"] == held_at
            await _set_active(stack, job["id"], True)

        summary = (await stack.wait_finished(job["id"], timeout=120))["report"]["summary"]
    assert summary["finished"]["successful"] == DEVICES
    stats = (await stack.sim.get("/sim/stats")).json()
    assert stats["requests"] == DEVICES
    assert stats["duplicates"] == 0

    # Temporal refused no operation's workflow task for the orders (nor would a second push on
    # the other worker have followed).
    refused = 0
    async for execution in stack.client.list_workflows(operations_of_job(job["id"])):
        handle = stack.client.get_workflow_handle(execution.id, run_id=execution.run_id)
        async for event in handle.fetch_history_events():
            refused += (
                event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
                and event.workflow_task_failed_event_attributes.cause
                == WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_UNHANDLED_COMMAND
            )
    assert refused == 0


def _answer(steps: int) -> SendRequestResult:
    body = {
        "id": "op",
        "deviceId": "dev",
        "resultCode": "SUCCESSFUL",
        "steps": [{"name": f"STEP_{i}", "result": "SUCCESSFUL"} for i in range(steps)],
    }
    return SendRequestResult(
        delivery=Delivery.ANSWERED, response=DeviceResponseBody.model_validate(body)
    )


def test_recent_local_pushes_are_bounded_in_bytes_and_time() -> None:
    small, large = _answer(1), _answer(30)  # about 250 and 2,400 bytes as JSON
    recent = RecentLocalPushes(ttl=timedelta(minutes=1), max_bytes=2_800)
    recent.put(("run", "1"), small)
    assert recent.get(("run", "1")) == small
    assert recent.get(("run", "2")) is None
    # Past the budget the oldest answers go first; an answer past it on its own is not kept.
    recent.put(("run", "2"), large)
    recent.put(("run", "3"), small)
    assert recent.get(("run", "1")) is None
    assert recent.get(("run", "2")) == large
    assert recent.get(("run", "3")) == small
    recent.put(("run", "4"), _answer(100))
    assert recent.get(("run", "4")) is None

    expired = RecentLocalPushes(ttl=timedelta(0))
    expired.put(("run", "1"), small)
    assert expired.get(("run", "1")) is None
