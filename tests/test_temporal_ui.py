"""What an SRE sees in the Temporal UI: operations named by their device, and a job whose current
details follow its progress."""

from __future__ import annotations

from temporalio.api.sdk.v1 import WorkflowMetadata

from core.temporal import job_workflow_id, operation_workflow_id
from tests.stack import Stack, eventually


async def current_details(stack: Stack, job_id: str) -> str:
    handle = stack.client.get_workflow_handle(job_workflow_id(job_id))
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

    async def one_finished() -> None:
        details = await current_details(stack, job["id"])
        assert details.startswith("IN_PROGRESS: 1 of 2 finished (1 successful"), details
        assert details.endswith("1 in progress"), details

    await eventually(one_finished, timeout=20)
    await stack.wait_finished(job["id"], timeout=40)
    details = await current_details(stack, job["id"])
    assert details == (
        "FINISHED: 2 of 2 finished (1 successful, 0 errors, 1 cancelled), 0 in progress"
    )

    described = await stack.client.get_workflow_handle(job_workflow_id(job["id"])).describe()
    assert await described.static_summary() == "REBOOT_EQUIPMENT on 2 listed devices"
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
