"""The task of SPEC 3.3: a schedule that creates jobs from a job template."""

from __future__ import annotations

import re
from datetime import timedelta
from enum import StrEnum
from typing import Annotated

from pydantic import Field, field_validator, model_validator

from models.base import StrictWireModel, UtcDatetime, WireModel
from models.bounds import MAX_COUNT, MAX_SHORT_TEXT, Count, Date, Text, between, text
from models.jobs import JobRequestEnvelope, Page


class PeriodUnit(StrEnum):
    MINUTES = "MINUTES"
    HOURS = "HOURS"
    DAYS = "DAYS"


class Weekday(StrEnum):
    # In Temporal's order: day_of_week 0 is Sunday.
    SUN = "SUN"
    MON = "MON"
    TUE = "TUE"
    WED = "WED"
    THU = "THU"
    FRI = "FRI"
    SAT = "SAT"


class Month(StrEnum):
    JAN = "JAN"
    FEB = "FEB"
    MAR = "MAR"
    APR = "APR"
    MAY = "MAY"
    JUN = "JUN"
    JUL = "JUL"
    AUG = "AUG"
    SEP = "SEP"
    OCT = "OCT"
    NOV = "NOV"
    DEC = "DEC"

    @property
    def number(self) -> int:
        return list(Month).index(self) + 1


class TaskState(StrEnum):
    ACTIVE = "ACTIVE"
    PAUSED = "PAUSED"
    FINISHED = "FINISHED"


# A period is at most a year long, in any unit.
_MINUTES_IN_A_YEAR = 366 * 24 * 60
_UNIT_MINUTES = {"MINUTES": 1, "HOURS": 60, "DAYS": 24 * 60}


class Period(StrictWireModel):
    each: Annotated[int, between(1, _MINUTES_IN_A_YEAR)]
    unit: PeriodUnit

    @model_validator(mode="after")
    def _at_most_a_year(self) -> Period:
        if self.each * _UNIT_MINUTES[self.unit.value] > _MINUTES_IN_A_YEAR:
            raise ValueError("a period is at most 366 days long")
        return self


class Weekly(StrictWireModel):
    days: list[Weekday] = Field(min_length=1)


class Monthly(StrictWireModel):
    day: int = Field(ge=1, le=31)
    # Absent: every month.
    months: list[Month] | None = Field(default=None, min_length=1)


class Yearly(StrictWireModel):
    day: int = Field(ge=1, le=31)
    month: Month


# ``HH:MM:SS`` with ``Z``, an offset (``+01:00``, as OpenGate's clients write it) or nothing (UTC).
_TIME = re.compile(r"^([01]\d|2[0-3]):([0-5]\d):([0-5]\d)(Z|([+-])(0\d|1[0-4]):([0-5]\d))?$")


class Pattern(StrictWireModel):
    """Daily at ``time`` unless one of weekly, monthly or yearly narrows the days."""

    time: Text
    weekly: Weekly | None = None
    monthly: Monthly | None = None
    yearly: Yearly | None = None

    @field_validator("time")
    @classmethod
    def _time(cls, value: str) -> str:
        if not _TIME.match(value):
            raise ValueError(
                "time must be HH:MM:SS with Z or an offset (03:30:00Z, 03:30:00+01:00)"
            )
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> Pattern:
        if sum(k is not None for k in (self.weekly, self.monthly, self.yearly)) > 1:
            raise ValueError("give at most one of weekly, monthly or yearly")
        return self

    def clock(self) -> tuple[int, int, int]:
        """The time of day as written, in its own offset."""
        match = _TIME.match(self.time)
        assert match is not None  # checked by the validator
        hour, minute, second = match.groups()[:3]
        return int(hour), int(minute), int(second)

    def offset(self) -> timedelta:
        """The UTC offset the time is written in (zero for ``Z`` or none)."""
        match = _TIME.match(self.time)
        assert match is not None  # checked by the validator
        sign, hours, minutes = match.groups()[4:]
        if sign is None:
            return timedelta(0)
        offset = timedelta(hours=int(hours), minutes=int(minutes))
        return offset if sign == "+" else -offset


class Repeating(StrictWireModel):
    period: Period | None = None
    pattern: Pattern | None = None

    @model_validator(mode="after")
    def _one_of(self) -> Repeating:
        if (self.period is None) == (self.pattern is None):
            raise ValueError("give exactly one of period or pattern")
        return self


class TaskStart(StrictWireModel):
    date: Date


class TaskStop(StrictWireModel):
    date: Date | None = None
    executions: Count | None = Field(default=None, description=f"at most {MAX_COUNT}")

    @model_validator(mode="after")
    def _one_of(self) -> TaskStop:
        if (self.date is None) == (self.executions is None):
            raise ValueError("give exactly one of date or executions")
        return self


class TaskSchedule(StrictWireModel):
    start: TaskStart | None = None
    stop: TaskStop | None = None
    repeating: Repeating | None = None
    # Beyond OpenGate: a standard 5-field cron expression, and the zone patterns and cron run in.
    cron: Annotated[str, text(MAX_SHORT_TEXT)] | None = None
    timezone: Annotated[str, text(64)] | None = None

    @field_validator("start", "stop")
    @classmethod
    def _aware(cls, value: TaskStart | TaskStop | None) -> TaskStart | TaskStop | None:
        if value is not None and value.date is not None and value.date.tzinfo is None:
            raise ValueError("a date needs a time zone (e.g. 2026-11-22T10:15:30Z)")
        return value


TaskName = Annotated[str, text(200, min_length=1)]
TaskDescription = Annotated[str, text(2000)]


class TaskDefinition(StrictWireModel):
    """What an operator sends to create a task, and what the engine keeps of it."""

    name: TaskName
    description: TaskDescription | None = None
    active: bool = True
    schedule: TaskSchedule
    job: JobRequestEnvelope


class TaskEnvelope(StrictWireModel):
    task: TaskDefinition


class TaskChanges(StrictWireModel):
    """The fields a PUT may change (SPEC 3.3); any other is a forbidden field."""

    name: TaskName | None = None
    description: TaskDescription | None = None
    active: bool | None = None
    schedule: TaskSchedule | None = None


class TaskChangesEnvelope(StrictWireModel):
    task: TaskChanges


class Task(WireModel):
    """The task object of SPEC 3.3."""

    id: str
    name: str
    description: str | None = None
    active: bool
    state: TaskState
    next_execution: UtcDatetime | None = None
    schedule: TaskSchedule
    job: JobRequestEnvelope


class TaskList(WireModel):
    tasks: list[Task]
    page: Page
