"""A job's runs continue-as-new while operations are still open: the run that started a child
counts its close from the child's completion; before continuing-as-new it asks each open child to
report by signal instead, so no close is lost or counted twice across runs (issue 12)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from temporalio.api.enums.v1 import EventType

from api.job_service import job_input, start_job
from core.temporal import OperationSignal
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

    # It did continue-as-new, and handed open children over to the next run on the way.
    runs = [e async for e in stack.client.list_workflows(f"WorkflowId = '{job_id}'")]
    assert len(runs) >= 3
    handed_over = 0
    for run in runs:
        history = await stack.client.get_workflow_handle(job_id, run_id=run.run_id).fetch_history()
        handed_over += sum(
            1
            for event in history.events
            if event.event_type == EventType.EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED
            and event.signal_external_workflow_execution_initiated_event_attributes.signal_name
            == OperationSignal.REPORT_BY_SIGNAL
        )
    assert handed_over > 0
    seen, failed = await failed_workflow_tasks(stack)
    assert seen >= DEVICES + len(runs)
    assert failed == []
