"""The job's rules on their own: pacing (maxPerMinute and the exponential rate), abort and callback
payloads (workflows/policies.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from models.enums import JobEvent, JobStatus
from models.jobs import Job, JobReport, JobRequest, Rollout, RolloutRate
from models.messages import JobState
from models.summary import Bucket, JobSummary, OperationCounts
from workflows.policies import (
    PACE_WINDOW,
    callback_payload,
    count_paced,
    current_rate,
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


# --- the exponential rate (rollout.rate) ---


def rate(**fields: Any) -> RolloutRate:
    return RolloutRate.model_validate(
        {"basePerMinute": 60, "incrementFactor": 2, "every": 20, "criterion": "succeeded", **fields}
    )


def succeeded(state: JobState, n: int) -> None:
    state.counts.add(Bucket.SUCCESSFUL, n)


def test_the_rate_grows_by_its_factor_each_time_every_more_succeeded() -> None:
    doubling = rate(maxPerMinute=1000)
    state = JobState()
    assert current_rate(doubling, state) == 60
    succeeded(state, 19)
    assert current_rate(doubling, state) == 60
    succeeded(state, 1)
    assert current_rate(doubling, state) == 120
    succeeded(state, 20)
    assert current_rate(doubling, state) == 240
    succeeded(state, 40)
    assert current_rate(doubling, state) == 960
    succeeded(state, 20)
    assert current_rate(doubling, state) == 1000  # its maxPerMinute
    # Without a maxPerMinute the ceiling is the highest pace of all; a huge power never
    # overflows.
    succeeded(state, 10**6)
    assert current_rate(rate(every=1, incrementFactor=5), state) == 100_000
    assert current_rate(rate(incrementFactor=1), state) == 60
    # Rounded down, never one short of a whole product.
    state = JobState()
    succeeded(state, 40)
    assert current_rate(rate(basePerMinute=100, incrementFactor=1.7), state) == 289
    assert current_rate(rate(basePerMinute=100, incrementFactor=1.1), state) == 121


def test_the_notified_criterion_counts_the_starts() -> None:
    notified = rate(criterion="notified", every=10)
    rollout = Rollout(rate=notified)
    state = JobState()
    succeeded(state, 500)  # successes do not count for this criterion
    assert current_rate(notified, state) == 60
    for second in range(10):
        count_paced(rollout, state, T0 + timedelta(seconds=second), 1)
    assert state.rate_started == 10
    assert current_rate(notified, state) == 120


def test_a_rate_of_60_starts_one_operation_a_second() -> None:
    rollout = Rollout(rate=rate())
    state = JobState()
    assert pace_room(rollout, state, T0) == 1  # a full bucket: one second's starts
    count_paced(rollout, state, T0, 1)
    assert pace_room(rollout, state, T0 + timedelta(milliseconds=999)) == 0
    assert pace_reset(rollout, state, T0) == T0 + timedelta(seconds=1)
    assert pace_room(rollout, state, T0 + timedelta(seconds=1)) == 1
    # Credit does not pile up while the job cannot start (paused, window full): one second's.
    assert pace_room(rollout, state, T0 + timedelta(hours=1)) == 1


def test_a_high_rate_wakes_the_job_once_a_second() -> None:
    rollout = Rollout(rate=rate(basePerMinute=6000))
    state = JobState()
    assert pace_room(rollout, state, T0) == 100
    count_paced(rollout, state, T0, 100)
    assert pace_room(rollout, state, T0) == 0
    # 100 more a second later, not one every 10 ms.
    assert pace_reset(rollout, state, T0) == T0 + timedelta(seconds=1)
    assert pace_room(rollout, state, T0 + timedelta(milliseconds=10)) == 1
    assert pace_room(rollout, state, T0 + timedelta(seconds=1)) == 100


def test_a_rate_reset_is_after_now_on_a_whole_millisecond() -> None:
    rollout = Rollout(rate=rate(basePerMinute=7))  # one start every 8.571428... s
    state = JobState()
    count_paced(rollout, state, T0, 1)
    reset = pace_reset(rollout, state, T0)
    assert reset == T0 + timedelta(seconds=8, milliseconds=572)
    assert pace_room(rollout, state, reset) == 1
    assert pace_room(rollout, state, reset - timedelta(milliseconds=1)) == 0


def test_the_lower_of_rate_and_max_per_minute_wins() -> None:
    # maxPerMinute 3 is lower: the rate would start one a second, the window stops at 3.
    rollout = Rollout(max_per_minute=3, rate=rate())
    state = JobState()
    for second in range(3):
        now = T0 + timedelta(seconds=second)
        assert pace_room(rollout, state, now) == 1
        count_paced(rollout, state, now, 1)
    now = T0 + timedelta(seconds=3)
    assert pace_room(rollout, state, now) == 0
    assert pace_reset(rollout, state, now) == T0 + PACE_WINDOW
    # The rate is lower: a window of 1000 a minute, one start a second.
    rollout = Rollout(max_per_minute=1000, rate=rate())
    state = JobState()
    count_paced(rollout, state, T0, 1)
    assert pace_room(rollout, state, T0) == 0
    assert pace_reset(rollout, state, T0) == T0 + timedelta(seconds=1)


def schedule(rollout: Rollout, devices: int) -> list[datetime]:
    """The start times of a job on ``devices`` instantly successful devices, waking when
    ``pace_reset`` says, as the job does."""
    state, now = JobState(), T0
    starts: list[datetime] = []
    while len(starts) < devices:
        room = pace_room(rollout, state, now)
        assert room is not None
        started = min(room, devices - len(starts))
        count_paced(rollout, state, now, started)
        starts += [now] * started
        succeeded(state, started)
        reset = pace_reset(rollout, state, now)
        if reset is not None:
            assert reset > now, "the job would wait for nothing"
            now = reset
    return starts


def test_doubling_every_20_successes_follows_the_schedule() -> None:
    starts = schedule(Rollout(rate=rate(maxPerMinute=480)), 140)
    offsets = [(t - T0).total_seconds() for t in starts]
    # 60 a minute (one a second) for the first 20, then 120 (2 a second), 240, 480, 480...
    assert offsets[:20] == [float(s) for s in range(20)]
    assert offsets[20:40] == [20 + s // 2 for s in range(20)]
    assert offsets[40:60] == [30 + s // 4 for s in range(20)]
    assert offsets[60:140] == [35 + s // 8 for s in range(80)]


def test_a_rate_is_bounded() -> None:
    for bad in (
        {"basePerMinute": 0},
        {"basePerMinute": 100_001},
        {"incrementFactor": 0.5},
        {"incrementFactor": 5.01},
        {"every": 0},
        {"criterion": "failed"},
        {"maxPerMinute": 30},  # below basePerMinute
    ):
        with pytest.raises(ValidationError):
            rate(**bad)


def test_a_state_carried_before_the_rate_existed_still_reads() -> None:
    state = JobState.model_validate({"status": "IN_PROGRESS", "pace_started": 3})
    assert (state.rate_started, state.rate_credit, state.rate_at) == (0, 0, None)
