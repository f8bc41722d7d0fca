"""Inputs, results and signals of the two workflows (one model each, evolved by adding fields)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel

from models.bounds import DAY_MS, between
from models.devices import Device
from models.enums import CancelReason, JobEvent, JobStatus, OperationStatus, ResultCode
from models.jobs import (
    GroupReport,
    Job,
    JobExecution,
    JobReport,
    JobRequest,
    OperationParameters,
    RolloutGroup,
    TargetReport,
)
from models.summary import Bucket, JobSummary, OperationCounts

# How long an operation cancelled by timeout still takes a late answer (ms).
GraceMillis = Annotated[int, between(0, DAY_MS)]


class FanOutSettings(BaseModel):
    """How a job fans out; fixed when the job is created so replays see the same values."""

    window: Annotated[int, between(1, 2000)] = 500
    start_batch: Annotated[int, between(1, 500)] = 100
    page_size: Annotated[int, between(1, 5000)] = 500
    # Our own guards, below Temporal's hard limits (51,200 events, 10,000 signals per run).
    max_history_events: Annotated[int, between(100, 40_000)] = 8_000
    max_signals_per_run: Annotated[int, between(100, 9_000)] = 5_000
    # Continuous jobs: ms between two reads of the devices that joined their tags.
    join_poll_ms: Annotated[int, between(500, 3_600_000)] = 10_000


class TargetCursor(BaseModel):
    counted: bool = False
    next_index: int = 0
    after_id: str | None = None
    exhausted: bool = False
    # Groups by tags: how many devices each percent or count group took before the cursor.
    group_fill: list[int] = []
    # Continuous jobs: the last tag join read and handled (every device that joined up to it was
    # started, or dropped as reached already), and when to read the joins next.
    joins_after: int = 0
    next_join_read: datetime | None = None


class CallbackInput(BaseModel):
    """One callback delivery (SPEC 6); its id stays the same across retries and runs."""

    url: str
    event: JobEvent
    delivery_id: str
    payload: dict[str, Any]
    # JOB_FINISHED: the first page of the job's operations is added under job.result.
    job_id: str | None = None


class GroupState(BaseModel):
    """One group of a staged rollout, as the job carries it."""

    size: int
    started: int = 0
    successful: int = 0
    failed: int = 0
    closed: int = 0
    # Started by hand (``groups/next``) whatever the previous group's outcome.
    released: bool = False
    # The error threshold was passed, and the job paused for it (once).
    tripped: bool = False
    # The last device started in the group, in target order: where an operator's retry finds
    # the group of a closed operation (workflows/groups.rejoin).
    last_device: str | None = None
    # Every target of the group was read: its size is what was started (workflows/groups.settle).
    settled: bool = False


class JobState(BaseModel):
    """Everything a job carries from one run to the next when it continues-as-new."""

    status: JobStatus = JobStatus.IN_PROGRESS
    execution: JobExecution = JobExecution()
    target_report: TargetReport = TargetReport()
    counts: OperationCounts = OperationCounts()
    cursor: TargetCursor = TargetCursor()
    # Operations started and not yet closed, with the bucket each is counted in.
    in_flight: dict[str, Bucket] = {}
    # Operations cancelled by timeout whose late answer may still come, and until when.
    late_pending: int = 0
    late_until: datetime | None = None
    # Why the job stops early (cancelled by the user, its deadline, or an aborted rollout), and
    # whether its open operations were already told.
    stopping: CancelReason | None = None
    stop_signalled: bool = False
    aborted: bool = False
    # maxPerMinute pacing: operations started in the current one-minute window.
    pace_window_start: datetime | None = None
    pace_started: int = 0
    # rollout.rate (workflows/policies.py): operations started under the rate, the credit of
    # starts earned (integer units: one start costs ``START_COST``), and when it was last taken.
    rate_started: int = 0
    rate_credit: int = 0
    rate_at: datetime | None = None
    # rollout.groups (workflows/groups.py): each group's size and outcomes, the operations
    # started so far (their positions in target order), the group of each open operation, and
    # why the job paused itself (a group past its error threshold, or short of its success one).
    groups: list[GroupState] = []
    # Groups by tags: the group whose devices the current pass over the targets starts, and how
    # many devices each percent or count group takes at most (workflows/groups.py).
    group_pass: int | None = None
    group_caps: list[int] = []
    started: int = 0
    group_of: dict[str, int] = {}
    paused_reason: str | None = None
    callbacks_sent: list[JobEvent] = []
    # Callbacks not delivered yet, oldest first: delivered one at a time, so receivers get the
    # events in order, and carried over a continue-as-new.
    callback_queue: list[CallbackInput] = []
    runs: int = 1
    # Why the engine refused to run this job's request (one the API would refuse: it reached
    # Temporal some other way); its targets are then counted cancelled by the engine.
    rejected: str | None = None


class JobInput(BaseModel):
    # Empty for jobs a schedule starts: the job is then named by its workflow id and created at
    # its workflow's start.
    job_id: str = ""
    request: JobRequest
    task_id: str | None = None
    created_at: datetime | None = None
    fan_out: FanOutSettings = FanOutSettings()
    late_answer_grace_ms: GraceMillis = 300_000
    state: JobState | None = None
    # What the Temporal UI names the job (``REBOOT_EQUIPMENT on tag line-7 (1,240 devices)``):
    # its static summary belongs to the first run only, so every run shows it in its details.
    title: str | None = None

    def view(self, state: JobState) -> Job:
        return Job(
            id=self.job_id,
            task_id=self.task_id,
            request=self.request,
            report=report(state, self.request),
        )


# Memo keys of a job workflow: the request as accepted, the task that created the job, and the
# report, republished as it changes (at most about once a second), so the API reads jobs from
# Temporal without querying the worker.
JOB_REQUEST_MEMO = "request"
JOB_TASK_MEMO = "taskId"
JOB_REPORT_MEMO = "report"


def job_memo(input: JobInput, state: JobState) -> dict[str, Any]:
    return {
        JOB_REQUEST_MEMO: input.request,
        JOB_TASK_MEMO: input.task_id,
        JOB_REPORT_MEMO: report(state, input.request),
    }


def report(state: JobState, request: JobRequest | None = None) -> JobReport:
    groups = request.rollout.groups if request and request.rollout else None
    return JobReport(
        execution=state.execution,
        target=state.target_report,
        summary=JobSummary.build(state.status, state.counts),
        groups=group_reports(state, groups) if groups and state.groups else None,
        paused_reason=state.paused_reason,
    )


def group_reports(state: JobState, groups: list[RolloutGroup]) -> list[GroupReport]:
    reports = []
    for config, group in zip(groups, state.groups, strict=False):
        # A group by tags may start more devices than it counted (the inventory grew before its
        # pass) until its pass settles it (workflows/groups.settle).
        if group.closed >= max(group.size, group.started):
            status = "DONE"
        elif group.started:
            status = "IN_PROGRESS"
        else:
            status = "WAITING"
        reports.append(
            GroupReport(
                name=config.name,
                total=group.size,
                started=group.started,
                successful=group.successful,
                failed=group.failed,
                closed=group.closed,
                status=status,
            )
        )
    return reports


class OperationRetry(BaseModel):
    """(beyond OpenGate) POST .../operations/{id}/retry: send a closed operation again, as a new
    attempt of the same operation id, to the device as the inventory has it now."""

    operation_id: str
    device: Device
    # The closed execution, whose history the job retires before starting the new one, and how
    # it ended: the job moves the operation out of that bucket.
    run_id: str
    result: ResultCode | None = None
    cancel_reason: CancelReason | None = None
    attempts_before: int = 0
    # Whether it answered after its timeout (its run then closed): nothing left to wait for.
    out_of_time: bool = False
    # This retry's number: 1 for an operation's first retry by an operator.
    manual_retries: int = 1


class JobChange(BaseModel):
    """Update of a running job: the PUT of SPEC 3.1 (a whole new request) or a cancel."""

    request: JobRequest | None = None
    cancel: bool = False
    # (beyond OpenGate) POST .../groups/next: start the next rollout group now.
    next_group: bool = False
    # (beyond OpenGate) POST .../operations/{id}/retry.
    retry: OperationRetry | None = None


class OperationInput(BaseModel):
    operation_id: str
    job_id: str
    job_workflow_id: str
    device: Device
    name: str
    parameters: dict[str, Any] = {}
    notify: bool = False
    user: str | None = None
    operation_parameters: OperationParameters
    activated_at: datetime
    # How long a timed-out operation still takes a late answer (recorded as out of time).
    late_answer_grace_ms: GraceMillis = 300_000
    # Whether the job hears of the close by signal. False: the job run that starts the operation
    # counts it from the child's completion (and asks for a signal if it continues-as-new first).
    # True for inputs written before the job followed completions.
    close_by_signal: bool = True
    # Whether the first push of an attempt may run as a local activity (False for inputs written
    # before: their histories hold the push as an activity).
    push_locally: bool = False
    # Attempts earlier executions of this operation made (an operator's retry): this execution's
    # attempts are numbered after them.
    attempts_before: Annotated[int, between(0, 10_000)] = 0
    manual_retries: Annotated[int, between(0, 1_000)] = 0


class OperationProgress(BaseModel):
    """Signal to the job: an open operation moved to another in-progress status."""

    operation_id: str
    status: OperationStatus


class OperationStop(BaseModel):
    """Signal to an operation: the job cancels it (cancelled by the user, or its deadline)."""

    reason: CancelReason
    description: str


class OperationOrder(BaseModel):
    """What a job tells its operations by update (``OPERATION_ORDER``): hold them (a pause) or let
    them go (a resume), stop them (a cancel, its deadline), or have them report their close by
    signal (the job is about to continue-as-new). An update, not a signal: a signal that lands
    while an operation's first workflow task runs its local push makes the server refuse that
    task's completion, and the task runs again, pushing again, on any worker."""

    hold: bool | None = None
    stop: OperationStop | None = None
    report_by_signal: bool = False


class OperationLate(BaseModel):
    """Signal to the job: a timed-out operation got its final answer late."""

    operation_id: str
    result: ResultCode


class OperationClosed(BaseModel):
    """Signal to the job: an operation reached its final status."""

    operation_id: str
    status: OperationStatus
    result: ResultCode | None = None
    cancel_reason: CancelReason | None = None
