"""One settings object for every process, read from the environment (prefix ``FLEET_``)."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLEET_", env_file=".env", extra="ignore")

    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    task_queue: str = "fleet-operations"

    database_url: str = "sqlite+aiosqlite:///.data/inventory.db"

    api_host: str = "127.0.0.1"
    api_port: int = 8080
    # The first admin key. Empty: one is generated and printed at the first start.
    bootstrap_admin_key: str = ""
    max_body_bytes: int = 10 * 1024 * 1024

    # Fan-out: operations in flight per job, and children started per workflow task.
    job_window: int = Field(default=500, ge=1, le=2000)
    job_start_batch: int = Field(default=100, ge=1, le=500)
    # Devices read from the inventory per activity call while a job resolves its targets.
    target_page_size: int = Field(default=500, ge=1, le=5000)

    # How long an operation cancelled by timeout still records a late answer (SPEC 3.2).
    late_answer_grace_ms: int = Field(default=300_000, ge=0, le=24 * 3600 * 1000)

    # Signs callback bodies (X-Signature: sha256=<HMAC>) when set.
    callback_secret: str = ""

    # HTTP to devices, shared by every activity of one worker.
    device_max_connections: int = 200
    device_connect_timeout_s: float = 5.0

    worker_max_concurrent_activities: int = 400
    worker_max_concurrent_workflow_tasks: int = 100


@lru_cache
def get_settings() -> Settings:
    return Settings()
