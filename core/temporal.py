"""How every process talks to Temporal: one data converter, one set of search attributes.

The search attributes are declared here once and registered by the same code for the dev server
(``devstack``), the tests and docker-compose (``python -m core.register``).
"""

from __future__ import annotations

from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.contrib.pydantic import pydantic_data_converter

from core.settings import Settings

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
        data_converter=pydantic_data_converter,
    )


def job_workflow_id(job_id: str) -> str:
    return job_id


def operation_workflow_id(operation_id: str) -> str:
    return f"operation-{operation_id}"
