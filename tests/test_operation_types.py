"""Operation types end to end: the catalog, custom types, and job parameters checked against
their schema, with defaults applied, down to what each simulated device receives."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.stack import Stack, eventually

TYPES = "/north/v80/operationTypes"
JOBS = "/north/v80/operation/jobs"

FIRMWARE = {
    "name": "FIRMWARE_FETCH",
    "title": "Fetch firmware",
    "parameters": {
        "type": "object",
        "properties": {
            "url": {"type": "string", "format": "uri"},
            "retries": {"type": "integer", "minimum": 0, "maximum": 5, "default": 1},
        },
        "required": ["url"],
        "additionalProperties": False,
    },
    "steps": [{"name": "DOWNLOAD"}, {"name": "VERIFY"}],
}


async def post_job(stack: Stack, request: dict[str, Any]) -> httpx.Response:
    return await stack.api.post(JOBS, json={"job": {"request": request}})


def context_names(answer: httpx.Response) -> list[str]:
    assert answer.status_code == 400, answer.text
    return [c["name"] for c in answer.json()["errors"][0]["context"]]


async def delivered(stack: Stack, job_id: str) -> dict[str, dict[str, Any]]:
    """The parameters each device received for the job's operations."""
    operation_ids = {o["operationId"] for o in await stack.operations(job_id)}
    deliveries = (await stack.sim.get("/sim/deliveries")).json()["deliveries"]
    return {
        d["device_id"]: d["parameters"] for d in deliveries if d["operation_id"] in operation_ids
    }


async def test_reboot_without_parameters_gets_and_echoes_the_default(stack: Stack) -> None:
    [device] = await stack.provision(1)
    created = await stack.create_job(
        {"name": "REBOOT_EQUIPMENT", "target": {"append": {"entities": [device["id"]]}}}
    )
    assert created["request"]["parameters"] == {"type": "HARDWARE"}

    job = await stack.wait_finished(created["id"])
    assert job["request"]["parameters"] == {"type": "HARDWARE"}
    assert job["report"]["summary"]["finished"]["successful"] == 1
    assert await delivered(stack, created["id"]) == {device["id"]: {"type": "HARDWARE"}}


async def test_reboot_refuses_a_wrong_type_and_unknown_properties(stack: Stack) -> None:
    target = {"append": {"entities": ["dev-00001"]}}
    soft = await post_job(
        stack, {"name": "REBOOT_EQUIPMENT", "parameters": {"type": "SOFT"}, "target": target}
    )
    assert context_names(soft) == ["parameters.type"]
    assert "SOFT" in soft.json()["errors"][0]["context"][0]["value"]

    extra = await post_job(
        stack,
        {"name": "REBOOT_EQUIPMENT", "parameters": {"type": "SOFTWARE", "x": 1}, "target": target},
    )
    assert context_names(extra) == ["parameters.x"]

    unknown = await post_job(stack, {"name": "NO_SUCH_TYPE", "target": target})
    assert context_names(unknown) == ["name"]


async def test_custom_type_validates_its_jobs(stack: Stack) -> None:
    created = await stack.api.post(TYPES, json=FIRMWARE)
    assert created.status_code == 201, created.text
    assert created.headers["Location"] == f"{TYPES}/FIRMWARE_FETCH"
    assert created.json()["parameters"] == FIRMWARE["parameters"]
    devices = await stack.provision(1)
    target = {"append": {"entities": [devices[0]["id"]]}}

    def job(parameters: dict[str, Any]) -> dict[str, Any]:
        return {"name": "FIRMWARE_FETCH", "parameters": parameters, "target": target}

    url = "https://downloads.example.com/fw/2.1.bin"
    accepted = await stack.create_job(job({"url": url}))
    assert accepted["request"]["parameters"] == {"url": url, "retries": 1}
    await stack.wait_finished(accepted["id"])
    assert await delivered(stack, accepted["id"]) == {devices[0]["id"]: {"url": url, "retries": 1}}
    assert (await post_job(stack, job({"url": url, "retries": 5}))).status_code == 201

    assert context_names(await post_job(stack, job({"url": "not a uri"}))) == ["parameters.url"]
    assert context_names(await post_job(stack, job({"retries": 2}))) == ["parameters.url"]
    too_many = await post_job(stack, job({"url": url, "retries": 6}))
    assert context_names(too_many) == ["parameters.retries"]
    both = await post_job(stack, job({"url": "ftp//nope", "retries": -1}))
    assert sorted(context_names(both)) == ["parameters.retries", "parameters.url"]
    typed = await post_job(stack, job({"url": url, "retries": "3"}))
    assert context_names(typed) == ["parameters.retries"]


