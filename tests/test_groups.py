"""Staged rollouts, ``rollout.groups`` (beyond OpenGate; issue 14): the rules on their own, then
jobs on the real stack whose second group waits for the first, pause on an error threshold, and
run on when the operator starts the next group."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest

from models.devices import Device
from models.jobs import RolloutGroup
from models.messages import GroupState, JobState
from simulator.fleet import Behaviour, Mode
from tests.stack import Stack, eventually, failed_workflow_tasks
from workflows.groups import (
    assign,
    capacities,
    count_closed,
    count_started,
    group_of_device,
    group_room,
    group_sizes,
    may_start,
    pause_reason,
    rejoin,
    release_next,
    settle,
    tag_group_sizes,
    uncount_started,
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


def test_the_room_runs_to_the_end_of_the_last_group_that_may_start() -> None:
    # The canary passes at half its devices (under maxConcurrency the rest are not started yet);
    # the small middle group may then start, and the rest must wait for the middle one.
    groups = _groups(
        {"name": "canary", "count": 4, "successThreshold": 50},
        {"name": "middle", "count": 2, "successThreshold": 100},
        {"name": "rest", "count": 10},
    )
    state = JobState(groups=group_sizes(groups, 16))
    for i in range(2):
        count_started(state, f"op-{i}", f"dev-{i}")
        count_closed(state, f"op-{i}", successful=True)
    assert may_start(groups, state, 1) and not may_start(groups, state, 2)
    # The canary's last 2 and the middle's 2, never a device of the rest.
    assert group_room(groups, state) == 4
    assert group_room(groups, state, look_ahead=False) is None  # older runs: no limit at all
    for i in range(2, 6):
        count_started(state, f"op-{i}", f"dev-{i}")
    assert [g.started for g in state.groups] == [4, 2, 0]
    assert group_room(groups, state) == 0
    # The operator releases the rest: nothing holds the targets back any more.
    release_next(groups, state)
    assert group_room(groups, state) is None


def test_a_released_group_opens_the_room_through_it() -> None:
    groups = _groups(
        {"name": "a", "count": 2, "successThreshold": 100},
        {"name": "b", "count": 2, "successThreshold": 100},
        {"name": "c", "count": 2, "successThreshold": 100},
        {"name": "d", "count": 2},
    )
    state = JobState(groups=group_sizes(groups, 8))
    count_started(state, "op-0", "dev-0")
    release_next(groups, state)  # b starts now, whatever a does
    assert group_room(groups, state) == 3  # a's last one and b's two, not c's
    release_next(groups, state)  # and c
    assert group_room(groups, state) == 5


def test_a_settled_group_is_as_big_as_what_it_started() -> None:
    # Groups by tags: line-7's count said 3, but one of its devices was untagged before its
    # pass; once the pass has read every target, its size is the 2 it started, so it can pass.
    groups = _groups(
        {"name": "canary", "count": 1, "successThreshold": 100},
        {"name": "line-7", "tags": ["line-7"], "successThreshold": 100},
        {"name": "rest", "percent": 100},
    )
    state = JobState(groups=[GroupState(size=s) for s in (1, 3, 4)], group_pass=0)
    count_started(state, "op-c", "dev-1")
    count_closed(state, "op-c", successful=True)
    settle(state)
    assert may_start(groups, state, 1)
    state.group_pass = 1
    for i in (2, 3):
        count_started(state, f"op-{i}", f"dev-{i}")
        count_closed(state, f"op-{i}", successful=True)
    assert not may_start(groups, state, 2)  # 2 of 3: short of 100% for ever, and no pause
    assert pause_reason(groups, state) is None
    settle(state)
    assert [g.size for g in state.groups] == [1, 2, 4]
    assert may_start(groups, state, 2)
    # A start the server refuses after the pass settled (the device ran in this job already)
    # leaves the size too.
    state.group_pass = 2
    for i in (4, 5):
        count_started(state, f"op-{i}", f"dev-{i}")
    settle(state)
    uncount_started(state, "op-5")
    assert (state.groups[2].size, state.groups[2].started) == (1, 1)


def test_a_group_by_tags_that_grew_before_its_pass_is_judged_on_what_it_started() -> None:
    groups = _groups(
        {"name": "canary", "count": 1},
        {"name": "line-7", "tags": ["line-7"], "successThreshold": 100, "errorThreshold": 50},
        {"name": "rest", "percent": 100},
    )
    # line-7 counted 3 devices; 2 more were tagged before its pass, which starts 5.
    state = JobState(groups=[GroupState(size=s) for s in (1, 3, 4)], group_pass=1)
    for i in range(5):
        count_started(state, f"op-{i}", f"dev-{i}")
    for i in range(3):
        count_closed(state, f"op-{i}", successful=i != 0)
    # 3 of 5 closed: not yet short of its threshold, as it would be of 3.
    assert pause_reason(groups, state) is None
    assert pause_reason(groups, state, follow_fleet=False) is not None
    count_closed(state, "op-3", successful=False)
    count_closed(state, "op-4", successful=False)
    reason = pause_reason(groups, state)
    assert reason is not None
    assert reason[1] == "group line-7: 3 of 5 failed, past its error threshold of 50%"


def test_percent_groups_settle_when_devices_left_the_fleet() -> None:
    # 100 counted, 80 left when the job read them: the wave took what the rest would have had,
    # and once every target was read the groups are what they started.
    groups = _groups(
        {"name": "canary", "percent": 10, "successThreshold": 100},
        {"name": "wave", "percent": 80, "successThreshold": 100},
        {"name": "rest", "percent": 10},
    )
    state = JobState(groups=group_sizes(groups, 100))
    for i in range(80):
        count_started(state, f"op-{i}", f"dev-{i:03d}")
        count_closed(state, f"op-{i}", successful=i != 50)
    assert [g.started for g in state.groups] == [10, 70, 0]
    assert pause_reason(groups, state) is None  # the wave is 10 short of its 80
    settle(state)
    assert [g.size for g in state.groups] == [10, 70, 0]
    # The wave closed short of 100%, but no group waits on it: the job finishes, unpaused.
    assert pause_reason(groups, state) is None
    assert pause_reason(groups, state, follow_fleet=False) is not None


def _device(device_id: str, *tags: str) -> Device:
    return Device.model_validate({"id": device_id, "type": "gateway", "tags": list(tags)})


def _by_id(device_id: str) -> tuple[int, str]:
    return (0, device_id)


def test_a_retried_operation_rejoins_its_group() -> None:
    groups = _groups(
        {"name": "canary", "count": 3, "successThreshold": 100, "errorThreshold": 20},
        {"name": "wave", "count": 3},
        {"name": "rest", "count": 3},
    )
    state = JobState(groups=group_sizes(groups, 9))
    for i in range(6):
        count_started(state, f"op-{i}", f"dev-{i}")
        count_closed(state, f"op-{i}", successful=i != 1)
    assert [(g.successful, g.failed) for g in state.groups] == [(2, 1), (3, 0), (0, 0)]
    assert [group_of_device(groups, state, _device(f"dev-{i}"), _by_id) for i in range(6)] == [
        0, 0, 0, 1, 1, 1]  # fmt: skip
    # The canary's failed operation is sent again: it is open in the canary again...
    assert rejoin(groups, state, "op-1", _device("dev-1"), _by_id, successful=False) == 0
    canary = state.groups[0]
    assert (canary.successful, canary.failed, canary.closed) == (2, 0, 2)
    # ...and its new outcome counts there: the canary passes, the rest may start.
    count_closed(state, "op-1", successful=True)
    assert (canary.successful, canary.failed, canary.closed) == (3, 0, 3)
    assert may_start(groups, state, 1)
    # A successful one retried leaves the successes; one whose group holds no such outcome, or
    # no longer among the targets, runs outside the groups.
    assert rejoin(groups, state, "op-4", _device("dev-4"), _by_id, successful=True) == 1
    assert state.groups[1].successful == 2
    assert rejoin(groups, state, "op-3", _device("dev-3"), _by_id, successful=False) is None
    gone = rejoin(groups, state, "op-x", _device("dev-0"), lambda _: None, successful=True)
    assert gone is None and "op-x" not in state.group_of


def test_a_retried_operation_of_a_job_grouped_by_tags_finds_its_group() -> None:
    groups = _groups(
        {"name": "canary", "count": 2},
        {"name": "line-7", "tags": ["line-7"]},
        {"name": "wave", "count": 2},
        {"name": "rest", "tags": ["never"]},
    )
    # Target order, with each device's tags: the groups as ``assign`` makes them.
    fleet = [("d0", "line-7"), ("d1",), ("d2", "line-7"), ("d3",), ("d4",), ("d5",), ("d6",)]
    caps, fill = capacities(groups, len(fleet)), [0] * len(groups)
    expected = [assign(groups, caps, tags, fill) for _, *tags in fleet]
    assert expected == [0, 0, 1, 2, 2, 3, 3]
    state = JobState(groups=[GroupState(size=expected.count(i)) for i in range(4)])
    for group in range(4):  # one pass per group
        state.group_pass = group
        for (device_id, *_), index in zip(fleet, expected, strict=True):
            if index == group:
                count_started(state, f"op-{device_id}", device_id)
    found = [group_of_device(groups, state, _device(d, *tags), _by_id) for d, *tags in fleet]
    assert found == expected


def test_the_next_group_of_a_job_not_started_yet_is_refused_with_the_reason() -> None:
    groups = _groups({"name": "canary", "count": 1}, {"name": "rest", "percent": 100})
    with pytest.raises(ValueError, match="formed when the job starts"):
        release_next(groups, JobState())
    with pytest.raises(ValueError, match="no rollout groups"):
        release_next(None, JobState())


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
    canary, slow = ids[:10], ids[9]
    # The canary answers one device at a time, 150 ms apart, but for its last device, which
    # answers 15 s after its request: the wave must start at the ninth success, not the tenth.
    for i, device_id in enumerate(canary[:9]):
        stack.fleet.behaviours[device_id] = Behaviour(delay_ms=150 * (i + 1))
    stack.fleet.behaviours[slow] = Behaviour(mode=Mode.ASYNC, delay_ms=15_000)
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
    # ...and before the slow tenth closed: 90% was enough.
    assert first_of_wave < _time(operations[slow]["execution"]["finishedDate"])
    last_wave_success = sorted(
        _time(operations[d]["execution"]["finishedDate"]) for d in ids[10:50]
    )[35]
    assert first_of_rest >= last_wave_success
    assert (await stack.sim.get("/sim/stats")).json()["duplicates"] == 0


@pytest.mark.parametrize("override", ["groups/next", "resume"])
async def test_an_error_threshold_pauses_the_job_until_the_operator_overrides_it(
    stack: Stack, override: str
) -> None:
    """The operator goes on past a group that paused the job with ``groups/next``, or with a
    plain resume (``PUT active: true``), which releases the group that waits as well."""
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

    if override == "groups/next":
        answer = await stack.api.post(f"{url}/groups/next")
    else:
        answer = await stack.api.put(url, json={"job": {"request": {"active": True}}})
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

    # A job with groups that has not started (IDLE here) has no groups formed yet: they are
    # sized from the count of its targets, taken when it starts.
    staged = await stack.create_job(
        {"name": "REBOOT_EQUIPMENT", "target": {"append": {"tags": ["plain"]}}, "active": False,
         "rollout": {"groups": [{"name": "canary", "count": 1}, {"name": "rest",
                                                                 "percent": 100}]}}
    )  # fmt: skip
    assert staged["report"]["summary"]["status"] == "IDLE"
    answer = await stack.api.post(f"{JOBS}/{staged['id']}/groups/next")
    assert answer.status_code == 400, answer.text
    message = answer.json()["errors"][0]["message"]
    assert "formed when the job starts" in message, message


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


async def test_a_retried_canary_operation_counts_in_its_group_again(stack: Stack) -> None:
    # The canary trips its error threshold on 3 errors; the operator retries the 3, they
    # succeed, and the canary shows no failure: resumed, the canary passes, the job runs the
    # rest and finishes.
    ids = [d["id"] for d in await stack.provision(20, tags=["retry-g"], prefix="rtg-")]
    for device_id in ids[:3]:
        stack.fleet.behaviours[device_id] = Behaviour(result_code="ERROR_PROCESSING")
    job = await _staged_job(
        stack,
        "retry-g",
        [
            {"name": "canary", "count": 10, "successThreshold": 90, "errorThreshold": 20},
            {"name": "rest", "percent": 100},
        ],
    )
    url = f"{JOBS}/{job['id']}"

    async def tripped() -> None:
        found = await stack.job(job["id"])
        assert found["report"]["summary"]["status"] == "PAUSED", found["report"]
        assert found["report"]["groups"][0]["failed"] == 3, found["report"]["groups"]

    await eventually(tripped, timeout=30)
    for device_id in ids[:3]:
        stack.fleet.behaviours[device_id] = Behaviour()
    operations = {o["entityId"]: o for o in await stack.operations(job["id"])}
    for device_id in ids[:3]:
        operation_id = operations[device_id]["operationId"]
        retried = await stack.api.post(f"{url}/operations/{operation_id}/retry")
        assert retried.status_code == 200, retried.text

    # The retries ran while the job is paused (canary operations the pause held before they
    # were sent are still open): their successes count in the canary, their errors no more.
    async def retried_in_the_canary() -> None:
        canary = (await stack.job(job["id"]))["report"]["groups"][0]
        assert (canary["failed"], canary["started"]) == (0, 10), canary
        assert canary["successful"] >= 3 and canary["successful"] == canary["closed"], canary

    await eventually(retried_in_the_canary, timeout=20)
    resumed = await stack.api.put(url, json={"job": {"request": {"active": True}}})
    assert resumed.status_code == 200, resumed.text
    done = await stack.wait_finished(job["id"], timeout=60)
    assert done["report"]["summary"]["finished"]["successful"] == 20
    groups = [
        (g["name"], g["successful"], g["failed"], g["status"]) for g in done["report"]["groups"]
    ]
    assert groups == [("canary", 10, 0, "DONE"), ("rest", 10, 0, "DONE")]
    _, failed = await failed_workflow_tasks(stack)
    assert failed == []


async def test_groups_hold_under_max_concurrency(stack: Stack) -> None:
    ids = [d["id"] for d in await stack.provision(40, tags=["mc"], prefix="mc-")]
    delay = 0.4
    for device_id in ids:
        stack.fleet.behaviours[device_id] = Behaviour(delay_ms=round(delay * 1000))
    job = await stack.create_job(
        {"name": "REBOOT_EQUIPMENT", "target": {"append": {"tags": ["mc"]}}, "rollout": {
            "maxConcurrency": 5, "groups": [{"name": "canary", "percent": 25,
                                             "successThreshold": 100}, {"name": "rest",
                                                                        "percent": 75}]}}
    )  # fmt: skip
    done = await stack.wait_finished(job["id"], timeout=60)
    assert done["report"]["summary"]["finished"]["successful"] == 40
    deliveries = (await stack.sim.get("/sim/deliveries")).json()["deliveries"]
    received = {d["device_id"]: d["received_at"] for d in deliveries}
    assert sorted(received) == ids and len(deliveries) == 40
    # Each device is busy from its request until its answer, a part of its operation's time
    # open: never more than 5 at once.
    moments = sorted(
        [(t, 1) for t in received.values()] + [(t + delay, -1) for t in received.values()],
        key=lambda moment: (moment[0], moment[1]),
    )
    busy, most = 0, 0
    for _, step in moments:
        busy += step
        most = max(most, busy)
    assert 1 < most <= 5, most
    # The rest's first request came after the canary's last answer.
    canary, rest = ids[:10], ids[10:]
    assert min(received[d] for d in rest) >= max(received[d] for d in canary) + delay


async def test_a_group_by_tags_that_lost_a_device_before_its_pass_still_passes(
    stack: Stack,
) -> None:
    # 12 devices, every third one tagged line-7; the canary takes the first 3 (one of them
    # line-7's), line-7 then has 3 devices, the rest 6.
    ids = [d["id"] for d in await stack.provision(12, tags=["lost"], prefix="lst-")]
    for device_id in ids[2::3]:
        answer = await stack.api.put(
            f"/north/v80/provision/devices/{device_id}", json={"tags": ["lost", "line-7"]}
        )
        assert answer.status_code == 200, answer.text
    stack.fleet.behaviours[ids[0]] = Behaviour(mode=Mode.ASYNC, delay_ms=3000)
    job = await _staged_job(
        stack,
        "lost",
        [
            {"name": "canary", "count": 3, "successThreshold": 100},
            {"name": "line-7", "tags": ["line-7"], "successThreshold": 100},
            {"name": "rest", "percent": 100},
        ],
    )

    async def counted() -> None:
        groups = (await stack.job(job["id"]))["report"].get("groups")
        assert groups and [g["total"] for g in groups] == [3, 3, 6], groups

    await eventually(counted, timeout=20)
    # One of line-7's devices leaves the inventory while the canary still runs.
    gone = ids[8]
    deleted = await stack.api.delete(f"/north/v80/provision/devices/{gone}")
    assert deleted.status_code == 200, deleted.text
    done = await stack.wait_finished(job["id"], timeout=60)
    assert done["report"]["summary"]["total"] == 11
    assert done["report"]["summary"]["finished"]["successful"] == 11
    assert [(g["name"], g["total"], g["successful"], g["status"]) for g in done["report"][
        "groups"]] == [("canary", 3, 3, "DONE"), ("line-7", 2, 2, "DONE"),
                       ("rest", 6, 6, "DONE")]  # fmt: skip
    deliveries = (await stack.sim.get("/sim/deliveries")).json()["deliveries"]
    assert gone not in {d["device_id"] for d in deliveries}
