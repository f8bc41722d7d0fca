"""Metrics on the real stack (issue 13): the worker's Prometheus endpoint (the Temporal SDK's
metrics and ours) and the API's GET /metrics, scraped over HTTP as Prometheus would; and, without
a server, the bounds that keep GET /metrics cheap and its labels few, and the checked-in
Prometheus and Grafana files."""

from __future__ import annotations

import asyncio
import json
import random
import re
import string
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import pytest_asyncio
import yaml
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from api.metrics import METHODS, MIN_JOBS_CACHE_S, UNMATCHED, ApiMetrics, JobCounts
from core import metrics as worker_metrics
from core.settings import Settings
from devstack.processes import free_port
from models.enums import JobStatus
from tests.stack import Stack, eventually, running_stack, serve

# One worker metrics listener for the module: the runtime behind it lives as long as the
# process (core.metrics), and each test reads only its own task queue's series.
WORKER_METRICS_PORT = free_port()
JOBS = "/north/v80/operation/jobs"
ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = sorted((ROOT / "devstack" / "grafana" / "dashboards").glob("*.json"))
# A metric name in a PromQL query: ours and the SDK's have these prefixes.
METRIC_NAME = re.compile(r"\b(?:fleet|temporal)_[a-z0-9_]+\b")


@pytest_asyncio.fixture(loop_scope="session")
async def metered(env: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[Stack]:
    # The shortest job-count cache allowed: scrapes a second apart see fresh counts.
    async with running_stack(
        env,
        tmp_path,
        worker_metrics_port=WORKER_METRICS_PORT,
        metrics_jobs_cache_s=MIN_JOBS_CACHE_S,
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

    # Every name the dashboard queries from the worker is scraped under that name.
    scraped = names(await scrape_worker())
    wanted = {n for n in dashboard_names() if not n.startswith("fleet_api_") and n != "fleet_jobs"}
    recorded_here = wanted - set(
        worker_metrics.SCRAPED[worker_metrics.DEVICES_UNREACHABLE]
        + worker_metrics.SCRAPED[worker_metrics.CALLBACK_DELIVERIES]
    )  # no device unreachable and no callback in this job: tests below scrape those
    assert recorded_here <= scraped, sorted(recorded_here - scraped)
    for name in (worker_metrics.OPERATIONS_CLOSED, worker_metrics.DEVICE_PUSH_LATENCY):
        assert set(worker_metrics.SCRAPED[name]) <= scraped, name


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

    before = await scrape(url)  # this stack's API counts again a second later (the floor)
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


# -- without a server: the cost and the labels of GET /metrics -------------------------------------


class CountingTemporal:
    """Stands for the Temporal client: counts the visibility count queries."""

    def __init__(self) -> None:
        self.queries: list[str] = []

    async def count_workflows(self, query: str, **_: Any) -> Any:
        self.queries.append(query)
        await asyncio.sleep(0.01)
        return SimpleNamespace(count=len(self.queries))


async def test_job_counts_cost_one_round_of_queries_per_window() -> None:
    with pytest.raises(ValidationError, match="metrics_jobs_cache_s"):
        Settings(_env_file=None, metrics_jobs_cache_s=0)
    assert Settings(_env_file=None, metrics_jobs_cache_s=MIN_JOBS_CACHE_S)
    rounds = len(JobStatus)  # one count query per status
    for asked in (0.0, MIN_JOBS_CACHE_S):  # 0 (an app built without the settings) is floored
        temporal = CountingTemporal()
        metrics = ApiMetrics(jobs_cache_s=asked)
        await metrics.jobs.refresh(temporal)  # type: ignore[arg-type]
        # Scrapes within the window, one after the other and concurrently: no more queries.
        await metrics.jobs.refresh(temporal)  # type: ignore[arg-type]
        await asyncio.gather(*(metrics.jobs.refresh(temporal) for _ in range(20)))  # type: ignore[arg-type]
        assert len(temporal.queries) == rounds, asked
        samples = [s for family in metrics.jobs.collect() for s in family.samples]
        assert {s.labels["status"] for s in samples} == {s.value for s in JobStatus}
    assert JobCounts(0, metrics.requests)._ttl == MIN_JOBS_CACHE_S


async def test_request_labels_stay_bounded_whatever_clients_send(tmp_path: Path) -> None:
    """Hostile methods and paths add no series: unknown methods are `other`, unmatched paths
    `unmatched`, matched ones their route's template."""
    settings = Settings(
        _env_file=None, database_url=f"sqlite+aiosqlite:///{tmp_path / 'inventory.db'}"
    )
    app = create_app(settings, temporal_client=CountingTemporal())  # type: ignore[arg-type]
    templates = {*app.openapi()["paths"], "/metrics"}
    rng = random.Random(13)

    def token(length: int) -> str:
        return "".join(rng.choices(string.ascii_uppercase + "!#$%&'*+-.^_`|~", k=length))

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://api") as http,
    ):
        for n in range(300):
            method = rng.choice([token(rng.randint(1, 12)), "FOO", "get", token(1000), "GET"])
            path = rng.choice(
                [
                    f"{JOBS}/{token(40)}",
                    f"{JOBS}/{n}/operations/{token(8)}",
                    f"/{token(30)}/{n}",
                    "/health/live",
                    f"/north/v80/provision/devices/{n}%2F..%2F{token(5)}",
                ]
            )
            await http.request(method, path)
    samples = [
        s
        for family in app.state.metrics.registry.collect()
        if family.name == "fleet_api_requests"
        for s in family.samples
        if s.name == "fleet_api_requests_total"
    ]
    assert sum(s.value for s in samples) == 300
    assert {s.labels["method"] for s in samples} <= METHODS | {"other"}
    routes = {s.labels["route"] for s in samples}
    assert UNMATCHED in routes and routes <= templates | {UNMATCHED}, routes
    assert len(samples) < 40, [s.labels for s in samples]


# -- without a server: the checked-in Prometheus and Grafana files ---------------------------------


def dashboard_queries() -> list[str]:
    def targets(panels: list[dict[str, Any]]) -> list[str]:
        found = []
        for panel in panels:
            found += [t["expr"] for t in panel.get("targets", []) if t.get("expr")]
            found += targets(panel.get("panels", []))  # panels inside a collapsed row
        return found

    queries = []
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        assert dashboard["uid"] and dashboard["title"], path
        queries += targets(dashboard["panels"])
    return queries


def dashboard_names() -> set[str]:
    return {name for query in dashboard_queries() for name in METRIC_NAME.findall(query)}


def api_exported() -> set[str]:
    """The names the API's GET /metrics answers (every series, once each has a value)."""
    metrics = ApiMetrics(jobs_cache_s=60)
    metrics.observe("GET", "/x", 200, 0.01)
    metrics.jobs._counts = {status.value: 0 for status in JobStatus}
    return {s.name for family in metrics.registry.collect() for s in family.samples}


def test_dashboard_queries_name_exported_metrics() -> None:
    assert DASHBOARDS, "no dashboard checked in"
    queries = dashboard_queries()
    assert queries and all(METRIC_NAME.search(q) for q in queries), queries
    names_used = dashboard_names()
    ours = {name for names in worker_metrics.SCRAPED.values() for name in names}
    exported = ours | api_exported()
    unknown = {n for n in names_used if n.startswith("fleet_")} - exported
    assert not unknown, f"the dashboard queries metrics nobody exports: {sorted(unknown)}"
    # The SDK's own (temporal_*) are checked against a real scrape in
    # test_worker_metrics_after_a_job_with_errors; here, that each is one the SDK documents.
    sdk = {n for n in names_used if n.startswith("temporal_")}
    sdk_kinds = ("temporal_workflow_", "temporal_activity_", "temporal_worker_")
    assert all(n.startswith(sdk_kinds) for n in sdk), sdk
    datasources = yaml.safe_load(
        (ROOT / "devstack/grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    uids = {source["uid"] for source in datasources["datasources"]}
    for path in DASHBOARDS:
        used = set(re.findall(r'"uid":\s*"(fleet-[a-z-]+)"', path.read_text()))
        assert used <= uids | {json.loads(path.read_text())["uid"]}, used


def test_prometheus_scrapes_the_ports_compose_uses() -> None:
    config = yaml.safe_load((ROOT / "devstack/prometheus.yml").read_text())
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"fleet-api", "fleet-worker"}
    assert all(job.get("metrics_path", "/metrics") == "/metrics" for job in jobs.values())

    api_env = services["api"]["environment"]
    (target,) = jobs["fleet-api"]["static_configs"][0]["targets"]
    assert target == f"api:{api_env['FLEET_API_PORT']}"

    worker_env = services["worker"]["environment"]
    (dns,) = jobs["fleet-worker"]["dns_sd_configs"]
    assert dns["names"] == ["worker"] and dns["type"] == "A"
    assert str(dns["port"]) == worker_env["FLEET_WORKER_METRICS_PORT"]
    assert worker_env["FLEET_WORKER_METRICS_HOST"] == "0.0.0.0"  # reachable by Prometheus

    prometheus = services["prometheus"]
    flag = next(c for c in prometheus["command"] if c.startswith("--config.file="))
    mounted = {v.split(":")[1]: v.split(":")[0] for v in prometheus["volumes"] if ":" in v}
    assert mounted[flag.split("=", 1)[1]] == "./devstack/prometheus.yml"
