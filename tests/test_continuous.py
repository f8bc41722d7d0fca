"""Continuous jobs (``"continuous": true``, beyond OpenGate; issue 14): a job on tags that stays
open until its ``schedule.stop`` and reaches, once each, the devices that join its tags while it
runs. On the real stack: the API, the worker, the dev server and simulated devices over HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest_asyncio
from temporalio.testing import WorkflowEnvironment

from inventory.schema import TagRow
from inventory.store import Inventory
from models.devices import DeviceIn, DeviceUpdate
from simulator.fleet import Behaviour, Mode
from tests.stack import Stack, eventually, failed_workflow_tasks, running_stack

JOBS = "/north/v80/operation/jobs"
DEVICES = "/north/v80/provision/devices"
POLL_S = 0.5
# How late after its schedule.stop a job may show it finished (the stop's timer, the workflow
# task that closes the operations, the memo published).
STOP_SLACK_S = 5.0


@pytest_asyncio.fixture(loop_scope="session")
async def stack(env: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[Stack]:
    # Polls twice a second, so a test waits for joins in seconds (the default is 10 s).
    async with running_stack(env, tmp_path, continuous_poll_s=POLL_S) as running:
        yield running


def _continuous(tag: str, stop_ms: int, **extra: Any) -> dict[str, Any]:
    return {
        "name": "REBOOT_EQUIPMENT",
        "target": {"append": {"tags": [tag]}},
        "continuous": True,
        "schedule": {"stop": {"delayed": stop_ms}},
        **extra,
    }


async def _tag(stack: Stack, device_id: str, tags: list[str]) -> None:
    answer = await stack.api.put(f"{DEVICES}/{device_id}", json={"tags": tags})
    assert answer.status_code == 200, answer.text


async def _set_active(stack: Stack, url: str, active: bool) -> None:
    answer = await stack.api.put(url, json={"job": {"request": {"active": active}}})
    assert answer.status_code == 200, answer.text


def _reached(stack: Stack) -> dict[str, int]:
    counts: dict[str, int] = {}
    for delivery in stack.fleet.deliveries:
        counts[delivery.device_id] = counts.get(delivery.device_id, 0) + 1
    return counts


async def test_devices_joining_the_tag_get_the_operation_once_until_the_stop(
    stack: Stack,
) -> None:
    first = [d["id"] for d in await stack.provision(10, tags=["line-7"], prefix="cnt-")]
    later = [d["id"] for d in await stack.provision(4, prefix="late-")]
    # One operation at a time: a slow device holds the job back later in the test.
    job = await stack.create_job(
        _continuous("line-7", stop_ms=25_000, rollout={"maxConcurrency": 1})
    )
    url = f"{JOBS}/{job['id']}"

    async def in_progress_with(successful: int) -> dict[str, Any]:
        found = (await stack.api.get(url)).json()
        summary = found["report"]["summary"]
        assert summary["status"] == "IN_PROGRESS", summary
        assert summary["finished"]["successful"] == successful, summary
        return dict(found)

    # The tag's devices at the start run, and the job stays open.
    found = await eventually(lambda: in_progress_with(10), timeout=30)
    assert found["request"]["continuous"] is True

    # Joins while it runs: four devices given the tag, one provisioned with it.
    for device_id in later:
        await _tag(stack, device_id, ["line-7", "other"])
    await _provision(stack, "new-00001", ["line-7"])
    await eventually(lambda: in_progress_with(15), timeout=30)

    await _untag_while_backed_up(stack)
    await eventually(lambda: in_progress_with(17), timeout=30)

    # Paused, the job reads nothing: a device tagged and untagged meanwhile is never reached,
    # and one already reached that is untagged and tagged again is not reached twice.
    await _set_active(stack, url, False)
    stack.fleet.device_ids.update({"gone-00001", "mark-00001"})
    await stack.provision(1, prefix="gone-")
    await _tag(stack, "gone-00001", ["line-7"])
    await _tag(stack, "gone-00001", [])
    await _tag(stack, first[0], [])
    await _tag(stack, first[0], ["line-7"])
    await _set_active(stack, url, True)
    # A marker tagged after all that: joins are read in the order they happened, so once it is
    # reached, the ones before it were read too.
    await stack.provision(1, prefix="mark-")
    await _tag(stack, "mark-00001", ["line-7"])
    await eventually(lambda: in_progress_with(18), timeout=30)

    done = await stack.wait_finished(job["id"], timeout=60)
    summary = done["report"]["summary"]
    assert summary["status"] == "FINISHED"
    assert summary["finished"]["successful"] == 18
    # Every device reached counts once in the total, and nothing is left scheduled.
    assert summary["total"] == 18 and summary["finished"]["total"] == 18, summary
    # It finished at its stop: 25 s after it started, not before, and not much later.
    execution = done["report"]["execution"]
    ran = _date(execution["finishedDate"]) - _date(execution["startedDate"])
    assert 24.99 <= ran.total_seconds() <= 25 + STOP_SLACK_S, execution

    reached = _reached(stack)
    joined = [*later, "new-00001", "slow-00001", "queued-00001", "mark-00001"]
    assert reached == {d: 1 for d in [*first, *joined]}, reached
    assert "gone-00001" not in reached and "gone-00002" not in reached
    assert (await stack.sim.get("/sim/stats")).json()["duplicates"] == 0
    _, failed = await failed_workflow_tasks(stack)
    assert failed == []


async def _provision(stack: Stack, device_id: str, tags: list[str]) -> None:
    stack.fleet.device_ids.add(device_id)
    answer = await stack.api.post(
        DEVICES, json={"id": device_id, "tags": tags, "address": stack.sim_url}
    )
    assert answer.status_code == 201, answer.text
    stack.fleet.keys[device_id] = answer.json()["apiKey"]


async def _untag_while_backed_up(stack: Stack) -> None:
    """A slow device joins and takes the job's only slot (``maxConcurrency`` 1): the job reads
    no joins until it answers. Meanwhile one device is tagged and untagged (never reached) and
    another is tagged (reached once the slot frees: a join waits, it is not lost)."""
    slow_s = 4.0
    stack.fleet.behaviours["slow-00001"] = Behaviour(mode=Mode.ASYNC, delay_ms=int(slow_s * 1000))
    await _provision(stack, "slow-00001", [])
    await _provision(stack, "gone-00002", [])
    await _provision(stack, "queued-00001", [])
    await _tag(stack, "slow-00001", ["line-7"])

    async def slow_reached() -> float:
        deliveries = [d for d in stack.fleet.deliveries if d.device_id == "slow-00001"]
        assert len(deliveries) == 1, deliveries
        return deliveries[0].received_at

    reached_at = await eventually(slow_reached, timeout=10)
    await _tag(stack, "gone-00002", ["line-7"])
    await _tag(stack, "queued-00001", ["line-7"])
    await _tag(stack, "gone-00002", [])
    # All of it happened while the slow device held the slot (it answers only after slow_s).
    assert time.time() - reached_at < slow_s - 1, "the slow device answered too soon"


def _date(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def test_a_continuous_job_cancelled_stops_reading_joins(stack: Stack) -> None:
    await stack.provision(3, tags=["line-9"], prefix="c9-")
    job = await stack.create_job(_continuous("line-9", stop_ms=600_000))
    url = f"{JOBS}/{job['id']}"

    async def three_done() -> None:
        summary = (await stack.api.get(url)).json()["report"]["summary"]
        assert summary["finished"]["successful"] == 3, summary

    await eventually(three_done, timeout=30)
    assert (await stack.api.delete(url)).status_code == 200

    async def cancelled() -> None:
        summary = (await stack.api.get(url)).json()["report"]["summary"]
        assert summary["status"] == "CANCELLED", summary

    await eventually(cancelled, timeout=30)
    stack.fleet.device_ids.add("c9-late")
    answer = await stack.api.post(
        DEVICES, json={"id": "c9-late", "tags": ["line-9"], "address": stack.sim_url}
    )
    assert answer.status_code == 201
    await asyncio.sleep(4 * POLL_S)
    assert "c9-late" not in _reached(stack)


async def test_continuous_requests_the_engine_cannot_run_are_refused(stack: Stack) -> None:
    await stack.provision(1, tags=["line-5"], prefix="c5-")
    cases = {
        "no stop": {**_continuous("line-5", 60_000), "schedule": None},
        "listed devices": {
            **_continuous("line-5", 60_000),
            "target": {"append": {"entities": ["c5-00001"]}},
        },
        "groups": _continuous(
            "line-5", 60_000, rollout={"groups": [{"name": "all", "percent": 100}]}
        ),
        "null": {**_continuous("line-5", 60_000), "continuous": None},
    }
    for case, request in cases.items():
        answer = await stack.api.post(JOBS, json={"job": {"request": request}})
        assert answer.status_code == 400, (case, answer.text)
        message = answer.json()["errors"][0]["message"]
        assert "continuous" in message, (case, message)


async def check_joins(inventory: Inventory) -> None:
    """The joins a continuous job reads, on a fresh inventory (tests/test_postgres.py runs this
    on PostgreSQL too)."""
    start = await inventory.last_tag_join()
    await inventory.create_devices(
        [DeviceIn(id="a", tags=["t"]), DeviceIn(id="b"), DeviceIn(id="c", tags=["u"])]
    )
    await inventory.update_device("b", DeviceUpdate(tags=["t", "u"]))
    await inventory.update_device("c", DeviceUpdate(tags=["u", "t"]))
    await inventory.update_device("a", DeviceUpdate(tags=["t"]))  # kept: no new join
    await inventory.update_device("c", DeviceUpdate(tags=["u"]))  # left before being read
    page, last, more = await inventory.devices_joined(["t"], start, limit=10)
    assert [(d.id, seq > start) for d, seq in page] == [("a", True), ("b", True)]
    assert last == await inventory.last_tag_join() and not more
    # Paged by join order: a full page says more may follow.
    first, cursor, more = await inventory.devices_joined(["t"], start, limit=1)
    assert [d.id for d, _ in first] == ["a"] and more
    rest, end, more = await inventory.devices_joined(["t"], cursor, limit=10)
    assert [d.id for d, _ in rest] == ["b"] and end == last and not more
    # Nothing after the last join.
    assert await inventory.devices_joined(["t"], last, limit=10) == ([], last, False)

    # A writer that drew its join's number but has not committed yet, and a second writer
    # meanwhile: the reader must not move past the first's number before it is committed.
    await inventory.create_devices([DeviceIn(id="slow"), DeviceIn(id="fast")])
    async with inventory.session() as slow:
        slow.add(TagRow(tag="v", device_id="slow"))
        await inventory._record_joins(slow, [("slow", "v")], datetime.now(UTC))
        fast = asyncio.create_task(inventory.update_device("fast", DeviceUpdate(tags=["v"])))
        await asyncio.sleep(0.5)
        early, cursor, _ = await inventory.devices_joined(["v"], last, limit=10)
        await slow.commit()
    await fast
    late, _, _ = await inventory.devices_joined(["v"], cursor, limit=10)
    assert {d.id for d, _ in early + late} == {"slow", "fast"}, (early, late)
    last = await inventory.last_tag_join()

    # Many writers at once while a reader follows the joins: the reader misses none.
    ids = [f"w-{i:03d}" for i in range(60)]
    await inventory.create_devices([DeviceIn(id=i) for i in ids])
    seen: set[str] = set()
    cursor = last

    async def follow() -> None:
        nonlocal cursor
        while len(seen) < len(ids):
            found, cursor, _ = await inventory.devices_joined(["w"], cursor, limit=7)
            seen.update(d.id for d, _ in found)
            await asyncio.sleep(0)

    reader = asyncio.create_task(follow())
    await asyncio.gather(*(inventory.update_device(i, DeviceUpdate(tags=["w"])) for i in ids))
    await asyncio.wait_for(reader, timeout=30)
    assert seen == set(ids)


async def test_the_inventory_reads_joins_in_order_and_only_while_tagged(tmp_path: Path) -> None:
    inventory = Inventory.from_url(f"sqlite+aiosqlite:///{tmp_path / 'inv.db'}")
    await inventory.create_schema()
    try:
        await check_joins(inventory)
    finally:
        await inventory.close()
