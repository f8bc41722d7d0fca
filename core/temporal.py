"""The contract between the API, the workflows and the activities, and how every process talks to
Temporal: workflow, signal and update names, memo keys, search attributes, the visibility
queries built from them (every value escaped), and one data converter.

The search attributes are declared here once and registered by the same code for the dev server
(``devstack``), the tests and docker-compose (``python -m core.register``).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import temporalio.api.common.v1
from pydantic import TypeAdapter
from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.contrib.pydantic import PydanticJSONPlainPayloadConverter
from temporalio.converter import (
    CompositePayloadConverter,
    DataConverter,
    DefaultPayloadConverter,
    JSONPlainPayloadConverter,
)
from temporalio.service import TLSConfig

from core.settings import Settings
from models.bounds import STORED


@functools.lru_cache(maxsize=1024)
def _adapter(type_hint: Any) -> TypeAdapter[Any]:
    return TypeAdapter(type_hint)


class _StoredJSONConverter(PydanticJSONPlainPayloadConverter):
    """Pydantic JSON, read back under the ``STORED`` context: what Temporal holds was checked
    when it came in, and a bound tightened since must not make it undecodable (a workflow
    whose input cannot be decoded fails its task forever; models/bounds.py)."""

    def from_payload(
        self, payload: temporalio.api.common.v1.Payload, type_hint: type | None = None
    ) -> Any:
        hint: Any = Any if type_hint is None else type_hint
        try:
            adapter = _adapter(hint)
        except TypeError:  # an unhashable type hint: not cached
            adapter = TypeAdapter(hint)
        return adapter.validate_json(payload.data, context=STORED)


class _PayloadConverter(CompositePayloadConverter):
    def __init__(self) -> None:
        json_converter = _StoredJSONConverter()
        super().__init__(
            *(
                json_converter if isinstance(c, JSONPlainPayloadConverter) else c
                for c in DefaultPayloadConverter.default_encoding_payload_converters
            )
        )


# The one data converter of every client, worker and replayer.
data_converter = DataConverter(payload_converter_class=_PayloadConverter)

# --- workflows and their messages ---

JOB_WORKFLOW = "JobWorkflow"
OPERATION_WORKFLOW = "OperationWorkflow"


class JobSignal:
    """Signals a job takes from its operations."""

    PROGRESS = "operation_progress"
    CLOSED = "operation_closed"
    LATE = "operation_late"


class OperationSignal:
    """Signals an operation takes: from the south API, and from its job."""

    DEVICE_RESPONSE = "device_response"
    STOP = "stop"
    HOLD = "hold"
    # From a job run about to continue-as-new: its successor cannot see this operation's
    # completion, so the operation reports its close by signal from now on.
    REPORT_BY_SIGNAL = "report_by_signal"


# Updates: a job's PUT/DELETE, a sleepy device's poll handing out an operation, and a job's
# order to its operations (models.messages.OperationOrder).
JOB_CHANGE = "change"
HAND_OUT = "hand_out"
OPERATION_ORDER = "order"
# The error type (and message) of a change a job's life cycle forbids: SPEC 3, code 1015.
JOB_STATE_TRANSITION = "JobStateTransition"
TRANSITION_ERROR = "Job state transition error"

# --- memo keys ---

# A job: the request as accepted, the task that created it, and its report (republished as it
# changes, at most about once a second), so the API reads jobs without querying the worker.
JOB_REQUEST_MEMO = "request"
JOB_TASK_MEMO = "taskId"
JOB_REPORT_MEMO = "report"
# An operation: the operation object, and until when a timed-out operation takes a late answer
# (an ISO date; absent otherwise).
OPERATION_MEMO = "operation"
LATE_ANSWERS_UNTIL_MEMO = "lateAnswersUntil"

# --- search attributes ---

# Set on job workflows.
OPERATION_NAME = SearchAttributeKey.for_keyword("OperationName")
JOB_STATUS = SearchAttributeKey.for_keyword("JobStatus")
JOB_USER = SearchAttributeKey.for_keyword("JobUser")
TASK_ID = SearchAttributeKey.for_keyword("TaskId")
# Set on operation workflows (with OPERATION_NAME).
JOB_ID = SearchAttributeKey.for_keyword("JobId")
ENTITY_ID = SearchAttributeKey.for_keyword("EntityId")
OPERATION_STATUS = SearchAttributeKey.for_keyword("OperationStatus")
OPERATION_RESULT = SearchAttributeKey.for_keyword("OperationResult")

SEARCH_ATTRIBUTES: tuple[SearchAttributeKey[str], ...] = (
    OPERATION_NAME,
    JOB_STATUS,
    JOB_USER,
    TASK_ID,
    JOB_ID,
    ENTITY_ID,
    OPERATION_STATUS,
    OPERATION_RESULT,
)


def dev_server_search_attribute_args() -> list[str]:
    """``temporal server start-dev`` arguments that register every search attribute."""
    args: list[str] = []
    for key in SEARCH_ATTRIBUTES:
        args += ["--search-attribute", f"{key.name}=Keyword"]
    return args


# --- visibility queries: values go in as escaped literals, never as query syntax ---


class QueryValueError(ValueError):
    """A value that cannot be put into a visibility query (a control character)."""


def literal(value: str) -> str:
    """A string literal for a visibility query: user input is never spliced in unescaped."""
    if any(ord(c) < 0x20 for c in value):
        raise QueryValueError("Control characters are not allowed in filter values")
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


def all_of(*clauses: str | None) -> str:
    return " AND ".join(c for c in clauses if c)


def equals(attribute: str, value: str | None) -> str | None:
    return None if value is None else f"{attribute} = {literal(value)}"


def of_type(workflow_type: str) -> str:
    return equals("WorkflowType", workflow_type) or ""


def operations_of_job(job_id: str) -> str:
    """The query of every operation of one job."""
    return all_of(of_type(OPERATION_WORKFLOW), equals(JOB_ID.name, job_id))


async def connect(settings: Settings) -> Client:
    """The client of every process: TLS, mutual TLS and Temporal Cloud API keys through the SDK's
    own options, as the settings say (docs/deployment.md)."""
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=data_converter,
        tls=_tls(settings),
        api_key=settings.temporal_api_key or None,
    )


def _read(path: str) -> bytes | None:
    return Path(path).read_bytes() if path else None


def _tls(settings: Settings) -> TLSConfig | bool:
    """Plain unless any TLS setting or an API key is set (Temporal Cloud takes keys over TLS
    only); the system's roots verify the server when no CA file is given."""
    wanted = (
        settings.temporal_tls
        or settings.temporal_tls_ca_file
        or settings.temporal_tls_cert_file
        or settings.temporal_api_key
    )
    if not wanted:
        return False
    return TLSConfig(
        server_root_ca_cert=_read(settings.temporal_tls_ca_file),
        client_cert=_read(settings.temporal_tls_cert_file),
        client_private_key=_read(settings.temporal_tls_key_file),
        domain=settings.temporal_tls_server_name or None,
    )


def job_workflow_id(job_id: str) -> str:
    return job_id


def operation_workflow_id(operation_id: str) -> str:
    return f"operation-{operation_id}"
