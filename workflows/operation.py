"""One operation: a job's execution on one device (SPEC 3.2, 4.1).

The workflow sends the request to the device through an activity and closes on a synchronous
final answer. Its search attributes (job, device, status, result) and its memo (the operation
object) are kept current, so the API lists a job's operations from Temporal visibility without
asking each workflow. It reports its outcome to the job by signal, since the job may have
continued-as-new since it started this child.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.devices import Delivery, DeviceActivities, SendRequestInput, SendRequestResult
    from core.temporal import OPERATION_RESULT, OPERATION_STATUS
    from models.enums import CancelReason, OperationStatus, ResultCode
    from models.messages import OperationClosed, OperationInput
    from models.operations import (
        DeviceRequest,
        DeviceRequestBody,
        DeviceRequestOperation,
        Operation,
        OperationExecution,
        OperationStep,
    )
    from models.summary import device_cancel_reason

OPERATION_MEMO = "operation"

# A device that answers 5xx is tried again a few times before the engine gives up on it.
SEND_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=5,
)


def initial_operation(input: OperationInput) -> Operation:
    return Operation(
        operation_id=input.operation_id,
        job_id=input.job_id,
        entity_id=input.device.id,
        entity_type=input.device.type,
        name=input.name,
        parameters=input.parameters,
        notify=input.notify,
        user=input.user,
        execution=OperationExecution(activated_date=input.activated_at),
        status=OperationStatus.PENDING_EXECUTION,
    )


@workflow.defn
class OperationWorkflow:
    @workflow.init
    def __init__(self, input: OperationInput) -> None:
        self._input = input
        self._op = initial_operation(input)
        self._cancel_reason: CancelReason | None = None

    @workflow.query
    def operation(self) -> Operation:
        return self._op

    @workflow.run
    async def run(self, input: OperationInput) -> Operation:
        sent = await self._send()
        self._record_send(sent)
        await self._close()
        return self._op

    async def _send(self) -> SendRequestResult:
        now = workflow.now()
        self._op.attempts.current += 1
        self._op.execution.started_date = now
        request = DeviceRequest(
            operation=DeviceRequestOperation(
                request=DeviceRequestBody(
                    id=self._input.operation_id,
                    device_id=self._input.device.id,
                    name=self._input.name,
                    parameters=self._input.parameters,
                    timestamp=int(now.timestamp() * 1000),
                )
            )
        )
        answer_timeout = self._input.timeout_ms / 1000
        return await workflow.execute_activity_method(
            DeviceActivities.send_request,
            SendRequestInput(
                operation_id=self._input.operation_id,
                device_id=self._input.device.id,
                address=self._input.device.address,
                request=request,
                answer_timeout_s=answer_timeout,
            ),
            start_to_close_timeout=timedelta(seconds=answer_timeout + 10),
            retry_policy=SEND_RETRY,
        )

    def _record_send(self, sent: SendRequestResult) -> None:
        if sent.delivery is Delivery.ANSWERED and sent.response is not None:
            result = sent.response.result_code
            assert result is not None
            self._op.result = result
            self._op.description = sent.response.result_description
            self._op.steps = [
                OperationStep(
                    name=s.name,
                    result=s.result,
                    description=s.description,
                    timestamp=_from_millis(s.timestamp) if s.timestamp else workflow.now(),
                )
                for s in sent.response.steps
            ]
            self._cancel_reason = device_cancel_reason(result)
            self._op.status = (
                OperationStatus.CANCELLED if self._cancel_reason else OperationStatus.FINISHED
            )
            return
        # Not answered synchronously: the engine gives up on this device (the asynchronous and
        # sleepy-device paths of SPEC 4.1 hook in here).
        self._cancel_reason = CancelReason.BY_ENGINE
        self._op.status = OperationStatus.CANCELLED
        self._op.result = ResultCode.CANCELLED
        self._op.description = f"{sent.delivery.value}: {sent.detail or 'no final answer'}"

    async def _close(self) -> None:
        self._op.execution.finished_date = workflow.now()
        workflow.upsert_search_attributes(
            [
                OPERATION_STATUS.value_set(self._op.status.value),
                OPERATION_RESULT.value_set((self._op.result or ResultCode.CANCELLED).value),
            ]
        )
        workflow.upsert_memo({OPERATION_MEMO: self._op})
        job = workflow.get_external_workflow_handle(self._input.job_workflow_id)
        await job.signal(
            "operation_closed",
            OperationClosed(
                operation_id=self._input.operation_id,
                status=self._op.status,
                result=self._op.result,
                cancel_reason=self._cancel_reason,
            ),
        )


def _from_millis(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)
