"""What OpenGate's own clients send and expect: the wire shapes of the vendor's JavaScript
client and of its Python client, written down as our own constants and builders.

Nothing here is the vendor's code. Each shape was read from their public sources and is cited by
repository path:

- ``amplia-iiot/opengate-js`` at release 15.4.0 (commit ``6a32ca03``), "JS" below;
- ``opengate-data`` 1.15.3 from PyPI (package ``opengate_data``), "PY" below.

Paths are relative to ``/north/v80`` (``BASE``); ``{job_id}``-style placeholders are filled with
``VendorRequest.format``. Request headers, the same for every call unless said otherwise:

- JS (``src/util/NorthAmpliaREST.js``): ``X-ApiKey: <key>``; a JSON body is sent with
  ``Content-Type: application/json`` (superagent's ``send(object)``; ``put`` also sets it
  explicitly); no ``Accept`` header of its own. Default request timeout: 5 s (``default()``), so an
  answer slower than that is a client-side failure. Query values are written raw (not encoded).
  ``_createPromiseRequest`` resolves every 2xx and rejects every other status with
  ``{"statusCode", "data": <body>}``.
- PY (``opengate_data/opengate_client.py``, ``opengate_data/utils/utils.py``): ``X-ApiKey: <key>``
  and what ``requests`` adds: ``Content-Type: application/json`` (``json=``), ``Accept: */*``.

Each constant is followed by a docstring saying what the client reads from the answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Final

BASE: Final = "/north/v80"

JS_REPO: Final = "amplia-iiot/opengate-js"
JS_COMMIT: Final = "6a32ca03"
PY_PACKAGE: Final = "opengate-data==1.15.3"


@dataclass(frozen=True)
class VendorRequest:
    """One HTTP request exactly as a vendor client sends it."""

    method: str
    path: str  # relative to BASE, with {placeholders}
    body: Any = None  # the JSON body; None: no body at all
    query: dict[str, str] = field(default_factory=dict)  # in the order sent
    ok: tuple[int, ...] = (200,)  # the statuses the client takes as success
    source: str = ""  # the vendor file the shape comes from

    def format(self, **ids: str) -> VendorRequest:
        """This request with its path placeholders filled."""
        return replace(self, path=self.path.format(**ids))

    @property
    def url(self) -> str:
        """The absolute path with the query string, as the client writes it (values raw)."""
        query = "&".join(f"{k}={v}" for k, v in self.query.items())
        return f"{BASE}{self.path}" + (f"?{query}" if query else "")


# --------------------------------------------------------------------------------------------
# Times and dates as the JS client writes them (moment.js, src/util/DATE_FORMAT.js)
# --------------------------------------------------------------------------------------------
# DATE_FORMAT is "" (moment's default "YYYY-MM-DDTHH:mm:ssZ": local time, offset with a colon,
# no fraction) and TIME_FORMAT is "HH:mm:ssZ". Both carry the offset of the machine running the
# client: "+01:00" in Madrid in winter, "+00:00" (never "Z") on a UTC machine.


def js_offset(moment: datetime) -> str:
    """The offset as moment's ``Z`` token writes it: ``+01:00``, ``-05:00``, ``+00:00``."""
    offset = moment.utcoffset()
    if offset is None:
        raise ValueError("the JS client always writes an offset: give an aware datetime")
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    hours, mins = divmod(abs(minutes), 60)
    return f"{sign}{hours:02d}:{mins:02d}"


