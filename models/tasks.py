"""The task of SPEC 3.3: a schedule that creates jobs from a job template."""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum

from pydantic import Field, field_validator, model_validator

from models.base import StrictWireModel, UtcDatetime, WireModel
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


class Period(StrictWireModel):
    each: int = Field(ge=1)
    unit: PeriodUnit


class Weekly(StrictWireModel):
    days: list[Weekday] = Field(min_length=1)


class Monthly(StrictWireModel):
    day: int = Field(ge=1, le=31)
    # Absent: every month.
    months: list[Month] | None = Field(default=None, min_length=1)


class Yearly(StrictWireModel):
    day: int = Field(ge=1, le=31)
    month: Month


_TIME = re.compile(r"^([01]\d|2[0-3]):([0-5]\d):([0-5]\d)Z?$")


class Pattern(StrictWireModel):
    """Daily at ``time`` unless one of weekly, monthly or yearly narrows the days."""

    time: str
    weekly: Weekly | None = None
    monthly: Monthly | None = None
    yearly: Yearly | None = None

    @field_validator("time")
    @classmethod
    def _time(cls, value: str) -> str:
        if not _TIME.match(value):
            raise ValueError("time must be HH:MM:SSZ (e.g. 03:30:00Z)")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> Pattern:
        if sum(k is not None for k in (self.weekly, self.monthly, self.yearly)) > 1:
            raise ValueError("give at most one of weekly, monthly or yearly")
        return self

    def clock(self) -> tuple[int, int, int]:
        match = _TIME.match(self.time)
        assert match is not None  # checked by the validator
        hour, minute, second = match.groups()
        return int(hour), int(minute), int(second)


class Repeating(StrictWireModel):
    period: Period | None = None
    pattern: Pattern | None = None

    @model_validator(mode="after")
    def _one_of(self) -> Repeating:
        if (self.period is None) == (self.pattern is None):
            raise ValueError("give exactly one of period or pattern")
        return self


class TaskStart(StrictWireModel):
    date: datetime


class TaskStop(StrictWireModel):
    date: datetime | None = None
    executions: int | None = Field(default=None, ge=1)

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
    cron: str | None = None
    timezone: str | None = None

    @field_validator("start", "stop")
    @classmethod
    def _aware(cls, value: TaskStart | TaskStop | None) -> TaskStart | TaskStop | None:
        if value is not None and value.date is not None and value.date.tzinfo is None:
            raise ValueError("a date needs a time zone (e.g. 2026-11-22T10:15:30Z)")
        return value


class TaskDefinition(StrictWireModel):
    """What an operator sends to create a task, and what the engine keeps of it."""

    name: str = Field(min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    active: bool = True
    schedule: TaskSchedule
    job: JobRequestEnvelope


class TaskEnvelope(StrictWireModel):
    task: TaskDefinition


class TaskChanges(StrictWireModel):
    """The fields a PUT may change (SPEC 3.3); any other is a forbidden field."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
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
