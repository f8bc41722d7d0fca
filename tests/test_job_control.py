"""Job control end to end (SPEC 3.1, 6): pause/resume, cancel, scheduled start and deadline,
inactive jobs, PUT rules, lifecycle callbacks and search."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.stack import CALLBACK_SECRET, Stack, eventually, serve

JOBS = "/north/v80/operation/jobs"


async def summary_of(stack: Stack, job_id: str) -> dict[str, Any]:
    return (await stack.job(job_id))["report"]["summary"]


async def requests_seen(stack: Stack) -> int:
    return (await stack.sim.get("/sim/stats")).json()["requests"]


async def status_becomes(stack: Stack, job_id: str, status: str, timeout: float = 30) -> None:
    async def check() -> None:
        assert (await summary_of(stack, job_id))["status"] == status

    await eventually(check, timeout=timeout)


def transition_error(answer: Any) -> None:
    assert answer.status_code == 400, answer.text
    error = answer.json()["errors"][0]
    assert error["code"] == 1015 and error["message"] == "Job state transition error"


async def test_pause_holds_new_sends_and_resume_finishes(stack: Stack) -> None:
    await stack.provision(300, tags=["slow"])
    await stack.sim.put("/sim/default", json={"mode": "sync", "delay_ms": 300})
    job = await stack.create_job(
        {
            "name": "REBOOT_EQUIPMENT",
            "target": {"append": {"tags": ["slow"]}},
            "rollout": {"maxConcurrency": 20},
        }
    )

    async def some_sent() -> None:
        assert await requests_seen(stack) >= 40

    await eventually(some_sent)
    paused = await stack.api.put(
        JOBS + f"/{job['id']}", json={"job": {"request": {"active": False}}}
    )
    assert paused.status_code == 200, paused.text
    at_pause = await requests_seen(stack)
    assert paused.json()["report"]["summary"]["status"] == "PAUSED"
    await asyncio.sleep(1.0)  # operations already sent complete
    settled = await requests_seen(stack)
    assert settled - at_pause <= 20
    await asyncio.sleep(3.0)
    assert await requests_seen(stack) == settled, "a device got a request while the job was paused"
    summary = await summary_of(stack, job["id"])
    assert summary["status"] == "PAUSED" and summary["inProgress"]["scheduled"] > 0
    query = f"WorkflowId = '{job['id']}' AND JobStatus = 'PAUSED'"
    await eventually(lambda: _count_is(stack, query, 1))

    resumed = await stack.api.put(
        JOBS + f"/{job['id']}", json={"job": {"request": {"active": True}}}
    )
    assert resumed.status_code == 200
    done = await stack.wait_finished(job["id"], timeout=120)
    assert done["report"]["summary"]["finished"]["successful"] == 300, done["report"]["summary"]
    stats = (await stack.sim.get("/sim/stats")).json()
    assert stats["requests"] == 300 and stats["duplicates"] == 0 and stats["devicesReached"] == 300


async def _count_is(stack: Stack, query: str, expected: int) -> None:
    assert (await stack.client.count_workflows(query)).count == expected


async def test_cancel_reaches_waiting_and_backing_off_operations(stack: Stack) -> None:
    sleepy = [d["id"] for d in await stack.provision(3, reachable=False, prefix="sleepy-")]
    mute = [d["id"] for d in await stack.provision(2, prefix="mute-")]
    for device in mute:
        await stack.sim.put(f"/sim/devices/{device}", json={"mode": "silent"})
    job = await stack.create_job(
        {"name": "REBOOT_EQUIPMENT", "target": {"append": {"entities": sleepy + mute}}}
    )

    async def all_open() -> None:
        summary = await summary_of(stack, job["id"])
        assert summary["inProgress"]["waitingForConnection"] == 3, summary
        assert summary["inProgress"]["started"] == 2, summary

    await eventually(all_open)
    cancelled = await stack.api.delete(JOBS + f"/{job['id']}")
    assert cancelled.status_code == 200, cancelled.text
    await status_becomes(stack, job["id"], "CANCELLED")
    summary = await summary_of(stack, job["id"])
    assert summary["finished"]["cancelled"]["byUser"] == 5
    assert summary["total"] == 5 == summary["finished"]["total"] + summary["inProgress"]["total"]

    async def operations_cancelled() -> None:
        ops = await stack.operations(job["id"])
        assert len(ops) == 5 and all(o["status"] == "CANCELLED" for o in ops), ops
        assert all(o["description"].startswith("byUser") for o in ops)

    await eventually(operations_cancelled)
    sent = await requests_seen(stack)
    await asyncio.sleep(2)
    assert await requests_seen(stack) == sent, "a request was sent after the cancel"
    # A sleepy device polling now gets nothing.
    poll = await stack.api.get(
        f"/south/v80/devices/{sleepy[0]}/operation/pending",
        headers={"X-ApiKey": stack.fleet.keys[sleepy[0]]},
    )
    assert poll.json() == {"operations": []}
    transition_error(
        await stack.api.put(JOBS + f"/{job['id']}", json={"job": {"request": {"active": False}}})
    )
    transition_error(await stack.api.delete(JOBS + f"/{job['id']}"))


async def test_delayed_start_then_deadline_cuts_silent_devices(stack: Stack) -> None:
    devices = [d["id"] for d in await stack.provision(3, prefix="mute-")]
    await stack.sim.put("/sim/default", json={"mode": "silent"})
    job = await stack.create_job(
        {
            "name": "REBOOT_EQUIPMENT",
            "target": {"append": {"entities": devices}},
            "schedule": {"start": {"delayed": 2500}, "stop": {"delayed": 2000}},
        }
    )
    assert job["report"]["summary"]["status"] == "SCHEDULED"
    await asyncio.sleep(1.5)
    assert (await summary_of(stack, job["id"]))["status"] == "SCHEDULED"
    assert await requests_seen(stack) == 0
    await status_becomes(stack, job["id"], "IN_PROGRESS")
    await status_becomes(stack, job["id"], "FINISHED")
    summary = await summary_of(stack, job["id"])
    assert summary["finished"]["cancelled"]["byTimeout"] == 3
    assert await requests_seen(stack) == 3
    execution = (await stack.job(job["id"]))["report"]["execution"]
    started = datetime.fromisoformat(execution["startedDate"])
    finished = datetime.fromisoformat(execution["finishedDate"])
    assert finished - started >= timedelta(seconds=2)


async def test_inactive_job_waits_idle_and_put_rules(stack: Stack) -> None:
    devices = [d["id"] for d in await stack.provision(3)]
    job = await stack.create_job(
        {"name": "REFRESH_INFO", "active": False, "target": {"append": {"entities": devices[:1]}}}
    )
    assert job["report"]["summary"]["status"] == "IDLE"
    url = JOBS + f"/{job['id']}"
    forbidden = await stack.api.put(url, json={"job": {"request": {"name": "REBOOT_EQUIPMENT"}}})
    assert forbidden.status_code == 400
    assert forbidden.json()["errors"][0]["message"].startswith("Forbidden field")
    retarget = {"append": {"entities": devices[1:]}, "remove": {"entities": devices[:1]}}
    changed = await stack.api.put(
        url, json={"job": {"request": {"target": retarget, "userNotes": "moved"}}}
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["request"]["target"]["append"]["entities"] == devices[1:]
    assert changed.json()["request"]["userNotes"] == "moved"
    await asyncio.sleep(1)
    assert await requests_seen(stack) == 0
    assert (
        await stack.api.put(url, json={"job": {"request": {"active": True}}})
    ).status_code == 200
    done = await stack.wait_finished(job["id"])
    assert done["report"]["summary"]["finished"]["successful"] == 2, done
    reached = {
        d["device_id"] for d in (await stack.sim.get("/sim/deliveries")).json()["deliveries"]
    }
    assert reached == set(devices[1:])
    transition_error(await stack.api.put(url, json={"job": {"request": {"active": False}}}))


class Receiver:
    """A callback receiver: records each delivery; may fail or hang first."""

    def __init__(self, fail_first: int = 0, hang: bool = False) -> None:
        self.fail_first, self.hang = fail_first, hang
        self.attempts: dict[str, int] = {}
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.app = Starlette(routes=[Route("/hook", self.hook, methods=["POST"])])

    async def hook(self, request: Request) -> JSONResponse:
        if self.hang:
            await asyncio.sleep(3600)
        delivery = request.headers["x-delivery-id"]
        self.attempts[delivery] = self.attempts.get(delivery, 0) + 1
        if self.attempts[delivery] <= self.fail_first:
            return JSONResponse({"error": "try again"}, status_code=500)
        self.received.append((dict(request.headers), await request.body()))
        return JSONResponse({})

    def events(self) -> list[str]:
        return [headers["x-event"] for headers, _ in self.received]


async def test_callbacks_arrive_in_order_signed_and_shaped(stack: Stack) -> None:
    devices = [d["id"] for d in await stack.provision(2)]
    receiver = Receiver(fail_first=2)
    async with serve(receiver.app) as url:
        job = await stack.create_job(
            {
                "name": "REBOOT_EQUIPMENT",
                "callback": f"{url}/hook",
                "target": {"append": {"entities": devices}},
            }
        )
        assert job["request"]["notify"] is True

        async def all_three() -> None:
            assert receiver.events() == ["JOB_INITIATED", "JOB_STARTED", "JOB_FINISHED"]

        await eventually(all_three, timeout=60)
    assert all(n == 3 for n in receiver.attempts.values())  # 2 failures, then delivered
    assert len({h["x-delivery-id"] for h, _ in receiver.received}) == 3
    bodies = []
    for headers, body in receiver.received:
        expected = hmac.new(CALLBACK_SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert headers["x-signature"] == f"sha256={expected}"
        bodies.append(json.loads(body))
    initiated, started, finished = bodies
    assert initiated["id"] == job["id"] and set(initiated["report"]) == {"execution", "summary"}
    assert set(started) == {"job"} and set(started["job"]["report"]) == {"execution"}
    result = finished["job"]["result"]
    assert finished["job"]["report"]["summary"]["status"] == "FINISHED"
    assert result["page"] == {"number": 1, "of": 1}
    assert sorted(o["entityId"] for o in result["operations"]) == sorted(devices)


async def test_a_dead_receiver_does_not_delay_the_job(stack: Stack) -> None:
    devices = [d["id"] for d in await stack.provision(1)]
    receiver = Receiver(hang=True)
    async with serve(receiver.app) as url:
        job = await stack.create_job(
            {
                "name": "REBOOT_EQUIPMENT",
                "callback": f"{url}/hook",
                "target": {"append": {"entities": devices}},
            }
        )
        done = await stack.wait_finished(job["id"], timeout=15)
    assert done["report"]["summary"]["finished"]["successful"] == 1


async def test_search_jobs_and_operations_history(stack: Stack) -> None:
    devices = [d["id"] for d in await stack.provision(4)]
    await stack.sim.put(f"/sim/devices/{devices[0]}", json={"result_code": "ERROR_PROCESSING"})
    before = datetime.now(UTC).isoformat()
    reboot = await stack.create_job(
        {"name": "REBOOT_EQUIPMENT", "target": {"append": {"entities": devices}}}
    )
    refresh = await stack.create_job(
        {"name": "REFRESH_INFO", "target": {"append": {"entities": devices[:2]}}}
    )
    for job in (reboot, refresh):
        await stack.wait_finished(job["id"])

    async def search(body: dict[str, Any], what: str = "jobs") -> dict[str, Any]:
        path = (
            "/north/v80/search/jobs"
            if what == "jobs"
            else "/north/v80/search/entities/operations/history"
        )
        answer = await stack.api.post(path, json=body)
        assert answer.status_code == 200, answer.text
        return answer.json()

    async def found_jobs() -> None:
        both = {"and": [{"eq": {"jobStatus": "FINISHED"}}, {"gt": {"createdDate": before}}]}
        ids = {j["id"] for j in (await search({"filter": both}))["jobs"]}
        assert ids == {reboot["id"], refresh["id"]}
        named = {
            "and": [{"eq": {"operationName": "REFRESH_INFO"}}, {"gt": {"createdDate": before}}]
        }
        assert [j["id"] for j in (await search({"filter": named}))["jobs"]] == [refresh["id"]]
        mine = {"and": [{"eq": {"jobUser": "bootstrap-admin"}}, {"in": {"jobId": [reboot["id"]]}}]}
        assert [j["id"] for j in (await search({"filter": mine}))["jobs"]] == [reboot["id"]]
        future = {"gt": {"createdDate": (datetime.now(UTC) + timedelta(hours=1)).isoformat()}}
        assert (await search({"filter": future}))["jobs"] == []

    await eventually(found_jobs)
    listed = await stack.api.get(JOBS, params={"status": "FINISHED", "name": "REFRESH_INFO"})
    assert refresh["id"] in [j["id"] for j in listed.json()["jobs"]]
    assert reboot["id"] not in [j["id"] for j in listed.json()["jobs"]]

    async def paged_history() -> None:
        seen: list[str] = []
        start = 1
        while True:
            page = await search(
                {"filter": {"eq": {"jobId": reboot["id"]}}, "limit": {"start": start, "size": 3}},
                "operations",
            )
            if not page["operations"]:
                break
            seen += [o["operationId"] for o in page["operations"]]
            start += 1
        assert len(seen) == 4 == len(set(seen))
        failed = await search(
            {
                "filter": {
                    "and": [
                        {"eq": {"jobId": reboot["id"]}},
                        {"neq": {"operationResult": "SUCCESSFUL"}},
                    ]
                }
            },
            "operations",
        )
        assert [o["entityId"] for o in failed["operations"]] == [devices[0]]
        # The dev server is shared by the tests: other jobs used the same device ids.
        ours = {"in": {"jobId": [reboot["id"], refresh["id"]]}}
        of_device = await search(
            {"filter": {"and": [{"eq": {"entityId": devices[1]}}, ours]}}, "operations"
        )
        assert len(of_device["operations"]) == 2

    await eventually(paged_history)
    # An injection attempt is a literal value that matches nothing.
    sneaky = {"eq": {"jobStatus": "FINISHED' OR WorkflowType = 'OperationWorkflow"}}
    assert (await search({"filter": sneaky}))["jobs"] == []
    sneaky_ops = {"eq": {"entityId": f"{devices[0]}' OR EntityId != '"}}
    assert (await search({"filter": sneaky_ops}, "operations"))["operations"] == []
    bad = await stack.api.post("/north/v80/search/jobs", json={"filter": {"like": {"jobId": "x"}}})
    assert bad.status_code == 400 and bad.json()["errors"][0]["code"] == 1001


async def test_rollout_aborts_on_its_failure_threshold(stack: Stack) -> None:
    devices = sorted(d["id"] for d in await stack.provision(10, tags=["canary"]))
    for device in devices[:3]:  # the first devices started (id order) all fail
        await stack.sim.put(f"/sim/devices/{device}", json={"result_code": "ERROR_PROCESSING"})
    job = await stack.create_job(
        {
            "name": "REBOOT_EQUIPMENT",
            "target": {"append": {"tags": ["canary"]}},
            "rollout": {
                "maxConcurrency": 1,
                "abort": {"failureThresholdPercent": 50, "minExecuted": 3},
            },
        }
    )
    done = await stack.wait_finished(job["id"])
    summary = done["report"]["summary"]
    assert summary["finished"]["error"] == 3
    assert summary["finished"]["cancelled"]["byEngine"] == 7
    assert summary["total"] == 10
    assert await requests_seen(stack) == 3


async def test_a_running_job_takes_appended_and_drops_removed_devices(stack: Stack) -> None:
    devices = sorted(d["id"] for d in await stack.provision(5))
    await stack.sim.put("/sim/default", json={"mode": "sync", "delay_ms": 400})
    job = await stack.create_job(
        {
            "name": "REFRESH_INFO",
            "target": {"append": {"entities": devices[:4]}},
            "rollout": {"maxConcurrency": 1},
        }
    )

    async def first_sent() -> None:
        assert await requests_seen(stack) >= 1

    await eventually(first_sent, interval=0.05)
    change = {"append": {"entities": [devices[4]]}, "remove": {"entities": [devices[3]]}}
    answer = await stack.api.put(
        JOBS + f"/{job['id']}", json={"job": {"request": {"target": change}}}
    )
    assert answer.status_code == 200, answer.text
    done = await stack.wait_finished(job["id"])
    reached = [
        d["device_id"] for d in (await stack.sim.get("/sim/deliveries")).json()["deliveries"]
    ]
    assert sorted(reached) == sorted([*devices[:3], devices[4]])
    assert done["report"]["summary"]["total"] == 4
    assert done["report"]["summary"]["finished"]["successful"] == 4
    assert done["request"]["target"]["append"]["entities"] == [*devices[:3], devices[4]]
