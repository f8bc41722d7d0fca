"""(beyond OpenGate) Control of a job's operations one device at a time: which closed operations a
rerun takes again, and the cancel reason of a closed operation."""

from __future__ import annotations

from typing import Annotated

from pydantic import model_validator

from models.base import StrictWireModel
from models.bounds import MAX_RESULT_CODES, items
from models.enums import CancelReason, OperationStatus, ResultCode
from models.operations import Operation
from models.summary import device_cancel_reason

MAX_CANCEL_REASONS = 16


class RerunFilter(StrictWireModel):
    """The body of ``POST /operation/jobs/{jobId}/rerun``: an operation of the job is run again
    when its result is one of ``results`` or its cancel reason one of ``cancelReasons``."""

    results: Annotated[list[ResultCode], items(MAX_RESULT_CODES)] | None = None
    cancel_reasons: Annotated[list[CancelReason], items(MAX_CANCEL_REASONS)] | None = None

    @model_validator(mode="after")
    def _something(self) -> RerunFilter:
        if not self.results and not self.cancel_reasons:
            raise ValueError("give at least one result in results or one reason in cancelReasons")
        return self

    def matches(self, operation: Operation) -> bool:
        """Whether ``operation`` is taken again: closed, with a result or a cancel reason that
        the filter names."""
        if not operation.status.is_closed:
            return False
        if operation.result is not None and operation.result in (self.results or ()):
            return True
        reason = cancel_reason(operation)
        return reason is not None and reason in (self.cancel_reasons or ())


# The description of an operation the engine cancelled starts with its reason:
# "byUser: the job was cancelled" (workflows/operation.py).
_ENGINE_REASONS = (CancelReason.BY_USER, CancelReason.BY_TIMEOUT, CancelReason.BY_ENGINE)


def cancel_reason(operation: Operation) -> CancelReason | None:
    """Why a closed operation was cancelled (the bucket its job counted it in); None for one
    that finished with the device's result.

    Operations record it (``cancelReason``). Those that closed before they did are read back
    from what they recorded then: a late answer (``outOfTime``) only ever comes after a cancel
    by timeout; a device's cancelling code (``ERROR_TIMEOUT``...) stands for its reason (SPEC
    3.2); an engine cancel has the result ``CANCELLED`` and its reason at the start of the
    description. A device that answered ``CANCELLED`` itself is ``byExternal``, unless its own
    description starts like an engine's (docs/api.md).
    """
    if operation.status is not OperationStatus.CANCELLED:
        return None
    if operation.cancel_reason is not None:
        return operation.cancel_reason
    if operation.out_of_time:
        return CancelReason.BY_TIMEOUT
    result = operation.result or ResultCode.CANCELLED
    if result is not ResultCode.CANCELLED:
        return device_cancel_reason(result) or CancelReason.BY_ENGINE
    description = operation.description or ""
    for reason in _ENGINE_REASONS:
        if description.startswith(f"{reason.value}: "):
            return reason
    return CancelReason.BY_EXTERNAL
