"""Values the API refuses, sent straight to the workflows (as an old client, a task created before
a bound was tightened, or a hand-written `temporal workflow start` could): no workflow task may
fail on them, and every job still finishes with its counters adding up."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from api.job_service import job_input, start_job
from core.temporal import operation_workflow_id
from models.bounds import STORED
from models.devices import Device
from models.jobs import JobRequest, OperationParameters
from models.messages import OperationInput
from models.operations import DeviceResponseBody
from tests.stack import Stack, eventually
from workflows.operation import OperationWorkflow

HUGE = 2**62

# Each poison value as the probes sent it (1e30 is no integer at all: pydantic refuses it
# even from a stored payload, so the largest values a client can store stand in for it).
POISONS: dict[str, dict[str, Any]] = {
    "start-delayed": {"schedule": {"start": {"delayed": HUGE}}},
    "stop-delayed": {"schedule": {"stop": {"delayed": HUGE}}},
    "start-date-far": {"schedule": {"start": {"date": "9999-12-31T00:00:00Z"}}},
    "timeout": {"operationParameters": {"timeout": 2**63}},
    "ack-timeout": {"operationParameters": {"ackTimeout": HUGE}},
    "connection-timeout": {"operationParameters": {"connectionTimeout": HUGE}},
    "retries-delay": {"operationParameters": {"retries": 1, "retriesDelay": HUGE}},
}


def stored(model: type[Any], data: dict[str, Any]) -> Any:
    """The model as the workflows would read it back from Temporal: bounds not checked."""
    return model.model_validate(data, context=STORED)


@pytest.mark.parametrize("poison", list(POISONS), ids=list(POISONS))
async def test_a_poisoned_job_finishes_with_its_targets_cancelled_by_the_engine(
    stack: Stack, poison: str
) -> None:
    devices = [d["id"] for d in await stack.provision(3, prefix=f"{poison}-")]
    request = stored(
        JobRequest,
        {
            "name": "REBOOT_EQUIPMENT",
            "user": "bypass",
            "target": {"append": {"entities": devices}},
            **POISONS[poison],
        },
    )
    job_id = str(uuid.uuid4())
    await start_job(
        stack.client,
        stack.settings,
        job_input(request, stack.settings, job_id=job_id, created_at=datetime.now(UTC)),
    )

    job = await stack.wait_finished(job_id, timeout=30)
    summary = job["report"]["summary"]
    assert summary["total"] == 3
    assert summary["finished"]["cancelled"]["byEngine"] == 3
    assert summary["inProgress"]["total"] == 0
    # Nothing reached a device, and the job answers reads and changes as any finished job.
    assert (await stack.sim.get("/sim/stats")).json()["requests"] == 0
    cancel = await stack.api.delete(f"/north/v80/operation/jobs/{job_id}")
    assert cancel.status_code == 400
    assert cancel.json()["errors"][0]["code"] == 1015


async def test_a_poisoned_operation_closes_cancelled_by_the_engine(stack: Stack) -> None:
    device = (await stack.provision(1))[0]
    operation_id = str(uuid.uuid4())
    op_input = OperationInput(
        operation_id=operation_id,
        job_id="no-such-job",
        job_workflow_id="no-such-job",
        device=Device(id=device["id"], type=device["type"], address=stack.sim_url),
        name="REBOOT_EQUIPMENT",
        operation_parameters=stored(OperationParameters, {"timeout": 2**63}),
        activated_at=datetime.now(UTC),
    )
    handle = await stack.client.start_workflow(
        OperationWorkflow.run,
        op_input,
        id=operation_workflow_id(operation_id),
        task_queue=stack.settings.task_queue,
    )

    operation = await handle.result()
    assert operation.status == "CANCELLED"
    assert operation.result == "CANCELLED"
    assert operation.description is not None
    assert "cannot run this operation" in operation.description
    assert "timeout" in operation.description
    assert (await stack.sim.get("/sim/stats")).json()["requests"] == 0


async def test_an_answer_with_steps_out_of_time_sent_straight_is_not_lost(stack: Stack) -> None:
    device = (await stack.provision(1))[0]
    await stack.sim.put(f"/sim/devices/{device['id']}", json={"mode": "silent"})
    job = await stack.create_job(
        {"name": "REBOOT_EQUIPMENT", "target": {"append": {"entities": [device["id"]]}}}
    )

    async def started() -> dict[str, Any]:
        operations = await stack.operations(job["id"])
        assert [o["status"] for o in operations] == ["STARTED"], operations
        return operations[0]

    operation = await eventually(started)
    handle = stack.client.get_workflow_handle(operation_workflow_id(operation["operationId"]))
    partial = stored(
        DeviceResponseBody,
        {
            "id": operation["operationId"],
            "deviceId": device["id"],
            "steps": [
                {"name": "FUTURE", "timestamp": 10**18, "result": "SUCCESSFUL"},
                {"name": "PAST", "timestamp": -(10**18), "result": "SUCCESSFUL"},
            ],
        },
    )
    await handle.signal(OperationWorkflow.device_response, partial)
    async with stack.as_key(device["apiKey"]) as south:
        final = await south.post(
            f"/south/v80/devices/{device['id']}/operation/response",
            json={
                "version": "1.0",
                "operation": {
                    "response": {
                        "id": operation["operationId"],
                        "deviceId": device["id"],
                        "resultCode": "SUCCESSFUL",
                        "steps": [{"name": "DONE", "result": "SUCCESSFUL"}],
                    }
                },
            },
        )
    assert final.status_code == 200, final.text

    done = await stack.wait_finished(job["id"])
    assert done["report"]["summary"]["finished"]["successful"] == 1
    (closed,) = await stack.operations(job["id"])
    assert closed["status"] == "FINISHED" and closed["result"] == "SUCCESSFUL"
    assert [s["name"] for s in closed["steps"]] == ["FUTURE", "PAST", "DONE"]
    # Steps whose device time is out of any sane window carry the time they were received.
    years = {datetime.fromisoformat(s["timestamp"]).year for s in closed["steps"]}
    assert years == {datetime.now(UTC).year}
