"""SPEC 3.3 schedules as Temporal schedule specs: a pure translation, with its validation.

Choices (docs/tasks.md):
- A one-time task is a calendar at the exact instant of ``start.date`` (with its year), so the
  server lists exactly one next action time and none once it has run.
- A period is an interval phased on ``start.date`` (or on the creation time): Temporal aligns
  intervals on the Unix epoch unless given an offset, and "every 5 hours from 10:17" must not
  become "every 5 hours from midnight".
- ``stop.executions`` is Temporal's limited actions: it counts scheduled actions only; a manual
  trigger or backfill from the Temporal UI or CLI runs regardless and does not use one up.
- ``timezone`` applies to patterns and cron; periods and dates are absolute instants.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from temporalio.client import (
    ScheduleCalendarSpec,
    ScheduleIntervalSpec,
    ScheduleRange,
    ScheduleSpec,
)

from models.jobs import JobRequest
from models.tasks import Month, Pattern, PeriodUnit, TaskSchedule, Weekday

_UNITS = {
    PeriodUnit.MINUTES: timedelta(minutes=1),
    PeriodUnit.HOURS: timedelta(hours=1),
    PeriodUnit.DAYS: timedelta(days=1),
}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Lower bounds of a month and a year, for the shortest gap between two runs.
_SHORTEST_MONTH = timedelta(days=28)
_SHORTEST_YEAR = timedelta(days=365)


class ScheduleError(ValueError):
    """An invalid schedule: ``field`` is the dotted wire name of what is wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Plan:
    """What a task schedule becomes in Temporal."""

    spec: ScheduleSpec
    limited_actions: bool = False
    remaining_actions: int = 0


def plan(schedule: TaskSchedule, now: datetime) -> Plan:
    """The Temporal spec of ``schedule``, created at ``now``; ScheduleError when invalid."""
    validate(schedule, now)
    start = schedule.start.date if schedule.start else None
    end = schedule.stop.date if schedule.stop else None
    executions = schedule.stop.executions if schedule.stop else None
    if schedule.cron:
        spec = ScheduleSpec(cron_expressions=[schedule.cron], time_zone_name=schedule.timezone)
    elif schedule.repeating and schedule.repeating.period:
        every = period_length(schedule)
        assert every is not None
        anchor = start or now
        spec = ScheduleSpec(
            intervals=[ScheduleIntervalSpec(every=every, offset=(anchor - _EPOCH) % every)]
        )
    elif schedule.repeating and schedule.repeating.pattern:
        pattern, zone = in_zone(schedule.repeating.pattern, schedule.timezone)
        spec = ScheduleSpec(calendars=[calendar(pattern)], time_zone_name=zone)
    else:
        assert start is not None  # checked by validate
        return Plan(ScheduleSpec(calendars=[instant(start)], end_at=end))
    spec.start_at = start
    spec.end_at = end
    return Plan(spec, limited_actions=executions is not None, remaining_actions=executions or 0)


def validate(schedule: TaskSchedule, now: datetime) -> None:
    """ScheduleError naming the first field that makes ``schedule`` impossible at ``now``."""
    _validate_cron_and_zone(schedule)
    start = schedule.start.date if schedule.start else None
    stop = schedule.stop
    if stop and stop.date is not None:
        if stop.date <= now:
            raise ScheduleError("schedule.stop.date", "the stop date is in the past")
        if start and stop.date <= start:
            raise ScheduleError("schedule.stop.date", "the stop date must be after the start date")
    if not is_recurring(schedule):
        if start is None:
            raise ScheduleError(
                "schedule.start.date", "a task without repeating or cron runs once at start.date"
            )
        if start <= now:
            raise ScheduleError("schedule.start.date", "a one-time task must start in the future")
        if stop and stop.executions is not None:
            raise ScheduleError(
                "schedule.stop.executions", "a one-time task runs once: executions needs repeating"
            )


