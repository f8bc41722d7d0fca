"""The job of SPEC 3.1: what an operator sends, and the job object the API answers with."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, ClassVar

from pydantic import Field, ValidationInfo, field_validator, model_validator

from models.base import StrictWireModel, UtcDatetime, WireModel
from models.bounds import (
    MAX_PER_MINUTE,
    MAX_RESULT_CODES,
    MAX_TAGS,
    MAX_URL,
    Bound,
    Count,
    DelayMillis,
    FutureDate,
    Id,
    JsonObject,
    Label,
    Notes,
    OperationMillis,
    RetryDelayMillis,
    Tag,
    Text,
    TypeName,
    between,
    is_stored,
    items,
    text,
)
from models.enums import JobStatus, ResultCode
from models.summary import JobSummary

# A job that lists its devices carries them in its request (and so in the workflow input, which
# Temporal caps at 2 MB). Larger fleets are targeted by tag, which is read page by page.
MAX_LISTED_ENTITIES = 10_000
CALLBACK_PATTERN = r"^https?://\S+$"
# What a job's request may weigh, serialised. A job carries its request in its workflow input, in
# its memo and, until delivered, in up to three queued callbacks: all of them travel in the input
# of its next run, and Temporal refuses a payload over 2 MB.
MAX_REQUEST_BYTES = 448 * 1024


class EntityWithParameters(StrictWireModel):
    id: Id
    parameters: JsonObject = {}


class TargetSelection(StrictWireModel):
    entities: Annotated[list[Id], items(MAX_LISTED_ENTITIES)] | None = None
    tags: Annotated[list[Tag], items(MAX_TAGS)] | None = None
    entities_with_parameters: (
        Annotated[list[EntityWithParameters], items(MAX_LISTED_ENTITIES)] | None
    ) = None

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

    def unique_listed(self) -> tuple[list[str], list[str]]:
        """The listed ids in order without repeats, and the ids listed more than once."""
        seen: set[str] = set()
        unique: list[str] = []
        duplicated: list[str] = []
        for device_id in self.listed_ids():
            if device_id in seen:
                if device_id not in duplicated:
                    duplicated.append(device_id)
                continue
            seen.add(device_id)
            unique.append(device_id)
        return unique, duplicated

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
    timeout: OperationMillis = Field(
        default=60_000, description="ms for a device to finish an operation once sent"
    )
    ack_timeout: OperationMillis | None = Field(
        default=None, description="ms for a device to acknowledge (answer) the request"
    )
    retries: Annotated[int, between(0, 100)] = 0
    retries_delay: RetryDelayMillis = Field(default=0, description="ms between two attempts")
    retry_result_list: Annotated[list[ResultCode], items(MAX_RESULT_CODES)] = []
    connection_timeout: OperationMillis = Field(
        default=24 * 3600 * 1000,
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

    # A start may also be ``{}``: now (SPEC 3.1).
    empty_means_now: ClassVar[bool] = False

    delayed: DelayMillis | None = None
    date: FutureDate | None = None

    @model_validator(mode="after")
    def _one_of(self) -> Moment:
        given = (self.delayed is not None) + (self.date is not None)
        if given > 1 or (given == 0 and not self.empty_means_now):
            raise ValueError("give exactly one of delayed or date")
        return self

    def resolve(self, since: datetime) -> datetime:
        if self.date is not None:
            return self.date
        try:
            return since + timedelta(milliseconds=self.delayed or 0)
        except OverflowError:  # only a stored value past its bound gets here: never, in effect
            return datetime.max.replace(tzinfo=UTC)


class Start(Moment):
    """A job's start: ``{"delayed": ms}``, ``{"date": ISO}``, or ``{}`` for now (a PUT with
    ``{}`` starts a scheduled job at once)."""

    empty_means_now: ClassVar[bool] = True


class JobSchedule(StrictWireModel):
    start: Start | None = None
    stop: Moment | None = None


class RolloutAbort(StrictWireModel):
    failure_threshold_percent: float = Field(gt=0, le=100, allow_inf_nan=False)
    min_executed: Count = 1


PerMinute = Annotated[int, between(1, MAX_PER_MINUTE)]
# An exponential rate's growth factor: 1.0 (a constant rate) to 5.0.
MIN_FACTOR, MAX_FACTOR = 1.0, 5.0


def _check_factor(value: float, _: Any) -> None:
    if not MIN_FACTOR <= value <= MAX_FACTOR:  # NaN fails this too
        raise ValueError(f"must be between {MIN_FACTOR} and {MAX_FACTOR}")


Factor = Annotated[float, Bound(_check_factor, (("minimum", MIN_FACTOR), ("maximum", MAX_FACTOR)))]


class RateCriterion(StrEnum):
    """What makes an exponential rate grow: operations started (their request on its way to the
    device), or operations that succeeded."""

    NOTIFIED = "notified"
    SUCCEEDED = "succeeded"


class RolloutRate(StrictWireModel):
    """(beyond OpenGate) An exponential rollout rate, as AWS IoT Jobs has it: start at
    ``basePerMinute``, multiply the rate by ``incrementFactor`` each time ``every`` more operations
    were notified (started) or succeeded, never above ``maxPerMinute`` (workflows/policies.py)."""

    base_per_minute: PerMinute = Field(description="operations started per minute at first")
    increment_factor: Factor = Field(
        description="the rate is multiplied by this each time `every` more operations met the "
        "criterion"
    )
    every: Count = Field(description="how many more operations make the rate grow once")
    criterion: RateCriterion = Field(description="what counts: `notified` or `succeeded`")
    max_per_minute: PerMinute | None = Field(
        default=None, description=f"the highest rate (default {MAX_PER_MINUTE:,})"
    )

    @field_validator("max_per_minute")
    @classmethod
    def _base_within_max(cls, ceiling: int | None, info: ValidationInfo) -> int | None:
        # On maxPerMinute, so the 400 names it; basePerMinute is validated first (declared
        # before it), and absent from ``info.data`` when it failed on its own.
        base = info.data.get("base_per_minute")
        if is_stored(info) or ceiling is None or base is None:
            return ceiling
        if base > ceiling:
            raise ValueError(f"must be at least basePerMinute ({base})")
        return ceiling

    @property
    def ceiling(self) -> int:
        return self.max_per_minute or MAX_PER_MINUTE


Percent = Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)]
MAX_GROUPS = 20


# Tags one rollout group may name.
MAX_GROUP_TAGS = 10


class RolloutGroup(StrictWireModel):
    """(beyond OpenGate) One stage of a staged rollout (workflows/groups.py): the next ``count``
    devices, or ``percent`` of the job's devices, in target order (by device id for tags, in
    list order for listed ids), or the devices carrying one of ``tags``; a device is in the
    first group that takes it."""

    name: Label
    percent: float | None = Field(default=None, gt=0, le=100, allow_inf_nan=False)
    count: Count | None = None
    tags: Annotated[list[Tag], items(MAX_GROUP_TAGS, min_items=1)] | None = None
    success_threshold: Percent = Field(
        default=0,
        description="share (%) of this group's operations that must succeed before the next "
        "group starts; 0: every operation of this group has closed",
    )
    error_threshold: Percent | None = Field(
        default=None,
        description="share (%) of this group's operations that may fail; past it the job is "
        "PAUSED with the reason",
    )

    @model_validator(mode="after")
    def _one_size(self, info: ValidationInfo) -> RolloutGroup:
        if is_stored(info):
            return self
        if (self.percent is not None) + (self.count is not None) + (self.tags is not None) != 1:
            raise ValueError("a group has one of percent, count or tags")
        return self


class Rollout(StrictWireModel):
    """(beyond OpenGate) Pacing of a job and automatic stop of a bad rollout."""

    max_concurrency: Annotated[int, between(1, 2000)] | None = None
    max_per_minute: PerMinute | None = None
    abort: RolloutAbort | None = None
    rate: RolloutRate | None = None
    groups: Annotated[list[RolloutGroup], items(MAX_GROUPS, min_items=1)] | None = None

    @field_validator("groups")
    @classmethod
    def _groups_add_up(
        cls, groups: list[RolloutGroup] | None, info: ValidationInfo
    ) -> list[RolloutGroup] | None:
        if is_stored(info) or not groups:
            return groups
        problem = group_list_problem(groups)
        if problem is not None:
            raise ValueError(problem)
        return groups


# Percent shares are summed as floats: 33.3 + 33.3 + 33.4 is 100 give or take this.
_SHARE_SLACK = 1e-9


def group_list_problem(groups: list[RolloutGroup]) -> str | None:
    """Why a list of rollout groups cannot be run as the operator wrote it, or None.

    Names are unique (the report and a pause reason name a group). Percent shares are of the
    job's total and the last group takes whatever the others leave (workflows/groups.py), so the
    groups before the last must leave it some (their percents sum to under 100: otherwise every
    later group is empty and shows DONE at once), and the shares may sum to at most 100, except
    that the last group may say 100: "the rest". How ``count`` groups fit the fleet is known only
    when the job counts its targets (docs/api.md)."""
    seen: set[str] = set()
    for index, group in enumerate(groups):
        if group.name in seen:
            return f"group names must be unique: {group.name!r} is given again at [{index}]"
        seen.add(group.name)
    before = math.fsum(g.percent for g in groups[:-1] if g.percent is not None)
    if len(groups) > 1 and before >= 100 - _SHARE_SLACK:
        return (
            f"the percent groups before the last take {before:g}% of the devices: the groups "
            "after them would be empty"
        )
    last = groups[-1].percent
    if last is not None and last != 100 and before + last > 100 + _SHARE_SLACK:
        return (
            f"the percent shares sum to {before + last:g}, over 100 (the last group takes the "
            "devices the others leave: give it 100 to say so)"
        )
    return None


# A job id, as another job refers to it: UUIDs, or ``<task id>-<time>`` (api/job_service.py).
MAX_JOB_ID = 200
JobRef = Annotated[str, text(MAX_JOB_ID, min_length=1)]


class JobRequest(StrictWireModel):
    name: TypeName
    parameters: JsonObject = {}
    target: JobTarget | None = None
    active: bool = True
    notify: bool = False
    callback: str | None = Field(default=None, pattern=CALLBACK_PATTERN, max_length=MAX_URL)
    user: Text | None = None
    user_notes: Notes | None = None
    schedule: JobSchedule | None = None
    operation_parameters: OperationParameters = OperationParameters()
    rollout: Rollout | None = None
    continuous: bool = Field(
        default=False,
        description=(
            "(beyond OpenGate) keep a job on tags open until its schedule.stop: a device that "
            "gains one of its tags meanwhile gets the operation once"
        ),
    )
    # Set by the server on a job created by ``POST /operation/jobs/{id}/rerun``; a client's
    # value is ignored, as its ``user`` is.
    rerun_of: JobRef | None = Field(
        default=None,
        description="(beyond OpenGate) the job this one reruns; set by the server",
        json_schema_extra={"readOnly": True},
    )

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> JobRequest:
        if self.target is not None and (self.target.append is None or self.target.remove):
            raise ValueError('a job\'s target is {"append": {...}}')
        if self.active and self.target is None:
            raise ValueError("an active job needs a target")
        if self.continuous:
            self._check_continuous()
        if self.callback:
            self.notify = True  # SPEC 3.1: a callback implies notify
        if not is_stored(info):
            size = len(self.model_dump_json(exclude_none=True))
            if size > MAX_REQUEST_BYTES:
                raise ValueError(
                    f"the request takes {size} bytes, more than the {MAX_REQUEST_BYTES} one job "
                    "can carry: target large fleets by tag instead of listing them, and keep "
                    "per-device parameters and notes small"
                )
        return self

    def _check_continuous(self) -> None:
        if self.target is None or not self.target.selection.tags:
            raise ValueError(
                "a continuous job targets tags: the devices that gain them join it while it runs"
            )
        if self.schedule is None or self.schedule.stop is None:
            raise ValueError("a continuous job needs a schedule.stop: it runs until then")
        if self.rollout is not None and self.rollout.groups:
            raise ValueError(
                "a continuous job has no staged groups: they are shares of a fixed fleet"
            )

    def waiting_status(self, created_at: datetime, now: datetime) -> JobStatus | None:
        """IDLE (inactive) or SCHEDULED (its start still ahead) for a job that does not run yet
        at ``now``; None once it may run. The one rule the API and the job workflow share."""
        if not self.active:
            return JobStatus.IDLE
        start = self.schedule.start if self.schedule else None
        if start is not None and start.resolve(created_at) > now:
            return JobStatus.SCHEDULED
        return None


class JobPatch(StrictWireModel):
    """What a PUT may change (SPEC 3.1); any other field is a 400 ``Forbidden field``."""

    active: bool | None = None
    notify: bool | None = None
    callback: str | None = Field(default=None, pattern=CALLBACK_PATTERN, max_length=MAX_URL)
    user_notes: Notes | None = None
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


class GroupReport(WireModel):
    """(beyond OpenGate) Where one group of a staged rollout stands."""

    name: str
    total: int
    started: int = 0
    successful: int = 0
    failed: int = 0
    closed: int = 0
    status: str = "WAITING"  # WAITING, IN_PROGRESS or DONE


class JobReport(WireModel):
    execution: JobExecution = JobExecution()
    target: TargetReport = TargetReport()
    summary: JobSummary
    # (beyond OpenGate) a staged rollout's groups, and why the job paused itself.
    groups: list[GroupReport] | None = None
    paused_reason: str | None = None


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