def js_date(moment: datetime) -> str:
    """A date as the JS client sends it: ``2026-11-24T02:00:36+01:00``."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + js_offset(moment)


def js_time(moment: datetime) -> str:
    """A pattern time as the JS client sends it: ``02:00:36+01:00``."""
    return moment.strftime("%H:%M:%S") + js_offset(moment)


TIME_SAMPLES: Final = (
    ("02:00:36+01:00", "01:00:36Z"),
    ("21:30:00-05:00", "02:30:00Z"),  # the next day in UTC: a weekly MON is a UTC TUE
    ("02:00:36+00:00", "02:00:36Z"),
    ("02:00:36Z", "02:00:36Z"),  # not sent by JS (it writes +00:00); in SPEC 1
)
"""(time as sent, the same instant in UTC). The JS client derives the pattern time from the task's
start date in the client's local zone, so weekly days / monthly days are the client's local days;
an offset that crosses midnight moves the UTC day (src/operations/catalog/period/pattern/
ByGeneric.js)."""


# --------------------------------------------------------------------------------------------
# 1. Creating a job: operations.builderByOperationName(name)
# --------------------------------------------------------------------------------------------

OPERATION_TYPES_SEARCH: Final = VendorRequest(
    "POST",
    "/search/operationTypes",
    body={"filter": {}},
    source="src/operations/Operations.js (_loadOperationCatalog); "
    "src/searching/builder/OperationTypesSearchBuilder.js (SearchWithoutLimit: no limit); "
    "src/searching/builder/SearchBuilder.js (_buildFilter); src/searching/BaseSearch.js (execute)",
)
"""Sent once per client (the result is cached) before the first builder; again on every
``builderByOperationName`` while the name is not found. Success needs statusCode exactly 200
(anything else, or any exception while reading, is swallowed and the operation is reported
"Operation <'NAME'> unavailable."). The body must be a JSON **array** (the client runs
``for (i in body)`` and calls ``body[i].name.toUpperCase()``; an object such as
``{"operationTypes":[...]}`` throws and reads as "unavailable"). The name match is on
``name.toUpperCase()`` against the asked name upper-cased; the job then carries ``name`` as served.
Per type it reads:

- ``name`` (string, required);
- ``parameters``: if the key is present at all (even ``null`` or ``{}``) the job request gets
  ``"parameters": {}`` plus what the user sets; ``withParameters`` refuses a type whose
  ``parameters`` is falsy (absent/null);
- ``parameters.schema``: when truthy it is compiled with Ajv 6 (``useDefaults: "empty"``,
  ``coerceTypes: true``) and the job parameters are validated *and mutated* (defaults filled in,
  types coerced) before sending. A compile error makes ``build()`` throw, so no job can be made:
  see ``AJV6_FORMATS`` and ``ajv6_blockers`` (a ``$schema`` other than draft-07, e.g. the
  draft 2020-12 ``$schema`` of our catalog schemas, throws ``no schema with key or ref``);
- ``applicableTo`` (array of entity types): only for ``appendEntitiesBy.filter`` (a target filter
  plus ``?resourceType=``), not for entity lists or tags;
