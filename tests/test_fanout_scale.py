"""A job larger than Temporal's per-run limits: the window and continue-as-new at work."""

from __future__ import annotations

import pytest

from tests.stack import Stack

DEVICES = 2_500
HISTORY_WARNING = 10_240


@pytest.mark.slow
async def test_job_of_2500_devices_reaches_each_device_once(stack: Stack) -> None:
    await stack.provision(DEVICES, tags=["fleet"])

    created = await stack.create_job(
        {"name": "REBOOT_EQUIPMENT", "target": {"append": {"tags": ["fleet"]}}}
    )
    job = await stack.wait_finished(created["id"], timeout=600)

    summary = job["report"]["summary"]
    assert summary["total"] == DEVICES
    assert summary["finished"]["successful"] == DEVICES
    stats = (await stack.sim.get("/sim/stats")).json()
    assert stats["requests"] == DEVICES
    assert stats["devicesReached"] == DEVICES
    assert stats["duplicates"] == 0

    # Every run of the job stayed well under the history limits, and the job did continue-as-new.
    runs = [e async for e in stack.client.list_workflows(f"WorkflowId = '{created['id']}'")]
    assert len(runs) >= 2
    for run in runs:
        history = await stack.client.get_workflow_handle(run.id, run_id=run.run_id).fetch_history()
        assert len(history.events) < HISTORY_WARNING
