"""Job counters: where each operation of a job stands, and the SPEC summary built from them.

A job keeps one flat count per bucket; every nested total of the SPEC summary is derived from
those counts, so the totals always add up (``total = inProgress.total + finished.total``).
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel

from models.base import WireModel
from models.enums import CancelReason, JobStatus, OperationStatus, ResultCode


class Bucket(StrEnum):
    SCHEDULED = "scheduled"
    PENDING_EXECUTION = "pendingExecution"
    WAITING_FOR_CONNECTION = "waitingForConnection"
    STARTED = "started"
    SUCCESSFUL = "successful"
    ERROR = "error"
    CANCELLED_BY_ENGINE = "byEngine"
    CANCELLED_BY_USER = "byUser"
    CANCELLED_BY_TIMEOUT = "byTimeout"
    CANCELLED_BY_EXTERNAL_TIMEOUT = "byExternalTimeout"
    CANCELLED_BY_EXTERNAL = "byExternal"

    @classmethod
    def for_status(cls, status: OperationStatus) -> Bucket:
        """The in-progress bucket of an open operation status."""
        return _OPEN_BUCKETS[status]

    @classmethod
    def for_cancel(cls, reason: CancelReason) -> Bucket:
        return cls(reason.value)


_OPEN_BUCKETS = {
    OperationStatus.SCHEDULED: Bucket.SCHEDULED,
    OperationStatus.PENDING_EXECUTION: Bucket.PENDING_EXECUTION,
    OperationStatus.WAITING_FOR_CONNECTION: Bucket.WAITING_FOR_CONNECTION,
    OperationStatus.STARTED: Bucket.STARTED,
}
IN_PROGRESS_BUCKETS = tuple(_OPEN_BUCKETS.values())
CANCELLED_BUCKETS = (
    Bucket.CANCELLED_BY_ENGINE,
    Bucket.CANCELLED_BY_USER,
    Bucket.CANCELLED_BY_TIMEOUT,
    Bucket.CANCELLED_BY_EXTERNAL_TIMEOUT,
    Bucket.CANCELLED_BY_EXTERNAL,
)

# SPEC 3.2: the device codes that mean the device itself cancelled the operation.
_DEVICE_CANCEL_REASONS = {
    ResultCode.ERROR_TIMEOUT: CancelReason.BY_EXTERNAL_TIMEOUT,
    ResultCode.TIMEOUT_CANCELLED: CancelReason.BY_EXTERNAL_TIMEOUT,
    ResultCode.CANCELLED: CancelReason.BY_EXTERNAL,
    ResultCode.CANCELLED_INTERNAL: CancelReason.BY_EXTERNAL,
}


def device_cancel_reason(result: ResultCode) -> CancelReason | None:
    """The cancel reason a device's final result code stands for, if it is a cancellation."""
    return _DEVICE_CANCEL_REASONS.get(result)


def closed_bucket(result: ResultCode | None, cancel_reason: CancelReason | None) -> Bucket:
    """The finished bucket of a closed operation."""
    if cancel_reason is not None:
        return Bucket.for_cancel(cancel_reason)
    return Bucket.SUCCESSFUL if result == ResultCode.SUCCESSFUL else Bucket.ERROR


class OperationCounts(BaseModel):
    """How many operations of a job stand in each bucket (the job's carried state)."""

    buckets: dict[Bucket, int] = {}
    out_of_time_successful: int = 0
    out_of_time_error: int = 0

    def __getitem__(self, bucket: Bucket) -> int:
        return self.buckets.get(bucket, 0)

    def add(self, bucket: Bucket, n: int = 1) -> None:
        self.buckets[bucket] = self[bucket] + n

    def move(self, source: Bucket, target: Bucket, n: int = 1) -> None:
        if source is target:
            return
        self.add(source, -n)
        self.add(target, n)

    def add_out_of_time(self, result: ResultCode) -> None:
        if result == ResultCode.SUCCESSFUL:
            self.out_of_time_successful += 1
        else:
            self.out_of_time_error += 1

    @property
    def in_progress(self) -> int:
        return sum(self[b] for b in IN_PROGRESS_BUCKETS)

    @property
    def total(self) -> int:
        return sum(self.buckets.values())


class InProgressSummary(WireModel):
    total: int = 0
    scheduled: int = 0
    pending_execution: int = 0
    waiting_for_connection: int = 0
    started: int = 0


class CancelledSummary(WireModel):
    total: int = 0
    by_engine: int = 0
    by_user: int = 0
    by_timeout: int = 0
    by_external_timeout: int = 0
    by_external: int = 0


class FinishedSummary(WireModel):
    total: int = 0
    successful: int = 0
    error: int = 0
    cancelled: CancelledSummary = CancelledSummary()


class OutOfTimeSummary(WireModel):
    total: int = 0
    successful: int = 0
    error: int = 0


class JobSummary(WireModel):
    status: JobStatus
    total: int = 0
    in_progress: InProgressSummary = InProgressSummary()
    finished: FinishedSummary = FinishedSummary()
    finished_out_of_time: OutOfTimeSummary = OutOfTimeSummary()

    @classmethod
    def build(cls, status: JobStatus, counts: OperationCounts) -> JobSummary:
        cancelled = CancelledSummary(
            total=sum(counts[b] for b in CANCELLED_BUCKETS),
            by_engine=counts[Bucket.CANCELLED_BY_ENGINE],
            by_user=counts[Bucket.CANCELLED_BY_USER],
            by_timeout=counts[Bucket.CANCELLED_BY_TIMEOUT],
            by_external_timeout=counts[Bucket.CANCELLED_BY_EXTERNAL_TIMEOUT],
            by_external=counts[Bucket.CANCELLED_BY_EXTERNAL],
        )
        finished = FinishedSummary(
            total=counts[Bucket.SUCCESSFUL] + counts[Bucket.ERROR] + cancelled.total,
            successful=counts[Bucket.SUCCESSFUL],
            error=counts[Bucket.ERROR],
            cancelled=cancelled,
        )
        in_progress = InProgressSummary(
            total=counts.in_progress,
            scheduled=counts[Bucket.SCHEDULED],
            pending_execution=counts[Bucket.PENDING_EXECUTION],
            waiting_for_connection=counts[Bucket.WAITING_FOR_CONNECTION],
            started=counts[Bucket.STARTED],
        )
        return cls(
            status=status,
            total=in_progress.total + finished.total,
            in_progress=in_progress,
            finished=finished,
            finished_out_of_time=OutOfTimeSummary(
                total=counts.out_of_time_successful + counts.out_of_time_error,
                successful=counts.out_of_time_successful,
                error=counts.out_of_time_error,
            ),
        )
