"""What a job costs the Temporal server per device: history events, workflow tasks, and Temporal
Cloud *actions*, counted from the histories of the job's runs and of a sample of its operations.

Actions are counted by Temporal Cloud's published list of what is billed (docs.temporal.io,
"Temporal Cloud Actions"), for what a history shows:
- a workflow started: by a client, a continue-as-new or a child start (each run's first event);
- an activity started or retried: one per attempt (the attempt number of its started event);
- local activities: one per workflow task that ran any (their markers);
- a timer started; a search-attribute upsert (one per command, those that only record a patch's
  ``TemporalChangeVersion`` excepted); a signal (counted where it was received); an update
  accepted by the workflow.
Heartbeats that reach the server are actions too, but a history does not show them: the table
says so rather than guessing. Queries are not counted (the API reads memos, not queries).
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowHistory

from core.temporal import OPERATION_WORKFLOW, of_type

# The SDKs record local activities as markers of this name.
LOCAL_ACTIVITY_MARKER = "core_local_activity"
PATCH_ATTRIBUTE = "TemporalChangeVersion"
# Histories read at once.
FETCH_CONCURRENCY = 20

_E = EventType


@dataclass
class Costs:
    """Totals over some histories, by kind."""

    histories: int = 0
    events: int = 0
    workflow_tasks: int = 0
    actions: Counter[str] = field(default_factory=Counter)

    @property
    def total_actions(self) -> int:
        return sum(self.actions.values())

    def add(self, history: WorkflowHistory) -> None:
        self.histories += 1
        self.events += len(history.events)
        local_activity_tasks: set[int] = set()
        task = 0
        for event in history.events:
            if event.event_type == _E.EVENT_TYPE_WORKFLOW_TASK_STARTED:
                self.workflow_tasks += 1
                task += 1
            elif event.event_type == _E.EVENT_TYPE_MARKER_RECORDED:
                if event.marker_recorded_event_attributes.marker_name == LOCAL_ACTIVITY_MARKER:
                    local_activity_tasks.add(task)
            else:
                self._count(event)
        self.actions["local activities"] += len(local_activity_tasks)

    def _count(self, event: HistoryEvent) -> None:
        kind = event.event_type
        if kind == _E.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
            self.actions["workflow starts"] += 1
        elif kind == _E.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            self.actions["activity attempts"] += max(
                1, event.activity_task_started_event_attributes.attempt
            )
        elif kind == _E.EVENT_TYPE_TIMER_STARTED:
            self.actions["timers"] += 1
        elif kind == _E.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES:
            fields = event.upsert_workflow_search_attributes_event_attributes.search_attributes
            if set(fields.indexed_fields) - {PATCH_ATTRIBUTE}:
                self.actions["search-attribute upserts"] += 1
        elif kind == _E.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            self.actions["signals"] += 1
        elif kind == _E.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED:
            self.actions["updates"] += 1


@dataclass
class JobCosts:
    """A job's costs: its own runs, all of them, and a sample of its operations."""

    devices: int
    job: Costs
    operations: Costs
    longest_run: int

    def per_device(self) -> tuple[float, float, float]:
        """History events, workflow tasks and actions per device (the job's share included)."""
        n, ops = self.devices, max(1, self.operations.histories)
        events = self.job.events / n + self.operations.events / ops
        tasks = self.job.workflow_tasks / n + self.operations.workflow_tasks / ops
        actions = self.job.total_actions / n + self.operations.total_actions / ops
        return events, tasks, actions

    def rows(self) -> list[tuple[str, str]]:
        events, tasks, actions = self.per_device()
        n, ops = self.devices, max(1, self.operations.histories)
        kinds = sorted(set(self.job.actions) | set(self.operations.actions))
        by_kind = ", ".join(
            f"{kind} {self.job.actions[kind] / n + self.operations.actions[kind] / ops:.2f}"
            for kind in kinds
        )
        return [
            ("cost/device: history events", f"{events:.1f}"),
            (
                "  of which in the job / operation",
                f"{self.job.events / n:.1f} / {self.operations.events / ops:.1f}",
            ),
            ("cost/device: workflow tasks", f"{tasks:.2f}"),
            (
                "  of which in the job / operation",
                f"{self.job.workflow_tasks / n:.2f} / {self.operations.workflow_tasks / ops:.2f}",
            ),
            ("cost/device: Cloud actions", f"{actions:.2f} (heartbeats not in histories)"),
            ("  by kind", by_kind),
            (
                "job runs / longest run (events)",
                f"{self.job.histories} / {self.longest_run} "
                f"(sample of {self.operations.histories} operations)",
            ),
        ]


async def _histories(
    client: Client, query: str, limit: int | None, concurrency: int = FETCH_CONCURRENCY
) -> list[WorkflowHistory]:
    executions = [e async for e in client.list_workflows(query, page_size=1000)]
    if limit is not None and len(executions) > limit:
        executions = random.Random(7).sample(executions, limit)
    gate = asyncio.Semaphore(concurrency)

    async def fetch(workflow_id: str, run_id: str | None) -> WorkflowHistory:
        async with gate:
            return await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()

    return await asyncio.gather(*(fetch(e.id, e.run_id) for e in executions))


def _costs(histories: Iterable[WorkflowHistory]) -> Costs:
    costs = Costs()
    for history in histories:
        costs.add(history)
    return costs


async def job_costs(
    client: Client,
    job_id: str,
    devices: int,
    operation_sample: int = 200,
    fetch_concurrency: int = FETCH_CONCURRENCY,
) -> JobCosts:
    """The costs of a closed job: every run of its workflow, and ``operation_sample`` of its
    operations chosen at random (their mean stands for every operation)."""
    runs = await _histories(client, f"WorkflowId = '{job_id}'", None, fetch_concurrency)
    operations = await _histories(
        client,
        f"{of_type(OPERATION_WORKFLOW)} AND JobId = '{job_id}'",
        operation_sample,
        fetch_concurrency,
    )
    return JobCosts(
        devices=devices,
        job=_costs(runs),
        operations=_costs(operations),
        longest_run=max((len(h.events) for h in runs), default=0),
    )


async def workflow_costs(client: Client, query: str, sample: int = 200) -> Costs:
    """The costs of a sample of the workflows ``query`` matches (the ceilings' workflows)."""
    return _costs(await _histories(client, query, sample))
