"""The job's rules, as small pure functions of its request, its carried state and the time.

Nothing here talks to Temporal or reads a clock: the workflow passes ``workflow.now()``, so each
rule is replay-safe and unit-tested on its own (tests/test_policies.py).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from models.enums import JobEvent
from models.jobs import Job, JobReport, Rollout
from models.messages import JobState
from models.summary import Bucket, OperationCounts

PACE_WINDOW = timedelta(minutes=1)


# --- pacing: rollout.maxPerMinute, in one-minute windows ---


def pace_room(rollout: Rollout | None, state: JobState, now: datetime) -> int | None:
    """How many operations may start now within the pace; None when the job is not paced."""
    if rollout is None or rollout.max_per_minute is None:
        return None
    window_start = state.pace_window_start
    if window_start is None or now - window_start >= PACE_WINDOW:
        return rollout.max_per_minute
    return rollout.max_per_minute - state.pace_started


def pace_reset(rollout: Rollout | None, state: JobState, now: datetime) -> datetime | None:
    """When a job that used up its pace may start operations again; None if it has room."""
    start = state.pace_window_start
    if start is None or pace_room(rollout, state, now) != 0:
        return None
    return start + PACE_WINDOW


def count_paced(rollout: Rollout | None, state: JobState, now: datetime, started: int) -> None:
    """Count ``started`` operations in the current pace window (opening a new one if due)."""
    if pace_room(rollout, state, now) is None:
        return
    if state.pace_window_start is None or now - state.pace_window_start >= PACE_WINDOW:
        state.pace_window_start, state.pace_started = now, 0
    state.pace_started += started


# --- abort: rollout.abort, a failure share past a threshold ---


def should_abort(rollout: Rollout | None, counts: OperationCounts) -> bool:
    """Whether enough operations have finished, and enough of them did not succeed, to stop
    starting new ones."""
    if rollout is None or rollout.abort is None:
        return False
    executed = counts.total - counts.in_progress
    failed = executed - counts[Bucket.SUCCESSFUL]
    return executed >= rollout.abort.min_executed and (
        failed * 100 >= rollout.abort.failure_threshold_percent * executed
    )


# --- callbacks (SPEC 6) ---


def callback_payload(event: JobEvent, job: Job) -> dict[str, Any]:
    """The body of a lifecycle callback: JOB_INITIATED carries the job at the top level, the
    others under ``job``; JOB_STARTED reports its execution only. (JOB_FINISHED gains the first
    page of operations when it is delivered.)"""
    view = job.model_dump(mode="json", exclude_none=True)
    parts = ("execution",) if event is JobEvent.STARTED else ("execution", "summary")
    body = {
        "id": view["id"],
        "request": view["request"],
        "report": {part: view["report"][part] for part in parts},
    }
    return body if event is JobEvent.INITIATED else {"job": body}


# --- what the Temporal UI shows ---


def progress(report: JobReport) -> str:
    """A job's progress in one line, for its current details in the Temporal UI."""
    summary = report.summary
    finished = summary.finished
    cancelled = finished.cancelled.total
    return (
        f"{summary.status.value}: {finished.total:,} of {summary.total:,} finished "
        f"({finished.successful:,} successful, {finished.error:,} errors, "
        f"{cancelled:,} cancelled), {summary.in_progress.total:,} in progress"
    )
