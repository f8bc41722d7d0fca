"""Staged rollouts, ``rollout.groups`` (beyond OpenGate; issue 14): the rules on their own, then
jobs on the real stack whose second group waits for the first, pause on an error threshold, and
run on when the operator starts the next group."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from models.jobs import RolloutGroup
from models.messages import JobState
from simulator.fleet import Behaviour
from tests.stack import Stack, eventually, failed_workflow_tasks
from workflows.groups import (
    assign,
    capacities,
    count_closed,
    count_started,
    group_room,
    group_sizes,
    pause_reason,
    release_next,
    tag_group_sizes,
)

JOBS = "/north/v80/operation/jobs"


def _groups(*specs: dict[str, Any]) -> list[RolloutGroup]:
    return [RolloutGroup.model_validate(spec) for spec in specs]


def test_sizes_follow_percent_and_count_and_the_rest_joins_the_last_group() -> None:
    groups = _groups(
        {"name": "a", "percent": 10}, {"name": "b", "count": 25}, {"name": "c", "percent": 20}
    )
    assert [g.size for g in group_sizes(groups, 100)] == [10, 25, 65]
    # Small fleets: a percent group gets at least one device while devices are left.
    assert [g.size for g in group_sizes(groups, 3)] == [1, 2, 0]
    assert [g.size for g in group_sizes(groups, 0)] == [0, 0, 0]


def test_the_next_group_waits_for_the_success_threshold() -> None:
    groups = _groups(
        {"name": "canary", "count": 10, "successThreshold": 90},
        {"name": "wave", "count": 40},
        {"name": "rest", "count": 50},
    )
    state = JobState(groups=group_sizes(groups, 100))
    assert group_room(groups, state) == 10
    for i in range(10):
        count_started(state, f"op-{i}")
    assert group_room(groups, state) == 0
    for i in range(8):
        count_closed(state, f"op-{i}", successful=True)
    assert group_room(groups, state) == 0
    count_closed(state, "op-8", successful=True)  # 9 of 10: 90%
    # The wave may start, and the rest only once every wave operation has closed (threshold 0).
    assert group_room(groups, state) == 40
    for i in range(10, 50):
        count_started(state, f"op-{i}")
    assert group_room(groups, state) == 0
    for i in range(10, 50):
        count_closed(state, f"op-{i}", successful=i % 2 == 0)
    assert group_room(groups, state) is None  # the last group: no limit of its own
    assert [g.started for g in state.groups] == [10, 40, 0]


def test_an_error_threshold_pauses_once_and_the_operator_releases_the_next_group() -> None:
    groups = _groups(
        {"name": "canary", "count": 10, "successThreshold": 90, "errorThreshold": 20},
        {"name": "rest", "count": 90},
    )
    state = JobState(groups=group_sizes(groups, 100))
    for i in range(10):
        count_started(state, f"op-{i}")
    count_closed(state, "op-0", successful=False)
    count_closed(state, "op-1", successful=False)
    assert pause_reason(groups, state) is None  # 2 of 10: 20%, not past it
    count_closed(state, "op-2", successful=False)
    reason = pause_reason(groups, state)
    assert reason is not None
    assert reason[1] == "group canary: 3 of 10 failed, past its error threshold of 20%"
    state.groups[reason[0]].tripped = True
    assert pause_reason(groups, state) is None
    release_next(groups, state)
    assert group_room(groups, state) is None
    try:
        release_next(groups, state)
    except ValueError as exc:
        assert "every group" in str(exc)
    else:
        raise AssertionError("a job whose groups all started released another")


def test_a_group_that_closed_short_of_its_success_threshold_pauses_the_job() -> None:
    groups = _groups(
        {"name": "canary", "count": 4, "successThreshold": 100}, {"name": "rest", "count": 6}
    )
    state = JobState(groups=group_sizes(groups, 10))
    for i in range(4):
        count_started(state, f"op-{i}")
        count_closed(state, f"op-{i}", successful=i != 0)
    reason = pause_reason(groups, state)
    assert reason is not None and "short of its success threshold of 100%" in reason[1]


def test_a_device_is_in_the_first_group_that_takes_it() -> None:
    groups = _groups(
        {"name": "canary", "count": 2},
        {"name": "line-7", "tags": ["line-7", "line-8"]},
        {"name": "wave", "percent": 25},
        {"name": "rest", "tags": ["never"]},
    )
    # Target order, with each device's tags.
    fleet = [
        ["line-7"],  # 0: the canary takes it first (it has room)
        [],  # 1: canary
        ["line-7"],  # 2: line-7
        [],  # 3: wave (25% of 8 = 2)
        ["line-8", "x"],  # 4: line-7
        [],  # 5: wave
        [],  # 6: no group takes it: the last group
        ["line-7"],  # 7: line-7
    ]
    caps = capacities(groups, len(fleet))
    assert caps == [2, 0, 2, 0]
    fill = [0] * len(groups)
    assert [assign(groups, caps, tags, fill) for tags in fleet] == [0, 0, 1, 2, 1, 2, 3, 1]
    assert tag_group_sizes(groups, len(fleet), fleet) == [2, 3, 2, 1]


def test_a_group_has_one_of_percent_count_or_tags() -> None:
    for spec in (
        {"name": "a", "count": 1, "tags": ["t"]},
        {"name": "a"},
        {"name": "a", "tags": []},
    ):
        try:
            RolloutGroup.model_validate(spec)
        except ValueError:
            continue
        raise AssertionError(f"{spec} was accepted")


# --- on the real stack ---


async def _staged_job(stack: Stack, tag: str, groups: list[dict[str, Any]]) -> dict[str, Any]:
    return await stack.create_job(
        {"name": "REBOOT_EQUIPMENT", "target": {"append": {"tags": [tag]}}, "rollout": {
            "groups": groups}}
    )  # fmt: skip


def _time(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


async def test_the_second_group_starts_only_after_nine_of_the_first_ten_succeeded(
    stack: Stack,
) -> None:
    ids = [d["id"] for d in await stack.provision(100, tags=["staged"], prefix="stg-")]
    canary = ids[:10]
    # The canary answers one device at a time, 150 ms apart.
    for i, device_id in enumerate(canary):
        stack.fleet.behaviours[device_id] = Behaviour(delay_ms=150 * (i + 1))
    job = await _staged_job(
        stack,
        "staged",
        [
            {"name": "canary", "percent": 10, "successThreshold": 90},
            {"name": "wave", "percent": 40, "successThreshold": 90},
            {"name": "rest", "percent": 50},
        ],
    )
    done = await stack.wait_finished(job["id"], timeout=120)
    assert done["report"]["summary"]["finished"]["successful"] == 100
    assert [(g["name"], g["total"], g["successful"], g["status"]) for g in done["report"][
        "groups"]] == [("canary", 10, 10, "DONE"), ("wave", 40, 40, "DONE"),
                       ("rest", 50, 50, "DONE")]  # fmt: skip

    operations = {o["entityId"]: o for o in await stack.operations(job["id"])}
    ninth_success = sorted(_time(operations[d]["execution"]["finishedDate"]) for d in canary)[8]
    deliveries = (await stack.sim.get("/sim/deliveries")).json()["deliveries"]
    first_of_wave = min(d["received_at"] for d in deliveries if d["device_id"] in ids[10:50])
    first_of_rest = min(d["received_at"] for d in deliveries if d["device_id"] in ids[50:])
    assert first_of_wave >= ninth_success
    last_wave_success = sorted(
        _time(operations[d]["execution"]["finishedDate"]) for d in ids[10:50]
    )[35]
    assert first_of_rest >= last_wave_success
    assert (await stack.sim.get("/sim/stats")).json()["duplicates"] == 0


async def test_an_error_threshold_pauses_the_job_until_the_next_group_is_started(
    stack: Stack,
) -> None:
    ids = [d["id"] for d in await stack.provision(100, tags=["risky"], prefix="rsk-")]
    for device_id in ids[:3]:
        stack.fleet.behaviours[device_id] = Behaviour(result_code="ERROR_PROCESSING")
    for device_id in ids[3:10]:
        stack.fleet.behaviours[device_id] = Behaviour(delay_ms=500)
    job = await _staged_job(
        stack,
        "risky",
        [
            {"name": "canary", "percent": 10, "successThreshold": 90, "errorThreshold": 20},
            {"name": "wave", "percent": 40},
            {"name": "rest", "percent": 50},
        ],
    )
    url = f"{JOBS}/{job['id']}"

    async def paused() -> dict[str, Any]:
        found = (await stack.api.get(url)).json()
        assert found["report"]["summary"]["status"] == "PAUSED", found["report"]
        return dict(found)

    found = await eventually(paused, timeout=30)
    assert found["report"]["pausedReason"] == (
        "group canary: 3 of 10 failed, past its error threshold of 20%"
    )
    assert found["request"]["active"] is False
    # Nothing of the next groups was sent.
    deliveries = (await stack.sim.get("/sim/deliveries")).json()["deliveries"]
    assert {d["device_id"] for d in deliveries} <= set(ids[:10])

    answer = await stack.api.post(f"{url}/groups/next")
    assert answer.status_code == 200, answer.text
    assert answer.json()["report"]["summary"]["status"] == "IN_PROGRESS"
    assert "pausedReason" not in answer.json()["report"]
    done = await stack.wait_finished(job["id"], timeout=120)
    summary = done["report"]["summary"]
    assert summary["finished"]["successful"] == 97 and summary["finished"]["error"] == 3
    stats = (await stack.sim.get("/sim/stats")).json()
    assert stats["requests"] == 100 and stats["duplicates"] == 0
    # Every group has started now: another "next" is refused in the SPEC error body.
    again = await stack.api.post(f"{url}/groups/next")
    assert again.status_code == 400
    assert again.json()["errors"][0]["message"]
    _, failed = await failed_workflow_tasks(stack)
    assert failed == []


async def test_a_job_without_groups_has_no_next_group(stack: Stack) -> None:
    await stack.provision(1, tags=["plain"])
    job = await stack.create_job(
        {"name": "REBOOT_EQUIPMENT", "target": {"append": {"tags": ["plain"]}}, "active": False}
    )
    answer = await stack.api.post(f"{JOBS}/{job['id']}/groups/next")
    assert answer.status_code == 400
    assert "no rollout groups" in answer.json()["errors"][0]["message"]


async def test_hostile_groups_are_refused_with_the_field_named(stack: Stack) -> None:
    base = {"name": "REBOOT_EQUIPMENT", "target": {"append": {"tags": ["any"]}}}
    hostile: list[Any] = [
        [{"name": f"g{i}", "count": 1} for i in range(21)],  # more groups than allowed
        [],  # none at all
        [{"name": "a", "percent": 0}],
        [{"name": "a", "percent": 101}],
        [{"name": "a", "percent": "NaN"}],
        [{"name": "a", "count": 0}],
        [{"name": "a", "count": 2**63}],
        [{"name": "a", "percent": 10, "count": 5}],  # both sizes
        [{"name": "a"}],  # neither
        [{"name": "a", "count": 5, "successThreshold": -1}],
        [{"name": "a", "count": 5, "errorThreshold": 1e308}],
        [{"name": "x" * 65, "count": 5}],
        [{"name": "a\u0000b", "count": 5}],
        [{"name": "a", "count": 5, "unknown": True}],
        {"name": "a", "count": 5},  # not a list
        [{"name": "a", "tags": []}],  # tags, but none
        [{"name": "a", "tags": [f"t{i}" for i in range(11)]}],  # more tags than allowed
        [{"name": "a", "tags": ["x" * 10_000]}],
        [{"name": "a", "tags": ["a\ud800"]}],  # a lone surrogate
        [{"name": "a", "tags": "line-7"}],  # not a list
        [{"name": "a", "tags": ["t"], "count": 5}],  # tags and a size
    ]
    for groups in hostile:
        # Sent as escaped JSON: a lone surrogate has no UTF-8 form of its own.
        body = json.dumps({"job": {"request": {**base, "rollout": {"groups": groups}}}})
        answer = await stack.api.post(
            JOBS, content=body, headers={"Content-Type": "application/json"}
        )
        assert answer.status_code == 400, (groups, answer.text)
        [error] = answer.json()["errors"]
        assert "groups" in str(error), (groups, error)


async def test_groups_by_tag_run_one_after_the_other_wherever_their_devices_are(
    stack: Stack,
) -> None:
    # 30 devices in id order; every third one tagged line-7 (10 of them), spread over the fleet.
    ids = [d["id"] for d in await stack.provision(30, tags=["site"], prefix="tg-")]
    line7 = ids[2::3]
    for device_id in line7:
        answer = await stack.api.put(
            f"/north/v80/provision/devices/{device_id}", json={"tags": ["site", "line-7"]}
        )
        assert answer.status_code == 200, answer.text
    # The canary: the first 3 devices whatever their tags (one of them, tg-00003, is line-7's).
    canary, line7_group = ids[:3], [d for d in line7 if d not in ids[:3]]
    rest = [d for d in ids if d not in canary and d not in line7_group]
    job = await _staged_job(
        stack,
        "site",
        [
            {"name": "canary", "count": 3, "successThreshold": 100},
            {"name": "line-7", "tags": ["line-7"], "successThreshold": 100},
            {"name": "rest", "percent": 100},
        ],
    )
    done = await stack.wait_finished(job["id"], timeout=120)
    assert done["report"]["summary"]["finished"]["successful"] == 30
    assert [(g["name"], g["total"], g["successful"], g["status"]) for g in done["report"][
        "groups"]] == [("canary", 3, 3, "DONE"), ("line-7", 9, 9, "DONE"),
                       ("rest", 18, 18, "DONE")]  # fmt: skip

    # Each group's devices got their requests only after the group before it had succeeded.
    operations = {o["entityId"]: o for o in await stack.operations(job["id"])}
    deliveries = (await stack.sim.get("/sim/deliveries")).json()["deliveries"]
    received = {d["device_id"]: d["received_at"] for d in deliveries}
    assert sorted(received) == sorted(ids)
    for before, after in ((canary, line7_group), (line7_group, rest)):
        last_success = max(_time(operations[d]["execution"]["finishedDate"]) for d in before)
        assert min(received[d] for d in after) >= last_success, (before, after)
    stats = (await stack.sim.get("/sim/stats")).json()
    assert stats["requests"] == 30 and stats["duplicates"] == 0
    _, failed = await failed_workflow_tasks(stack)
    assert failed == []