def _validate_cron_and_zone(schedule: TaskSchedule) -> None:
    if schedule.cron is not None:
        if schedule.repeating:
            raise ScheduleError("schedule.cron", "give either repeating or cron, not both")
        if len(schedule.cron.split()) != 5:
            raise ScheduleError("schedule.cron", "cron must have 5 fields (min hour dom mon dow)")
    if schedule.timezone is not None:
        try:
            ZoneInfo(schedule.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ScheduleError(
                "schedule.timezone", f"unknown time zone {schedule.timezone}"
            ) from exc


def is_recurring(schedule: TaskSchedule) -> bool:
    return schedule.repeating is not None or schedule.cron is not None


def instant(at: datetime) -> ScheduleCalendarSpec:
    """A calendar matching one instant only (to the second, in UTC)."""
    at = at.astimezone(UTC)
    return ScheduleCalendarSpec(
        second=[ScheduleRange(at.second)],
        minute=[ScheduleRange(at.minute)],
        hour=[ScheduleRange(at.hour)],
        day_of_month=[ScheduleRange(at.day)],
        month=[ScheduleRange(at.month)],
        year=[ScheduleRange(at.year)],
        comment="once",
    )


def in_zone(pattern: Pattern, timezone: str | None) -> tuple[Pattern, str | None]:
    """The pattern and the time zone its calendar runs in. A time written with an offset
    (``02:00:00+01:00``) means that clock time on the pattern's days in that offset: a whole-hour
    offset is the fixed zone ``Etc/GMT-1`` (POSIX signs are inverted); one with minutes is moved
    to UTC, with a weekly pattern's days moved along when that crosses midnight."""
    offset = pattern.offset()
    if not offset:
        return pattern, timezone
    field = "schedule.repeating.pattern.time"
    if timezone is not None:
        raise ScheduleError(field, "give the time an offset or the task a timezone, not both")
    hours, rest = divmod(offset, timedelta(hours=1))
    if not rest:
        return pattern, f"Etc/GMT{'-' if hours > 0 else '+'}{abs(hours)}"
    hour, minute, second = pattern.clock()
    local = datetime(2000, 1, 3, hour, minute, second, tzinfo=UTC)  # a Monday
    utc = local - offset
    shift = (utc.date() - local.date()).days
    moved: dict[str, object] = {"time": utc.strftime("%H:%M:%SZ")}
    if shift and pattern.weekly:
        days = list(Weekday)
        moved["weekly"] = {"days": [days[(days.index(d) + shift) % 7] for d in pattern.weekly.days]}
    elif shift and (pattern.monthly or pattern.yearly):
        raise ScheduleError(
            field, "an offset with minutes that moves the day: give the task a timezone instead"
        )
    return Pattern.model_validate({**pattern.model_dump(), **moved}), None


def calendar(pattern: Pattern) -> ScheduleCalendarSpec:
    hour, minute, second = pattern.clock()
    at = {
        "second": [ScheduleRange(second)],
        "minute": [ScheduleRange(minute)],
        "hour": [ScheduleRange(hour)],
    }
    if pattern.weekly:
        days = sorted({list(Weekday).index(d) for d in pattern.weekly.days})
        return ScheduleCalendarSpec(
            **at, day_of_week=[ScheduleRange(d) for d in days], comment="weekly"
        )
    if pattern.monthly:
        months = pattern.monthly.months or list(Month)
        return ScheduleCalendarSpec(
            **at,
            day_of_month=[ScheduleRange(pattern.monthly.day)],
            month=[ScheduleRange(m) for m in sorted({m.number for m in months})],
            comment="monthly",
        )
    if pattern.yearly:
        return ScheduleCalendarSpec(
            **at,
            day_of_month=[ScheduleRange(pattern.yearly.day)],
            month=[ScheduleRange(pattern.yearly.month.number)],
            comment="yearly",
        )
    return ScheduleCalendarSpec(**at, comment="daily")


def period_length(schedule: TaskSchedule) -> timedelta | None:
    """The shortest time between two runs, when it follows from the schedule alone (not for
    cron, whose gaps the caller reads from the server's next action times; None for once)."""
    repeating = schedule.repeating
    if repeating is None:
        return None
    if repeating.period:
        return repeating.period.each * _UNITS[repeating.period.unit]
    pattern = repeating.pattern
    assert pattern is not None
    if pattern.weekly:
        days = sorted({list(Weekday).index(d) for d in pattern.weekly.days})
        return timedelta(days=_cyclic_gap(days, 7))
    if pattern.monthly:
        months = sorted({m.number for m in pattern.monthly.months or list(Month)})
        return _cyclic_gap(months, 12) * _SHORTEST_MONTH
    if pattern.yearly:
        return _SHORTEST_YEAR
    return timedelta(days=1)


def _cyclic_gap(values: list[int], cycle: int) -> int:
    """The smallest distance between two consecutive values on a cycle (the whole cycle for
    one value)."""
    if len(values) == 1:
        return cycle
    gaps = [b - a for a, b in itertools.pairwise(values)]
    return min([*gaps, values[0] + cycle - values[-1]])


def shortest_gap(times: list[datetime]) -> timedelta | None:
    gaps = [b - a for a, b in itertools.pairwise(times)]
    return min(gaps) if gaps else None


def check_job_template(schedule: TaskSchedule, request: JobRequest, gap: timedelta | None) -> None:
    """A recurring task's job must fit between two runs: its deadline is relative (a fixed date
    cannot apply to every run) and shorter than the shortest gap between runs."""
    job_schedule = request.schedule
    if not request.active:
        raise ScheduleError(
            "job.request.active", "a task's jobs start active; pause the task instead"
        )
    if job_schedule is None or not is_recurring(schedule):
        return
    for name, moment in (("start", job_schedule.start), ("stop", job_schedule.stop)):
        if moment is not None and moment.date is not None:
            raise ScheduleError(
                f"job.request.schedule.{name}.date",
                "a recurring task's job takes a delayed start/stop: a fixed date cannot apply "
                "to every run",
            )
    stop = job_schedule.stop
    if stop and stop.delayed is not None and gap and timedelta(milliseconds=stop.delayed) >= gap:
        raise ScheduleError(
            "job.request.schedule.stop.delayed",
            f"the job deadline must be shorter than the task's period ({gap})",
        )
