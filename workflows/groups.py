"""(beyond OpenGate) Staged rollouts, ``rollout.groups``: the job's devices in target order are cut
into groups; a group starts once the group before it has done well enough, and a group that
fails too often pauses the job. Pure rules over the request and the carried state, as
workflows/policies.py (tests/test_groups.py).

- Sizes are fixed when the job counts its targets: ``count`` devices, or ``percent`` of the total
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
  ``active: true``) or releases the next group.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from models.jobs import RolloutGroup
from models.messages import GroupState, JobState


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


def group_room(groups: list[RolloutGroup] | None, state: JobState) -> int | None:
    """How many more operations the groups let start now; None when the job has no groups."""
    if not groups or not state.groups:
        return None
    if state.group_pass is not None:  # by tags: the pass reads the devices of one group
        return None if may_start(groups, state, state.group_pass) else 0
    index = group_at(state, state.started)
    if not may_start(groups, state, index):
        return 0
    if index == len(state.groups) - 1:
        return None  # the last group: the rest of the targets, however many they turn out
    room = _end_of(state, index) - state.started
    # The next group may already be free to start too: its devices join this batch.
    if may_start(groups, state, index + 1):
        return None
    return room


def count_started(state: JobState, operation_id: str) -> None:
    if not state.groups:
        return
    index = group_at(state, state.started) if state.group_pass is None else state.group_pass
    state.group_of[operation_id] = index
    state.groups[index].started += 1
    state.started += 1


def uncount_started(state: JobState, operation_id: str) -> None:
    """An operation counted started that the server refused (its device ran already)."""
    index = state.group_of.pop(operation_id, None)
    if index is not None:
        state.groups[index].started -= 1


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


def pause_reason(groups: list[RolloutGroup] | None, state: JobState) -> tuple[int, str] | None:
    """The group that must pause the job now, and why (each group does so once)."""
    if not groups or not state.groups:
        return None
    for index, (config, group) in enumerate(zip(groups, state.groups, strict=False)):
        if group.tripped:
            continue
        threshold = config.error_threshold
        if threshold is not None and group.failed * 100 > threshold * group.size:
            return index, (
                f"group {config.name}: {group.failed} of {group.size} failed, past its error "
                f"threshold of {threshold:g}%"
            )
        last = index == len(state.groups) - 1
        next_waits = not last and not state.groups[index + 1].released
        if next_waits and group.closed >= group.size and not passed(config, group):
            return index, (
                f"group {config.name}: {group.successful} of {group.size} successful, short of "
                f"its success threshold of {config.success_threshold:g}%"
            )
    return None


def release_next(groups: list[RolloutGroup] | None, state: JobState) -> None:
    """``groups/next``: the first group that may not start yet starts now."""
    if not groups or not state.groups:
        raise ValueError("the job has no rollout groups")
    for index in range(1, len(state.groups)):
        if not may_start(groups, state, index):
            state.groups[index].released = True
            return
    raise ValueError("every group of the job has started")
