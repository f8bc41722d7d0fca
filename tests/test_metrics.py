"""Metrics on the real stack (issue 13): the worker's Prometheus endpoint (the Temporal SDK's
metrics and ours) and the API's GET /metrics, scraped over HTTP as Prometheus would."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from temporalio.testing import WorkflowEnvironment

from api.metrics import ApiMetrics
from devstack.processes import free_port
from tests.stack import Stack, eventually, running_stack, serve

# One worker metrics listener for the module: the runtime behind it lives as long as the
# process (core.metrics), and each test reads only its own task queue's series.
WORKER_METRICS_PORT = free_port()
JOBS = "/north/v80/operation/jobs"


@pytest_asyncio.fixture(loop_scope="session")
async def metered(env: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[Stack]:
    async with running_stack(
        env, tmp_path, worker_metrics_port=WORKER_METRICS_PORT, metrics_jobs_cache_s=0
    ) as running:
        yield running


async def scrape(url: str) -> list[Sample]:
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.get(url)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    return [s for family in text_string_to_metric_families(answer.text) for s in family.samples]


async def scrape_worker() -> list[Sample]:
    return await scrape(f"http://127.0.0.1:{WORKER_METRICS_PORT}/metrics")


def total(samples: list[Sample], name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    return sum(
        s.value
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def names(samples: list[Sample]) -> set[str]:
    return {s.name for s in samples}


async def test_worker_metrics_after_a_job_with_errors(metered: Stack) -> None:
    queue = metered.settings.task_queue
    devices = sorted(d["id"] for d in await metered.provision(50, tags=["metered"]))
    for device_id in devices[::10]:  # 5 devices answer an error
        answer = await metered.sim.put(
            f"/sim/devices/{device_id}", json={"result_code": "ERROR_PROCESSING"}
        )
        assert answer.status_code == 200
    job = await metered.create_job(
        {"name": "REBOOT_EQUIPMENT", "target": {"append": {"tags": ["metered"]}}}
    )
    done = await metered.wait_finished(job["id"])
    assert done["report"]["summary"]["finished"]["successful"] == 45
    assert done["report"]["summary"]["finished"]["error"] == 5

    # One push per device, each answered: 50 samples in the latency histogram.
    async def pushes_recorded() -> list[Sample]:
        samples = await scrape_worker()
        count = "fleet_device_push_latency_seconds_count"
        assert total(samples, count, task_queue=queue) == 50
        assert total(samples, count, task_queue=queue, delivery="ANSWERED") == 50
        return samples

    samples = await eventually(pushes_recorded)
    bucket = "fleet_device_push_latency_seconds_bucket"
    assert total(samples, bucket, task_queue=queue, le="+Inf") == 50
    assert total(samples, "fleet_device_push_latency_seconds_sum", task_queue=queue) > 0
    assert total(samples, "fleet_devices_unreachable_total", task_queue=queue) == 0
    pushes = [s for s in samples if s.name == bucket and s.labels["task_queue"] == queue]
    assert {s.labels["activity_type"] for s in pushes} == {"send_device_request"}

    # The SDK's own metrics, on the same endpoint and for the same task queue.
    for sdk_metric in (
        "temporal_workflow_task_schedule_to_start_latency_seconds_count",
        "temporal_workflow_task_execution_latency_seconds_count",
        "temporal_activity_execution_latency_seconds_count",
        "temporal_workflow_completed_total",
    ):
        assert total(samples, sdk_metric, task_queue=queue) > 0, sdk_metric

    # Operations closed, by result (recorded by the operation workflow at its close).
    closed = "fleet_operations_closed_total"

    async def closed_recorded() -> None:
        samples = await scrape_worker()
        assert total(samples, closed, task_queue=queue) == 50
        successful = total(samples, closed, task_queue=queue, result="SUCCESSFUL")
        errors = total(samples, closed, task_queue=queue, result="ERROR_PROCESSING")
        assert (successful, errors) == (45, 5)
        assert total(samples, closed, task_queue=queue, cancel_reason="none") == 50

    await eventually(closed_recorded)


async def test_unreachable_devices_and_cancel_reasons(metered: Stack) -> None:
    queue = metered.settings.task_queue
    sleepy = [d["id"] for d in await metered.provision(2, reachable=False, prefix="sleepy-")]
    job = await metered.create_job(
        {"name": "REBOOT_EQUIPMENT", "target": {"append": {"entities": sleepy}}}
    )

    async def unreachable() -> None:
        samples = await scrape_worker()
        name = "fleet_devices_unreachable_total"
        assert total(samples, name, task_queue=queue, reason="no_address") >= 2
        # No HTTP was sent: nothing to time.
        assert total(samples, "fleet_device_push_latency_seconds_count", task_queue=queue) == 0

    await eventually(unreachable)
    cancelled = await metered.api.delete(f"{JOBS}/{job['id']}")
    assert cancelled.status_code == 200, cancelled.text

    async def closed_by_user() -> None:
        samples = await scrape_worker()
        closed = "fleet_operations_closed_total"
        assert total(samples, closed, task_queue=queue, cancel_reason="byUser") == 2
        assert total(samples, closed, task_queue=queue) == 2

    await eventually(closed_by_user)


class Receiver:
    """A callback receiver whose first attempt at each delivery fails."""

    def __init__(self) -> None:
        self.attempts: dict[str, int] = {}
        self.app = Starlette(routes=[Route("/hook", self.hook, methods=["POST"])])

    async def hook(self, request: Request) -> JSONResponse:
        delivery = request.headers["x-delivery-id"]
        self.attempts[delivery] = self.attempts.get(delivery, 0) + 1
        return JSONResponse({}, status_code=503 if self.attempts[delivery] == 1 else 200)


async def test_callback_deliveries_and_failures(metered: Stack) -> None:
    queue = metered.settings.task_queue
    devices = [d["id"] for d in await metered.provision(1)]
    receiver = Receiver()
    async with serve(receiver.app) as url:
        await metered.create_job(
            {
                "name": "REBOOT_EQUIPMENT",
                "callback": f"{url}/hook",
                "target": {"append": {"entities": devices}},
            }
        )
        name = "fleet_callback_deliveries_total"

        async def delivered() -> None:
            samples = await scrape_worker()
            for event in ("JOB_INITIATED", "JOB_STARTED", "JOB_FINISHED"):
                labels = {"task_queue": queue, "event": event}
                assert total(samples, name, **labels, outcome="delivered") == 1, event
                assert total(samples, name, **labels, outcome="http_error") == 1, event

        await eventually(delivered, timeout=60)
    samples = await scrape_worker()
    assert total(samples, name, task_queue=queue, outcome="unreachable") == 0


async def test_api_metrics_count_requests_by_route_and_status(metered: Stack) -> None:
    url = f"{metered.api_url}/metrics"
    requests = ("fleet_api_requests_total", "fleet_api_request_duration_seconds_count")
    one_job = "/north/v80/operation/jobs/{job_id}"
    # No API key needed, like the health probes.
    async with httpx.AsyncClient(base_url=metered.api_url, timeout=30) as anonymous:
        assert (await anonymous.get("/metrics")).status_code == 200
        before = await scrape(url)
        for _ in range(7):
            assert (await anonymous.get("/health/live")).status_code == 200
        for n in range(3):
            assert (await anonymous.get(f"{JOBS}/no-such-{n}")).status_code == 401
        for n in range(4):
            assert (await metered.api.get(f"{JOBS}/no-such-{n}")).status_code == 404
        for n in range(5):
            assert (await anonymous.get(f"/no/such/path/{n}")).status_code == 404
    after = await scrape(url)

    def rise(route: str, status: str) -> list[float]:
        labels = {"method": "GET", "route": route, "status": status}
        return [total(after, n, **labels) - total(before, n, **labels) for n in requests]

    assert rise("/health/live", "200") == [7, 7]
    assert rise(one_job, "401") == [3, 3]
    assert rise(one_job, "404") == [4, 4]
    assert rise("unmatched", "404") == [5, 5]
    # Raw paths never become labels.
    assert not any("no-such" in s.labels.get("route", "") for s in after)
    assert "fleet_api_request_duration_seconds_bucket" in names(after)
    assert "/metrics" not in (await metered.api.get("/openapi.json")).json()["paths"]


async def test_api_metrics_count_jobs_by_status_cached(metered: Stack) -> None:
    url = f"{metered.api_url}/metrics"
    # A second set of the API's metrics with the default cache, on the same Temporal.
    cached = ApiMetrics(jobs_cache_s=60)
    await cached.jobs.refresh(metered.client)

    def finished(collected: Any) -> float:
        return total(collected, "fleet_jobs", status="FINISHED")

    before = await scrape(url)  # this stack's API counts afresh on every scrape (cache 0)
    cached_before = [s for family in cached.jobs.collect() for s in family.samples]
    assert finished(cached_before) == finished(before)
    assert {s.labels["status"] for s in before if s.name == "fleet_jobs"} == {
        "SCHEDULED",
        "IDLE",
        "IN_PROGRESS",
        "PAUSED",
        "CANCELLING",
        "CANCELLED",
        "FINISHED",
    }
    devices = [d["id"] for d in await metered.provision(1)]
    job = await metered.create_job(
        {"name": "REBOOT_EQUIPMENT", "target": {"append": {"entities": devices}}}
    )
    await metered.wait_finished(job["id"])

    async def counted() -> None:
        assert finished(await scrape(url)) == finished(before) + 1

    await eventually(counted)
    await asyncio.gather(*(cached.jobs.refresh(metered.client) for _ in range(5)))
    cached_after = [s for family in cached.jobs.collect() for s in family.samples]
    assert finished(cached_after) == finished(before), "the cache did not hold"
