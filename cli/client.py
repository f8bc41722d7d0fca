"""A small typed client of the north API over httpx: the SPEC's models in, the SPEC's models out,
and every failure as one ``CliProblem`` (an error body as ``ApiProblem``)."""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError

from cli.config import Settings
from cli.errors import ApiProblem, ConnectionProblem, Unreachable, UsageProblem
from models.bounds import STORED
from models.devices import (
    ApiKey,
    ApiKeyIn,
    BulkResult,
    Device,
    DeviceIn,
    DeviceList,
    DeviceUpdate,
    NewApiKey,
)
from models.jobs import (
    Job,
    JobEnvelope,
    JobList,
    JobPatch,
    JobPatchEnvelope,
    JobPatchRequest,
)
from models.operation_types import OperationTypeRecord
from models.operations import Operation, OperationList
from models.tasks import Task, TaskDefinition, TaskEnvelope, TaskList

NORTH = "/north/v80"
# The largest page the API serves (SPEC 3.2): the fewest requests for a whole listing.
PAGE_SIZE = 1000
M = TypeVar("M", bound=BaseModel)
_KEYS = TypeAdapter(list[ApiKey])
_TYPES = TypeAdapter(list[OperationTypeRecord])


def wire(model: BaseModel) -> Any:
    """A request model as the JSON the SPEC defines: only the fields that were given."""
    return model.model_dump(mode="json", by_alias=True, exclude_unset=True)


