"""The real stack for tests: a Temporal dev server, a worker, the API and the device simulator,
all on 127.0.0.1, talking real HTTP and gRPC to each other."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import uvicorn
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from core.settings import Settings
from core.temporal import SEARCH_ATTRIBUTES, data_converter
from inventory.keys import new_key
from simulator.app import create_app as create_simulator
from simulator.fleet import Fleet
from worker import running_worker

T = TypeVar("T")
CALLBACK_SECRET = "callback-test-secret"


def find_binary(name: str) -> str:
    found = shutil.which(name) or str(Path(sys.executable).with_name(name))
    if not Path(found).exists():
        raise RuntimeError(f"{name} not found: install the project's dev dependencies")
    return found


async def start_dev_server(extra_args: list[str] | None = None) -> WorkflowEnvironment:
    return await WorkflowEnvironment.start_local(
        dev_server_existing_path=find_binary("temporal"),
        data_converter=data_converter,
        search_attributes=SEARCH_ATTRIBUTES,
        dev_server_log_level="error",
        ui=False,
        dev_server_extra_args=extra_args or [],
    )


@contextlib.asynccontextmanager
async def serve(app: Any) -> AsyncIterator[str]:
    """Serve an ASGI app on a free 127.0.0.1 port; yields its base URL."""
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=2,
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            await task
            raise RuntimeError("server did not start")
        await asyncio.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def eventually(
    check: Callable[[], Awaitable[T]], timeout: float = 30.0, interval: float = 0.2
) -> T:
    """Retry ``check`` until it stops raising AssertionError, then return its value."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(interval)


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
