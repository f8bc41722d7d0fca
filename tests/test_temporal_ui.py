"""What an SRE sees in the Temporal UI: operations named by their device, and a job named by its
title, whose current details follow its progress in every run (a static summary belongs to a
workflow's first run only: continue-as-new takes none)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from temporalio.api.sdk.v1 import WorkflowMetadata

from api.job_service import job_input, job_title, start_job
from core.temporal import job_workflow_id, operation_workflow_id
from models.jobs import JobRequest
from models.messages import FanOutSettings
from simulator.fleet import Behaviour, Mode
from tests.stack import Stack, eventually


async def current_details(stack: Stack, job_id: str, run_id: str | None = None) -> str:
    handle = stack.client.get_workflow_handle(job_workflow_id(job_id), run_id=run_id)
    metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    return metadata.current_details


async def test_operations_are_named_and_the_job_details_follow_its_progress(stack: Stack) -> None:
    quick, silent = (d["id"] for d in await stack.provision(2, prefix="ui-"))
    await stack.sim.put(f"/sim/devices/{silent}", json={"mode": "silent"})
    job = await stack.create_job(
        {
            "name": "REBOOT_EQUIPMENT",
            "target": {"append": {"entities": [quick, silent]}},
            "operationParameters": {"timeout": 4000},
        }
    )
    title = "REBOOT_EQUIPMENT on 2 listed devices"

    async def one_finished() -> None:
        details = await current_details(stack, job["id"])
        assert details.startswith(f"{title}\n\nIN_PROGRESS: 1 of 2 finished (1 successful"), details
        assert details.endswith("1 in progress"), details

    await eventually(one_finished, timeout=20)
    await stack.wait_finished(job["id"], timeout=40)
    details = await current_details(stack, job["id"])
    assert details == (
        f"{title}\n\nFINISHED: 2 of 2 finished (1 successful, 0 errors, 1 cancelled), 0 in progress"
    )

    described = await stack.client.get_workflow_handle(job_workflow_id(job["id"])).describe()
    assert await described.static_summary() == title
    for operation in await stack.operations(job["id"]):
        handle = stack.client.get_workflow_handle(operation_workflow_id(operation["operationId"]))
        summary = await (await handle.describe()).static_summary()
        assert summary == f"REBOOT_EQUIPMENT → {operation['entityId']}"


async def test_a_job_on_a_tag_is_named_with_its_tag_and_device_count(stack: Stack) -> None:
    await stack.provision(3, tags=["line-7"], prefix="tag-ui-")
    job = await stack.create_job(
        {"name": "REFRESH_INFO", "target": {"append": {"tags": ["line-7"]}}}
    )
    described = await stack.client.get_workflow_handle(job_workflow_id(job["id"])).describe()
    assert await described.static_summary() == "REFRESH_INFO on tag line-7 (3 devices)"
    await stack.wait_finished(job["id"])


async def test_every_run_of_a_job_shows_its_title(stack: Stack) -> None:
    # Runs of at most 100 events: the job continues-as-new several times. Temporal gives the
    # later runs no static summary; their current details start with the title.
    ids = [d["id"] for d in await stack.provision(20, tags=["line-9"], prefix="runs-ui-")]
    for device_id in ids[:5]:
        stack.fleet.behaviours[device_id] = Behaviour(mode=Mode.ASYNC, delay_ms=1500)
    request = JobRequest.model_validate(
        {"name": "REBOOT_EQUIPMENT", "user": "test", "target": {"append": {"tags": ["line-9"]}}}
    )
    job_id = str(uuid.uuid4())
    job = job_input(request, stack.settings, job_id=job_id, created_at=datetime.now(UTC))
    job.fan_out = FanOutSettings(window=10, start_batch=5, page_size=5, max_history_events=100)
    job.title = job_title(request, tagged=20)
    assert job.title == "REBOOT_EQUIPMENT on tag line-9 (20 devices)"
    await start_job(stack.client, stack.settings, job, job.title)
    await stack.wait_finished(job_id, timeout=90)

    runs = [e async for e in stack.client.list_workflows(f"WorkflowId = '{job_id}'")]
    assert len(runs) >= 2, len(runs)
    for run in runs:
        details = await current_details(stack, job_id, run.run_id)
        assert details.startswith(f"{job.title}\n\n"), (run.run_id, details)
    # The first run (listed last) has its static summary; the dev server gives later ones none.
    first = stack.client.get_workflow_handle(job_id, run_id=runs[-1].run_id)
    assert await (await first.describe()).static_summary() == job.title
    details = await current_details(stack, job_id)
    assert details.endswith(
        "FINISHED: 20 of 20 finished (20 successful, 0 errors, 0 cancelled), 0 in progress"
    ), details


async def test_a_task_job_is_named_after_its_request_and_task(stack: Stack) -> None:
    await stack.provision(2, tags=["line-4"], prefix="task-ui-")
    answer = await stack.api.post(
        "/north/v80/operation/tasks",
        json={
            "task": {
                "name": "nightly reboot",
                "schedule": {"repeating": {"period": {"each": 12, "unit": "HOURS"}}},
                "job": {
                    "request": {
                        "name": "REBOOT_EQUIPMENT",
                        "target": {"append": {"tags": ["line-4"]}},
                    }
                },
            }
        },
    )
    assert answer.status_code == 201, answer.text
    task_id = answer.json()["id"]
    await stack.client.get_schedule_handle(task_id).trigger()

    async def started() -> str:
        found = await stack.api.get("/north/v80/operation/jobs", params={"taskId": task_id})
        jobs = found.json()["jobs"]
        assert len(jobs) == 1, jobs  # visibility shows the triggered job in a moment
        return str(jobs[0]["id"])

    job_id = await eventually(started, timeout=30)
    title = "REBOOT_EQUIPMENT on tag line-4 (task nightly reboot)"
    described = await stack.client.get_workflow_handle(job_workflow_id(job_id)).describe()
    assert await described.static_summary() == title
    await stack.wait_finished(job_id)
    assert (await current_details(stack, job_id)).startswith(f"{title}\n\n")
    assert (await stack.api.delete(f"/north/v80/operation/tasks/{task_id}")).status_code == 200


def test_titles_stay_one_short_line() -> None:
    long = JobRequest.model_validate(
        {
            "name": "REBOOT_EQUIPMENT",
            "target": {"append": {"tags": ["\U0001f680" * 128, "b" * 128, "c" * 128, "d"]}},
        }
    )
    title = job_title(long, tagged=1_240, task="\u00e9" * 200)
    assert title.startswith("REBOOT_EQUIPMENT on tags \U0001f680") and title.endswith("…")
    assert len(title) == 200
    listed = JobRequest.model_validate(
        {"name": "REBOOT_EQUIPMENT", "target": {"append": {"entities": ["a", "b", "a"]}}}
    )
    assert (
        job_title(listed, task="nightly") == "REBOOT_EQUIPMENT on 2 listed devices (task nightly)"
    )
