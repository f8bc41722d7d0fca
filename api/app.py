"""The FastAPI application factory."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI
from temporalio.client import Client

from api import errors, job_service, metrics, openapi
from api.body_limit import BodyLimit
from api.job_snapshots import JobSnapshots
from api.routers import api_keys, catalog, devices, health, jobs, search, south, tasks
from core.settings import Settings, get_settings
from core.temporal import connect
from inventory.store import Inventory
from models.enums import Role

log = logging.getLogger(__name__)


async def bootstrap_admin(inventory: Inventory, settings: Settings) -> None:
    """The first admin key: from configuration, or generated and printed once."""
    if settings.bootstrap_admin_key:
        await inventory.import_key("bootstrap-admin", Role.ADMIN, settings.bootstrap_admin_key)
    elif not await inventory.has_admin():
        key = await inventory.create_key("bootstrap-admin", Role.ADMIN)
        log.warning("Generated the first admin API key (shown once): %s", key.api_key)


def create_app(
    settings: Settings | None = None,
    temporal_client: Client | None = None,
    inventory: Inventory | None = None,
) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own_inventory = inventory is None
        app.state.settings = settings
        app.state.inventory = inventory or Inventory.from_url(settings.database_url)
        await app.state.inventory.create_schema()
        await bootstrap_admin(app.state.inventory, settings)
        app.state.temporal = client = temporal_client or await connect(settings)
        app.state.job_snapshots = JobSnapshots(partial(job_service.read_job, client))
        try:
            yield
        finally:
            await app.state.job_snapshots.close()
            if own_inventory:
                await app.state.inventory.close()

    app = FastAPI(
        title="Fleet operations engine",
        summary="OpenGate-compatible operations API on Temporal",
        description=openapi.DESCRIPTION.format(max_body_bytes=settings.max_body_bytes),
        version="0.1.0",
        lifespan=lifespan,
    )
    errors.install(app)
    # The last added is the outermost: a 500 for anything unexpected, then the body limit.
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(errors.ServerErrors)
    # Outermost: counts every answer, the 413s and 500s of the two above included.
    metrics.install(app, settings.metrics_jobs_cache_s)

    for module in (health, jobs, devices, api_keys, catalog, south, search, tasks):
        app.include_router(module.router)
    openapi.install(app)
    return app
