"""Jobs end to end: dev server, worker, API and simulated devices over real HTTP."""

from __future__ import annotations

from tests.stack import Stack, eventually


async def test_job_on_three_listed_devices(stack: Stack) -> None:
    devices = await stack.provision(3)
    ids = [d["id"] for d in devices]

    created = await stack.create_job({"name": "REBOOT_EQUIPMENT", "target": {"append": {"entities": ids}}})
    job = await stack.wait_finished(created["id"])

    summary = job["report"]["summary"]
    assert summary["total"] == 3
    assert summary["finished"]["successful"] == 3
    assert summary["inProgress"]["total"] == 0
    execution = job["report"]["execution"]
    assert execution["startedDate"] and execution["finishedDate"]

    async def listed() -> list[dict]:
        ops = await stack.operations(created["id"])
        assert len(ops) == 3 and all(o["status"] == "FINISHED" for o in ops), ops
        return ops

    operations = await eventually(listed)
    assert sorted(o["entityId"] for o in operations) == sorted(ids)
    for op in operations:
        assert op["result"] == "SUCCESSFUL"
        assert op["execution"]["startedDate"] and op["execution"]["finishedDate"]
    received = (await stack.sim.get("/sim/deliveries")).json()["deliveries"]
    assert sorted(d["operation_id"] for d in received) == sorted(o["operationId"] for o in operations)
