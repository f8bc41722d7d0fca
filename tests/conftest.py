from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.testing import WorkflowEnvironment

from tests.stack import Stack, running_stack, start_dev_server

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
