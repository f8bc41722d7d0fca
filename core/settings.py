"""One settings object for every process, read from the environment (prefix ``FLEET_``)."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLEET_", env_file=".env", extra="ignore")

    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    # Temporal over TLS (any of these set, or an API key), mutual TLS with a client certificate,
    # and Temporal Cloud's API keys (docs/deployment.md).
    temporal_tls: bool = False
    temporal_tls_ca_file: str = ""
    temporal_tls_cert_file: str = ""
    temporal_tls_key_file: str = ""
    temporal_tls_server_name: str = ""
    temporal_api_key: str = ""
    task_queue: str = "fleet-operations"

    database_url: str = "sqlite+aiosqlite:///.data/inventory.db"

    api_host: str = "127.0.0.1"
    api_port: int = 8080
    # HTTPS for north and south when both are set (docs/deployment.md).
    tls_cert_file: str = ""
    tls_key_file: str = ""
    # Mutual TLS: client certificates checked against this CA; "optional" or "required".
    tls_client_ca_file: str = ""
    tls_client_cert: Literal["optional", "required"] = "optional"
    # A CA whose client certificates may act for any device (docs/api.md, "Certificates").
    tls_fleet_ca_file: str = ""
    # The first admin key. Empty: one is generated and printed at the first start.
    bootstrap_admin_key: str = ""
    max_body_bytes: int = 10 * 1024 * 1024

    # Fan-out: operations in flight per job, and children started per workflow task.
    job_window: int = Field(default=500, ge=1, le=2000)
    job_start_batch: int = Field(default=100, ge=1, le=500)
    # Devices read from the inventory per activity call while a job resolves its targets.
    target_page_size: int = Field(default=500, ge=1, le=5000)

    # Continuous jobs read the devices that joined their tags this often (seconds): the longest a
    # joining device waits for its operation while the job has room (docs/engine.md).
    continuous_poll_s: float = Field(default=10.0, ge=0.5, le=3600)

    # How long an operation cancelled by timeout still records a late answer (SPEC 3.2).
    late_answer_grace_ms: int = Field(default=300_000, ge=0, le=24 * 3600 * 1000)

    # Signs callback bodies (X-Signature: sha256=<HMAC>) when set.
    callback_secret: str = ""
    # The CA that https callback receivers' certificates are checked against (system store when
    # empty).
    callback_ca_file: str = ""

    # HTTP to devices, shared by every activity of one worker.
    device_max_connections: int = 200
    device_connect_timeout_s: float = 5.0
    # https devices: their certificates are checked against this CA (system store when empty), and
    # the platform presents this client certificate so devices can authenticate it.
    device_ca_file: str = ""
    device_client_cert_file: str = ""
    device_client_key_file: str = ""

    worker_max_concurrent_activities: int = 400
    worker_max_concurrent_workflow_tasks: int = 100

    # Metrics (docs/metrics.md). The worker's Prometheus listener (the Temporal SDK's metrics and
    # ours on one endpoint) is off at 0, the default: two workers on one host, or the workers the
    # tests run in one process, would otherwise fight over one port. docker-compose sets 9464.
    worker_metrics_host: str = "127.0.0.1"
    worker_metrics_port: int = Field(default=0, ge=0, le=65535)
    # How long the API's GET /metrics reuses its visibility counts of jobs by status, so that a
    # scrape storm costs Temporal one round of count queries per period. /metrics needs no key:
    # at least a second, or every anonymous scrape would cost a round of queries.
    metrics_jobs_cache_s: float = Field(default=15.0, ge=1, le=3600)


@lru_cache
def get_settings() -> Settings:
    return Settings()


def tls_served(settings: Settings) -> bool:
    """Whether the API serves HTTPS."""
    return bool(settings.tls_cert_file and settings.tls_key_file)
