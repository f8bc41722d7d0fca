"""A job's runs continue-as-new while operations are still open: the run that started a child
counts its close from the child's completion; before continuing-as-new it asks each open child to
report by signal instead, so no close is lost or counted twice across runs (issue 12)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from temporalio.api.enums.v1 import EventType

from api.job_service import job_input, start_job
from core.temporal import OPERATION_ORDER
from models.jobs import JobRequest
from models.messages import FanOutSettings
from simulator.fleet import Behaviour, Mode
from tests.stack import Stack, failed_workflow_tasks

DEVICES = 60
SLOW = 20  # answer asynchronously, a second or two after the push
ERRORS = 6  # answer ERROR_PROCESSING at once


async def test_closes_are_counted_once_across_runs_while_children_are_open(stack: Stack) -> None:
    ids = [d["id"] for d in await stack.provision(DEVICES, prefix="can-")]
    for device_id in ids[:SLOW]:
        stack.fleet.behaviours[device_id] = Behaviour(mode=Mode.ASYNC, delay_ms=1500)
    for device_id in ids[SLOW : SLOW + ERRORS]:
        stack.fleet.behaviours[device_id] = Behaviour(result_code="ERROR_PROCESSING")

    # Runs of at most 100 events and a small window: the job continues-as-new many times, with
    # slow operations open at most of them.
    request = JobRequest.model_validate(
        {"name": "REBOOT_EQUIPMENT", "user": "test", "target": {"append": {"entities": ids}}}
    )
    job_id = str(uuid.uuid4())
    job = job_input(request, stack.settings, job_id=job_id, created_at=datetime.now(UTC))
    job.fan_out = FanOutSettings(window=25, start_batch=10, page_size=15, max_history_events=100)
    await start_job(stack.client, stack.settings, job)

    summary = (await stack.wait_finished(job_id, timeout=120))["report"]["summary"]
    assert summary["total"] == DEVICES
    assert summary["inProgress"]["total"] == 0
    assert summary["finished"]["successful"] == DEVICES - ERRORS
    assert summary["finished"]["error"] == ERRORS
    assert summary["finished"]["total"] == DEVICES
    stats = (await stack.sim.get("/sim/stats")).json()
    assert stats["requests"] == DEVICES
    assert stats["duplicates"] == 0

    # It did continue-as-new, and handed open children over to the next run on the way (an
    # order by update each child took, models.messages.OperationOrder).
    runs = [e async for e in stack.client.list_workflows(f"WorkflowId = '{job_id}'")]
    assert len(runs) >= 3
    handed_over = 0
    async for operation in stack.client.list_workflows(f"JobId = '{job_id}'"):
        handle = stack.client.get_workflow_handle(operation.id, run_id=operation.run_id)
        history = await handle.fetch_history()
        for event in history.events:
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED:
                accepted = event.workflow_execution_update_accepted_event_attributes
                handed_over += accepted.accepted_request.input.name == OPERATION_ORDER
    assert handed_over > 0
    seen, failed = await failed_workflow_tasks(stack)
    assert seen >= DEVICES + len(runs)
    assert failed == []
