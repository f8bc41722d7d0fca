"""The job's rules on their own: pacing, abort and callback payloads (workflows/policies.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from models.enums import JobEvent, JobStatus
from models.jobs import Job, JobReport, JobRequest, Rollout
from models.messages import JobState
from models.summary import Bucket, JobSummary, OperationCounts
from workflows.policies import (
    PACE_WINDOW,
    callback_payload,
    count_paced,
    pace_reset,
    pace_room,
    should_abort,
)

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def test_an_unpaced_job_has_no_pace() -> None:
    state = JobState()
    assert pace_room(None, state, T0) is None
    assert pace_room(Rollout(max_concurrency=5), state, T0) is None
    count_paced(None, state, T0, 10)
    assert state.pace_window_start is None and state.pace_started == 0


def test_pacing_counts_starts_in_one_minute_windows() -> None:
    rollout = Rollout(max_per_minute=10)
    state = JobState()
    assert pace_room(rollout, state, T0) == 10
    count_paced(rollout, state, T0, 4)
    assert state.pace_window_start == T0
    assert pace_room(rollout, state, T0 + timedelta(seconds=30)) == 6
    assert pace_reset(rollout, state, T0 + timedelta(seconds=30)) is None

    count_paced(rollout, state, T0 + timedelta(seconds=40), 6)
    assert pace_room(rollout, state, T0 + timedelta(seconds=50)) == 0
    assert pace_reset(rollout, state, T0 + timedelta(seconds=50)) == T0 + PACE_WINDOW

    # A new window opens a minute after the first one started.
    later = T0 + PACE_WINDOW
    assert pace_room(rollout, state, later) == 10
    count_paced(rollout, state, later, 1)
    assert (state.pace_window_start, state.pace_started) == (later, 1)


def counts(successful: int, error: int, in_progress: int) -> OperationCounts:
    result = OperationCounts()
    result.add(Bucket.SUCCESSFUL, successful)
    result.add(Bucket.ERROR, error)
    result.add(Bucket.PENDING_EXECUTION, in_progress)
    return result


def test_abort_waits_for_enough_executed_operations() -> None:
    rollout = Rollout.model_validate({"abort": {"failureThresholdPercent": 50, "minExecuted": 4}})
    assert not should_abort(None, counts(0, 10, 0))
    assert not should_abort(rollout, counts(0, 3, 50))  # 3 executed < 4
    assert should_abort(rollout, counts(2, 2, 50))  # 50% of 4
    assert not should_abort(rollout, counts(3, 2, 50))  # 40% of 5


def job_view() -> Job:
    request = JobRequest.model_validate(
        {"name": "REBOOT_EQUIPMENT", "target": {"append": {"entities": ["d-1"]}}}
    )
    summary = JobSummary.build(JobStatus.IN_PROGRESS, counts(1, 0, 0))
    return Job(id="job-1", request=request, report=JobReport(summary=summary))


def test_callback_payloads_have_the_spec_shapes() -> None:
    job = job_view()
    initiated = callback_payload(JobEvent.INITIATED, job)
    assert set(initiated) == {"id", "request", "report"}
    assert set(initiated["report"]) == {"execution", "summary"}
    assert initiated["request"]["name"] == "REBOOT_EQUIPMENT"

    started = callback_payload(JobEvent.STARTED, job)
    assert set(started) == {"job"}
    assert set(started["job"]["report"]) == {"execution"}

    finished = callback_payload(JobEvent.FINISHED, job)
    assert set(finished["job"]) == {"id", "request", "report"}
    assert finished["job"]["report"]["summary"]["finished"]["successful"] == 1
