"""What OpenGate users and the vendor's clients expect, on the real stack: task times with
offsets, "execute now", partial answers visible as they come, notify passed down, and the
target count of a job cancelled before its start."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.stack import Stack, eventually

JOBS = "/north/v80/operation/jobs"
TASKS = "/north/v80/operation/tasks"
HISTORY = "/north/v80/search/entities/operations/history"
START = "2030-03-02T10:17:00Z"  # a Saturday
DAYS = ["MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"]


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def expected_times(time: str, kind: dict[str, Any], count: int = 5) -> list[datetime]:
    """The next ``count`` instants of a pattern written with an offset, computed independently:
    every minute-resolution candidate day in the offset's own calendar, kept if the pattern
    takes that day."""
    clock, offset_text = time[:8], time[8:]
    offset = (
        timedelta(0)
        if offset_text in ("", "Z")
        else datetime.strptime(offset_text.replace(":", ""), "%z").utcoffset()
    )
    assert offset is not None
    hours = int(offset.total_seconds() // 3600)
    zone = ZoneInfo(f"Etc/GMT{'-' if hours > 0 else '+'}{abs(hours)}") if hours else UTC
    hour, minute, second = (int(p) for p in clock.split(":"))
    day = utc(START).astimezone(zone).date()
    found: list[datetime] = []
    while len(found) < count:
        at = datetime(day.year, day.month, day.day, hour, minute, second, tzinfo=zone)
        takes = (
            ("weekly" in kind and DAYS[at.weekday()] in kind["weekly"]["days"])
            or ("monthly" in kind and at.day == kind["monthly"]["day"])
            or ("yearly" in kind and (at.day, at.month) == (kind["yearly"]["day"], 7))
        )
        if takes and at > utc(START):
            found.append(at.astimezone(UTC))
        day += timedelta(days=1)
    return found


KINDS: dict[str, dict[str, Any]] = {
    "weekly": {"weekly": {"days": ["MON", "THU"]}},
    "monthly": {"monthly": {"day": 1}},
    "yearly": {"yearly": {"day": 1, "month": "JUL"}},
}
OFFSETS = ["+01:00", "-05:00", "+00:00", "Z"]


@pytest.mark.parametrize("offset", OFFSETS)
@pytest.mark.parametrize("kind", list(KINDS))
async def test_pattern_times_with_an_offset_fire_at_their_utc_instant(
    stack: Stack, kind: str, offset: str
) -> None:
    # 00:30 in the offset: in UTC that is another day for +01:00, so the days must follow.
    time = f"00:30:00{offset}"
    schedule = {"start": {"date": START}, "repeating": {"pattern": {"time": time, **KINDS[kind]}}}
    body = {
        "name": f"{kind} {offset}",
        "schedule": schedule,
        "job": {"request": {"name": "REFRESH_INFO", "target": {"append": {"tags": ["x"]}}}},
    }
    answer = await stack.api.post(TASKS, json={"task": body})
    assert answer.status_code == 201, answer.text
    task = answer.json()

    expected = expected_times(time, KINDS[kind])
    description = await stack.client.get_schedule_handle(task["id"]).describe()
    assert list(description.info.next_action_times[:5]) == expected
    read = (await stack.api.get(f"{TASKS}/{task['id']}")).json()
    # Read back in UTC: the next execution and the dates; the time of day as it was written.
    assert read["nextExecution"] == expected[0].strftime("%Y-%m-%dT%H:%M:%S.000Z")
    assert read["schedule"]["start"]["date"] == "2030-03-02T10:17:00.000Z"
    assert read["schedule"]["repeating"]["pattern"]["time"] == time


async def test_a_start_date_with_an_offset_reads_back_in_utc(stack: Stack) -> None:
    body = {
        "name": "once",
        "schedule": {"start": {"date": "2030-03-02T11:17:00+01:00"}},
        "job": {"request": {"name": "REFRESH_INFO", "target": {"append": {"tags": ["x"]}}}},
    }
    answer = await stack.api.post(TASKS, json={"task": body})
    assert answer.status_code == 201, answer.text
    assert answer.json()["schedule"]["start"]["date"] == "2030-03-02T10:17:00.000Z"
    assert answer.json()["nextExecution"] == "2030-03-02T10:17:00.000Z"


async def test_an_offset_and_a_timezone_together_are_refused(stack: Stack) -> None:
    body = {
        "name": "both",
        "schedule": {
            "repeating": {"pattern": {"time": "02:00:00+01:00"}},
            "timezone": "Europe/Madrid",
        },
        "job": {"request": {"name": "REFRESH_INFO", "target": {"append": {"tags": ["x"]}}}},
    }
    answer = await stack.api.post(TASKS, json={"task": body})
    assert answer.status_code == 400, answer.text
    assert answer.json()["errors"][0]["context"][0]["name"].endswith("pattern.time")


async def test_a_scheduled_job_put_with_an_empty_start_runs_now(stack: Stack) -> None:
    devices = [d["id"] for d in await stack.provision(2, prefix="now-")]
    job = await stack.create_job(
        {
            "name": "REBOOT_EQUIPMENT",
            "target": {"append": {"entities": devices}},
            "schedule": {"start": {"delayed": 3_600_000}},
        }
    )
    assert job["report"]["summary"]["status"] == "SCHEDULED"
    answer = await stack.api.put(
        f"{JOBS}/{job['id']}", json={"job": {"request": {"schedule": {"start": {}}}}}
    )
    assert answer.status_code == 200, answer.text
    done = await stack.wait_finished(job["id"], timeout=30)
    assert done["report"]["summary"]["finished"]["successful"] == 2
    assert done["request"]["schedule"]["start"] == {}


async def test_an_empty_start_on_create_means_now_and_an_empty_stop_is_refused(
    stack: Stack,
) -> None:
    device = (await stack.provision(1, prefix="empty-"))[0]["id"]
    target = {"append": {"entities": [device]}}
    job = await stack.create_job(
        {"name": "REBOOT_EQUIPMENT", "target": target, "schedule": {"start": {}}}
    )
    assert job["report"]["summary"]["status"] == "IN_PROGRESS"
    await stack.wait_finished(job["id"])
    answer = await stack.api.post(
        JOBS,
        json={
            "job": {
                "request": {"name": "REBOOT_EQUIPMENT", "target": target, "schedule": {"stop": {}}}
            }
        },
    )
    assert answer.status_code == 400
    assert answer.json()["errors"][0]["context"][0]["name"] == "job.request.schedule.stop"


async def test_partial_answers_show_while_the_operation_is_started(stack: Stack) -> None:
    device = (await stack.provision(1, prefix="steps-"))[0]["id"]
    await stack.sim.put(
        f"/sim/devices/{device}",
        json={
            "mode": "async",
            "steps": ["DOWNLOAD", "INSTALL", "VERIFY"],
            "step_interval_ms": 400,
            "delay_ms": 5000,
        },
    )
    job = await stack.create_job(
        {"name": "REBOOT_EQUIPMENT", "target": {"append": {"entities": [device]}}}
    )
    seen_listed: set[str] = set()
    seen_searched: set[str] = set()

    async def each_step_seen_while_started() -> None:
        operations = (await stack.api.get(f"{JOBS}/{job['id']}/operations")).json()["operations"]
        assert len(operations) == 1
        listed = operations[0]
        searched = (
            await stack.api.post(HISTORY, json={"filter": {"and": [{"eq": {"jobId": job["id"]}}]}})
        ).json()["operations"]
        if listed["status"] == "STARTED":
            seen_listed.update(s["name"] for s in listed["steps"])
        if searched and searched[0]["status"] == "STARTED":
            seen_searched.update(s["name"] for s in searched[0]["steps"])
        assert seen_listed == seen_searched == {"DOWNLOAD", "INSTALL", "VERIFY"}

    await eventually(each_step_seen_while_started, timeout=5, interval=0.2)
    done = await stack.wait_finished(job["id"])
    assert done["report"]["summary"]["finished"]["successful"] == 1


async def test_operations_of_a_notify_job_list_notify(stack: Stack) -> None:
    device = (await stack.provision(1, prefix="notify-"))[0]["id"]
    job = await stack.create_job(
        {"name": "REBOOT_EQUIPMENT", "notify": True, "target": {"append": {"entities": [device]}}}
    )
    await stack.wait_finished(job["id"])
    (operation,) = await stack.operations(job["id"])
    assert operation["notify"] is True


async def test_a_job_cancelled_before_its_start_counts_its_targets(stack: Stack) -> None:
    devices = [d["id"] for d in await stack.provision(4, prefix="early-")]
    job = await stack.create_job(
        {
            "name": "REBOOT_EQUIPMENT",
            "target": {"append": {"entities": [*devices, "not-provisioned"]}},
            "schedule": {"start": {"delayed": 3_600_000}},
        }
    )
    assert (await stack.api.delete(f"{JOBS}/{job['id']}")).status_code == 200

    async def cancelled() -> dict[str, Any]:
        summary = (await stack.job(job["id"]))["report"]["summary"]
        assert summary["status"] == "CANCELLED", summary
        return summary

    summary = await eventually(cancelled)
    assert summary["total"] == 4
    assert summary["finished"]["cancelled"]["byUser"] == 4
    assert summary["finished"]["total"] == 4
    assert summary["inProgress"]["total"] == 0
    assert (await stack.sim.get("/sim/stats")).json()["requests"] == 0
