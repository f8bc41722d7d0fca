"""How every process talks to Temporal: one data converter, one set of search attributes.

The search attributes are declared here once and registered by the same code for the dev server
(``devstack``), the tests and docker-compose (``python -m core.register``).
"""

from __future__ import annotations

import functools
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


async def connect(settings: Settings) -> Client:
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=data_converter,
    )


def job_workflow_id(job_id: str) -> str:
    return job_id


def operation_workflow_id(operation_id: str) -> str:
    return f"operation-{operation_id}"
