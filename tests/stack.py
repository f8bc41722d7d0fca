"""The real stack for tests: a Temporal dev server, a worker, the API and the device simulator,
all on 127.0.0.1, talking real HTTP and gRPC to each other."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from temporalio.api.enums.v1 import EventType, WorkflowTaskFailedCause
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from core.settings import Settings
from devstack import dev_server
from devstack.processes import Supervisor, eventually

# Re-exported: test modules find the binaries of the environment through here.
from devstack.processes import find_binary as find_binary
from inventory.keys import new_key
from simulator.app import create_app as create_simulator
from simulator.fleet import Fleet
from worker import running_worker

CALLBACK_SECRET = "callback-test-secret"


class _DevServerEnvironment(WorkflowEnvironment):
    """A dev server started by the project's supervisor, with the project's command line;
    ``shutdown`` stops it and removes its directory (its log)."""

    def __init__(self, client: Client, supervisor: Supervisor) -> None:
        # Through from_client: the SDK's test client, which fails a workflow on an assert.
        super().__init__(WorkflowEnvironment.from_client(client).client)
        self._supervisor = supervisor

    async def shutdown(self) -> None:
        await _stop_dev_server(self._supervisor)


async def _stop_dev_server(supervisor: Supervisor) -> None:
    try:
        await supervisor.stop()
    finally:
        shutil.rmtree(supervisor.log_dir, ignore_errors=True)


async def start_dev_server(extra_args: list[str] | None = None) -> WorkflowEnvironment:
    """A headless dev server on a free port, its state in memory, the project's search
    attributes registered; ``extra_args`` go to ``temporal server start-dev`` as they are."""
    workdir = Path(tempfile.mkdtemp(prefix="fleet-test-temporal-"))
    supervisor = Supervisor(workdir, cwd=workdir)
    try:
        _, client = await dev_server.start(
            supervisor,
            Settings(_env_file=None),
            os.environ,
            log_level="error",
            dynamic_config={
                # As the SDK's start_local had it: no call home from every test run.
                "frontend.enableServerVersionCheck": False,
                # A deleted run (an operation an operator retried) leaves visibility once the
                # server's queues record their progress: every 30 s by default, every second
                # here, so a test sees it gone in seconds.
                "history.transferProcessorUpdateAckInterval": "1s",
                "history.visibilityProcessorUpdateAckInterval": "1s",
            },
            extra=extra_args or [],
        )
    except BaseException:
        await _stop_dev_server(supervisor)
        raise
    return _DevServerEnvironment(client, supervisor)


@contextlib.asynccontextmanager
async def serve(app: Any) -> AsyncIterator[str]:
    """Serve an ASGI app on a free 127.0.0.1 port; yields its base URL."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=2,
    )
    async with serve_config(config, "http") as url:
        yield url


@contextlib.asynccontextmanager
async def serve_config(config: uvicorn.Config, scheme: str) -> AsyncIterator[str]:
    """Serve a uvicorn config (port 0); yields its base URL."""
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            await task
            raise RuntimeError("server did not start")
        await asyncio.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"{scheme}://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@dataclass
