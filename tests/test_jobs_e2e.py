"""Jobs end to end: dev server, worker, API and simulated devices over real HTTP."""

from __future__ import annotations

from tests.stack import Stack, eventually


async def test_job_on_three_listed_devices(stack: Stack) -> None:
    devices = await stack.provision(3)
    ids = [d["id"] for d in devices]

    created = await stack.create_job(
        {"name": "REBOOT_EQUIPMENT", "target": {"append": {"entities": ids}}}
    )
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
    assert sorted(d["operation_id"] for d in received) == sorted(
        o["operationId"] for o in operations
    )


async def test_job_on_a_tag_counts_successes_and_errors(stack: Stack) -> None:
    devices = await stack.provision(50, tags=["line-7"])
    failing = sorted(d["id"] for d in devices)[::5]  # 10 devices
    for device_id in failing:
        answer = await stack.sim.put(
            f"/sim/devices/{device_id}", json={"result_code": "ERROR_PROCESSING"}
        )
        assert answer.status_code == 200
    await stack.provision(5, tags=["other"], prefix="bystander-")

    created = await stack.create_job(
        {"name": "REBOOT_EQUIPMENT", "target": {"append": {"tags": ["line-7"]}}}
    )
    assert created["report"]["summary"]["status"] == "IN_PROGRESS"
    job = await stack.wait_finished(created["id"])

    summary = job["report"]["summary"]
    assert summary["total"] == 50
    assert summary["finished"]["successful"] == 40
    assert summary["finished"]["error"] == 10
    assert summary["finished"]["total"] == 50

    async def all_closed() -> list[dict]:
        ops = await stack.operations(created["id"])
        assert len(ops) == 50 and all(o["status"] == "FINISHED" for o in ops)
        return ops

    results = {o["entityId"]: o["result"] for o in await eventually(all_closed)}
    assert sorted(d for d, r in results.items() if r == "ERROR_PROCESSING") == failing
    assert sum(r == "SUCCESSFUL" for r in results.values()) == 40
    reached = {
        d["device_id"] for d in (await stack.sim.get("/sim/deliveries")).json()["deliveries"]
    }
    assert not any(d.startswith("bystander-") for d in reached)


async def test_listed_targets_report_unprovisioned_and_duplicated(stack: Stack) -> None:
    await stack.provision(2)
    created = await stack.create_job(
        {
            "name": "REFRESH_INFO",
            "target": {"append": {"entities": ["dev-00001", "ghost-1", "dev-00002", "dev-00001"]}},
        }
    )
    job = await stack.wait_finished(created["id"])
    assert job["report"]["target"]["notProvisioned"] == ["ghost-1"]
    assert job["report"]["target"]["duplicated"] == ["dev-00001"]
    assert job["report"]["summary"]["total"] == 2
    assert job["report"]["summary"]["finished"]["successful"] == 2
    stats = (await stack.sim.get("/sim/stats")).json()
    assert stats["requests"] == 2 and stats["duplicates"] == 0


async def test_operations_listing_pages(stack: Stack) -> None:
    devices = await stack.provision(25, tags=["paged"])
    created = await stack.create_job(
        {"name": "REBOOT_EQUIPMENT", "target": {"append": {"tags": ["paged"]}}}
    )
    await stack.wait_finished(created["id"])
    url = f"/north/v80/operation/jobs/{created['id']}/operations"

    async def pages() -> list[dict]:
        seen = []
        for number, expected in ((1, 10), (2, 10), (3, 5)):
            body = (await stack.api.get(url, params={"start": number, "size": 10})).json()
            assert body["page"] == {"number": number, "of": 3}
            assert len(body["operations"]) == expected
            seen += body["operations"]
        return seen

    seen = await eventually(pages)
    assert sorted(o["entityId"] for o in seen) == sorted(d["id"] for d in devices)
    assert len({o["operationId"] for o in seen}) == 25
    past_end = (await stack.api.get(url, params={"start": 4, "size": 10})).json()
    assert past_end["operations"] == []
    too_big = await stack.api.get(url, params={"size": 1001})
    assert too_big.status_code == 400
    assert too_big.json()["errors"][0]["context"][0]["name"] == "size"