def tls_context(settings: Settings) -> ssl.SSLContext | bool:
    """Verify the API against ``ca_file`` (else the system store) and present ``cert_file``
    (mutual TLS) when given; plain ``True`` when nothing was configured."""
    if not (settings.ca_file or settings.cert_file):
        return True
    try:
        context = ssl.create_default_context(cafile=settings.ca_file)
        if settings.cert_file:
            context.load_cert_chain(settings.cert_file, settings.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise UsageProblem(f"cannot load the TLS files: {exc}") from exc
    return context


class FleetClient:
    """The north API, one method per call the CLI makes."""

    def __init__(self, settings: Settings, transport: httpx.BaseTransport | None = None) -> None:
        self.settings = settings
        headers = {"Accept": "application/json", "User-Agent": "fleetops-cli"}
        if settings.api_key:
            headers["X-ApiKey"] = settings.api_key
        self._http = httpx.Client(
            base_url=settings.url,
            headers=headers,
            timeout=settings.timeout,
            verify=tls_context(settings),
            transport=transport,
        )

    def __enter__(self) -> FleetClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- the one place HTTP happens -------------------------------------------------------------

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """The decoded JSON answer of ``method path`` (under ``/north/v80``); an error answer
        raises ``ApiProblem`` with the SPEC message, a transport failure ``ConnectionProblem``."""
        url = f"{self.settings.url}{NORTH}{path}"
        try:
            answer = self._http.request(method, f"{NORTH}{path}", **kwargs)
        except httpx.TransportError as exc:
            message = f"cannot reach the API at {url}: {_reason(exc)}"
            # A certificate that does not verify will not verify on the next attempt either.
            if _caused_by(exc, ssl.SSLError):
                raise ConnectionProblem(message) from exc
            raise Unreachable(message) from exc
        if answer.status_code >= 400:
            raise problem_of(answer)
        if answer.status_code == 204 or not answer.content:
            return None
        try:
            return answer.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConnectionProblem(
                f"{method} {url} answered {answer.status_code} with a body that is not JSON"
            ) from exc

    def _read(self, model: type[M], method: str, path: str, **kwargs: Any) -> M:
        return parsed(model, self.call(method, path, **kwargs))

    # -- jobs -----------------------------------------------------------------------------------

    def create_job(self, body: JobEnvelope) -> Job:
        return self._read(Job, "POST", "/operation/jobs", json=wire(body))

    def job(self, job_id: str) -> Job:
        return self._read(Job, "GET", f"/operation/jobs/{_segment(job_id)}")

    def jobs(self, page: int = 1, size: int = 100, **filters: str | None) -> JobList:
        params = {"start": page, "size": size, **{k: v for k, v in filters.items() if v}}
        return self._read(JobList, "GET", "/operation/jobs", params=params)

    def change_job(self, job_id: str, patch: JobPatch) -> Job:
        body = JobPatchEnvelope(job=JobPatchRequest(request=patch))
        return self._read(Job, "PUT", f"/operation/jobs/{_segment(job_id)}", json=wire(body))

    def cancel_job(self, job_id: str) -> Job:
        return self._read(Job, "DELETE", f"/operation/jobs/{_segment(job_id)}")

    def job_operations(self, job_id: str, page: int = 1, size: int = 100) -> OperationList:
        path = f"/operation/jobs/{_segment(job_id)}/operations"
        return self._read(OperationList, "GET", path, params={"start": page, "size": size})

    def search_operations(
        self, clauses: list[dict[str, Any]], page: int = 1, size: int = 100
    ) -> OperationList:
        """The operations history search (SPEC 3.2) with the ``and`` of ``clauses``."""
        body = {"filter": {"and": clauses}, "limit": {"start": page, "size": size}}
        return self._read(OperationList, "POST", "/search/entities/operations/history", json=body)

    def operation_pages(
        self, clauses: list[dict[str, Any]], size: int | None = None
    ) -> Iterator[list[Operation]]:
        """Every operation the search selects, one page at a time (read when the previous one
        was used: a caller that prints each page holds one page in memory, not the job)."""
        size = size or PAGE_SIZE
        page = 1
        while True:
            found = self.search_operations(clauses, page, size).operations
            yield found
            if len(found) < size:
                return
            page += 1

    # -- devices --------------------------------------------------------------------------------

    def provision(self, devices: list[DeviceIn]) -> BulkResult:
        body = [wire(d) for d in devices]
        return self._read(BulkResult, "POST", "/provision/devices/bulk", json=body)

    def change_device(self, device_id: str, update: DeviceUpdate) -> Device:
        path = f"/provision/devices/{_segment(device_id)}"
        return self._read(Device, "PUT", path, json=wire(update))

    def devices(self, tag: str | None = None, page: int = 1, size: int = 100) -> DeviceList:
        params: dict[str, Any] = {"start": page, "size": size}
        if tag:
            params["tag"] = tag
        return self._read(DeviceList, "GET", "/provision/devices", params=params)

    def device(self, device_id: str) -> Device:
        return self._read(Device, "GET", f"/provision/devices/{_segment(device_id)}")

    def delete_device(self, device_id: str) -> None:
        self.call("DELETE", f"/provision/devices/{_segment(device_id)}")

    # -- tasks, operation types, keys -------------------------------------------------------------

    def tasks(self, page: int = 1, size: int = 100) -> TaskList:
        return self._read(TaskList, "GET", "/operation/tasks", params={"start": page, "size": size})

    def task(self, task_id: str) -> Task:
        return self._read(Task, "GET", f"/operation/tasks/{_segment(task_id)}")

    def create_task(self, task: TaskDefinition) -> Task:
        body = TaskEnvelope(task=task)
        return self._read(Task, "POST", "/operation/tasks", json=wire(body))

    def delete_task(self, task_id: str) -> Task:
        return self._read(Task, "DELETE", f"/operation/tasks/{_segment(task_id)}")

    def task_jobs(self, task_id: str, page: int = 1, size: int = 100) -> JobList:
        path = f"/operation/tasks/{_segment(task_id)}/jobs"
        return self._read(JobList, "GET", path, params={"start": page, "size": size})

    def operation_types(self) -> list[OperationTypeRecord]:
        answer = self.call("GET", "/operationTypes")
        return parsed_with(_TYPES, (answer or {}).get("operationTypes", []))

    def operation_type(self, name: str) -> OperationTypeRecord:
        return self._read(OperationTypeRecord, "GET", f"/operationTypes/{_segment(name)}")

    def keys(self) -> list[ApiKey]:
        return parsed_with(_KEYS, (self.call("GET", "/apiKeys") or {}).get("apiKeys", []))

    def create_key(self, wanted: ApiKeyIn) -> NewApiKey:
        return self._read(NewApiKey, "POST", "/apiKeys", json=wire(wanted))

    def delete_key(self, key_id: str) -> None:
        self.call("DELETE", f"/apiKeys/{_segment(key_id)}")


def parsed(model: type[M], data: Any) -> M:
    """``data`` read as ``model``, as stored: the request bounds are the server's to check, and an
    old job's dates (a start now in the past) must still read."""
    try:
        return model.model_validate(data, context=STORED)
    except ValidationError as exc:
        raise ConnectionProblem(_unreadable(model.__name__, exc)) from exc


def parsed_with(adapter: TypeAdapter[Any], data: Any) -> Any:
    try:
        return adapter.validate_python(data, context=STORED)
    except ValidationError as exc:
        raise ConnectionProblem(_unreadable("list", exc)) from exc


def _unreadable(what: str, exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    return (
        f"the API answered a {what} this CLI does not understand ({where}: {first['msg']}); "
        "is the CLI of the same version as the server?"
    )


def problem_of(answer: httpx.Response) -> ApiProblem:
    """The SPEC error body (``{"errors":[{"code","message","context"}]}``) as one problem."""
    wait_s = retry_after(answer.headers.get("retry-after"))
    try:
        errors = answer.json()["errors"]
        first = errors[0]
        message = str(first["message"])
    except (ValueError, KeyError, IndexError, TypeError):
        text = answer.text.strip()[:300] or answer.reason_phrase
        return ApiProblem(answer.status_code, text, wait_s=wait_s)
    for more in errors[1:]:
        if isinstance(more, dict) and more.get("message"):
            message += f"; {more['message']}"
    context = [
        (str(c.get("name")), str(c.get("value")))
        for c in first.get("context") or []
        if isinstance(c, dict)
    ]
    code = first.get("code")
    return ApiProblem(
        answer.status_code, message, code if isinstance(code, int) else None, context, wait_s
    )


def retry_after(value: str | None) -> float | None:
    """A ``Retry-After`` header in seconds: delay-seconds or an HTTP date (RFC 9110)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: BaseException | None = exc
    for _ in range(10):  # the chain httpx -> httpcore -> ssl is short
        if seen is None:
            return False
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _reason(exc: httpx.TransportError) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out ({text})"
    return text


def _segment(value: str) -> str:
    """An id as one path segment (a ``/`` or ``?`` in it must not change the route)."""
    return quote(value, safe="")