class Stack:
    settings: Settings
    client: Client
    api_url: str
    admin_key: str
    api: httpx.AsyncClient  # authenticated as admin
    fleet: Fleet
    sim_url: str
    sim: httpx.AsyncClient

    def as_key(self, key: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.api_url, headers={"X-ApiKey": key}, timeout=60)

    async def provision(
        self,
        count: int,
        tags: list[str] | None = None,
        prefix: str = "dev-",
        reachable: bool = True,
    ) -> list[dict[str, Any]]:
        """Add ``count`` devices to the simulator and provision them through the API (without an
        address when not ``reachable``: such devices only poll)."""
        ids = [f"{prefix}{i:05d}" for i in range(1, count + 1)]
        self.fleet.device_ids.update(ids)
        address = self.sim_url if reachable else None
        body = [{"id": i, "tags": tags or [], "address": address} for i in ids]
        answer = await self.api.post("/north/v80/provision/devices/bulk", json=body)
        assert answer.status_code == 201, answer.text
        created: list[dict[str, Any]] = answer.json()["created"]
        assert len(created) == count
        self.fleet.keys.update({d["id"]: d["apiKey"] for d in created})
        return created

    async def create_job(self, request: dict[str, Any]) -> dict[str, Any]:
        answer = await self.api.post(
            "/north/v80/operation/jobs", json={"job": {"request": request}}
        )
        assert answer.status_code == 201, answer.text
        return answer.json()

    async def job(self, job_id: str) -> dict[str, Any]:
        answer = await self.api.get(f"/north/v80/operation/jobs/{job_id}")
        assert answer.status_code == 200, answer.text
        return answer.json()

    async def wait_finished(self, job_id: str, timeout: float = 60.0) -> dict[str, Any]:
        async def finished() -> dict[str, Any]:
            job = await self.job(job_id)
            assert job["report"]["summary"]["status"] == "FINISHED", job["report"]["summary"]
            return job

        return await eventually(finished, timeout=timeout, interval=0.3)

    async def operations(self, job_id: str, size: int = 1000) -> list[dict[str, Any]]:
        """Every operation of a job, read page by page through the API."""
        found: list[dict[str, Any]] = []
        start = 1
        while True:
            answer = await self.api.get(
                f"/north/v80/operation/jobs/{job_id}/operations",
                params={"start": start, "size": size},
            )
            assert answer.status_code == 200, answer.text
            body = answer.json()
            found += body["operations"]
            if start >= body["page"]["of"]:
                return found
            start += 1


@contextlib.asynccontextmanager
async def running_stack(
    env: WorkflowEnvironment, tmp_path: Path, **overrides: Any
) -> AsyncIterator[Stack]:
    _, admin_key, _ = new_key()
    settings = Settings(
        temporal_address=env.client.service_client.config.target_host,
        task_queue=f"tq-{uuid.uuid4()}",
        bootstrap_admin_key=admin_key,
        **{
            "database_url": f"sqlite+aiosqlite:///{tmp_path / 'inventory.db'}",
            "late_answer_grace_ms": 20_000,
            "callback_secret": CALLBACK_SECRET,
            **overrides,
        },
    )
    fleet = Fleet()
    async with (
        serve(create_simulator(fleet)) as sim_url,
        running_worker(settings, client=env.client),
        serve(create_app(settings, temporal_client=env.client)) as api_url,
        httpx.AsyncClient(base_url=api_url, headers={"X-ApiKey": admin_key}, timeout=60) as api,
        httpx.AsyncClient(base_url=sim_url, timeout=30) as sim,
        contextlib.aclosing(fleet),  # closed first: its answers in flight need the API
    ):
        fleet.platform_url = api_url
        yield Stack(settings, env.client, api_url, admin_key, api, fleet, sim_url, sim)


# Temporal's own retries, not failures of a workflow's code: a signal that came while the task
# was completing the workflow (UnhandledCommand), a worker's sticky cache reset.
BENIGN_TASK_FAILURES = (
    WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_UNHANDLED_COMMAND,
    WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_RESET_STICKY_TASK_QUEUE,
)


async def failed_workflow_tasks(stack: Stack) -> tuple[int, list[str]]:
    """How many workflows this stack ran (jobs and operations), and those that ever failed a
    workflow task: an input that passed the API must never poison one (issue 9)."""
    seen, failed = 0, []
    query = f"TaskQueue = '{stack.settings.task_queue}'"
    async for execution in stack.client.list_workflows(query):
        seen += 1
        handle = stack.client.get_workflow_handle(execution.id, run_id=execution.run_id)
        async for event in handle.fetch_history_events():
            if event.event_type != EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
                continue
            attributes = event.workflow_task_failed_event_attributes
            if attributes.cause in BENIGN_TASK_FAILURES:
                continue
            cause = WorkflowTaskFailedCause.Name(attributes.cause)
            failed.append(
                f"{execution.workflow_type} {execution.id}: {cause} {attributes.failure.message}"
            )
            break
    return seen, failed
