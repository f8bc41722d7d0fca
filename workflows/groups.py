"""(beyond OpenGate) Staged rollouts, ``rollout.groups``: the job's devices in target order are cut
into groups; a group starts once the group before it has done well enough, and a group that
fails too often pauses the job. Pure rules over the request and the carried state, as
workflows/policies.py (tests/test_groups.py).

- Sizes are set when the job counts its targets: ``count`` devices, or ``percent`` of the total
  (rounded down, at least one while devices are left), in order; the devices no group took,
  and devices found beyond the count later, join the last group.
- Groups by ``tags`` take the devices carrying one of their tags, wherever they are in target
  order: a device is in the first group that takes it (a percent or count group takes the next
  devices until it is full). Such a job counts each group's devices in one pass over its targets
  when it starts, then starts the groups one pass each: pass ``i`` reads the targets again and
  starts the devices of group ``i`` alone (``assign`` decides, the same way every time).
- Group ``i + 1`` starts when group ``i`` has ``successThreshold`` % of its operations
  successful, or, with a threshold of 0, when every operation of group ``i`` has closed; or at
  once when the operator releases it (``POST .../groups/next``).
- A group whose failed share (errors and cancellations) passes its ``errorThreshold`` pauses the
  job, once, with the reason; so does a group that closed every operation short of its success
  threshold (the next group would otherwise wait for ever). The operator resumes (``PUT``
  ``active: true``) or releases the next group. A group short of its success threshold after
  which no device is left (every later group settled empty) pauses nothing: no group waits.
- Sizes follow the fleet: once the targets of a group were all read (the last page of its pass,
  or of the job for percent and count groups) its size is what was started (``settle``), so a
  device deleted, untagged or moved before it was reached neither stalls its group nor the job.
- An operator's retry of a closed operation takes its outcome back out of its group and puts it
  back in the group's open operations (``rejoin``). The job does not keep the group of every
  closed operation (100,000 of them would not fit in the state a run carries); it finds the
  group from the device: the last device each group started, in target order, bounds the group
  (a percent or count group takes the devices that reach it, in order, until it is full), and a
  tags group takes the devices carrying its tags.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

from models.devices import Device
from models.jobs import RolloutGroup
from models.messages import GroupState, JobState

# A device's place in target order (device id order for tags, list order for listed ids); None
# for a device no longer among the targets.
TargetOrder = Callable[[str], tuple[int, str] | None]


def group_sizes(groups: list[RolloutGroup], total: int) -> list[GroupState]:
    states, left = [], total
    for group in groups:
        if group.count is not None:
            size = group.count
        else:
            assert group.percent is not None
            size = max(1, math.floor(total * group.percent / 100)) if left else 0
        size = min(size, left)
        states.append(GroupState(size=size))
        left -= size
    states[-1].size += left
    return states


def by_tags(groups: list[RolloutGroup] | None) -> bool:
    """Whether the groups are taken group by group, one pass over the targets each."""
    return bool(groups) and any(group.tags is not None for group in groups or [])


def capacities(groups: list[RolloutGroup], total: int) -> list[int]:
    """How many devices each percent or count group takes at most (0 for tag groups)."""
    return [
        0
        if group.tags is not None
        else group.count
        if group.count is not None
        else max(1, math.floor(total * (group.percent or 0) / 100))
        for group in groups
    ]


def assign(
    groups: list[RolloutGroup], caps: list[int], device_tags: Iterable[str], fill: list[int]
) -> int:
    """The group of the next device in target order, which carries ``device_tags``: the first
    group that takes it. ``fill`` holds how many devices each percent or count group took
    before it, and is updated; a device no group takes joins the last group."""
    tags = set(device_tags)
    for index, group in enumerate(groups):
        if group.tags is not None:
            if tags.intersection(group.tags):
                return index
        elif fill[index] < caps[index]:
            fill[index] += 1
            return index
    return len(groups) - 1


def tag_group_sizes(
    groups: list[RolloutGroup], total: int, devices_tags: Iterable[Iterable[str]]
) -> list[int]:
    """Each group's size, from one pass over the targets' tags in target order."""
    caps, fill = capacities(groups, total), [0] * len(groups)
    sizes = [0] * len(groups)
    for tags in devices_tags:
        sizes[assign(groups, caps, tags, fill)] += 1
    return sizes


def group_at(state: JobState, position: int) -> int:
    """The group of the device at ``position`` in target order (the last group past them all)."""
    end = 0
    for index, group in enumerate(state.groups):
        end += group.size
        if position < end:
            return index
    return len(state.groups) - 1


def _end_of(state: JobState, index: int) -> int:
    return sum(group.size for group in state.groups[: index + 1])


def passed(config: RolloutGroup, group: GroupState) -> bool:
    """Whether a group has done well enough for the next one to start."""
    if config.success_threshold == 0:
        return group.closed >= group.size
    return group.successful * 100 >= config.success_threshold * group.size


def may_start(groups: list[RolloutGroup], state: JobState, index: int) -> bool:
    if index == 0 or state.groups[index].released:
        return True
    return passed(groups[index - 1], state.groups[index - 1])


def group_room(
    groups: list[RolloutGroup] | None, state: JobState, look_ahead: bool = True
) -> int | None:
    """How many more operations the groups let start now; None when the job has no groups.

    The room runs to the end of the last group that may start: the current group's, or further
    when the groups after it may start too (the current one passed its threshold before all its
    devices started, under ``maxConcurrency``, or the operator released the next one). None only
    when that is the last group. ``look_ahead`` False: the rule of older runs, which looked one
    group ahead only and then set no limit at all.
    """
    if not groups or not state.groups:
        return None
    if state.group_pass is not None:  # by tags: the pass reads the devices of one group
        return None if may_start(groups, state, state.group_pass) else 0
    index = group_at(state, state.started)
    if not may_start(groups, state, index):
        return 0
    last = len(state.groups) - 1
    if not look_ahead:
        if index == last or may_start(groups, state, index + 1):
            return None
        return _end_of(state, index) - state.started
    while index < last and may_start(groups, state, index + 1):
        index += 1
    if index == last:
        return None  # the last group: the rest of the targets, however many they turn out
    return _end_of(state, index) - state.started


def count_started(state: JobState, operation_id: str, device_id: str | None = None) -> None:
    if not state.groups:
        return
    index = group_at(state, state.started) if state.group_pass is None else state.group_pass
    state.group_of[operation_id] = index
    group = state.groups[index]
    group.started += 1
    group.last_device = device_id
    state.started += 1


def uncount_started(state: JobState, operation_id: str) -> None:
    """An operation counted started that the server refused (its device ran already)."""
    index = state.group_of.pop(operation_id, None)
    if index is not None:
        group = state.groups[index]
        group.started -= 1
        if group.settled:
            group.size = group.started


def settle(state: JobState) -> None:
    """Every target was read (of the current pass, for groups by tags): the groups read are as
    big as what they started. A device deleted, untagged or moved since the count would
    otherwise leave its group short of its size for ever, and the next group waiting on it."""
    if not state.groups:
        return
    one_pass = state.group_pass is not None
    for group in [state.groups[state.group_pass or 0]] if one_pass else state.groups:
        group.size = group.started
        group.settled = True


def group_of_device(
    groups: list[RolloutGroup], state: JobState, device: Device, order: TargetOrder
) -> int | None:
    """The group that started ``device``'s operation, by the rule that put it there: the first
    group that takes it, a tags group by its tags, a percent or count group if the device comes
    no later in target order than the last device it started; a device no group takes is in the
    last group. None when the device is no longer among the targets."""
    place = order(device.id)
    if place is None or len(groups) != len(state.groups):
        return None
    tags = set(device.tags)
    for index, (config, group) in enumerate(zip(groups, state.groups, strict=True)):
        if config.tags is not None:
            if tags.intersection(config.tags):
                return index
            continue
        last = order(group.last_device) if group.last_device is not None else None
        if last is not None and place <= last:
            return index
    return len(state.groups) - 1


def rejoin(
    groups: list[RolloutGroup] | None,
    state: JobState,
    operation_id: str,
    device: Device,
    order: TargetOrder,
    successful: bool,
) -> int | None:
    """An operator retries a closed operation: its outcome (``successful`` or not) leaves its
    group, which counts it open again, and its next close. The group it rejoined, or None when
    it is not found (a job without groups, an operation started by older code, or a device whose
    tags or place changed so that the group found holds no such outcome): the retry then runs
    outside the groups, as its close was counted."""
    if not groups or not state.groups:
        return None
    index = group_of_device(groups, state, device, order)
    if index is None:
        return None
    group = state.groups[index]
    if group.closed == 0 or (group.successful if successful else group.failed) == 0:
        return None
    group.closed -= 1
    if successful:
        group.successful -= 1
    else:
        group.failed -= 1
    state.group_of[operation_id] = index
    return index


def count_closed(state: JobState, operation_id: str, successful: bool) -> None:
    index = state.group_of.pop(operation_id, None)
    if index is None:
        return
    group = state.groups[index]
    group.closed += 1
    if successful:
        group.successful += 1
    else:
        group.failed += 1


def pause_reason(
    groups: list[RolloutGroup] | None, state: JobState, follow_fleet: bool = True
) -> tuple[int, str] | None:
    """The group that must pause the job now, and why (each group does so once).

    ``follow_fleet`` (False: the rule of older runs): a group that started more devices than it
    counted (groups by tags, whose inventory grew before their pass) is judged on what it
    started, not on its count; and a group short of its success threshold pauses nothing when
    every group after it settled empty, since no group waits on it.
    """
    if not groups or not state.groups:
        return None
    for index, (config, group) in enumerate(zip(groups, state.groups, strict=False)):
        if group.tripped:
            continue
        size = max(group.size, group.started) if follow_fleet else group.size
        threshold = config.error_threshold
        if threshold is not None and group.failed * 100 > threshold * size:
            return index, (
                f"group {config.name}: {group.failed} of {size} failed, past its error "
                f"threshold of {threshold:g}%"
            )
        last = index == len(state.groups) - 1
        next_waits = not last and not state.groups[index + 1].released
        if next_waits and follow_fleet:
            next_waits = not all(g.settled and g.size == 0 for g in state.groups[index + 1 :])
        if next_waits and group.closed >= size and not passed(config, group):
            return index, (
                f"group {config.name}: {group.successful} of {size} successful, short of "
                f"its success threshold of {config.success_threshold:g}%"
            )
    return None


def release_next(groups: list[RolloutGroup] | None, state: JobState) -> None:
    """``groups/next``: the first group that may not start yet starts now."""
    if not groups:
        raise ValueError("the job has no rollout groups")
    if not state.groups:
        # Sized from the count of the targets, which the job takes when it starts.
        raise ValueError(
            "the job's rollout groups are formed when the job starts: start it (or wait for its "
            "schedule.start), then start its next group"
        )
    for index in range(1, len(state.groups)):
        if not may_start(groups, state, index):
            state.groups[index].released = True
            return
    raise ValueError("every group of the job has started")
