"""The per-device operation of SPEC 3.2, and the device protocol of SPEC 4."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from models.base import StrictWireModel, UtcDatetime, WireModel
from models.bounds import (
    MAX_NAME,
    MAX_STEPS,
    Description,
    EpochMillis,
    Id,
    Text,
    TypeName,
    items,
    text,
)
from models.enums import CancelReason, OperationStatus, ResultCode, StepResult


class Attempts(WireModel):
    current: int = 0
    total: int = 1


class OperationExecution(WireModel):
    activated_date: UtcDatetime | None = None
    started_date: UtcDatetime | None = None
    finished_date: UtcDatetime | None = None


class OperationStep(WireModel):
    name: str
    result: StepResult | None = None
    description: str | None = None
    timestamp: UtcDatetime | None = None


class Operation(WireModel):
    """The operation object of SPEC 3.2, as the API lists it."""

    operation_id: str
    job_id: str
    entity_id: str
    entity_type: str | None = None
    name: str
    parameters: dict[str, Any] = {}
    notify: bool = False
    user: str | None = None
    attempts: Attempts = Attempts()
    execution: OperationExecution = OperationExecution()
    status: OperationStatus
    result: ResultCode | None = None
    description: str | None = None
    steps: list[OperationStep] = []
    # Set when the device's final answer came after the operation was cancelled by timeout.
    out_of_time: bool | None = None
    # Beyond OpenGate: why a CANCELLED operation was cancelled (SPEC 3.2's reasons), the same
    # value the job counts it under; absent while open and for answered operations.
    cancel_reason: CancelReason | None = None
    # Beyond OpenGate: how many times an operator retried this operation (absent when never).
    manual_retries: int | None = None


class OperationList(WireModel):
    operations: list[Operation]
    page: dict[str, int]


# --- South: what the platform sends a device (4.1) and what a device answers (4.2) ---


class DeviceRequestBody(WireModel):
    id: str
    device_id: str
    name: str
    parameters: dict[str, Any] = {}
    timestamp: int = Field(description="epoch milliseconds")


class DeviceRequestOperation(WireModel):
    request: DeviceRequestBody


class DeviceRequest(WireModel):
    operation: DeviceRequestOperation


class DeviceStep(StrictWireModel):
    name: Annotated[str, text(MAX_NAME * 2, min_length=1)]
    timestamp: EpochMillis | None = Field(default=None, description="epoch milliseconds")
    result: StepResult
    description: Description | None = None


class DeviceResponseBody(StrictWireModel):
    id: Id
    device_id: Id
    name: TypeName | None = None
    timestamp: EpochMillis | None = Field(default=None, description="epoch milliseconds")
    result_code: ResultCode | None = None
    result_description: Description | None = None
    steps: Annotated[list[DeviceStep], items(MAX_STEPS)] = []


class DeviceResponseOperation(StrictWireModel):
    response: DeviceResponseBody


class DeviceResponse(StrictWireModel):
    version: Text = "1.0"
    operation: DeviceResponseOperation
