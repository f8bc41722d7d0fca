"""Health probes: routes without an API key (as is ``GET /metrics``, api/metrics.py)."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text

from api.deps import InventoryDep, TemporalDep
from api.errors import ApiError, declared

router = APIRouter(tags=["health"])


@router.get("/health/live")
async def live() -> dict[str, str]:
    return {"status": "UP"}


@router.get("/health/ready", responses=declared(503))
async def ready(client: TemporalDep, inventory: InventoryDep) -> dict[str, str]:
    try:
        await client.service_client.check_health()
        async with inventory.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as exc:
        raise ApiError(503, f"Not ready: {exc}") from exc
    return {"status": "UP"}
