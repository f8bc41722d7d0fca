"""Operation types (SPEC 3.4): the built-in catalog."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import Reader
from core.catalog import BUILT_IN, OperationType

router = APIRouter(prefix="/north/v80/operationTypes", tags=["operation types"])


@router.get("/catalog", response_model_exclude_none=True)
async def catalog(_: Reader) -> dict[str, list[OperationType]]:
    return {"operationTypes": list(BUILT_IN.values())}