async def test_invalid_schemas_are_refused_at_creation(stack: Stack) -> None:
    for schema in (
        {"type": "nonsense"},
        {"type": "object", "properties": {"a": {"minimum": "x"}}},
        {"type": "string"},
    ):
        answer = await stack.api.post(TYPES, json={"name": "BROKEN", "parameters": schema})
        assert answer.status_code == 400, (schema, answer.text)
        assert all(n.startswith("parameters") for n in context_names(answer)), answer.text
    assert (await stack.api.get(f"{TYPES}/BROKEN")).status_code == 404


async def test_names_are_unique_and_built_ins_read_only(stack: Stack) -> None:
    clash = await stack.api.post(TYPES, json={"name": "REBOOT_EQUIPMENT"})
    assert clash.status_code == 409, clash.text
    assert (await stack.api.post(TYPES, json=FIRMWARE)).status_code == 201
    assert (await stack.api.post(TYPES, json=FIRMWARE)).status_code == 409

    assert (await stack.api.put(f"{TYPES}/REBOOT_EQUIPMENT", json=FIRMWARE)).status_code == 403
    refused = await stack.api.delete(f"{TYPES}/REBOOT_EQUIPMENT")
    assert refused.status_code == 403
    assert "built-in" in refused.json()["errors"][0]["message"]
    assert (await stack.api.delete(f"{TYPES}/NO_SUCH_TYPE")).status_code == 404


async def test_readers_read_and_writers_write(stack: Stack) -> None:
    made = await stack.api.post("/north/v80/apiKeys", json={"name": "eyes", "role": "viewer"})
    assert made.status_code == 201, made.text
    async with stack.as_key(made.json()["apiKey"]) as viewer:
        assert (await viewer.get(f"{TYPES}/catalog")).status_code == 200
        assert (await viewer.post(TYPES, json=FIRMWARE)).status_code == 403
    assert (await stack.api.post(TYPES, json=FIRMWARE)).status_code == 201
    async with stack.as_key(made.json()["apiKey"]) as viewer:
        listed = (await viewer.get(TYPES)).json()["operationTypes"]
        assert (await viewer.delete(f"{TYPES}/FIRMWARE_FETCH")).status_code == 403
    names = {t["name"]: t for t in listed}
    assert names["FIRMWARE_FETCH"]["custom"] is True
    assert names["REBOOT_EQUIPMENT"]["custom"] is False
    assert {"UPDATE", "DIAGNOSIS", "GET_DEVICE_PARAMETERS"} <= names.keys()


async def test_from_catalog_copies_schema_and_steps(stack: Stack) -> None:
    catalog = (await stack.api.get(f"{TYPES}/catalog")).json()["operationTypes"]
    update = next(t for t in catalog if t["name"] == "UPDATE")
    assert [s["name"] for s in update["steps"]] == [
        "BEGINUPDATE",
        "DOWNLOADFILE",
        "BEGININSTALL",
        "ENDINSTALL",
        "ENDUPDATE",
    ]

    body = {"name": "GATEWAY_UPDATE", "fromCatalog": "UPDATE", "title": "Gateway update"}
    created = await stack.api.post(TYPES, json=body)
    assert created.status_code == 201, created.text
    read = (await stack.api.get(f"{TYPES}/GATEWAY_UPDATE")).json()
    assert read["parameters"] == update["parameters"]
    assert read["steps"] == update["steps"]
    assert read["title"] == "Gateway update"

    replaced = await stack.api.put(
        f"{TYPES}/GATEWAY_UPDATE", json={"fromCatalog": "UPDATE", "steps": [{"name": "ALL"}]}
    )
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["steps"] == [{"name": "ALL"}]
    assert replaced.json()["parameters"] == update["parameters"]

    missing = await stack.api.post(TYPES, json={"name": "X", "fromCatalog": "NOPE"})
    assert context_names(missing) == ["fromCatalog"]


