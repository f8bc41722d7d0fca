"""The API's metrics at ``GET /metrics`` (Prometheus text format, no API key, like the health
probes): requests by route template and status, their latency, and jobs by status from
Temporal visibility (cached). Names and labels: docs/metrics.md.

Each app has its own registry (tests build several apps in one process; the global registry
would count them all together or refuse the second app's metrics).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Iterator
from datetime import timedelta

from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from temporalio.client import Client

from core.temporal import JOB_STATUS, JOB_WORKFLOW, all_of, equals, of_type
from models.enums import JobStatus

log = logging.getLogger(__name__)

# The route label of a request no route matched (404s): raw paths as labels would let any client
# create series without bound.
UNMATCHED = "unmatched"
# Likewise the method label: any token is a valid method on the wire.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# A scrape waits at most this long for Temporal (Prometheus's own scrape timeout is 10 s).
COUNT_TIMEOUT = timedelta(seconds=5)
# The shortest time the counts are reused (FLEET_METRICS_JOBS_CACHE_S is at least this too):
# GET /metrics needs no key, so without it anyone could make every request a round of queries.
MIN_JOBS_CACHE_S = 1.0


class JobCounts(Collector):
    """``fleet_jobs{status}``: jobs by status, counted by visibility queries (one per status) at
    most once per ``ttl`` seconds; scrapes in between read the last counts."""

    def __init__(self, ttl: float, failures: Counter) -> None:
        self._ttl = max(ttl, MIN_JOBS_CACHE_S)
        self._failures = failures
        self._counts: dict[str, int] | None = None
        self._at = -math.inf
        self._lock = asyncio.Lock()

    def _fresh(self) -> bool:
        return time.monotonic() - self._at < self._ttl

    async def refresh(self, client: Client) -> None:
        if self._fresh():
            return
        async with self._lock:  # concurrent scrapes wait for one round of queries
            if self._fresh():
                return
            statuses = [s.value for s in JobStatus]
            try:
                counts = await asyncio.gather(
                    *(
                        client.count_workflows(
                            all_of(of_type(JOB_WORKFLOW), equals(JOB_STATUS.name, status)),
                            rpc_timeout=COUNT_TIMEOUT,
                        )
                        for status in statuses
                    )
                )
            except Exception as exc:
                # No stale numbers: the gauge is left out until Temporal answers again. A failure
                # is cached like an answer, so a scrape storm does not hammer a sick cluster.
                log.warning("metrics: counting jobs by status failed: %s", exc)
                self._failures.inc()
                self._counts = None
            else:
                self._counts = {s: c.count for s, c in zip(statuses, counts, strict=True)}
            self._at = time.monotonic()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        if self._counts is None:
            return
        jobs = GaugeMetricFamily(
            "fleet_jobs", "Jobs by status (Temporal visibility)", labels=["status"]
        )
        for status, count in self._counts.items():
            jobs.add_metric([status], count)
        yield jobs


class ApiMetrics:
    """One app's registry and its metrics."""

    def __init__(self, jobs_cache_s: float) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "fleet_api_requests",
            "HTTP requests answered, by method, route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "fleet_api_request_duration_seconds",
            "Time to answer an HTTP request, by method, route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        failures = Counter(
            "fleet_api_job_count_failures",
            "Rounds of job counts (for fleet_jobs) that Temporal did not answer",
            registry=self.registry,
        )
        self.jobs = JobCounts(jobs_cache_s, failures)
        self.registry.register(self.jobs)
        # The process: CPU, memory, open files, GC (as the global registry would have them).
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        labels = (method if method in METHODS else "other", route, str(status))
        self.requests.labels(*labels).inc()
        self.latency.labels(*labels).observe(seconds)


def _route(scope: Scope) -> str:
    """The template of the route that took the request (set by the router once it matched)."""
    route = scope.get("route")
    path = getattr(route, "path", None) if isinstance(route, BaseRoute) else None
    return path if isinstance(path, str) else UNMATCHED


class RequestMetrics:
    """Counts and times every HTTP request, whatever answered it (a route, a 404, a 413 from the
    body limit, a 500): install it outermost."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # when nothing was answered at all

        async def watched(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watched)
        finally:
            seconds = time.perf_counter() - started
            self.metrics.observe(scope["method"], _route(scope), status, seconds)


router = APIRouter()


# Not in the OpenAPI document: Prometheus's text format, not the SPEC's JSON (docs/metrics.md).
@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    app_metrics: ApiMetrics = request.app.state.metrics
    await app_metrics.jobs.refresh(request.app.state.temporal)
    return Response(generate_latest(app_metrics.registry), media_type=CONTENT_TYPE_LATEST)


def install(app: FastAPI, jobs_cache_s: float) -> None:
    """The route and the request middleware; call after the other middlewares (outermost)."""
    app.state.metrics = ApiMetrics(jobs_cache_s)
    app.include_router(router)
    app.add_middleware(RequestMetrics, metrics=app.state.metrics)