- ``steps`` is not read by the builder (BaseOperationBuilder.js never touches it).
"""

OPERATION_TYPES_SEARCH_ANSWER_EXAMPLE: Final = [
    {
        "name": "REBOOT_EQUIPMENT",
        "parameters": {
            "schema": {
                "type": "object",
                "properties": {
                    "type": {
                        "type": "string",
                        "enum": ["HARDWARE", "SOFTWARE"],
                        "default": "HARDWARE",
                    }
                },
            }
        },
        "applicableTo": ["entity.device"],
        "steps": [],
    },
    {"name": "REFRESH_INFO", "applicableTo": ["entity.device"], "steps": []},
]
"""An answer the JS builder works with (our example, not the vendor's): a bare array."""

AJV6_FORMATS: Final = frozenset(
    {
        "date", "time", "date-time", "uri", "uri-reference", "uri-template", "url", "email",
        "hostname", "ipv4", "ipv6", "regex", "uuid", "json-pointer", "json-pointer-uri-fragment",
        "relative-json-pointer",
    }
)  # fmt: skip
"""The formats Ajv 6 knows; any other ``format`` throws at compile (``unknownFormats: true`` is
Ajv 6's default). Unknown keywords are ignored. package.json pins ``"ajv": "^6.12.0"``."""

AJV6_META_SCHEMAS: Final = frozenset(
    {"http://json-schema.org/draft-07/schema#", "http://json-schema.org/draft-07/schema"}
)
"""The only ``$schema`` values Ajv 6 resolves without ``addMetaSchema`` (none also works)."""


def ajv6_blockers(schema: Any, path: str = "schema") -> list[str]:
    """Where a ``parameters.schema`` would make the JS client's Ajv 6 throw at compile: a
    ``$schema`` it cannot resolve, or a ``format`` it does not know (walked through every nested
    object and list)."""
    found: list[str] = []
    if isinstance(schema, dict):
        meta = schema.get("$schema")
        if isinstance(meta, str) and meta not in AJV6_META_SCHEMAS:
            found.append(f"{path}.$schema={meta}")
        fmt = schema.get("format")
        if isinstance(fmt, str) and fmt not in AJV6_FORMATS:
            found.append(f"{path}.format={fmt}")
        for key, value in schema.items():
            found += ajv6_blockers(value, f"{path}.{key}")
    elif isinstance(schema, list):
        for i, value in enumerate(schema):
            found += ajv6_blockers(value, f"{path}[{i}]")
    return found


DEFAULT_OPERATION_TIMEOUT_MS: Final = 90_000
"""``operationParameters.timeout`` when the user sets none (BaseOperationBuilder.js constructor)."""

DEFAULT_JOB_STOP_DELAYED_MS: Final = 43_200
"""``schedule.stop.delayed`` when the user sets no job timeout: the code passes 43200 to
``withJobTimeout`` whose default unit is milliseconds, so 43.2 **seconds** (the comment and the log
line say 30 days; the wire says 43200). BaseOperationBuilder.js ``DEFAULT_DELAYED_STOP``."""


def job_request(
    name: str,
    *,
    entities: list[str] | None = None,
    entities_with_parameters: list[dict[str, Any]] | None = None,
    tag: str | None = None,
    parameters: dict[str, Any] | None = None,
    start: int | datetime | None = None,
    active: bool = True,
    job_timeout_ms: int = DEFAULT_JOB_STOP_DELAYED_MS,
    timeout_ms: int = DEFAULT_OPERATION_TIMEOUT_MS,
    ack_timeout_ms: int = 0,
    retries: int = 0,
    retries_delay_ms: int = 0,
    retry_result_list: list[str] | None = None,
    notes: str | None = None,
    callback: str | None = None,
) -> dict[str, Any]:
    """``job.request`` as BaseOperationBuilder.build() writes it (src/operations/catalog/
    BaseOperationBuilder.js, AppendEntitiesBy.js).

    ``parameters`` is None for a type served without a ``parameters`` key, else the object sent
    (``{}`` when the user set none). ``start``: None is ``executeImmediately()`` (no
    ``schedule.start``), an int is ``executeLater(minutes)`` (``start.delayed`` = minutes * 60000),
    a datetime is ``executeAtDate`` (``start.date`` in the client's offset). ``active`` false is
    only reachable with ``executeLater``/``executeAtDate`` (``executeIDLE`` throws "Not implemented
    yet"). ``ackTimeout`` 0 is deleted before sending. A callback always comes with
    ``notify: true``; ``notify`` is never sent alone.
    """
    operation_parameters: dict[str, Any] = {}
    if ack_timeout_ms:
        operation_parameters["ackTimeout"] = ack_timeout_ms
    operation_parameters |= {
        "timeout": timeout_ms,
        "retries": retries,
        "retriesDelay": retries_delay_ms,
        "retryResultList": list(retry_result_list or []),
    }
    schedule: dict[str, Any] = {}
    if isinstance(start, datetime):
        schedule["start"] = {"date": js_date(start)}
    elif start is not None:
        schedule["start"] = {"delayed": start * 60_000}
    schedule["stop"] = {"delayed": job_timeout_ms}
    request: dict[str, Any] = {
        "operationParameters": operation_parameters,
        "name": name,
        "schedule": schedule,
    }
    if parameters is not None:
        request["parameters"] = parameters
    if notes is not None:
        request["userNotes"] = notes
    if callback is not None:
        request["callback"] = callback
        request["notify"] = True
    request["target"] = _target(entities, entities_with_parameters, tag)
    request["active"] = active
    return request


def _target(
    entities: list[str] | None,
    entities_with_parameters: list[dict[str, Any]] | None,
    tag: str | None,
) -> dict[str, Any]:
    """``appendEntitiesBy.list`` (ids and ``{"id","parameters"}`` mixed in one list) or
    ``appendEntitiesBy.tag`` (one tag only: ``tags`` always has a single element)."""
    if tag is not None:
        return {"append": {"tags": [tag]}}
    append: dict[str, Any] = {}
    if entities:
        append["entities"] = list(entities)
    if entities_with_parameters:
        append["entitiesWithParameters"] = list(entities_with_parameters)
    return {"append": append}


def job_create(request: dict[str, Any]) -> VendorRequest:
    """``Operation.execute()`` for a job (src/operations/catalog/Operation.js)."""
    return VendorRequest(
        "POST",
        "/operation/jobs",
        body={"job": {"request": request}},
        ok=(201,),
        source="src/operations/catalog/BaseOperationBuilder.js (build, _convertToJob); "
        "src/operations/catalog/Operation.js (execute)",
    )


JOB_CREATE_EXAMPLE: Final = job_create(
    job_request(
        "REBOOT_EQUIPMENT", entities=["device_1", "device_2"], parameters={"type": "HARDWARE"}
    )
)
"""Any 2xx resolves; the client parses ``response.text`` as JSON (whatever shape; unparsable is
only a warning) and keeps ``statusCode`` and the ``Location`` header. Callers (the vendor's own
feature steps) take the job id from the last segment of ``Location``, else from ``data.id``.
Errors are read as ``data.errors[0].message``."""

JOB_CREATE_WITH_TAG_DELAYED: Final = job_create(
    job_request(
        "REFRESH_INFO",
        tag="madrid",
        start=10,
        job_timeout_ms=300_000,
        timeout_ms=30_000,
        notes="",
        callback="http://receiver.example/cb",
    )
)
"""``executeLater(10)`` + ``withJobTimeout(300, 'seconds')`` + ``withNotes("")`` +
``withCallback(url)`` + ``appendEntitiesBy.tag``: the job is ``SCHEDULED``; the vendor's feature
``actions_execution.feature`` then reads ``report.summary.status`` == ``SCHEDULED``."""

JOB_TARGET_BY_FILTER_NOTE: Final = (
    "appendEntitiesBy.filter(filter, resourceType) sends target {'filter': {...}} and POSTs to "
    "/operation/jobs?resourceType=<type> (or /operation/tasks?resourceType=...); the SPEC has no "
    "target filter."
)
"""Not in our SPEC (BaseOperationBuilder.js build, AppendEntitiesBy.js filter)."""


# --------------------------------------------------------------------------------------------
# 2. Tasks
# --------------------------------------------------------------------------------------------

DAYS: Final = ("MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN")  # period/DAYS_ENUM.js
MONTHS: Final = (  # period/MONTHS_ENUM.js
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
)  # fmt: skip


def daily_pattern(start: datetime) -> dict[str, Any]:
    """``executeEvery(date).day()``: a pattern with only the time (ByGeneric.js)."""
    return {"pattern": {"time": js_time(start)}}


def weekly_pattern(start: datetime, days: list[str]) -> dict[str, Any]:
    """``executeEvery(date).week.days([...])`` (pattern/ByWeek.js)."""
    return {"pattern": {"time": js_time(start), "weekly": {"days": list(days)}}}


def monthly_pattern(start: datetime, day: int, months: list[str]) -> dict[str, Any]:
    """``executeEvery(date).month([...]).day(d)`` (pattern/ByMonth.js); day 1..31."""
    return {"pattern": {"time": js_time(start), "monthly": {"day": day, "months": list(months)}}}


def yearly_pattern(start: datetime, day: int, month: str) -> dict[str, Any]:
    """``executeEvery(date).year.day(d).month(m)`` (pattern/ByYear.js): one month, a string."""
    return {"pattern": {"time": js_time(start), "yearly": {"day": day, "month": month}}}


_UNIT_MS: Final = {"MINUTES": 60_000, "HOURS": 3_600_000, "DAYS": 86_400_000}


def period_repeating(each: int, unit: str) -> dict[str, Any]:
    """``executeEach(date).minutes(n) | .hours(n) | .days(n)`` (period/ExecuteEachBuilder.js)."""
    return {"period": {"each": each, "unit": unit}}


def period_job_timeout_ms(each: int, unit: str) -> int:
    """The job deadline the JS client puts in a periodic task's job when the user set none: the
    period in seconds minus one second (BaseOperationBuilder.js build: ``withJobTimeout(
    seconds(period) - 1, 'seconds')``). A user value >= the period is refused client-side."""
    return (each * _UNIT_MS[unit] // 1000 - 1) * 1000


def task_create(
    job: dict[str, Any],
    *,
    name: str,
    start: datetime,
    repeating: dict[str, Any],
    now: datetime,
    stop: int | datetime | None = None,
    description: str | None = None,
) -> VendorRequest:
    """``Operation.execute()`` for a task (BaseOperationBuilder.js ``_convertToTask``).

    ``job`` is the ``job_request`` the builder made, with ``active: true`` and no
    ``schedule.start`` (``executeImmediately`` is forced on the task's job); its
    ``schedule.stop.delayed`` is ``period_job_timeout_ms`` for a period task and
    ``DEFAULT_JOB_STOP_DELAYED_MS`` (43.2 s) for a pattern task unless the user set one.
    ``name`` defaults client-side to ``"<OPERATION NAME> <the caller's API key>"`` (a space, then
    the key). ``stop``: an int is ``{"executions": n}``, a datetime ``{"date": ...}``.
    ``schedule.start`` is dropped when the start is not in the future (``now`` >= ``start``).
    The task's ``active`` is always true (the ``active`` argument of ``executeEvery`` lands on the
    job). ``description`` is omitted when not given.
    """
    schedule: dict[str, Any] = {}
    if start > now:
        schedule["start"] = {"date": js_date(start)}
    schedule["repeating"] = repeating
    if isinstance(stop, datetime):
        schedule["stop"] = {"date": js_date(stop)}
    elif stop is not None:
        schedule["stop"] = {"executions": stop}
    task: dict[str, Any] = {"active": True, "name": name}
    if description is not None:
        task["description"] = description
    task["job"] = {"request": job}
    task["schedule"] = schedule
    return VendorRequest(
        "POST",
        "/operation/tasks",
        body={"task": task},
        ok=(201,),
        source="src/operations/catalog/BaseOperationBuilder.js (_convertToTask); "
        "src/operations/catalog/period/ExecuteEveryBuilder.js, ExecuteEachBuilder.js, "
        "pattern/ByGeneric.js, ByWeek.js, ByMonth.js, ByYear.js; src/operations/catalog/"
        "Operation.js (execute)",
    )


TASK_CREATE_READS: Final = (
    "any 2xx; response.text parsed as JSON, statusCode, Location header (the id is its last "
    "segment)"
)
"""What the client reads from the task creation answer (Operation.js execute)."""

TASK_GET: Final = VendorRequest(
    "GET",
    "/operation/tasks/{task_id}",
    source="src/operations/OperationFinder.js (findPeriodicityByPeriodicityId, "
    "findPeriodicityById); src/GenericFinder.js (_execute)",
)
"""GenericFinder unwraps ``body["task"]`` when present, else takes the whole body (our top-level
task object is fine); 204 is turned into a 404 "not found" rejection and a 400 into a 404. The
client then overwrites ``data.id`` with the id it asked for. Read: the object is non-empty;
``schedule.start.date`` / ``schedule.stop.date`` (parsed with ``new Date``), ``schedule.repeating
.period`` (``each``, ``unit``), ``schedule.repeating.pattern.monthly`` (``day``, ``months``) and
``.yearly`` (``day``, ``month``), ``job.request`` (copied as the base of an update), ``state``
(``'ACTIVE'``, only on an unused path). The vendor's feature file execute_periodic_operations.
feature shows real OpenGate reading back ``"pattern":{"time":"22:44:13+01:00",...}`` (the offset
as sent) with ``"period":null`` and a ``definedPatternNumber``."""


def task_set_active(active: bool) -> VendorRequest:
    """``newPeriodicityActions(taskId).pause()`` / ``.activate()`` after TASK_GET; also
    ``newOperationActions(jobId).pausePeriodicity()`` / ``activePeriodicity()`` after JOB_GET
    (which reads the job's ``taskId``; no ``taskId`` rejects "Operation is not periodic!").
    Success needs status exactly 200 (the raw response is returned)."""
    return VendorRequest(
        "PUT",
        "/operation/tasks/{task_id}",
        body={"task": {"active": active}},
        source="src/operations/PeriodicityActions.js (_periodicityActions, _update); "
        "src/operations/OperationActions.js (activePeriodicity, pausePeriodicity)",
    )


def task_update_schedule(
    *,
    start: datetime | None,
    repeating: dict[str, Any],
    now: datetime,
    stop: int | datetime | None = None,
) -> VendorRequest:
    """``operations.updatePeriodicityBuilder(jobId)`` → ``executeEvery(...)``/``executeEach(...)``
    → ``build().updatePeriodicity()`` (period/PeriodicityUpdateBuilder.js ``_updateTask``,
    Operation.js ``updatePeriodicity``). Only ``schedule`` is sent; ``start`` is dropped when not
    in the future. Before it: JOB_GET (reads ``taskId``) then TASK_GET. Any 2xx resolves
    (``response.text`` parsed as JSON when it can be)."""
    schedule: dict[str, Any] = {}
    if start is not None and start > now:
        schedule["start"] = {"date": js_date(start)}
    if isinstance(stop, datetime):
        schedule["stop"] = {"date": js_date(stop)}
    elif stop is not None:
        schedule["stop"] = {"executions": stop}
    schedule["repeating"] = repeating
    return VendorRequest(
        "PUT",
        "/operation/tasks/{task_id}",
        body={"task": {"schedule": schedule}},
        source="src/operations/catalog/period/PeriodicityUpdateBuilder.js (_updateTask); "
        "src/operations/catalog/Operation.js (updatePeriodicity)",
    )


TASK_DELETE: Final = VendorRequest(
    "DELETE",
    "/operation/tasks/{task_id}",
    source="src/operations/PeriodicityActions.js (cancel, _cancel); "
    "src/operations/OperationActions.js (cancelPeriodicity)",
)
"""No body. Success only when the status is exactly 200 (a 204 is rejected); preceded by TASK_GET
(or JOB_GET for ``cancelPeriodicity``). The vendor's feature then expects TASK_JOBS to be 404."""

TASK_JOBS: Final = VendorRequest(
    "GET",
    "/operation/tasks/{task_id}/jobs",
    source="features/step_definitions/when_step_definitions.js ('I try to find an operation for "
    "its id of periodicity'); src/GenericFinder.js",
)
"""Used by the vendor's feature steps, not by the library: GenericFinder with entity ``job``
(``body["job"]`` when present, else the body), then element ``[0]``'s ``id`` — i.e. real
OpenGate seems to answer a bare array of jobs here (or ``{"job":[...]}``); our ``{"jobs":[...]}``
would give the steps no id."""

EXECUTE_NOW_BODY: Final[dict[str, Any]] = {"job": {"request": {"schedule": {"start": {}}}}}
"""The body of ``newOperationActions(jobId).executeNow()`` (src/operations/OperationActions.js)."""

EXECUTE_NOW_INTENDED: Final = VendorRequest(
    "PUT",
    "/operation/jobs/{job_id}",
    body=EXECUTE_NOW_BODY,
    source="src/operations/OperationActions.js (executeNow); issue 11 point 3",
)
"""What "execute now" means (issue 11, docs/api.md): a ``SCHEDULED`` job starts at once; 200."""


def execute_now_as_sent(job_id: str) -> list[VendorRequest]:
    """The requests ``executeNow()`` really sends, in order, against an answer without
    ``operation.active`` (ours): JOB_GET; then the PUT goes to ``/operation`` **without the job
    id** (``_readAndUpdate`` uses ``this._resource``, still ``'operation'``, because only
    ``pause()``/``active()`` append ``/jobs/{id}``); if and only if that PUT succeeds,
    ``active()`` PUTs ``{"job":{"request":{"active":true}}}`` to ``/operation/jobs/{id}``.
    The vendor's own scenario for it is ``@ignore`` (ODMQA-1064 in actions_execution.feature).
    ``executeLater(minutes)`` has the same flaw (PUT ``/operation`` with
    ``{"job":{"request":{"schedule":{"start":{"delayed":ms}}}}}``, no follow-up) and
    ``changeCallback(url)`` sends ``{"undefined":{"request":{"callback":url}}}`` to ``/operation``.
    """
    source = "src/operations/OperationActions.js (executeNow, _readAndUpdate, _update, active)"
    return [
        JOB_GET.format(job_id=job_id),
        VendorRequest("PUT", "/operation", body=EXECUTE_NOW_BODY, source=source),
        job_set_active(True).format(job_id=job_id),
    ]


# --------------------------------------------------------------------------------------------
# 3. Job control and reading
# --------------------------------------------------------------------------------------------

JOB_GET: Final = VendorRequest(
    "GET",
    "/operation/jobs/{job_id}",
    source="src/operations/OperationFinder.js (findById); src/GenericFinder.js (_execute)",
)
"""``body["job"]`` when present, else the whole body (our top-level job object works). 204 is
rejected as 404 "Operation not found", a 400 is turned into 404. Read: ``taskId`` (periodicity
actions and updates), ``operation.active`` (executeNow/executeLater: absent counts as inactive),
and in the vendor's features ``report.summary.status`` (``SCHEDULED`` after a delayed create,
``IDLE`` after pausing a scheduled job and ``SCHEDULED`` again after resuming it, ``CANCELLED``
right after a cancel, ``FINISHED``)."""


def job_set_active(active: bool) -> VendorRequest:
    """``newOperationActions(jobId).pause()`` (false) / ``.active()`` (true). Success needs the
    status to be exactly 200; a finished job must fail with ``errors[0].message``
    ``"Job state transition error."`` (with the period: actions_execution.feature)."""
    return VendorRequest(
        "PUT",
        "/operation/jobs/{job_id}",
        body={"job": {"request": {"active": active}}},
        source="src/operations/OperationActions.js (pause, active, _update)",
    )


JOB_PAUSE: Final = job_set_active(False)
"""PUT ``{"job":{"request":{"active":false}}}``; reads only the status (200)."""

JOB_RESUME: Final = job_set_active(True)
"""PUT ``{"job":{"request":{"active":true}}}``; reads only the status (200)."""

JOB_CANCEL: Final = VendorRequest(
    "DELETE",
    "/operation/jobs/{job_id}",
    source="src/operations/OperationActions.js (cancel, _cancel)",
)
"""No body. Success only with status exactly 200; the client answers ``{"id": jobId}`` itself
(nothing read from the body). A finished job: ``errors[0].message`` "Job state transition error."
"""

JOB_OPERATIONS: Final = VendorRequest(
    "GET",
    "/operation/jobs/{job_id}/operations",
    query={"start": "1", "size": "10"},
    source="src/operations/OperationFinder.js (findExecutionsById, _composeUrl)",
)
"""``findExecutionsById(id, size=10, start=1)``: ``start`` is the 1-based page number, in that
order in the query. Reads ``body["operations"]`` (the array; the page object is not read), each
operation's ``name`` in the vendor's features. 204 is rejected as 404 "Executions not found", so a
page past the end must be 200 with ``"operations": []``; an unknown job is expected as 404."""


# --------------------------------------------------------------------------------------------
# 4. Searches (JS: src/searching/...; PY: opengate_data/searching/...)
# --------------------------------------------------------------------------------------------

JS_SEARCH_LIMIT: Final = {"size": 1000, "start": 1}
"""The default ``limit`` of every JS ``Search`` (SearchBuilder.js ``_buildLimit``): ``size``
first, ``start`` is a 1-based page number. ``.limit(size, start)`` replaces it."""

JS_FILTER_OPERATORS: Final = ("eq", "neq", "like", "gt", "lt", "gte", "lte", "in")
"""src/util/Expression.js; combined under ``{"and":[...]}`` or ``{"or":[...]}``
(src/searching/FilterBuilder.js); ``in`` takes a list."""

PY_FILTER_OPERATORS: Final = (*JS_FILTER_OPERATORS, "nin", "exists")
"""opengate_data/utils/expressions.py."""


def js_search_body(
    filter_: dict[str, Any] | None = None,
    *,
    size: int = 1000,
    start: int = 1,
    sort: list[tuple[str, str]] | None = None,
) -> dict[str, Any]:
    """A JS ``Search`` body (src/searching/Search.js: ``merge(filter, limit, group, select)``
    then ``sort``; ``group``/``select`` are undefined for these builders and vanish in JSON).
    ``sort`` items are (field, ``"ASCENDING"``|``"DESCENDING"``)."""
    body: dict[str, Any] = {"filter": filter_ or {}, "limit": {"size": size, "start": start}}
    if sort:
        body["sort"] = {"parameters": [{"name": n, "type": t} for n, t in sort]}
    return body


def _js_search(path: str, builder: str) -> VendorRequest:
    return VendorRequest(
        "POST",
        path,
        body=js_search_body(),
        source=f"{builder}; src/searching/builder/SearchBuilder.js; "
        "src/searching/builder/SearchWithSummaryBuilder.js (summary: path + '/summary'); "
        "src/searching/Search.js; src/searching/BaseSearch.js (execute, _loadData)",
    )


JS_PAGING: Final = (
    "BaseSearch.executeWithAsyncPaging(key): POST the body with limit.start=1 (size kept, default "
    "1000), read body[key] (or body.data[key]), and POST again with limit.start+1 while the page "
    "holds exactly limit.size items; a shorter page ends it. A non-200 after the first page ends "
    "it (so 204 past the end is fine); a non-200 first page is an error; a 200 without the key "
    "throws. execute() sends one page and returns the whole body as data."
)
"""How the JS client pages every search below (src/searching/BaseSearch.js ``_loadData``)."""

JS_SEARCH_JOBS: Final = _js_search(
    "/search/jobs", "src/searching/builder/OperationsSearchBuilder.js"
)
"""``operationsSearchBuilder()``: answer 200; paged on ``body["jobs"]`` (JS_PAGING)."""

JS_SEARCH_JOBS_SUMMARY: Final = _js_search(
    "/search/jobs/summary", "src/searching/builder/OperationsSearchBuilder.js"
)
"""``operationsSearchBuilder().summary()``: the same body, **limit included**; the whole answer
body is handed to the caller (issue 11: ``{"summary":{"count",...}}``)."""

JS_SEARCH_TASKS: Final = _js_search("/search/tasks", "src/searching/builder/TasksSearchBuilder.js")
"""``tasksSearchBuilder()``: answer 200; paged on ``body["tasks"]`` (JS_PAGING)."""

JS_SEARCH_TASKS_SUMMARY: Final = _js_search(
    "/search/tasks/summary", "src/searching/builder/TasksSearchBuilder.js"
)
"""``tasksSearchBuilder().summary()`` also exists client-side (not in our SPEC)."""

JS_SEARCH_HISTORY: Final = _js_search(
    "/search/entities/operations/history",
    "src/searching/builder/ExecutionsHistorySearchBuilder.js",
)
"""``executionsHistorySearchBuilder()``: no query parameters; paged on ``body["operations"]``."""

JS_SEARCH_HISTORY_SUMMARY: Final = _js_search(
    "/search/entities/operations/history/summary",
    "src/searching/builder/ExecutionsHistorySearchBuilder.js",
)
"""``executionsHistorySearchBuilder().summary()``: whole body to the caller."""

JS_SEARCH_ENTITY_OPERATIONS_NOTE: Final = (
    "executionsSearchBuilder().onDevices()|onSubscribers()|onSubscriptions()|"
    "onCommunicationsModules() POSTs /search/entities/devices/operations (etc.) and "
    "[...]/summary: not in our SPEC"
)
"""src/searching/builder/ExecutionsSearchBuilder.js."""

PY_HISTORY_QUERY: Final = {
    "flattened": "False",
    "utc": "False",
    "summary": "False",
    "defaultSorted": "False",
    "caseSensitive": "False",
}
"""The query of every PY history search by default: Python booleans through ``urlencode``, so
capitalised ``False``/``True``; ``with_flattened()``, ``with_utc()``, ``with_summary()``,
``with_default_sorted()``, ``with_case_sensitive()`` turn one to ``True``. ``defaultSorted`` and
``caseSensitive`` are sent too (opengate_data/searching/builder/operations_search.py execute)."""


def py_history_search(
    filter_: dict[str, Any] | None = None, *, start: int = 1, size: int = 1000
) -> VendorRequest:
    """One page of ``new_operations_search_builder()...build().execute()`` (PY). The body has
    ``filter`` only when ``with_filter`` was called, then ``limit`` written by the pager as
    ``{"start": n, "size": s}`` (opengate_data/searching/search_base.py
    ``_dict_pandas_request``). Without ``with_limit`` the pager starts at 1, size 1000."""
    body: dict[str, Any] = {}
    if filter_ is not None:
        body["filter"] = filter_
    body["limit"] = {"start": start, "size": size}
    return VendorRequest(
        "POST",
        "/search/entities/operations/history",
        body=body,
        query=dict(PY_HISTORY_QUERY),
        source="opengate_data/searching/builder/operations_search.py (execute); "
        "opengate_data/searching/search_base.py (_dict_pandas_request); "
        "opengate_data/searching/search.py (with_filter, with_limit)",
    )


PY_PAGING: Final = (
    "Without with_limit: POST pages start=1,2,3... (size 1000) and stop on 204, or on a 200 "
    "whose 'operations' is missing or empty; a full page never stops it, so a page past the end "
    "must be empty (or 204), never the last page again. With with_limit(size, start): that one "
    "page only. Any other status: the error body is returned. 204 on the first page: an empty "
    "result."
)
"""How the PY client pages the history (search_base.py ``_dict_pandas_request``); it reads only
``body["operations"]`` (and flattens each operation for pandas)."""


# --------------------------------------------------------------------------------------------
# 5. Operation types (what else the SPEC covers that the JS client calls)
# --------------------------------------------------------------------------------------------

OPERATION_TYPES_CATALOG: Final = VendorRequest(
    "GET",
    "/operationTypes/catalog",
    source="src/operationTypes/OperationTypeCatalog.js; src/GenericFinder.js",
)
"""``newOperationTypeCatalog().getOperationTypes()``: ``body["operationType"]`` when present, else
the whole body (our ``{"operationTypes":[...]}`` is returned as is); 204 → 404."""

OPERATION_TYPE_CRUD_NOTE: Final = (
    "operationTypeBuilder(org, name, obj): POST /operationTypes/provision/organizations/{org} "
    "(body: bare {name,title,description,parameters,fromCatalog,steps,models,profiles,"
    "applicableTo}, undefined keys omitted), PUT and DELETE (status exactly 200) "
    ".../{org}/{name}; newOperationTypeFinder().findByOrganizationAndName(org, name): GET "
    ".../{org}/{name} (reads body['operationTypes'] or the body). Our SPEC serves them at "
    "/operationTypes[/{name}] without the organization."
)
"""src/operationTypes/OperationType.js, OperationTypeFinder.js, src/provision/BaseProvision.js."""
