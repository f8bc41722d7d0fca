"""Statuses and result codes of the SPEC (sections 3.1, 3.2, 4.2)."""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    SCHEDULED = "SCHEDULED"
    IDLE = "IDLE"
    IN_PROGRESS = "IN_PROGRESS"
    PAUSED = "PAUSED"
    CANCELLING = "CANCELLING"
    CANCELLED = "CANCELLED"
    FINISHED = "FINISHED"

    @property
    def is_closed(self) -> bool:
        return self in (JobStatus.CANCELLED, JobStatus.FINISHED)


class OperationStatus(StrEnum):
    SCHEDULED = "SCHEDULED"
    PENDING_EXECUTION = "PENDING_EXECUTION"
    WAITING_FOR_CONNECTION = "WAITING_FOR_CONNECTION"
    STARTED = "STARTED"
    FINISHED = "FINISHED"
    CANCELLED = "CANCELLED"

    @property
    def is_closed(self) -> bool:
        return self in (OperationStatus.FINISHED, OperationStatus.CANCELLED)


class ResultCode(StrEnum):
    SUCCESSFUL = "SUCCESSFUL"
    ERROR_IN_PARAM = "ERROR_IN_PARAM"
    NOT_SUPPORTED = "NOT_SUPPORTED"
    ALREADY_IN_PROGRESS = "ALREADY_IN_PROGRESS"
    ERROR_PROCESSING = "ERROR_PROCESSING"
    ERROR_TIMEOUT = "ERROR_TIMEOUT"
    TIMEOUT_CANCELLED = "TIMEOUT_CANCELLED"
    CANCELLED = "CANCELLED"
    CANCELLED_INTERNAL = "CANCELLED_INTERNAL"
    OPERATION_PENDING = "OPERATION_PENDING"


class StepResult(StrEnum):
    SUCCESSFUL = "SUCCESSFUL"
    ERROR = "ERROR"
    SKIPPED = "SKIPPED"
    NOT_EXECUTED = "NOT_EXECUTED"


class CancelReason(StrEnum):
    BY_USER = "byUser"
    BY_TIMEOUT = "byTimeout"
    BY_EXTERNAL_TIMEOUT = "byExternalTimeout"
    BY_EXTERNAL = "byExternal"
    BY_ENGINE = "byEngine"


class Role(StrEnum):
    ADMIN = "admin"
    OPERATOR = "operator"
    VIEWER = "viewer"
    DEVICE = "device"


class JobEvent(StrEnum):
    """The job lifecycle events of a callback (SPEC 6), as sent in ``X-Event``."""

    INITIATED = "JOB_INITIATED"
    STARTED = "JOB_STARTED"
    FINISHED = "JOB_FINISHED"