async def test_each_device_receives_its_merged_parameters(stack: Stack) -> None:
    await stack.api.post(TYPES, json=FIRMWARE)
    first, second = (d["id"] for d in await stack.provision(2))
    url = "https://downloads.example.com/fw.bin"
    created = await stack.create_job(
        {
            "name": "FIRMWARE_FETCH",
            "parameters": {"url": url},
            "target": {
                "append": {
                    "entitiesWithParameters": [
                        {"id": first, "parameters": {"retries": 4}},
                        {"id": second, "parameters": {"url": "https://mirror.example.com/fw"}},
                    ]
                }
            },
        }
    )
    await stack.wait_finished(created["id"])
    assert await delivered(stack, created["id"]) == {
        first: {"url": url, "retries": 4},
        second: {"url": "https://mirror.example.com/fw", "retries": 1},
    }

    bad = await post_job(
        stack,
        {
            "name": "FIRMWARE_FETCH",
            "target": {
                "append": {
                    "entitiesWithParameters": [
                        {"id": first, "parameters": {"url": url}},
                        {"id": second, "parameters": {"url": url, "retries": 9}},
                    ]
                }
            },
        },
    )
    assert context_names(bad) == ["target.append.entitiesWithParameters[1].parameters.retries"]


async def test_a_type_in_use_by_an_open_job_cannot_be_deleted(stack: Stack) -> None:
    await stack.api.post(TYPES, json=FIRMWARE)
    [device] = await stack.provision(1)
    await stack.sim.put(f"/sim/devices/{device['id']}", json={"mode": "silent"})
    created = await stack.create_job(
        {
            "name": "FIRMWARE_FETCH",
            "parameters": {"url": "https://example.com/fw"},
            "target": {"append": {"entities": [device["id"]]}},
            "operationParameters": {"timeout": 3000},
        }
    )

    async def sent() -> None:
        deliveries = (await stack.sim.get("/sim/deliveries")).json()["deliveries"]
        assert any(d["device_id"] == device["id"] for d in deliveries)

    await eventually(sent)
    in_use = await stack.api.delete(f"{TYPES}/FIRMWARE_FETCH")
    assert in_use.status_code == 409, in_use.text
    assert "open job" in in_use.json()["errors"][0]["message"]

    job = await stack.wait_finished(created["id"])
    assert job["report"]["summary"]["finished"]["cancelled"]["byTimeout"] == 1

    async def deleted() -> None:
        answer = await stack.api.delete(f"{TYPES}/FIRMWARE_FETCH")
        assert answer.status_code == 200, answer.text

    await eventually(deleted, timeout=10)
    assert (await stack.api.get(f"{TYPES}/FIRMWARE_FETCH")).status_code == 404


async def test_get_device_parameters_answers_with_values(stack: Stack) -> None:
    [device] = await stack.provision(1)
    target = {"append": {"entities": [device["id"]]}}
    variables = [{"name": "apn", "value": "iot.example"}, {"name": "period", "value": 60}]
    set_job = await stack.create_job(
        {
            "name": "SET_DEVICE_PARAMETERS",
            "parameters": {"variableList": variables},
            "target": target,
        }
    )
    await stack.wait_finished(set_job["id"])

    get_job = await stack.create_job(
        {
            "name": "GET_DEVICE_PARAMETERS",
            "parameters": {"variableList": [{"name": "period"}, {"name": "unknown"}]},
            "target": target,
        }
    )
    await stack.wait_finished(get_job["id"])

    async def answered() -> dict[str, Any]:
        [operation] = await stack.operations(get_job["id"])
        assert operation["status"] == "FINISHED" and operation["steps"], operation
        return operation

    operation = await eventually(answered)
    values = json.loads(operation["steps"][-1]["description"])
    assert values == {
        "variableList": [{"name": "period", "value": 60}, {"name": "unknown", "value": None}]
    }


async def test_update_reports_its_five_steps_when_answered_at_once(stack: Stack) -> None:
    [device] = await stack.provision(1)
    created = await stack.create_job(
        {
            "name": "UPDATE",
            "parameters": {"bundleName": "fw", "bundleVersion": "2.1"},
            "target": {"append": {"entities": [device["id"]]}},
        }
    )
    assert created["request"]["parameters"]["deploymentElements"] == []
    await stack.wait_finished(created["id"])

    async def answered() -> list[str]:
        [operation] = await stack.operations(created["id"])
        assert operation["status"] == "FINISHED", operation
        return [s["name"] for s in operation["steps"]]

    assert await eventually(answered) == [
        "BEGINUPDATE",
        "DOWNLOADFILE",
        "BEGININSTALL",
        "ENDINSTALL",
        "ENDUPDATE",
    ]
