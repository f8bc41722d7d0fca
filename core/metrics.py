"""The worker's metrics: one Temporal runtime per process whose Prometheus listener serves the
SDK's own metrics and ours (``fleet_*``) together, and the functions that record ours.

Ours are recorded through the SDK's metric meters (``activity.metric_meter()``,
``workflow.metric_meter()``), so they carry the SDK's labels (``namespace``, ``task_queue``,
``activity_type`` or ``workflow_type``) and go out on the same endpoint. The names as scraped are
in docs/metrics.md: counters get ``_total``, durations are seconds with ``_seconds``.

No import-time side effects: workflows import this module (through
``workflow.unsafe.imports_passed_through()``) for ``operation_closed``.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from temporalio.client import Client
from temporalio.common import MetricMeter
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.service import ServiceClient

from core.settings import Settings

# Our metrics, as created (the exporter adds the suffixes).
OPERATIONS_CLOSED = "fleet_operations_closed"
DEVICE_PUSH_LATENCY = "fleet_device_push_latency"
DEVICES_UNREACHABLE = "fleet_devices_unreachable"
CALLBACK_DELIVERIES = "fleet_callback_deliveries"

# The same, as Prometheus scrapes them (counters_total_suffix, unit_suffix and
# durations_as_seconds below): what dashboards and alerts query. tests/test_metrics.py checks
# these against a real scrape and every query of the checked-in Grafana dashboard against them.
SCRAPED = {
    OPERATIONS_CLOSED: (f"{OPERATIONS_CLOSED}_total",),
    DEVICE_PUSH_LATENCY: tuple(
        f"{DEVICE_PUSH_LATENCY}_seconds_{part}" for part in ("bucket", "count", "sum")
    ),
    DEVICES_UNREACHABLE: (f"{DEVICES_UNREACHABLE}_total",),
    CALLBACK_DELIVERIES: (f"{CALLBACK_DELIVERIES}_total",),
}

# Pushes to devices on a LAN take milliseconds, to a sleepy modem seconds: the SDK's default
# buckets (50 ms and up) would put every fast push in the first one.
PUSH_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

# One runtime per listening address for the life of the process: a runtime owns a thread pool
# and its listener, and the SDK expects few of them (tests running several workers in one process
# share one by giving them the same port).
_runtimes: dict[str, Runtime] = {}


def metrics_address(settings: Settings) -> str | None:
    """The worker's ``host:port`` for Prometheus, or None when the listener is off (port 0)."""
    if not settings.worker_metrics_port:
        return None
    host = settings.worker_metrics_host or "127.0.0.1"
    if ":" in host and not host.startswith("["):  # an IPv6 address
        host = f"[{host}]"
    return f"{host}:{settings.worker_metrics_port}"


def worker_runtime(settings: Settings) -> Runtime | None:
    """The runtime whose clients and workers export to the worker's Prometheus listener, created
    on first use (a port already taken fails here, at the worker's start); None when off."""
    address = metrics_address(settings)
    if address is None:
        return None
    runtime = _runtimes.get(address)
    if runtime is None:
        runtime = Runtime(
            telemetry=TelemetryConfig(
                metrics=PrometheusConfig(
                    bind_address=address,
                    # Prometheus's own conventions: counters end in _total, durations are
                    # seconds and say so.
                    counters_total_suffix=True,
                    unit_suffix=True,
                    durations_as_seconds=True,
                    histogram_bucket_overrides={DEVICE_PUSH_LATENCY: PUSH_LATENCY_BUCKETS},
                )
            )
        )
        _runtimes[address] = runtime
    return runtime


async def on_runtime(client: Client, runtime: Runtime | None) -> Client:
    """``client``, or the same client (target, TLS, namespace, converter, interceptors) on a new
    connection of ``runtime``: a worker reports its metrics through its client's runtime."""
    if runtime is None or _runtime_of(client) is runtime:
        return client
    config = dataclasses.replace(client.service_client.config, runtime=runtime)
    settings = client.config()
    settings["service_client"] = await ServiceClient.connect(config)
    return Client(**settings)


def _runtime_of(client: Client) -> Runtime:
    return client.service_client.config.runtime or Runtime.default()


# --- recording (each takes the meter of its context: replay safety is the caller's) ---


def operation_closed(meter: MetricMeter, result: str, cancel_reason: str | None) -> None:
    """An operation closed with ``result`` (its result code) and ``cancel_reason`` (the SPEC's
    ``byUser``/``byTimeout``/..., ``none`` when it was not cancelled)."""
    meter.create_counter(
        OPERATIONS_CLOSED, "Operations closed, by result code and cancel reason"
    ).add(1, {"result": result, "cancel_reason": cancel_reason or "none"})


def device_pushed(meter: MetricMeter, delivery: str, took: timedelta) -> None:
    """One HTTP push to a device and how it went (``ANSWERED``, ``ACCEPTED``, ``REJECTED``,
    ``UNREACHABLE``, ``DEVICE_ERROR`` for a 5xx, ``CANCELLED``, ``ERROR``)."""
    meter.create_histogram_timedelta(
        DEVICE_PUSH_LATENCY, "Time from sending a device its request to its HTTP answer", "duration"
    ).record(took, {"delivery": delivery})


def device_unreachable(meter: MetricMeter, reason: str) -> None:
    """A push that found its device unreachable (``no_address``, ``tls_verify`` or the transport
    error's class, e.g. ``ConnectError``, ``ReadTimeout``)."""
    meter.create_counter(DEVICES_UNREACHABLE, "Pushes that found their device unreachable").add(
        1, {"reason": reason}
    )


def callback_delivery(meter: MetricMeter, event: str, outcome: str) -> None:
    """One attempt at delivering a callback: ``delivered``, ``unreachable`` or ``http_error``
    (any answer but 2xx); a failed attempt is retried by the activity's retry policy."""
    meter.create_counter(
        CALLBACK_DELIVERIES, "Callback delivery attempts, by job event and outcome"
    ).add(1, {"event": event, "outcome": outcome})
