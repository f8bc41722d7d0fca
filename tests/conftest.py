from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.testing import WorkflowEnvironment

from core.temporal import SEARCH_ATTRIBUTES, data_converter
from tests.stack import Stack, find_binary, running_stack, start_dev_server

# One line per HTTP request drowns what a failing test has to say.
logging.getLogger("httpx").setLevel(logging.WARNING)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    environment = await start_dev_server(
        # Temporal suggests continue-as-new early, so small jobs exercise it too.
        ["--dynamic-config-value", "limit.historyCount.suggestContinueAsNew=1500"]
    )
    async with environment:
        yield environment


@pytest_asyncio.fixture(loop_scope="session")
async def stack(env: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[Stack]:
    async with running_stack(env, tmp_path) as running:
        yield running


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest_asyncio.fixture(loop_scope="session")
async def skipping() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping test server (tests/test_timers.py, tests/test_rollout_rate.py). One per
    test: a server shared by several tests once stopped skipping time."""
    environment = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=find_binary("temporal-test-server"),
        data_converter=data_converter,
    )
    async with environment:
        # The time-skipping server hangs on unregistered custom search attributes.
        await environment.client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=environment.client.namespace,
                search_attributes={
                    k.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for k in SEARCH_ATTRIBUTES
                },
            )
        )
        yield environment
