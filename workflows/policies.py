"""The job's rules, as small pure functions of its request, its carried state and the time.

Nothing here talks to Temporal or reads a clock: the workflow passes ``workflow.now()``, so each
rule is replay-safe and unit-tested on its own (tests/test_policies.py).
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

from models.enums import JobEvent
from models.jobs import Job, JobReport, RateCriterion, Rollout, RolloutRate
from models.messages import JobState
from models.summary import Bucket, OperationCounts

PACE_WINDOW = timedelta(minutes=1)

# --- pacing: rollout.maxPerMinute in one-minute windows, and rollout.rate ---
#
# The two combine: an operation starts when both have room, so the lower wins. The job asks
# ``pace_room`` how many may start now, ``pace_reset`` when to look again once there is no room,
# and tells ``count_paced`` what it started.


def pace_room(rollout: Rollout | None, state: JobState, now: datetime) -> int | None:
    """How many operations may start now within the pace; None when the job is not paced."""
    if rollout is None:
        return None
    rooms = [
        room
        for room in (_window_room(rollout, state, now), _rate_room(rollout.rate, state, now))
        if room is not None
    ]
    return min(rooms) if rooms else None


def pace_reset(rollout: Rollout | None, state: JobState, now: datetime) -> datetime | None:
    """When a job that used up its pace may start operations again; None if it has room."""
    if rollout is None or pace_room(rollout, state, now) != 0:
        return None
    resets: list[datetime] = []
    window_start = state.pace_window_start
    if window_start is not None and _window_room(rollout, state, now) == 0:
        resets.append(window_start + PACE_WINDOW)
    if rollout.rate is not None and _rate_room(rollout.rate, state, now) == 0:
        resets.append(_rate_reset(rollout.rate, state))
    # Both must have room again: the later of the two.
    return max(resets) if resets else None


def count_paced(rollout: Rollout | None, state: JobState, now: datetime, started: int) -> None:
    """Count ``started`` operations in the current pace window (opening a new one if due) and
    take them from the rate's credit."""
    if rollout is None:
        return
    if rollout.max_per_minute is not None:
        if state.pace_window_start is None or now - state.pace_window_start >= PACE_WINDOW:
            state.pace_window_start, state.pace_started = now, 0
        state.pace_started += started
    if rollout.rate is not None:
        per_minute = current_rate(rollout.rate, state)
        earned = _rate_credit(per_minute, state, now)
        state.rate_credit = max(0, earned - started * START_COST)
        state.rate_at = now
        state.rate_started += started


def _window_room(rollout: Rollout, state: JobState, now: datetime) -> int | None:
    if rollout.max_per_minute is None:
        return None
    window_start = state.pace_window_start
    if window_start is None or now - window_start >= PACE_WINDOW:
        return rollout.max_per_minute
    return rollout.max_per_minute - state.pace_started


# The exponential rate is a token bucket. Its credit is kept in integer units, so a replay
# computes exactly what the first run did: a rate of r per minute earns r units a microsecond,
# and one start costs a minute's worth of microseconds. The bucket holds one second's starts
# (one start at least), so a job that could not start for a while (its window full, paused)
# does not burst, and the job wakes at most once a second for the rate, however high it is.
_MICROSECOND = timedelta(microseconds=1)
START_COST = PACE_WINDOW // _MICROSECOND
RATE_TICK = timedelta(seconds=1)
_TICK_UNITS = RATE_TICK // _MICROSECOND
_MILLISECOND = 1000  # microseconds: Temporal's timers count whole milliseconds


def current_rate(rate: RolloutRate, state: JobState) -> int:
    """Operations per minute the rate allows now: ``basePerMinute`` times ``incrementFactor`` to
    the power of how many times ``every`` more operations met the criterion, rounded down, at
    most its ``maxPerMinute``."""
    if rate.criterion is RateCriterion.SUCCEEDED:
        progress = state.counts[Bucket.SUCCESSFUL]
    else:
        progress = state.rate_started
    ceiling = rate.ceiling
    base = max(1, min(rate.base_per_minute, ceiling))
    steps = progress // rate.every
    if steps <= 0 or rate.increment_factor <= 1.0:
        return base
    # Compared in logarithms: the factor to a large power would overflow a float.
    if steps * math.log(rate.increment_factor) >= math.log(ceiling / base):
        return ceiling
    # The tiny margin keeps a whole product whole: 100 * 1.7 ** 2 is 288.99999999999994.
    return min(ceiling, int(base * rate.increment_factor**steps + 1e-9))


def _rate_credit(per_minute: int, state: JobState, now: datetime) -> int:
    """The credit earned by ``now`` (a full bucket before the first start)."""
    capacity = max(START_COST, per_minute * _TICK_UNITS)
    if state.rate_at is None:
        return capacity
    elapsed = max(0, (now - state.rate_at) // _MICROSECOND)
    return min(capacity, state.rate_credit + per_minute * elapsed)


def _rate_room(rate: RolloutRate | None, state: JobState, now: datetime) -> int | None:
    if rate is None:
        return None
    return _rate_credit(current_rate(rate, state), state, now) // START_COST


def _rate_reset(rate: RolloutRate, state: JobState) -> datetime:
    """When the bucket holds a tick's starts again (one at least), at the rate of now; a rate
    that grows meanwhile only brings that moment closer."""
    assert state.rate_at is not None  # no room: something was started
    per_minute = current_rate(rate, state)
    wanted = max(1, per_minute // (PACE_WINDOW // RATE_TICK)) * START_COST
    wait = -(-(wanted - state.rate_credit) // per_minute)  # microseconds, rounded up
    at = state.rate_at + timedelta(microseconds=max(1, wait))
    # On a whole millisecond, rounded up: a timer never fires before the credit is there.
    return at + timedelta(microseconds=-at.microsecond % _MILLISECOND)


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
