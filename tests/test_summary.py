"""The job counters and the SPEC summary built from them: the totals always add up."""

from __future__ import annotations

from models.enums import CancelReason, JobStatus, ResultCode
from models.summary import Bucket, JobSummary, OperationCounts, closed_bucket, device_cancel_reason


def test_device_codes_map_to_the_spec_counters() -> None:
    assert closed_bucket(ResultCode.SUCCESSFUL, None) is Bucket.SUCCESSFUL
    assert closed_bucket(ResultCode.ERROR_PROCESSING, None) is Bucket.ERROR
    assert closed_bucket(ResultCode.NOT_SUPPORTED, None) is Bucket.ERROR
    assert device_cancel_reason(ResultCode.ERROR_TIMEOUT) is CancelReason.BY_EXTERNAL_TIMEOUT
    assert device_cancel_reason(ResultCode.TIMEOUT_CANCELLED) is CancelReason.BY_EXTERNAL_TIMEOUT
    assert device_cancel_reason(ResultCode.CANCELLED) is CancelReason.BY_EXTERNAL
    assert device_cancel_reason(ResultCode.CANCELLED_INTERNAL) is CancelReason.BY_EXTERNAL
    assert device_cancel_reason(ResultCode.SUCCESSFUL) is None
    assert closed_bucket(None, CancelReason.BY_USER) is Bucket.CANCELLED_BY_USER


def test_summary_adds_up_through_a_job() -> None:
    counts = OperationCounts()
    counts.add(Bucket.SCHEDULED, 6)
    for _ in range(5):
        counts.move(Bucket.SCHEDULED, Bucket.PENDING_EXECUTION)
    counts.move(Bucket.PENDING_EXECUTION, Bucket.WAITING_FOR_CONNECTION)
    counts.move(Bucket.PENDING_EXECUTION, Bucket.SUCCESSFUL)
    counts.move(Bucket.PENDING_EXECUTION, Bucket.ERROR)
    counts.move(Bucket.PENDING_EXECUTION, Bucket.CANCELLED_BY_TIMEOUT)
    counts.add_out_of_time(ResultCode.SUCCESSFUL)

    summary = JobSummary.build(JobStatus.IN_PROGRESS, counts).model_dump(mode="json")

    assert summary["total"] == 6
    assert summary["inProgress"] == {
        "total": 3,
        "scheduled": 1,
        "pendingExecution": 1,
        "waitingForConnection": 1,
        "started": 0,
    }
    assert summary["finished"]["total"] == 3
    assert summary["finished"]["successful"] == 1
    assert summary["finished"]["error"] == 1
    assert summary["finished"]["cancelled"]["total"] == 1
    assert summary["finished"]["cancelled"]["byTimeout"] == 1
    # Out-of-time answers are reported apart and are not part of the total.
    assert summary["finishedOutOfTime"] == {"total": 1, "successful": 1, "error": 0}
    assert summary["total"] == summary["inProgress"]["total"] + summary["finished"]["total"]


def test_counts_survive_the_trip_through_continue_as_new() -> None:
    counts = OperationCounts()
    counts.add(Bucket.SCHEDULED, 3)
    counts.move(Bucket.SCHEDULED, Bucket.STARTED)
    again = OperationCounts.model_validate_json(counts.model_dump_json())
    assert again[Bucket.STARTED] == 1 and again[Bucket.SCHEDULED] == 2
