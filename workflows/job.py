"""One job: resolve the targets, fan out one operation workflow per device, count the outcomes.

The fan-out is a sliding window (``FanOutSettings.window`` operations in flight), filled in
batches of at most ``start_batch`` child starts per workflow task so that a task never runs long
enough to trip the deadlock detector, and so that the child starts of consecutive tasks overlap.
Children are started with ``ParentClosePolicy.ABANDON``. The run that started a child counts its
close from the child's completion (an event this run's history holds anyway, so the close costs
no signal); a run that continues-as-new carries its in-flight set and first tells each child it
started that is still open to report its close by signal, which then reaches the new run.
Targets are read from the inventory page by page from a cursor, so no run ever holds the whole
target list, and the counters of SPEC 3.1 travel in the carried state.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import (
    RetryPolicy,
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    ChildWorkflowError,
    WorkflowAlreadyStartedError,
)

with workflow.unsafe.imports_passed_through():
    from activities.callbacks import CallbackActivities
    from activities.inventory import (
        CountTargetsInput,
        InventoryActivities,
        JoinedPage,
        ReadJoinsInput,
        ReadTargetsInput,
        TargetPage,
    )
    from activities.runs import (
        RUN_REPLACED,
        RetireRunInput,
        RunActivities,
        TellOperationsInput,
    )
    from core.temporal import (
        ENTITY_ID,
        JOB_CHANGE,
        JOB_ID,
        JOB_REPORT_MEMO,
        JOB_REQUEST_MEMO,
        JOB_STATE_TRANSITION,
        JOB_STATUS,
        JOB_WORKFLOW,
        OPERATION_MEMO,
        OPERATION_NAME,
        OPERATION_STATUS,
        TRANSITION_ERROR,
        JobSignal,
        OperationSignal,
        operation_workflow_id,
    )
    from models.bounds import violations
    from models.devices import Device
    from models.enums import CancelReason, JobEvent, JobStatus, OperationStatus
    from models.jobs import Job, JobTarget, RolloutGroup, TargetSelection
    from models.messages import (
        CallbackInput,
        GroupState,
        JobChange,
        JobInput,
        JobState,
        OperationClosed,
        OperationInput,
        OperationLate,
        OperationOrder,
        OperationProgress,
        OperationRetry,
        OperationStop,
        job_memo,
        report,
    )
    from models.operations import Operation
    from models.summary import Bucket, closed_bucket
    from workflows.groups import (
        TargetOrder,
        by_tags,
        count_closed,
        count_started,
        group_room,
        group_sizes,
        may_start,
        pause_reason,
        rejoin,
        release_next,
        settle,
        uncount_started,
    )
    from workflows.operation import OperationWorkflow, initial_operation
    from workflows.policies import (
        callback_payload,
        count_paced,
        pace_reset,
        pace_room,
        progress,
        should_abort,
    )

# workflow.patched ids: behaviour that running jobs recorded without.
COUNT_TARGETS_AT_EARLY_CANCEL = "count-targets-at-early-cancel"
CLOSES_BY_COMPLETION = "closes-by-completion"
HOLD_AFTER_STARTS = "hold-after-starts"
CANCELLING_IN_ANSWER = "cancelling-in-answer"
STEADY_TIMERS = "steady-timers"
# Staged groups: the room runs to the end of the last group that may start, a group's size is
# what it started once its targets were all read, and a group short of its success threshold
# with only empty groups after it pauses nothing (workflows/groups.py).
GROUPS_FOLLOW_THE_FLEET = "groups-follow-the-fleet"
# An operator's retry takes the closed outcome out of its group and rejoins it.
RETRY_REJOINS_GROUP = "retry-rejoins-group"
# Resuming a job a group paused releases the group that waits on it, as groups/next does.
RESUME_RELEASES_GROUP = "resume-releases-group"
# A retry retires the run it read first, refused if a later run replaced it (another retry),
# and only then moves the counters; one retry of an operation at a time.
RETRY_CHECKS_ITS_RUN = "retry-checks-its-run"
# A continuous job reads no more joined devices than it may start at once.
JOINS_AS_ROOM_ALLOWS = "joins-as-room-allows"
# Orders to operations (hold, stop, report by signal) go by update, sent by an activity, not by
# signal (models.messages.OperationOrder says why).
TELL_BY_UPDATE = "tell-by-update"
# Operations one activity gives an order to; its heartbeat and its time.
ORDER_BATCH = 500
ORDER_HEARTBEAT = timedelta(seconds=10)
ORDER_TIMEOUT = timedelta(minutes=5)
# The failure type of a retry refused because the operation is open, or being retried.
OPERATION_OPEN = "OperationOpen"
INVENTORY_TIMEOUT = timedelta(seconds=60)
# External signals sent at once when the job pauses, resumes or stops its operations.
SIGNAL_BATCH = 100
# Callback delivery: retried with exponential back-off for at most this long.
CALLBACK_DEADLINE = timedelta(minutes=10)
CALLBACK_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
)
# The report in the memo is republished at most this often while the counters move.
PUBLISH_INTERVAL = timedelta(seconds=1)
INVENTORY_RETRY = RetryPolicy(maximum_interval=timedelta(seconds=10))


_RUNNING = (JobStatus.IN_PROGRESS, JobStatus.PAUSED)
# Operations that have not reached their device yet: a pause holds them.
_NOT_SENT = (Bucket.PENDING_EXECUTION, Bucket.WAITING_FOR_CONNECTION)


@workflow.defn(name=JOB_WORKFLOW)
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
        # Whether that page holds devices that joined the tags (a continuous job), each with its
        # join's number, rather than a page of the targets.
        self._page_of_joins = False
        # Child starts issued and not yet acknowledged by the server.
        self._starts: set[asyncio.Task[None]] = set()
        # The children this run started and follows to their completion, by operation id.
        self._children: dict[str, asyncio.Task[None]] = {}
        # Whether this run counts its children's closes from their completions (set by run).
        self._follows_children = False
        # Whether this run applies today's rules of staged groups (set by run).
        self._groups_follow = False
        # Whether this run gives its operations orders by update (set by run), and how many
        # orders it gave (each order's updates get an id of their own).
        self._tells_by_update = False
        self._orders = 0
        # The children this run told to report their close by signal (it continues-as-new).
        self._handed_over: set[str] = set()
        self._signals_this_run = 0
        self._dirty = False
        # Bumped by every change, so waits re-read the request.
        self._revision = 0
        # Runs of operations an operator retried, which this run may still follow.
        self._retired_runs: set[str] = set()
        # Operations whose retry is retiring their closed run (not yet counted open again).
        self._retrying: set[str] = set()
        # The fan-out's timers by the moment they fire: started once, never cancelled.
        self._alarms: dict[datetime, asyncio.Task[None]] = {}

    # --- reads and inputs ---

    @workflow.query
    def job(self) -> Job:
        return self._input.view(self._state)

    @workflow.signal(name=JobSignal.PROGRESS)
    def operation_progress(self, progress: OperationProgress) -> None:
        self._signals_this_run += 1
        bucket = self._state.in_flight.get(progress.operation_id)
        if bucket is None:  # already closed: a late or repeated progress report
            return
        new_bucket = Bucket.for_status(progress.status)
        self._state.counts.move(bucket, new_bucket)
        self._state.in_flight[progress.operation_id] = new_bucket
        self._dirty = True

    @workflow.signal(name=JobSignal.CLOSED)
    def operation_closed(self, closed: OperationClosed) -> None:
        self._signals_this_run += 1
        self._count_closed(closed)

    def _count_closed(self, closed: OperationClosed) -> None:
        bucket = self._state.in_flight.pop(closed.operation_id, None)
        if bucket is None:  # a repeated report: counted once
            return
        outcome = closed_bucket(closed.result, closed.cancel_reason)
        self._state.counts.move(bucket, outcome)
        count_closed(self._state, closed.operation_id, outcome is Bucket.SUCCESSFUL)
        self._dirty = True
        if closed.cancel_reason == CancelReason.BY_TIMEOUT:
            # The operation takes a late answer for a while: the job waits for it to be counted.
            state = self._state
            state.late_pending += 1
            until = workflow.now() + timedelta(milliseconds=self._input.late_answer_grace_ms)
            state.late_until = max(state.late_until or until, until)

    @workflow.signal(name=JobSignal.LATE)
    def operation_late(self, late: OperationLate) -> None:
        self._signals_this_run += 1
        self._state.counts.add_out_of_time(late.result)
        self._state.late_pending = max(0, self._state.late_pending - 1)
        self._dirty = True

    # --- changes ---

    @workflow.update(name=JOB_CHANGE)
    async def change(self, change: JobChange) -> Job:
        """PUT (pause, resume, reschedule, retarget before the start...) or DELETE (cancel)."""
        state = self._state
        if change.cancel:
            state.stopping = CancelReason.BY_USER
            # The DELETE's answer says CANCELLING, as the job's next read would (patched: jobs
            # cancelled under older code set it in the main loop, in the same workflow task).
            if state.status in _RUNNING and workflow.patched(CANCELLING_IN_ANSWER):
                self._set_status(JobStatus.CANCELLING)
        elif change.retry is not None:
            await self._retry(change.retry)
        elif change.next_group:
            release_next(self._groups, state)
            if state.paused_reason is not None and state.status == JobStatus.PAUSED:
                # The operator overrides the group that paused the job: it runs on.
                await self._set_active(True)
        elif change.request is not None:
            was_active = self._input.request.active
            old_target = self._input.request.target
            self._input = self._input.model_copy(update={"request": change.request})
            if state.cursor.counted and change.request.target != old_target:
                self._retarget_running(old_target)
            workflow.upsert_memo({JOB_REQUEST_MEMO: change.request})
            if change.request.active:
                if state.paused_reason is not None and workflow.patched(RESUME_RELEASES_GROUP):
                    # A group paused the job and the operator resumes it: an override, as
                    # groups/next (else the group that waits on the paused one waits for ever).
                    with contextlib.suppress(ValueError):  # every group has started
                        release_next(self._groups, state)
                state.paused_reason = None
            if was_active != change.request.active and state.status in _RUNNING:
                self._set_status(
                    JobStatus.IN_PROGRESS if change.request.active else JobStatus.PAUSED
                )
                if not change.request.active and workflow.patched(HOLD_AFTER_STARTS):
                    # Children whose start is still on its way are held too, once started.
                    await workflow.wait_condition(lambda: not self._starts)
                # Hold the operations not sent yet; operations already sent run on.
                hold = OperationOrder(hold=not change.request.active)
                await self._tell_operations(hold, _NOT_SENT)
        self._revision += 1
        self._dirty = True
        return self.job()

    async def _retry(self, retry: OperationRetry) -> None:
        """An operator sends a closed operation again: it leaves the bucket it closed in, its
        closed run is retired (so one execution stands for the operation), and a new run of the
        same workflow id makes the next attempt, outside the window and the pacing."""
        operation_id = retry.operation_id
        if not workflow.patched(RETRY_CHECKS_ITS_RUN):
            self._reopen(retry)
            await self._retire(retry, check_latest=False)
        else:
            # Another retry of this operation is on its way (its validator ran before this one
            # took the operation back): refused, as the validator refuses an open operation.
            if operation_id in self._retrying or operation_id in self._state.in_flight:
                raise ApplicationError(
                    f"operation {operation_id} is still open", type=OPERATION_OPEN
                )
            self._retrying.add(operation_id)
            try:
                await self._retire(retry, check_latest=True)
                self._reopen(retry)
            finally:
                self._retrying.discard(operation_id)
        start = asyncio.create_task(self._start_operation(operation_id, retry.device, retry))
        self._starts.add(start)
        start.add_done_callback(self._starts.discard)
        await start

    def _reopen(self, retry: OperationRetry) -> None:
        """The retried operation leaves the bucket it closed in and counts as open again."""
        state = self._state
        operation_id = retry.operation_id
        closed_in = closed_bucket(retry.result, retry.cancel_reason)
        state.counts.move(closed_in, Bucket.PENDING_EXECUTION)
        state.in_flight[operation_id] = Bucket.PENDING_EXECUTION
        if state.groups and workflow.patched(RETRY_REJOINS_GROUP):
            # Its group counts it open again, and counts its next close: a canary that
            # tripped on errors the operator retried with success lets the next group start.
            successful = closed_in is Bucket.SUCCESSFUL
            order = self._target_order()
            if rejoin(self._groups, state, operation_id, retry.device, order, successful) is None:
                workflow.logger.info("operation %s retried outside the groups", operation_id)
        if retry.cancel_reason == CancelReason.BY_TIMEOUT and not retry.out_of_time:
            # Its run was waiting for a late answer, and is retired: the job waits no longer.
            state.late_pending = max(0, state.late_pending - 1)
        self._dirty = True
        # A run this job still follows (one waiting for a late answer) is no longer counted.
        self._retired_runs.add(retry.run_id)
        self._children.pop(operation_id, None)

    async def _retire(self, retry: OperationRetry, check_latest: bool) -> None:
        """Terminate (if waiting for a late answer) and delete the retried run. With
        ``check_latest``, a run that a later run replaced since the operator read it (a retry
        through another API process) is refused, before any counter moved."""
        operation_id = retry.operation_id
        retire = RetireRunInput(
            workflow_id=operation_workflow_id(operation_id),
            run_id=retry.run_id,
            check_latest=check_latest,
        )
        try:
            await workflow.execute_activity_method(
                RunActivities.retire_run,
                retire,
                start_to_close_timeout=INVENTORY_TIMEOUT,
                retry_policy=INVENTORY_RETRY,
                summary=f"retire the closed run of operation {operation_id}",
            )
        except ActivityError as err:
            cause = err.cause
            if isinstance(cause, ApplicationError) and cause.type == RUN_REPLACED:
                raise ApplicationError(
                    f"operation {operation_id} was retried since it was read", type=OPERATION_OPEN
                ) from err
            raise

    async def _set_active(self, active: bool) -> None:
        """Pause or resume the job on its own (a staged rollout's group), as a PUT would."""
        request = self._input.request.model_copy(update={"active": active})
        self._input = self._input.model_copy(update={"request": request})
        workflow.upsert_memo({JOB_REQUEST_MEMO: request})
        if active:
            self._state.paused_reason = None
        self._set_status(JobStatus.IN_PROGRESS if active else JobStatus.PAUSED)
        await self._tell_operations(OperationOrder(hold=not active), _NOT_SENT)

    def _group_pause(self) -> tuple[int, str] | None:
        if self._state.status != JobStatus.IN_PROGRESS or self._state.stopping is not None:
            return None
        return pause_reason(self._groups, self._state, follow_fleet=self._groups_follow)

    async def _pause_for_group(self, index: int, reason: str) -> None:
        workflow.logger.warning("job %s paused: %s", self._input.job_id, reason)
        self._state.groups[index].tripped = True
        self._state.paused_reason = reason
        await workflow.wait_condition(lambda: not self._starts)
        await self._set_active(False)

    def _retarget_running(self, old_target: JobTarget | None) -> None:
        """A started job's list of entities changed: ids appended run later, ids removed that
        were not started yet never run. The cursor keeps pointing past the started ids (their
        order is kept, appended ids come last), and the page in memory is read again."""
        assert old_target is not None and old_target.append is not None
        old_ids, _ = old_target.append.unique_listed()
        new_ids, _ = self._selection.unique_listed()
        cursor = self._state.cursor
        started = set(old_ids[: cursor.next_index])
        cursor.next_index = sum(1 for device_id in new_ids if device_id in started)
        gone_unstarted = len(set(old_ids) - set(new_ids) - started)
        counts = self._state.counts
        counts.add(Bucket.SCHEDULED, -min(gone_unstarted, counts[Bucket.SCHEDULED]))
        self._page = []
        cursor.exhausted = False

    @change.validator
    def _check_change(self, change: JobChange) -> None:
        status = self._state.status
        if status in (JobStatus.FINISHED, JobStatus.CANCELLED, JobStatus.CANCELLING):
            raise ApplicationError(TRANSITION_ERROR, type=JOB_STATE_TRANSITION)
        retargeted = change.request is not None and (
            change.request.target != self._input.request.target
        )
        if retargeted and self._state.cursor.counted and self._selection.tags:
            raise ValueError("the tags of a started job do not change; create another job")
        if change.request is not None and (
            change.request.continuous != self._input.request.continuous
        ):
            raise ValueError("whether a job is continuous does not change; create another job")
        problem = change.request and violations(change.request, workflow.now())
        if problem:
            raise ValueError(f"invalid request: {problem}")
        if change.next_group:
            release_next(self._groups, self._state.model_copy(deep=True))
        if change.retry is not None:
            if self._state.stopping is not None:  # past its deadline, or being cancelled
                raise ApplicationError(TRANSITION_ERROR, type=JOB_STATE_TRANSITION)
            operation_id = change.retry.operation_id
            if operation_id in self._state.in_flight or operation_id in self._retrying:
                raise ValueError(f"operation {operation_id} is still open")

    # --- the run ---

    @workflow.run
    async def run(self, input: JobInput) -> Job:
        state = self._state
        # Runs of older code counted every close from the child's signal.
        self._follows_children = workflow.patched(CLOSES_BY_COMPLETION)
        self._groups_follow = workflow.patched(GROUPS_FOLLOW_THE_FLEET)
        self._tells_by_update = workflow.patched(TELL_BY_UPDATE)
        publisher = asyncio.create_task(self._publish_while_running())
        deliverer = asyncio.create_task(self._deliver_callbacks())
        if state.execution.activated_date is None:
            state.execution.activated_date = self._input.created_at
        if input.state is None:  # the first run: is this a request the API would take?
            state.rejected = violations(self._input, workflow.now())
        if state.rejected is not None:
            await self._reject(state.rejected)
        elif not await self._wait_for_start():
            await self._cancel_before_start()
        elif not state.cursor.counted:
            await self._count_targets()
            self._publish()
            self._callback(JobEvent.INITIATED)
        if state.stopping is None and state.rejected is None:
            if state.execution.started_date is None:
                state.execution.started_date = workflow.now()
                self._set_status(
                    JobStatus.IN_PROGRESS if self._input.request.active else JobStatus.PAUSED
                )
                self._callback(JobEvent.STARTED)
            await self._fan_out()
        cancelled = state.stopping == CancelReason.BY_USER
        if state.execution.finished_date is None:
            state.execution.finished_date = workflow.now()
        self._set_status(JobStatus.CANCELLED if cancelled else JobStatus.FINISHED)
        await self._wait_for_late_answers()
        self._callback(JobEvent.FINISHED)
        # A receiver that never answers costs the job nothing: its status is already final.
        await workflow.wait_condition(
            lambda: not state.callback_queue and workflow.all_handlers_finished()
        )
        publisher.cancel()
        deliverer.cancel()
        self._publish()
        return self.job()

    async def _reject(self, problem: str) -> None:
        """A request the API would refuse, which reached Temporal some other way: running it
        could fail every workflow task (a duration past its bound overflows a timer), so its
        targets are counted and closed as cancelled by the engine, and the job finishes."""
        workflow.logger.error("job %s: the engine cannot run it: %s", self._input.job_id, problem)
        if self._input.request.target is not None and not self._state.cursor.counted:
            await self._count_targets()
        self._drop_unstarted(Bucket.CANCELLED_BY_ENGINE)

    async def _cancel_before_start(self) -> None:
        """Cancelled while SCHEDULED or IDLE: its targets are counted now and closed with the
        job's reason, so its summary tells how many devices the cancel spared (docs/api.md)."""
        state = self._state
        if state.cursor.counted or self._input.request.target is None or state.stopping is None:
            return
        # Jobs cancelled before their start under older code ended with a total of 0.
        if workflow.patched(COUNT_TARGETS_AT_EARLY_CANCEL):
            await self._count_targets()
            self._drop_unstarted(Bucket.for_cancel(state.stopping))

    async def _wait_for_start(self) -> bool:
        """IDLE while inactive, SCHEDULED until ``schedule.start``; False if cancelled first."""
        state = self._state
        while state.stopping is None and state.execution.started_date is None:
            request = self._input.request
            waiting = request.waiting_status(self._created_at, workflow.now())
            changed = self._changed_since(self._revision)
            if waiting is None:
                break
            self._set_status(waiting)
            if waiting is JobStatus.IDLE:
                await workflow.wait_condition(changed)
                continue
            assert request.schedule is not None and request.schedule.start is not None
            start_at = request.schedule.start.resolve(self._created_at)
            try:
                await workflow.wait_condition(
                    changed, timeout=start_at - workflow.now(), timeout_summary="scheduled start"
                )
            except TimeoutError:
                break
        return state.stopping is None

    def _changed_since(self, revision: int) -> Callable[[], bool]:
        return lambda: self._revision != revision or self._state.stopping is not None

    async def _fan_out(self) -> None:
        state = self._state
        steady = workflow.patched(STEADY_TIMERS)
        while True:
            # A timeout is the job's deadline, or the next pacing window.
            if steady:
                alarm = self._alarm(self._next_moment())
                await workflow.wait_condition(functools.partial(self._ready, alarm))
            else:
                with contextlib.suppress(TimeoutError):
                    await workflow.wait_condition(
                        self._ready,
                        timeout=self._next_deadline(),
                        timeout_summary="the job's deadline or its next pace window",
                    )
            if self._past_deadline() and state.stopping is None:
                state.stopping = CancelReason.BY_TIMEOUT
            if self._should_abort():
                self._abort()
            if state.stopping is not None and not state.stop_signalled:
                await self._stop_operations(state.stopping)
            pause = self._group_pause()
            if pause is not None:
                await self._pause_for_group(*pause)
            if self._finished():
                return
            if self._should_continue_as_new():
                await self._continue_as_new()
            if self._joins_due():
                await self._read_joins()
            if self._can_start():
                await self._start_batch()

    # --- deadlines, pacing, stopping ---

    @property
    def _created_at(self) -> datetime:
        return self._input.created_at or workflow.info().start_time

    def _deadline(self) -> datetime | None:
        schedule = self._input.request.schedule
        if schedule is None or schedule.stop is None:
            return None
        return schedule.stop.resolve(self._state.execution.started_date or self._created_at)

    def _past_deadline(self) -> bool:
        deadline = self._deadline()
        return deadline is not None and workflow.now() >= deadline

    def _ready(self, alarm: asyncio.Task[None] | None = None) -> bool:
        """Whether the fan-out has something to do: start, stop, pause, hand over or finish."""
        return (
            self._can_start()
            or self._finished()
            or self._should_continue_as_new()
            or self._must_stop()
            or self._group_pause() is not None
            or self._joins_due()
            or self._next_pass_due()
            or (alarm is not None and alarm.done())
        )

    def _next_moment(self) -> datetime | None:
        """The job's deadline or the start of its next pacing window, whichever comes first."""
        now = workflow.now()
        pace = pace_reset(self._input.request.rollout, self._state, now)
        joins = self._state.cursor.next_join_read if self._reads_joins() else None
        moments = [m for m in (self._deadline(), pace, joins) if m is not None and m > now]
        return min(moments) if moments else None

    def _next_deadline(self) -> timedelta | None:
        moment = self._next_moment()
        return None if moment is None else moment - workflow.now()

    def _alarm(self, moment: datetime | None) -> asyncio.Task[None] | None:
        """A timer firing at ``moment``, shared by every wait for that moment and never cancelled.

        A wait with a timeout starts a timer and cancels it when the condition wins: two events
        per wake-up, and on a paced job every child's close wakes the loop. A timer per moment
        costs two events per moment instead, and the server never sees a cancel racing the
        timer's own fire (which the time-skipping test server refuses, then never redelivers
        the workflow task).
        """
        if moment is None:
            return None
        for done in [m for m, t in self._alarms.items() if t.done()]:
            del self._alarms[done]
        alarm = self._alarms.get(moment)
        if alarm is None:
            alarm = asyncio.ensure_future(
                workflow.sleep(
                    moment - workflow.now(), summary="the job's deadline or its next pace window"
                )
            )
            self._alarms[moment] = alarm
        return alarm

    def _must_stop(self) -> bool:
        state = self._state
        return (state.stopping is not None and not state.stop_signalled) or self._should_abort()

    def _should_abort(self) -> bool:
        state = self._state
        if state.aborted or state.stopping:
            return False
        return should_abort(self._input.request.rollout, state.counts)

    def _abort(self) -> None:
        """A bad rollout: nothing more is started; operations already started finish."""
        state = self._state
        state.aborted = True
        workflow.logger.warning(
            "job %s: rollout aborted on its failure threshold", self._input.job_id
        )
        self._drop_unstarted(Bucket.CANCELLED_BY_ENGINE)

    def _drop_unstarted(self, bucket: Bucket) -> None:
        state = self._state
        state.cursor.exhausted = True
        if state.group_pass is not None:  # groups by tags: no pass is left to read
            state.group_pass = len(state.groups) - 1
        self._page = []
        state.counts.move(Bucket.SCHEDULED, bucket, state.counts[Bucket.SCHEDULED])
        self._dirty = True

    async def _stop_operations(self, reason: CancelReason) -> None:
        """Cancel the job's open operations (and those never started) for ``reason``."""
        state = self._state
        if reason == CancelReason.BY_USER:
            self._set_status(JobStatus.CANCELLING)
        self._drop_unstarted(Bucket.for_cancel(reason))
        await workflow.wait_condition(lambda: not self._starts)
        description = (
            "the job was cancelled"
            if reason == CancelReason.BY_USER
            else "the job's deadline passed"
        )
        stop = OperationStop(reason=reason, description=description)
        await self._tell_operations(OperationOrder(stop=stop))
        state.stop_signalled = True

    async def _tell_operations(
        self, order: OperationOrder, buckets: tuple[Bucket, ...] | None = None
    ) -> None:
        """Give the open operations (in the given buckets) an order."""
        ids = [
            op_id
            for op_id, bucket in self._state.in_flight.items()
            if buckets is None or bucket in buckets
        ]
        if self._tells_by_update:
            await self._order(ids, order)
            return
        signal, message = _as_signal(order)
        await _in_batches(ids, lambda op_id: self._tell(op_id, signal, message))

    async def _order(self, ids: list[str], order: OperationOrder) -> list[str]:
        """Give ``order`` to operations by update, ``ORDER_BATCH`` to an activity; the ids of
        those that had closed before it reached them."""
        self._orders += 1
        update_id = f"{workflow.info().run_id}/{self._orders}"
        what = _order_name(order)
        told = await asyncio.gather(
            *(
                workflow.execute_activity_method(
                    RunActivities.tell_operations,
                    TellOperationsInput(
                        operation_ids=ids[i : i + ORDER_BATCH], order=order, update_id=update_id
                    ),
                    start_to_close_timeout=ORDER_TIMEOUT,
                    heartbeat_timeout=ORDER_HEARTBEAT,
                    retry_policy=INVENTORY_RETRY,
                    summary=f"{what} {len(ids[i : i + ORDER_BATCH])} operations",
                )
                for i in range(0, len(ids), ORDER_BATCH)
            )
        )
        return [operation_id for result in told for operation_id in result.closed]

    async def _tell(self, operation_id: str, signal: str, *message: object) -> bool:
        """Signal one operation; False when it could not be told (it has closed meanwhile)."""
        handle = workflow.get_external_workflow_handle(operation_workflow_id(operation_id))
        try:
            await handle.signal(signal, args=list(message))
        except Exception as err:  # closed meanwhile: its own report is on its way
            workflow.logger.info("operation %s not told %s: %s", operation_id, signal, err)
            return False
        return True

    # --- callbacks (SPEC 6) ---

    def _callback(self, event: JobEvent) -> None:
        request = self._input.request
        state = self._state
        if not (request.notify and request.callback) or event in state.callbacks_sent:
            return
        state.callbacks_sent.append(event)
        state.callback_queue.append(
            CallbackInput(
                url=request.callback,
                event=event,
                delivery_id=str(workflow.uuid4()),
                payload=callback_payload(event, self.job()),
                job_id=self._input.job_id if event is JobEvent.FINISHED else None,
            )
        )

    async def _deliver_callbacks(self) -> None:
        """Deliver queued callbacks one at a time, in order. A run that continues-as-new drops
        the delivery in flight; the next run sends it again with the same delivery id."""
        queue = self._state.callback_queue
        while True:
            await workflow.wait_condition(lambda: bool(queue))
            await self._deliver(queue[0])
            queue.pop(0)

    async def _deliver(self, delivery: CallbackInput) -> None:
        try:
            await workflow.execute_activity_method(
                CallbackActivities.deliver,
                delivery,
                summary=f"{delivery.event.value} to the job's callback",
                start_to_close_timeout=timedelta(seconds=15),
                schedule_to_close_timeout=CALLBACK_DEADLINE,
                retry_policy=CALLBACK_RETRY,
            )
        except ActivityError as err:
            workflow.logger.warning("callback %s not delivered: %s", delivery.event, err)

    async def _count_targets(self) -> None:
        tagged = by_tags(self._groups)
        count = await workflow.execute_activity_method(
            InventoryActivities.count_targets,
            CountTargetsInput(selection=self._selection, groups=self._groups if tagged else None),
            # Groups by tags read every target once: a minute per ~million devices.
            start_to_close_timeout=INVENTORY_TIMEOUT * (10 if tagged else 1),
            retry_policy=INVENTORY_RETRY,
        )
        self._state.counts.add(Bucket.SCHEDULED, count.total)
        self._state.cursor.joins_after = count.last_join
        self._state.target_report.not_provisioned = count.not_provisioned
        self._state.target_report.duplicated = count.duplicated
        self._state.cursor.counted = True
        if count.group_sizes is not None and not self._state.groups:
            self._state.groups = [GroupState(size=size) for size in count.group_sizes]
            self._state.group_caps = count.group_caps or []
            self._state.group_pass = 0
            self._state.cursor.group_fill = [0] * len(count.group_sizes)
        elif self._groups and not self._state.groups:
            self._state.groups = group_sizes(self._groups, count.total)

    @property
    def _groups(self) -> list[RolloutGroup] | None:
        rollout = self._input.request.rollout
        return rollout.groups if rollout is not None else None

    @property
    def _selection(self) -> TargetSelection:
        assert self._input.request.target is not None
        return self._input.request.target.selection

    def _target_order(self) -> TargetOrder:
        """Each device's place in target order: device id order for tags (the inventory's
        keyset), list order for listed ids (None for an id no longer listed)."""
        selection = self._selection
        if selection.tags:
            return lambda device_id: (0, device_id)
        places = {device_id: i for i, device_id in enumerate(selection.unique_listed()[0])}
        return lambda device_id: (places[device_id], "") if device_id in places else None

    def _room(self) -> int:
        fan_out = self._input.fan_out
        rollout = self._input.request.rollout
        window = fan_out.window
        if rollout is not None and rollout.max_concurrency is not None:
            window = min(window, rollout.max_concurrency)
        room = min(window - len(self._state.in_flight), fan_out.start_batch - len(self._starts))
        paced = pace_room(self._input.request.rollout, self._state, workflow.now())
        staged = group_room(self._groups, self._state, look_ahead=self._groups_follow)
        limits = [limit for limit in (paced, staged) if limit is not None]
        return min([room, *limits])

    def _can_start(self) -> bool:
        state = self._state
        if state.status != JobStatus.IN_PROGRESS or state.stopping is not None:
            return False
        has_targets = bool(self._page) or not state.cursor.exhausted or self._next_pass_due()
        return has_targets and self._room() > 0

    def _next_pass_due(self) -> bool:
        """Groups by tags: the current pass has read every target, and the next group may start
        (its predecessor did well enough, or the operator released it)."""
        state = self._state
        groups = self._groups
        return (
            groups is not None
            and state.group_pass is not None
            and state.group_pass < len(state.groups) - 1
            and state.cursor.exhausted
            and not self._page
            and may_start(groups, state, state.group_pass + 1)
        )

    def _next_pass(self) -> None:
        state = self._state
        assert state.group_pass is not None
        state.group_pass += 1
        state.cursor = state.cursor.model_copy(
            update={
                "next_index": 0,
                "after_id": None,
                "exhausted": False,
                "group_fill": [0] * len(state.groups),
            }
        )

    def _finished(self) -> bool:
        state = self._state
        # A continuous job stays open for joins until its stop (or a cancel) ends it.
        open_for_joins = self._input.request.continuous and state.stopping is None
        last_pass = state.group_pass is None or state.group_pass >= len(state.groups) - 1
        return (
            state.cursor.exhausted
            and not self._page
            and not state.in_flight
            and last_pass
            and not open_for_joins
        )

    # --- continuous jobs: the devices that join the tags ---

    def _reads_joins(self) -> bool:
        """A continuous job past its targets' last page, running: it reads joins now and then."""
        state = self._state
        return (
            self._input.request.continuous
            and state.cursor.exhausted
            and not self._page
            and state.stopping is None
            and state.status == JobStatus.IN_PROGRESS
        )

    def _joins_due(self) -> bool:
        if not self._reads_joins() or self._room() <= 0:
            return False
        due = self._state.cursor.next_join_read
        return due is None or workflow.now() >= due

    async def _read_joins(self) -> None:
        """Read the next devices that joined the job's tags: those not started by this job yet
        join its total and are started like a page of targets."""
        state = self._state
        cursor = state.cursor
        limit = self._input.fan_out.page_size
        if workflow.patched(JOINS_AS_ROOM_ALLOWS):
            # No more than start at once: a joined device never waits in a page (under pacing,
            # for minutes), so one untagged before its start is not reached.
            limit = max(1, min(limit, self._room()))
        page: JoinedPage = await workflow.execute_local_activity_method(
            InventoryActivities.read_joins,
            ReadJoinsInput(tags=self._selection.tags or [], after=cursor.joins_after, limit=limit),
            start_to_close_timeout=INVENTORY_TIMEOUT,
            retry_policy=INVENTORY_RETRY,
            summary="devices that joined the job's tags",
        )
        # A full page: read on at once; otherwise wait for the next joins.
        wait = 0 if page.more else self._input.fan_out.join_poll_ms
        cursor.next_join_read = workflow.now() + timedelta(milliseconds=wait)
        # Operations still open are not started again; closed ones are refused by the server.
        new = [
            (device, join)
            for device, join in zip(page.devices, page.joins, strict=True)
            if self._operation_id_for(device) not in state.in_flight
        ]
        self._page = new
        self._page_end = page.last
        self._page_of_joins = True
        if not new:
            cursor.joins_after = page.last
            return
        state.counts.add(Bucket.SCHEDULED, len(new))
        self._dirty = True

    @property
    def _once_per_device(self) -> bool:
        """Whether the job may read a device twice and must run it once: a continuous job (a
        device counted at the start and read as a join, or tagged again after its operation
        closed), or groups by tags (a device the inventory moved to a later group's pass)."""
        return self._input.request.continuous or self._state.group_pass is not None

    def _operation_id_for(self, device: Device) -> str:
        """Such jobs name each device's operation after the job and the device, so a device read
        twice cannot get a second one: the job skips it while open, the server refuses a second
        start once closed."""
        if not self._once_per_device:
            return str(workflow.uuid4())
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"fleetops:job/{self._input.job_id}/{device.id}"))

    def _should_continue_as_new(self) -> bool:
        if self._page and self._state.group_pass is not None:
            # Groups by tags: a pass's cursor is past its page as soon as it is read, so the
            # page is started before the run hands over (a page costs ~5 events a device).
            return False
        info = workflow.info()
        return (
            info.is_continue_as_new_suggested()
            or info.get_current_history_length() >= self._input.fan_out.max_history_events
            or self._signals_this_run >= self._input.fan_out.max_signals_per_run
        )

    async def _start_batch(self) -> None:
        if self._next_pass_due():
            self._next_pass()
        if not self._page:
            await self._read_page()
        batch = self._page[: self._room()]
        del self._page[: len(batch)]
        count_paced(self._input.request.rollout, self._state, workflow.now(), len(batch))
        cursor = self._state.cursor
        if self._page_of_joins:
            self._start_joined(batch)
            return
        for device, position in batch:
            operation_id = self._operation_id_for(device)
            if operation_id in self._state.in_flight:  # read again while its first is open
                self._state.counts.add(Bucket.SCHEDULED, -1)
                continue
            self._state.in_flight[operation_id] = Bucket.PENDING_EXECUTION
            self._state.counts.move(Bucket.SCHEDULED, Bucket.PENDING_EXECUTION)
            count_started(self._state, operation_id, device.id)
            # Started without waiting: the next batch goes out while the server creates these.
            start = asyncio.create_task(self._start_operation(operation_id, device))
            self._starts.add(start)
            start.add_done_callback(self._starts.discard)
            if self._state.group_pass is None:  # a pass's cursor is already past its page
                cursor.after_id = device.id
                cursor.next_index = position + 1
        if not self._page and self._state.group_pass is None:
            cursor.next_index = self._page_end
        if not self._page and cursor.exhausted and self._groups_follow:
            # Every target (of this pass) was read and started: the groups read are as big as
            # what they started, whatever the inventory did since the count.
            settle(self._state)

    def _start_joined(self, batch: list[tuple[Device, int]]) -> None:
        cursor = self._state.cursor
        for device, join in batch:
            operation_id = self._operation_id_for(device)
            if operation_id in self._state.in_flight:  # read again while its first is open
                self._state.counts.add(Bucket.SCHEDULED, -1)
            else:
                self._state.in_flight[operation_id] = Bucket.PENDING_EXECUTION
                self._state.counts.move(Bucket.SCHEDULED, Bucket.PENDING_EXECUTION)
                start = asyncio.create_task(self._start_operation(operation_id, device))
                self._starts.add(start)
                start.add_done_callback(self._starts.discard)
            cursor.joins_after = join
        if not self._page:
            cursor.joins_after = self._page_end

    async def _read_page(self) -> None:
        state = self._state
        cursor = state.cursor
        self._page_of_joins = False
        passes = state.group_pass is not None
        page: TargetPage = await workflow.execute_activity_method(
            InventoryActivities.read_targets,
            ReadTargetsInput(
                selection=self._selection,
                from_index=cursor.next_index,
                after_id=cursor.after_id,
                limit=self._input.fan_out.page_size,
                group=state.group_pass,
                groups=(self._groups or []) if passes else [],
                caps=state.group_caps,
                fill=cursor.group_fill,
            ),
            start_to_close_timeout=INVENTORY_TIMEOUT,
            retry_policy=INVENTORY_RETRY,
        )
        positions = page.positions or [0] * len(page.devices)
        self._page = list(zip(page.devices, positions, strict=True))
        self._page_end = page.next_index
        cursor.exhausted = page.done
        if passes:  # groups by tags: past the whole page at once (the page holds one group)
            cursor.group_fill = page.fill
            cursor.after_id = page.last_id
            cursor.next_index = page.next_index
        # The count was taken when the job started and the inventory may have changed since:
        # devices beyond the count join the total, and after the last page (of the last pass),
        # counted devices that are gone leave it, so the summary always adds up.
        last = not passes or state.group_pass == len(state.groups) - 1
        scheduled = state.counts[Bucket.SCHEDULED]
        if (page.done and last) or scheduled < len(page.devices):
            state.counts.add(Bucket.SCHEDULED, len(page.devices) - scheduled)

    async def _start_operation(
        self, operation_id: str, device: Device, retry: OperationRetry | None = None
    ) -> None:
        """Start one operation's workflow, or its next run for an operator's ``retry``."""
        request = self._input.request
        # Some jobs start a device's operation once; a retry is a new run on purpose.
        once = self._once_per_device and retry is None
        op_input = OperationInput(
            operation_id=operation_id,
            job_id=self._input.job_id,
            job_workflow_id=workflow.info().workflow_id,
            device=device,
            name=request.name,
            parameters={**request.parameters, **self._selection.parameters_of(device.id)},
            notify=request.notify,
            user=request.user,
            operation_parameters=request.operation_parameters,
            activated_at=workflow.now(),
            late_answer_grace_ms=self._input.late_answer_grace_ms,
            close_by_signal=not self._follows_children,
            push_locally=True,
            attempts_before=retry.attempts_before if retry else 0,
            manual_retries=retry.manual_retries if retry else 0,
        )
        try:
            child = await workflow.start_child_workflow(
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
                static_summary=f"{request.name} → {device.id}",
                id_reuse_policy=(
                    WorkflowIDReusePolicy.REJECT_DUPLICATE
                    if once
                    else WorkflowIDReusePolicy.ALLOW_DUPLICATE
                ),
            )
        except (ChildWorkflowError, WorkflowAlreadyStartedError) as err:
            if once and isinstance(err, WorkflowAlreadyStartedError):
                # This device's operation in this job ran already: it leaves the total it
                # joined, and its first operation's result stays counted.
                self._state.in_flight.pop(operation_id, None)
                self._state.counts.add(Bucket.PENDING_EXECUTION, -1)
                uncount_started(self._state, operation_id)
                self._dirty = True
                return
            workflow.logger.warning(
                "operation %s on %s not started: %s", operation_id, device.id, err
            )
            self._count_closed(_cancelled_by_engine(operation_id))
            return
        if self._follows_children:
            self._children[operation_id] = asyncio.create_task(self._follow(operation_id, child))

    async def _follow(
        self, operation_id: str, child: workflow.ChildWorkflowHandle[Any, Operation]
    ) -> None:
        """Count the close of a child this run started, from its completion."""
        try:
            operation = await child
        except ChildWorkflowError as err:  # terminated, failed or timed out by hand
            if child.first_execution_run_id in self._retired_runs:
                return  # an operator's retry replaced it: its next run is followed instead
            workflow.logger.warning("operation %s ended abnormally: %r", operation_id, err.cause)
            closed = _cancelled_by_engine(operation_id)
        else:
            closed = OperationClosed(
                operation_id=operation_id,
                status=operation.status,
                result=operation.result,
                cancel_reason=operation.cancel_reason,
            )
        finally:
            if child.first_execution_run_id not in self._retired_runs:
                del self._children[operation_id]
        self._count_closed(closed)

    async def _hand_over_children(self) -> None:
        """Before continuing-as-new: the next run cannot see the completions of this run's
        children, so each child still open is asked to report its close by signal."""
        if not self._tells_by_update:
            await _in_batches(list(self._children), self._hand_over)
            return
        children = [op for op in self._children if op not in self._handed_over]
        self._handed_over.update(children)
        closed = await self._order(children, OperationOrder(report_by_signal=True))
        # Those that completed before the order reached them: their completion reaches this run.
        await workflow.wait_condition(lambda: not any(op in self._children for op in closed))

    async def _hand_over(self, operation_id: str) -> None:
        if not await self._tell(operation_id, OperationSignal.REPORT_BY_SIGNAL):
            # It completed before the signal reached it: its completion reaches this run.
            await workflow.wait_condition(lambda: operation_id not in self._children)

    async def _continue_as_new(self) -> None:
        # Every start must be acknowledged before this run ends, and every handler finished: an
        # update that the run's end cut short would answer its caller "already completed". A
        # change that came during the hand-over (a pause's orders) is waited for too, and the
        # children it started are handed over in their turn.
        while True:
            await workflow.wait_condition(
                lambda: not self._starts and workflow.all_handlers_finished()
            )
            await self._hand_over_children()
            if not self._tells_by_update or (not self._starts and workflow.all_handlers_finished()):
                break
        if self._page and self._page_of_joins:
            # The rest of the joins are read again from the cursor by the next run.
            self._state.counts.add(Bucket.SCHEDULED, -len(self._page))
        elif self._page:
            # The rest of the page is read again from the cursor by the next run.
            self._state.cursor.exhausted = False
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
        published = report(self._state, self._input.request)
        workflow.upsert_memo({JOB_REPORT_MEMO: published})
        # What the Temporal UI shows as the job's current details: its title first, since the
        # static summary is the first run's only (continue-as-new takes none), then progress.
        details = progress(published)
        if self._input.title:
            details = f"{self._input.title}\n\n{details}"
        workflow.set_current_details(details)
        self._dirty = False

    async def _publish_while_running(self) -> None:
        # Counters move with every signal; the memo follows at most once per interval, and a
        # quiet job costs no events at all.
        while True:
            await workflow.wait_condition(lambda: self._dirty)
            self._publish()
            await workflow.sleep(PUBLISH_INTERVAL, summary="the report's publish interval")

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
                    timeout_summary="grace for late answers",
                )
            except TimeoutError:
                return
            if state.late_pending and self._should_continue_as_new():
                await self._continue_as_new()


async def _in_batches(ids: list[str], tell: Callable[[str], Awaitable[object]]) -> None:
    """``tell`` each operation, at most ``SIGNAL_BATCH`` at once."""
    for i in range(0, len(ids), SIGNAL_BATCH):
        await asyncio.gather(*(tell(op_id) for op_id in ids[i : i + SIGNAL_BATCH]))


def _as_signal(order: OperationOrder) -> tuple[str, object]:
    """The signal older runs sent for an order."""
    if order.stop is not None:
        return OperationSignal.STOP, order.stop
    return OperationSignal.HOLD, order.hold


def _order_name(order: OperationOrder) -> str:
    if order.stop is not None:
        return "stop"
    if order.report_by_signal:
        return "hand over"
    return "hold" if order.hold else "release"


def _cancelled_by_engine(operation_id: str) -> OperationClosed:
    return OperationClosed(
        operation_id=operation_id,
        status=OperationStatus.CANCELLED,
        cancel_reason=CancelReason.BY_ENGINE,
    )
