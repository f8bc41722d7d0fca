"""The job of SPEC 3.1: what an operator sends, and the job object the API answers with."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pydantic import Field, field_validator, model_validator

from models.base import StrictWireModel, UtcDatetime, WireModel
from models.enums import ResultCode
from models.summary import JobSummary

# A job that lists its devices carries them in its request (and so in the workflow input, which
# Temporal caps at 2 MB). Larger fleets are targeted by tag, which is read page by page.
MAX_LISTED_ENTITIES = 10_000


class EntityWithParameters(StrictWireModel):
    id: str = Field(min_length=1)
    parameters: dict[str, Any] = {}


class TargetSelection(StrictWireModel):
    entities: list[str] | None = None
    tags: list[str] | None = None
    entities_with_parameters: list[EntityWithParameters] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> TargetSelection:
        kinds = [k for k in (self.entities, self.tags, self.entities_with_parameters) if k]
        if len(kinds) != 1:
            raise ValueError(
                "give exactly one non-empty list of entities, tags or entitiesWithParameters"
            )
        listed = len(self.entities or []) + len(self.entities_with_parameters or [])
        if listed > MAX_LISTED_ENTITIES:
            raise ValueError(
                f"at most {MAX_LISTED_ENTITIES} listed entities; target larger fleets by tag"
            )
        return self

    @field_validator("entities", "tags")
    @classmethod
    def _no_blank(cls, values: list[str] | None) -> list[str] | None:
        if values and any(not v or not v.strip() for v in values):
            raise ValueError("ids and tags must be non-empty strings")
        return values

    def listed_ids(self) -> list[str]:
        if self.entities is not None:
            return list(self.entities)
        return [e.id for e in self.entities_with_parameters or []]

    def parameters_of(self, device_id: str) -> dict[str, Any]:
        for entry in self.entities_with_parameters or []:
            if entry.id == device_id:
                return entry.parameters
        return {}


class JobTarget(StrictWireModel):
    append: TargetSelection | None = None
    # Only in a PUT: devices taken out of a job that has not started yet.
    remove: TargetSelection | None = None

    @property
    def selection(self) -> TargetSelection:
        assert self.append is not None
        return self.append


class OperationParameters(StrictWireModel):
    timeout: int = Field(
        default=60_000, gt=0, description="ms for a device to finish an operation once sent"
    )
    ack_timeout: int | None = Field(
        default=None, gt=0, description="ms for a device to acknowledge (answer) the request"
    )
    retries: int = Field(default=0, ge=0, le=100)
    retries_delay: int = Field(default=0, ge=0, description="ms between two attempts")
    retry_result_list: list[ResultCode] = []
    connection_timeout: int = Field(
        default=24 * 3600 * 1000,
        gt=0,
        description="(beyond OpenGate) ms an operation waits for an unreachable device",
    )

    def should_retry(self, attempt: int, result: ResultCode | None, timed_out: bool) -> bool:
        """Whether attempt number ``attempt`` (1-based), ended so, is sent again (SPEC 3.1)."""
        if attempt > self.retries:
            return False
        if self.retry_result_list:
            return result in self.retry_result_list
        return timed_out or result != ResultCode.SUCCESSFUL


class Moment(StrictWireModel):
    """``{"delayed": ms}`` (from the job's creation) or ``{"date": ISO}``."""

    delayed: int | None = Field(default=None, ge=0)
    date: datetime | None = None

    @model_validator(mode="after")
    def _one_of(self) -> Moment:
        if (self.delayed is None) == (self.date is None):
            raise ValueError("give exactly one of delayed or date")
        if self.date is not None and self.date.tzinfo is None:
            raise ValueError("a date needs a time zone (e.g. 2026-11-22T10:15:30Z)")
        return self

    def resolve(self, since: datetime) -> datetime:
        if self.date is not None:
            return self.date
        return since + timedelta(milliseconds=self.delayed or 0)


class JobSchedule(StrictWireModel):
    start: Moment | None = None
    stop: Moment | None = None


class RolloutAbort(StrictWireModel):
    failure_threshold_percent: float = Field(gt=0, le=100)
    min_executed: int = Field(default=1, ge=1)


class Rollout(StrictWireModel):
    """(beyond OpenGate) Pacing of a job and automatic stop of a bad rollout."""

    max_concurrency: int | None = Field(default=None, ge=1, le=2000)
    max_per_minute: int | None = Field(default=None, ge=1)
    abort: RolloutAbort | None = None


class JobRequest(StrictWireModel):
    name: str = Field(min_length=1)
    parameters: dict[str, Any] = {}
    target: JobTarget | None = None
    active: bool = True
    notify: bool = False
    callback: str | None = Field(default=None, pattern=r"^https?://\S+$", max_length=2048)
    user: str | None = None
    user_notes: str | None = None
    schedule: JobSchedule | None = None
    operation_parameters: OperationParameters = OperationParameters()
    rollout: Rollout | None = None

    @model_validator(mode="after")
    def _consistent(self) -> JobRequest:
        if self.target is not None and (self.target.append is None or self.target.remove):
            raise ValueError('a job\'s target is {"append": {...}}')
        if self.active and self.target is None:
            raise ValueError("an active job needs a target")
        if self.callback:
            self.notify = True  # SPEC 3.1: a callback implies notify
        return self


class JobPatch(StrictWireModel):
    """What a PUT may change (SPEC 3.1); any other field is a 400 ``Forbidden field``."""

    active: bool | None = None
    notify: bool | None = None
    callback: str | None = Field(default=None, pattern=r"^https?://\S+$", max_length=2048)
    user_notes: str | None = None
    schedule: JobSchedule | None = None
    target: JobTarget | None = None

    def applied_to(self, request: JobRequest) -> JobRequest:
        """The request with this patch applied (validated again as a whole)."""
        changed = request.model_dump(by_alias=False, exclude_none=True)
        for field in ("active", "notify", "callback", "user_notes"):
            if field in self.model_fields_set:
                changed[field] = getattr(self, field)
        if self.schedule is not None:
            schedule = dict(changed.get("schedule") or {})
            for moment in ("start", "stop"):
                if moment in self.schedule.model_fields_set:
                    schedule[moment] = getattr(self.schedule, moment)
            changed["schedule"] = schedule
        if self.target is not None:
            changed["target"] = {"append": _retarget(request.target, self.target)}
        return JobRequest.model_validate(changed)


def _retarget(current: JobTarget | None, change: JobTarget) -> TargetSelection:
    """Append to or remove from a job's list of entities or of tags (one kind per job)."""
    selection = current.append if current else None
    if selection is not None and selection.entities_with_parameters:
        raise ValueError("a target of entitiesWithParameters is not changed by PUT")
    if selection is not None:
        kind = "tags" if selection.tags else "entities"
    else:
        kind = "tags" if change.append and change.append.tags else "entities"
    values = list(getattr(selection, kind) or []) if selection else []
    for part, adding in ((change.append, True), (change.remove, False)):
        if part is None:
            continue
        if part.entities_with_parameters or getattr(part, kind) is None:
            raise ValueError(f"this job's target is a list of {kind}: change it with {kind}")
        for value in getattr(part, kind):
            if adding and value not in values:
                values.append(value)
            elif not adding and value in values:
                values.remove(value)
    if not values:
        raise ValueError("the target would be empty")
    return TargetSelection.model_validate({kind: values})


class JobPatchEnvelope(StrictWireModel):
    job: JobPatchRequest


class JobPatchRequest(StrictWireModel):
    request: JobPatch


class JobEnvelope(StrictWireModel):
    job: JobRequestEnvelope


class JobRequestEnvelope(StrictWireModel):
    request: JobRequest


JobEnvelope.model_rebuild()
JobPatchEnvelope.model_rebuild()


class JobExecution(WireModel):
    activated_date: UtcDatetime | None = None
    started_date: UtcDatetime | None = None
    finished_date: UtcDatetime | None = None


class TargetReport(WireModel):
    not_provisioned: list[str] = []
    duplicated: list[str] = []


class JobReport(WireModel):
    execution: JobExecution = JobExecution()
    target: TargetReport = TargetReport()
    summary: JobSummary


class Job(WireModel):
    """The job object of SPEC 3.1."""

    id: str
    task_id: str | None = None
    request: JobRequest
    report: JobReport


class Page(WireModel):
    number: int
    of: int | None = None


class JobList(WireModel):
    jobs: list[Job]
    page: Page
