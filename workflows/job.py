"""One job: resolve the targets, fan out one operation workflow per device, count the outcomes.

The fan-out is a sliding window (``FanOutSettings.window`` operations in flight), filled in
batches of at most ``start_batch`` child starts per workflow task so that a task never runs long
enough to trip the deadlock detector, and so that the child starts of consecutive tasks overlap.
Children are started with ``ParentClosePolicy.ABANDON`` and report back by signal: a run that
continues-as-new carries its in-flight set, and the children it started report to the new run.
Targets are read from the inventory page by page from a cursor, so no run ever holds the whole
target list, and the counters of SPEC 3.1 travel in the carried state.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import ChildWorkflowError, WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
    from activities.inventory import (
        CountTargetsInput,
        InventoryActivities,
        ReadTargetsInput,
        TargetPage,
    )
    from core.temporal import (
        ENTITY_ID,
        JOB_ID,
        JOB_STATUS,
        OPERATION_NAME,
        OPERATION_STATUS,
        operation_workflow_id,
    )
    from models.devices import Device
    from models.enums import CancelReason, JobStatus, OperationStatus
    from models.jobs import Job, TargetSelection
    from models.messages import (
        JOB_REPORT_MEMO,
        JobInput,
        JobState,
        OperationClosed,
        OperationInput,
        OperationLate,
        OperationProgress,
        job_memo,
        report,
    )
    from models.summary import Bucket, closed_bucket
    from workflows.operation import OPERATION_MEMO, OperationWorkflow, initial_operation

INVENTORY_TIMEOUT = timedelta(seconds=60)
# The report in the memo is republished at most this often while the counters move.
PUBLISH_INTERVAL = timedelta(seconds=1)
INVENTORY_RETRY = RetryPolicy(maximum_interval=timedelta(seconds=10))


@workflow.defn
class JobWorkflow:
    @workflow.init
    def __init__(self, input: JobInput) -> None:
        if not input.job_id:  # started by a task's schedule
            info = workflow.info()
            input = input.model_copy(
                update={"job_id": info.workflow_id, "created_at": info.start_time}
            )
        self._input = input
        self._state = input.state or JobState()
        # The devices of the current inventory page not started yet, each with the cursor value
        # that points past it. Not carried over: a new run reads again from the cursor.
        self._page: list[tuple[Device, int]] = []
        self._page_end = 0
        # Child starts issued and not yet acknowledged by the server.
        self._starts: set[asyncio.Task[None]] = set()
        self._signals_this_run = 0
        self._dirty = False

    # --- reads and inputs ---

    @workflow.query
    def job(self) -> Job:
        return self._input.view(self._state)

    @workflow.signal
    def operation_progress(self, progress: OperationProgress) -> None:
        self._signals_this_run += 1
        bucket = self._state.in_flight.get(progress.operation_id)
        if bucket is None:  # already closed: a late or repeated progress report
            return
        new_bucket = Bucket.for_status(progress.status)
        self._state.counts.move(bucket, new_bucket)
        self._state.in_flight[progress.operation_id] = new_bucket
        self._dirty = True

    @workflow.signal
    def operation_closed(self, closed: OperationClosed) -> None:
        self._signals_this_run += 1
        bucket = self._state.in_flight.pop(closed.operation_id, None)
        if bucket is None:  # a repeated report: counted once
            return
        self._state.counts.move(bucket, closed_bucket(closed.result, closed.cancel_reason))
        self._dirty = True
        if closed.cancel_reason == CancelReason.BY_TIMEOUT:
            # The operation takes a late answer for a while: the job waits for it to be counted.
            state = self._state
            state.late_pending += 1
            until = workflow.now() + timedelta(milliseconds=self._input.late_answer_grace_ms)
            state.late_until = max(state.late_until or until, until)

    @workflow.signal
    def operation_late(self, late: OperationLate) -> None:
        self._signals_this_run += 1
        self._state.counts.add_out_of_time(late.result)
        self._state.late_pending = max(0, self._state.late_pending - 1)
        self._dirty = True

    # --- the run ---

    @workflow.run
    async def run(self, input: JobInput) -> Job:
        state = self._state
        if state.execution.started_date is None:
            state.execution.activated_date = self._input.created_at
            state.execution.started_date = workflow.now()
        publisher = asyncio.create_task(self._publish_while_running())
        if not state.cursor.counted:
            await self._count_targets()
            self._publish()
        while True:
            await workflow.wait_condition(
                lambda: self._can_start() or self._finished() or self._should_continue_as_new()
            )
            if self._finished():
                break
            if self._should_continue_as_new():
                await self._continue_as_new()
            if self._can_start():
                await self._start_batch()
        self._set_status(JobStatus.FINISHED)
        if state.execution.finished_date is None:
            state.execution.finished_date = workflow.now()
        await self._wait_for_late_answers()
        await workflow.wait_condition(workflow.all_handlers_finished)
        publisher.cancel()
        self._publish()
        return self.job()

    async def _count_targets(self) -> None:
        count = await workflow.execute_activity_method(
            InventoryActivities.count_targets,
            CountTargetsInput(selection=self._selection),
            start_to_close_timeout=INVENTORY_TIMEOUT,
            retry_policy=INVENTORY_RETRY,
        )
        self._state.counts.add(Bucket.SCHEDULED, count.total)
        self._state.target_report.not_provisioned = count.not_provisioned
        self._state.target_report.duplicated = count.duplicated
        self._state.cursor.counted = True

    @property
    def _selection(self) -> TargetSelection:
        assert self._input.request.target is not None
        return self._input.request.target.append

    def _room(self) -> int:
        fan_out = self._input.fan_out
        return min(
            fan_out.window - len(self._state.in_flight),
            fan_out.start_batch - len(self._starts),
        )

    def _can_start(self) -> bool:
        has_targets = bool(self._page) or not self._state.cursor.exhausted
        return has_targets and self._room() > 0

    def _finished(self) -> bool:
        return self._state.cursor.exhausted and not self._page and not self._state.in_flight

    def _should_continue_as_new(self) -> bool:
        info = workflow.info()
        return (
            info.is_continue_as_new_suggested()
            or info.get_current_history_length() >= self._input.fan_out.max_history_events
            or self._signals_this_run >= self._input.fan_out.max_signals_per_run
        )

    async def _start_batch(self) -> None:
        if not self._page:
            await self._read_page()
        batch = self._page[: self._room()]
        del self._page[: len(batch)]
        cursor = self._state.cursor
        for device, position in batch:
            operation_id = str(workflow.uuid4())
            self._state.in_flight[operation_id] = Bucket.PENDING_EXECUTION
            self._state.counts.move(Bucket.SCHEDULED, Bucket.PENDING_EXECUTION)
            # Started without waiting: the next batch goes out while the server creates these.
            start = asyncio.create_task(self._start_operation(operation_id, device))
            self._starts.add(start)
            start.add_done_callback(self._starts.discard)
            cursor.after_id = device.id
            cursor.next_index = position + 1
        if not self._page:
            cursor.next_index = self._page_end

    async def _read_page(self) -> None:
        cursor = self._state.cursor
        page: TargetPage = await workflow.execute_activity_method(
            InventoryActivities.read_targets,
            ReadTargetsInput(
                selection=self._selection,
                from_index=cursor.next_index,
                after_id=cursor.after_id,
                limit=self._input.fan_out.page_size,
            ),
            start_to_close_timeout=INVENTORY_TIMEOUT,
            retry_policy=INVENTORY_RETRY,
        )
        positions = page.positions or [0] * len(page.devices)
        self._page = list(zip(page.devices, positions, strict=True))
        self._page_end = page.next_index
        cursor.exhausted = page.done
        # The count was taken when the job started and the inventory may have changed since:
        # devices beyond the count join the total, and after the last page, counted devices that
        # are gone leave it, so the summary always adds up.
        scheduled = self._state.counts[Bucket.SCHEDULED]
        if page.done or scheduled < len(page.devices):
            self._state.counts.add(Bucket.SCHEDULED, len(page.devices) - scheduled)

    async def _start_operation(self, operation_id: str, device: Device) -> None:
        request = self._input.request
        op_input = OperationInput(
            operation_id=operation_id,
            job_id=self._input.job_id,
            job_workflow_id=workflow.info().workflow_id,
            device=device,
            name=request.name,
            parameters={**request.parameters, **self._selection.parameters_of(device.id)},
            user=request.user,
            operation_parameters=request.operation_parameters,
            activated_at=workflow.now(),
            late_answer_grace_ms=self._input.late_answer_grace_ms,
        )
        try:
            await workflow.start_child_workflow(
                OperationWorkflow.run,
                op_input,
                id=operation_workflow_id(operation_id),
                parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                search_attributes=TypedSearchAttributes(
                    [
                        SearchAttributePair(JOB_ID, self._input.job_id),
                        SearchAttributePair(ENTITY_ID, device.id),
                        SearchAttributePair(OPERATION_NAME, request.name),
                        SearchAttributePair(
                            OPERATION_STATUS, OperationStatus.PENDING_EXECUTION.value
                        ),
                    ]
                ),
                memo={OPERATION_MEMO: initial_operation(op_input)},
            )
        except (ChildWorkflowError, WorkflowAlreadyStartedError) as err:
            workflow.logger.warning(
                "operation %s on %s not started: %s", operation_id, device.id, err
            )
            self.operation_closed(
                OperationClosed(
                    operation_id=operation_id,
                    status=OperationStatus.CANCELLED,
                    cancel_reason=CancelReason.BY_ENGINE,
                )
            )

    async def _continue_as_new(self) -> None:
        # Every start must be acknowledged before this run ends, and every signal handled.
        await workflow.wait_condition(lambda: not self._starts and workflow.all_handlers_finished())
        self._state.runs += 1
        workflow.continue_as_new(
            self._input.model_copy(update={"state": self._state}),
            memo=job_memo(self._input, self._state),
        )

    def _set_status(self, status: JobStatus) -> None:
        if self._state.status != status:
            self._state.status = status
            workflow.upsert_search_attributes([JOB_STATUS.value_set(status.value)])
            self._publish()

    def _publish(self) -> None:
        workflow.upsert_memo({JOB_REPORT_MEMO: report(self._state)})
        self._dirty = False

    async def _publish_while_running(self) -> None:
        # Counters move with every signal; the memo follows at most once per interval, and a
        # quiet job costs no events at all.
        while True:
            await workflow.wait_condition(lambda: self._dirty)
            self._publish()
            await workflow.sleep(PUBLISH_INTERVAL)

    async def _wait_for_late_answers(self) -> None:
        """The job is FINISHED; operations cancelled by timeout may still answer late (SPEC 3.2:
        counted in ``finishedOutOfTime``), so the run stays open until each has answered or its
        grace has run out."""
        state = self._state
        while state.late_pending and state.late_until and state.late_until > workflow.now():
            try:
                await workflow.wait_condition(
                    lambda: not state.late_pending or self._should_continue_as_new(),
                    timeout=state.late_until - workflow.now(),
                )
            except TimeoutError:
                return
            if state.late_pending and self._should_continue_as_new():
                await self._continue_as_new()
