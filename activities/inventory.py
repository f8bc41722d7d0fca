"""The inventory as seen by jobs: a job's targets, counted once and then read page by page."""

from __future__ import annotations

from collections.abc import AsyncIterator

from pydantic import BaseModel
from temporalio import activity

from inventory.store import Inventory
from models.devices import Device
from models.jobs import RolloutGroup, TargetSelection
from workflows.groups import assign, capacities, tag_group_sizes


class CountTargetsInput(BaseModel):
    selection: TargetSelection
    # Groups by tags: sized by one pass over the targets.
    groups: list[RolloutGroup] | None = None


class TargetCount(BaseModel):
    total: int
    not_provisioned: list[str] = []
    duplicated: list[str] = []
    # Tags: the latest tag join before the count, where a continuous job reads joins from.
    last_join: int = 0
    # Groups by tags: each group's size, and how many each percent or count group takes.
    group_sizes: list[int] | None = None
    group_caps: list[int] | None = None


class ReadTargetsInput(BaseModel):
    selection: TargetSelection
    # Listed targets: the index in the de-duplicated list to read from. Tags: the last device id
    # already read (keyset paging in id order).
    from_index: int = 0
    after_id: str | None = None
    limit: int
    # Groups by tags: answer only the devices of group ``group`` (the page is read whole, and
    # ``fill`` follows every device of it, answered or not).
    group: int | None = None
    groups: list[RolloutGroup] = []
    caps: list[int] = []
    fill: list[int] = []


class TargetPage(BaseModel):
    devices: list[Device]
    # Listed targets: each device's index in the de-duplicated list, and where the next page
    # starts. The page is the last one when ``done``.
    positions: list[int] = []
    next_index: int = 0
    done: bool
    # Groups by tags: ``fill`` after the page, and the last device id read (the next page's
    # keyset for tags), whether answered or not.
    fill: list[int] = []
    last_id: str | None = None


class ReadJoinsInput(BaseModel):
    tags: list[str]
    after: int
    limit: int


class JoinedPage(BaseModel):
    """Devices that joined the tags, each with the number of its join, in join order; ``last``
    is the number of the last join read, the next read's ``after``."""

    devices: list[Device]
    joins: list[int]
    last: int
    # Whether ``limit`` joins were read: more may be waiting.
    more: bool


class InventoryActivities:
    def __init__(self, inventory: Inventory) -> None:
        self._inventory = inventory

    @activity.defn(name="count_targets")
    async def count_targets(self, input: CountTargetsInput) -> TargetCount:
        if input.selection.tags:
            # The joins' cursor first: a device tagged after it is either counted too (and
            # reached once: continuous jobs name operations by device) or read as a join.
            last_join = await self._inventory.last_tag_join()
            total = await self._inventory.count_with_tags(input.selection.tags)
            count = TargetCount(total=total, last_join=last_join)
        else:
            unique, duplicated = input.selection.unique_listed()
            found: set[str] = set()
            for i in range(0, len(unique), 1000):
                chunk = unique[i : i + 1000]
                found.update(d.id for d in await self._inventory.devices_with_ids(chunk))
            missing = [d for d in unique if d not in found]
            count = TargetCount(total=len(found), not_provisioned=missing, duplicated=duplicated)
        if input.groups and any(group.tags is not None for group in input.groups):
            tags = [d.tags async for d in self._every_target(input.selection)]
            count.total = len(tags)
            count.group_sizes = tag_group_sizes(input.groups, count.total, tags)
            count.group_caps = capacities(input.groups, count.total)
        return count

    async def _every_target(self, selection: TargetSelection) -> AsyncIterator[Device]:
        """Every target in target order (a staged rollout by tags sizes its groups so)."""
        after: str | None = None
        index = 0
        while True:
            page = await self.read_targets(
                ReadTargetsInput(selection=selection, from_index=index, after_id=after, limit=5000)
            )
            for device in page.devices:
                yield device
            if page.done:
                return
            after = page.devices[-1].id if page.devices else after
            index = page.next_index

    @activity.defn(name="read_targets")
    async def read_targets(self, input: ReadTargetsInput) -> TargetPage:
        page = await self._read_page(input)
        if input.group is None:
            return page
        # One group's devices: every device of the page moves the groups' fill, in order.
        fill = list(input.fill or [0] * len(input.groups))
        kept = [
            (device, position)
            for device, position in zip(
                page.devices, page.positions or [0] * len(page.devices), strict=True
            )
            if assign(input.groups, input.caps, device.tags, fill) == input.group
        ]
        return TargetPage(
            devices=[device for device, _ in kept],
            positions=[position for _, position in kept] if page.positions else [],
            next_index=page.next_index,
            done=page.done,
            fill=fill,
            last_id=page.devices[-1].id if page.devices else input.after_id,
        )

    async def _read_page(self, input: ReadTargetsInput) -> TargetPage:
        if input.selection.tags:
            devices = await self._inventory.devices_with_tags(
                input.selection.tags, input.after_id, input.limit
            )
            return TargetPage(devices=devices, done=len(devices) < input.limit)
        unique, _ = input.selection.unique_listed()
        chunk = unique[input.from_index : input.from_index + input.limit]
        by_id = {d.id: d for d in await self._inventory.devices_with_ids(chunk)}
        found = [(i, by_id[d]) for i, d in enumerate(chunk, input.from_index) if d in by_id]
        next_index = input.from_index + len(chunk)
        return TargetPage(
            devices=[device for _, device in found],
            positions=[i for i, _ in found],
            next_index=next_index,
            done=next_index >= len(unique),
        )

    @activity.defn(name="read_joins")
    async def read_joins(self, input: ReadJoinsInput) -> JoinedPage:
        found, last, more = await self._inventory.devices_joined(
            input.tags, input.after, input.limit
        )
        return JoinedPage(
            devices=[device for device, _ in found],
            joins=[seq for _, seq in found],
            last=last,
            more=more,
        )
