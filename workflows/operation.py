"""One operation: a job's execution on one device (SPEC 3.2, 4.1-4.3).

An attempt pushes the request to the device through an activity:
- a synchronous final answer closes the attempt at once;
- an acknowledgement (2xx without a result) starts the operation timeout, and the device's
  partial and final answers arrive as ``device_response`` signals from the south API;
- an unreachable device puts the operation in ``WAITING_FOR_CONNECTION``: the push is tried
  again with back-off, and the device may collect the request itself by polling (the
  ``hand_out`` update), until the connection deadline.
Retries re-send the same request id. An operation cancelled by timeout stays open for a bounded
grace to record a late answer (out of time).

The search attributes (job, device, status, result) and the memo (the operation object) are
kept current, so the API lists a job's operations from Temporal visibility without asking each
workflow. The job learns of a close from the child's completion, which reaches the job run that
started it at no extra cost; the close goes by signal only when that run has continued-as-new
since (it says so with ``report_by_signal`` first), or when the operation closes by timeout and
stays open for a late answer. Status changes while open go to the job by signal.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.exceptions import TimeoutError as TemporalTimeout

with workflow.unsafe.imports_passed_through():
    from activities.devices import Delivery, DeviceActivities, SendRequestInput, SendRequestResult
    from core.metrics import operation_closed
    from core.temporal import (
        HAND_OUT,
        LATE_ANSWERS_UNTIL_MEMO,
        OPERATION_MEMO,
        OPERATION_ORDER,
        OPERATION_RESULT,
        OPERATION_STATUS,
        OPERATION_WORKFLOW,
        JobSignal,
        OperationSignal,
    )
    from models.bounds import MAX_EPOCH_MS, MAX_STEPS, MIN_EPOCH_MS, violations
    from models.enums import CancelReason, OperationStatus, ResultCode
    from models.messages import (
        OperationClosed,
        OperationInput,
        OperationLate,
        OperationOrder,
        OperationProgress,
        OperationStop,
    )
    from models.operations import (
        Attempts,
        DeviceRequest,
        DeviceRequestBody,
        DeviceRequestOperation,
        DeviceResponseBody,
        DeviceStep,
        Operation,
        OperationExecution,
        OperationStep,
    )
    from models.summary import device_cancel_reason

# workflow.patched ids: behaviour that running operations recorded without.
PUBLISH_PARTIAL_STEPS = "publish-partial-steps"
STOP_DURING_RETRY_DELAY = "stop-during-retry-delay"
# A device that answers 5xx is tried again a few times within one push.
SEND_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=3,
)
PUSH_HEARTBEAT_TIMEOUT = timedelta(seconds=10)
# Pushes to an unreachable device: 1 s, 2 s, 4 s ... at most 10 minutes apart.
FIRST_PUSH_BACKOFF = timedelta(seconds=1)
MAX_PUSH_BACKOFF = timedelta(minutes=10)
# Without an ackTimeout, a synchronous device has the whole operation timeout to answer; this
# bounds the HTTP wait of one push in any case.
MAX_HTTP_WAIT = timedelta(minutes=5)
# A first push whose HTTP wait is at most this runs as a local activity (the default operation
# timeout is 60 s); a longer wait holds the workflow task too long and goes as an activity.
MAX_LOCAL_PUSH_WAIT = timedelta(seconds=60)


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
        attempts=Attempts(
            current=input.attempts_before,
            total=input.attempts_before + 1 + input.operation_parameters.retries,
        ),
        execution=OperationExecution(activated_date=input.activated_at),
        status=OperationStatus.PENDING_EXECUTION,
        manual_retries=input.manual_retries or None,
    )


def device_request(input: OperationInput, now: datetime) -> DeviceRequest:
    return DeviceRequest(
        operation=DeviceRequestOperation(
            request=DeviceRequestBody(
                id=input.operation_id,
                device_id=input.device.id,
                name=input.name,
                parameters=input.parameters,
                timestamp=int(now.timestamp() * 1000),
            )
        )
    )


@workflow.defn(name=OPERATION_WORKFLOW)
class OperationWorkflow:
    @workflow.init
    def __init__(self, input: OperationInput) -> None:
        self._input = input
        self._op = initial_operation(input)
        self._cancel_reason: CancelReason | None = None
        self._request: DeviceRequest | None = None
        self._final: DeviceResponseBody | None = None
        self._handed_out = False
        self._late_window_open = False
        self._reports: list[asyncio.Task[None]] = []
        # Set by the job: cancel (the job was cancelled, or reached its deadline), and hold (the
        # job is paused: nothing more is sent to the device).
        self._stop: OperationStop | None = None
        self._held = False
        # A partial answer changed the steps: the memo (what the API lists) follows.
        self._steps_changed = False
        # Whether the close goes to the job by signal (else the job sees the completion).
        self._report_by_signal = input.close_by_signal

    # --- reads and inputs ---

    @workflow.query
    def operation(self) -> Operation:
        return self._op

    @workflow.signal(name=OperationSignal.DEVICE_RESPONSE)
    def device_response(self, response: DeviceResponseBody) -> None:
        """A partial (steps only) or final (with resultCode) answer from the device."""
        if self._op.status.is_closed:
            if self._late_window_open and self._final is None:
                self._merge_steps(response.steps)
                if response.result_code is not None:
                    self._final = response
            return
        self._merge_steps(response.steps)
        if response.result_code is not None and self._final is None:
            self._final = response
        elif response.result_code is None and response.steps:
            self._steps_changed = True

    @workflow.signal(name=OperationSignal.STOP)
    def stop(self, stop: OperationStop) -> None:
        if self._stop is None:
            self._stop = stop

    @workflow.signal(name=OperationSignal.HOLD)
    def hold(self, held: bool) -> None:
        self._held = held

    @workflow.signal(name=OperationSignal.REPORT_BY_SIGNAL)
    def report_by_signal(self) -> None:
        self._report_by_signal = True

    @workflow.update(name=OPERATION_ORDER)
    def take_order(self, order: OperationOrder) -> None:
        """The job's order (hold, stop, report by signal), as the signals of older job runs."""
        if order.hold is not None:
            self._held = order.hold
        if order.stop is not None:
            self.stop(order.stop)
        if order.report_by_signal:
            self._report_by_signal = True

    @workflow.update(name=HAND_OUT)
    def hand_out(self) -> DeviceRequest:
        """The device polled for pending work: hand it this operation's request, once."""
        assert self._request is not None
        self._handed_out = True
        return self._request

    @hand_out.validator
    def _can_hand_out(self) -> None:
        if self._op.status != OperationStatus.WAITING_FOR_CONNECTION or self._handed_out:
            raise ValueError(f"operation is {self._op.status.value}, not waiting for the device")
        if self._held or self._stop is not None:
            raise ValueError("the job of this operation is paused or stopping")

    # --- the run ---

    @workflow.run
    async def run(self, input: OperationInput) -> Operation:
        # An input the API would refuse today (it reached Temporal some other way, or a bound
        # was tightened since) is not run: a duration past its bound could fail every workflow
        # task of this operation and freeze its job.
        problem = violations(input, workflow.now())
        if problem is not None:
            self._give_up(f"the engine cannot run this operation: {problem}")
            await self._close()
            await workflow.wait_condition(workflow.all_handlers_finished)
            return self._op
        params = input.operation_parameters
        publisher = asyncio.create_task(self._publish_steps())
        attempt = 0
        while True:
            attempt += 1
            timed_out = await self._attempt(attempt)
            if self._stop is not None or self._cancel_reason is CancelReason.BY_ENGINE:
                break  # stopped by the job, or the engine gave up: no retry
            if not params.should_retry(attempt, self._op.result, timed_out):
                break
            delay = timedelta(milliseconds=params.retries_delay)
            if await self._wait(lambda: False, delay, f"retry delay before attempt {attempt + 1}"):
                # Stopped while waiting to retry: the last attempt's result was not final, the
                # stop's reason is (operations stopped so under older code kept that result).
                if workflow.patched(STOP_DURING_RETRY_DELAY) and self._stop is not None:
                    self._cancel(self._stop.reason, self._stop.description)
                break
        publisher.cancel()
        await self._close()
        if self._cancel_reason == CancelReason.BY_TIMEOUT:
            await self._take_late_answer()
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._op

    async def _publish_steps(self) -> None:
        """Operators watch a multi-step operation by its steps: each partial answer shows in the
        memo (and so in the API's listings) at once, one upsert per workflow task however many
        answers it brought."""
        while True:
            await workflow.wait_condition(lambda: self._steps_changed)
            self._steps_changed = False
            # Operations that recorded partial answers under older code kept them until closing.
            if not self._op.status.is_closed and workflow.patched(PUBLISH_PARTIAL_STEPS):
                workflow.upsert_memo({OPERATION_MEMO: self._op})

    async def _attempt(self, attempt: int) -> bool:
        """One delivery of the request and the wait for its final answer; True on timeout."""
        params = self._input.operation_parameters
        self._op.attempts.current = self._input.attempts_before + attempt
        self._final, self._handed_out, self._cancel_reason = None, False, None
        self._op.cancel_reason = None
        self._op.steps, self._op.result, self._op.description = [], None, None
        now = workflow.now()
        self._request = device_request(self._input, now)
        self._op.execution.started_date = now
        if attempt > 1:
            self._set_status(OperationStatus.PENDING_EXECUTION)

        delivered = await self._deliver(now + timedelta(milliseconds=params.connection_timeout))
        if delivered is None or self._cancel_if_stopped():
            return False
        if delivered.delivery is Delivery.ANSWERED and delivered.response is not None:
            self._final = delivered.response
        elif delivered.delivery is Delivery.REJECTED:
            self._give_up(f"device refused the request: {delivered.detail}")
            return False
        elif delivered.response is not None:  # an acknowledgement with partial steps
            self._merge_steps(delivered.response.steps)

        if self._final is None:
            self._op.description = None  # no longer waiting for the connection
            self._set_status(OperationStatus.STARTED)
            timeout = timedelta(milliseconds=params.timeout)
            if not await self._wait(lambda: self._final is not None, timeout, "operation timeout"):
                self._cancel(CancelReason.BY_TIMEOUT, "no final answer within the timeout")
                return True
            if self._final is None:  # stopped by the job while the device works on it
                self._cancel_if_stopped()
                return False
        self._record_final()
        return False

    async def _deliver(self, deadline: datetime) -> SendRequestResult | None:
        """Push the request until the device takes it; None when the device never did."""
        backoff = FIRST_PUSH_BACKOFF
        while True:
            # While the job is paused nothing is sent; a stopped operation is never sent.
            await workflow.wait_condition(lambda: not self._held or self._stop is not None)
            if self._cancel_if_stopped():
                return None
            sent = await self._push(first=backoff == FIRST_PUSH_BACKOFF)
            if sent.delivery is not Delivery.UNREACHABLE or self._final is not None:
                return sent
            if self._op.status != OperationStatus.WAITING_FOR_CONNECTION:
                # Why it waits (no address, refused, a certificate that does not verify), shown
                # with the status; memo content only, so running histories replay unchanged.
                self._op.description = f"waiting for the device to connect: {sent.detail}"
                self._set_status(OperationStatus.WAITING_FOR_CONNECTION)
            remaining = deadline - workflow.now()
            if remaining <= timedelta(0):
                self._give_up(f"device unreachable until the connection deadline ({sent.detail})")
                return None
            if not await self._wait(
                self._device_has_it, min(backoff, remaining), "back-off before the next push"
            ):
                backoff = min(backoff * 2, MAX_PUSH_BACKOFF)
                continue
            if self._cancel_if_stopped():
                return None
            # Handed out on a poll (or answered directly): the device has the request.
            return SendRequestResult(delivery=Delivery.ACCEPTED)

    def _device_has_it(self) -> bool:
        return self._handed_out or self._final is not None

    async def _wait(self, condition: Callable[[], bool], timeout: timedelta, timer: str) -> bool:
        """Wait for ``condition`` or a stop from the job; False when the timeout ran out.
        ``timer`` names the timer in the Temporal UI."""
        try:
            await workflow.wait_condition(
                lambda: condition() or self._stop is not None,
                timeout=timeout,
                timeout_summary=timer,
            )
        except TimeoutError:
            return False
        return True

    def _cancel_if_stopped(self) -> bool:
        """Whether the job stopped this operation; if so it is now cancelled."""
        if self._stop is None:
            return False
        if not self._op.status.is_closed:
            self._cancel(self._stop.reason, self._stop.description)
        return True

    async def _push(self, first: bool) -> SendRequestResult:
        """One push. The first of an attempt runs as a local activity in the workflow task that
        decided it (no activity task through the server, a marker instead of three events), if
        its wait is short; a re-push after a back-off, or a long wait, is a regular activity that
        heartbeats, so a dead worker's push is sent again within seconds (same operation id)."""
        params = self._input.operation_parameters
        wait_ms = params.ack_timeout or params.timeout
        answer_timeout = min(timedelta(milliseconds=wait_ms), MAX_HTTP_WAIT)
        assert self._request is not None
        push = SendRequestInput(
            operation_id=self._input.operation_id,
            device_id=self._input.device.id,
            address=self._input.device.address,
            request=self._request,
            answer_timeout_s=answer_timeout.total_seconds(),
        )
        options: dict[str, Any] = {
            "start_to_close_timeout": answer_timeout + timedelta(seconds=10),
            "retry_policy": SEND_RETRY,
            "summary": f"push {self._input.name} to {self._input.device.id}",
        }
        try:
            if first and self._input.push_locally and answer_timeout <= MAX_LOCAL_PUSH_WAIT:
                return await workflow.execute_local_activity_method(
                    DeviceActivities.send_request, push, **options
                )
            return await workflow.execute_activity_method(
                DeviceActivities.send_request,
                push,
                heartbeat_timeout=PUSH_HEARTBEAT_TIMEOUT,
                **options,
            )
        except ActivityError as err:
            # The device kept failing (5xx): like an unreachable device, it is tried again later.
            return SendRequestResult(delivery=Delivery.UNREACHABLE, detail=str(err.cause or err))
        except (ApplicationError, TemporalTimeout) as err:  # a local activity's last failure
            return SendRequestResult(delivery=Delivery.UNREACHABLE, detail=str(err))

    # --- state changes ---

    def _merge_steps(self, steps: list[DeviceStep]) -> None:
        # Steps accumulate across answers; a step with the same name replaces the earlier one.
        for step in steps:
            recorded = OperationStep(
                name=step.name,
                result=step.result,
                description=step.description,
                timestamp=self._step_time(step.timestamp),
            )
            for i, known in enumerate(self._op.steps):
                if known.name == step.name:
                    self._op.steps[i] = recorded
                    break
            else:
                self._op.steps.append(recorded)
        # The operation object lives in the memo: its size stays bounded, the newest steps kept.
        del self._op.steps[:-MAX_STEPS]

    @staticmethod
    def _step_time(millis: int | None) -> datetime:
        """A device's step time; the time of receipt when it has none, or one outside the
        window the API takes (a signal need not have come through the API)."""
        if millis is None or not MIN_EPOCH_MS <= millis <= MAX_EPOCH_MS:
            return workflow.now()
        return datetime.fromtimestamp(millis / 1000, UTC)

    def _record_final(self) -> None:
        final = self._final
        assert final is not None and final.result_code is not None
        self._merge_steps(final.steps)
        self._op.result = final.result_code
        self._op.description = final.result_description
        self._cancel_reason = device_cancel_reason(final.result_code)
        self._op.cancel_reason = self._cancel_reason
        self._op.status = (
            OperationStatus.CANCELLED if self._cancel_reason else OperationStatus.FINISHED
        )

    def _cancel(self, reason: CancelReason, description: str) -> None:
        self._cancel_reason = self._op.cancel_reason = reason
        self._op.status = OperationStatus.CANCELLED
        self._op.result = ResultCode.CANCELLED
        self._op.description = f"{reason.value}: {description}"

    def _give_up(self, description: str) -> None:
        self._cancel(CancelReason.BY_ENGINE, description)

    def _set_status(self, status: OperationStatus) -> None:
        """An in-progress status change: visible to the job, to visibility and to pollers."""
        self._op.status = status
        workflow.upsert_search_attributes([OPERATION_STATUS.value_set(status.value)])
        workflow.upsert_memo({OPERATION_MEMO: self._op})
        self._report(
            JobSignal.PROGRESS,
            OperationProgress(operation_id=self._input.operation_id, status=status),
        )

    def _report(self, signal: str, message: object) -> None:
        # Sent without blocking the operation; every report is awaited before the run ends.
        job = workflow.get_external_workflow_handle(self._input.job_workflow_id)
        self._reports.append(asyncio.create_task(job.signal(signal, message)))

    async def _close(self) -> None:
        self._op.execution.finished_date = workflow.now()
        workflow.upsert_search_attributes(
            [
                OPERATION_STATUS.value_set(self._op.status.value),
                OPERATION_RESULT.value_set((self._op.result or ResultCode.CANCELLED).value),
            ]
        )
        memo: dict[str, object] = {OPERATION_MEMO: self._op}
        if self._cancel_reason == CancelReason.BY_TIMEOUT:
            grace = timedelta(milliseconds=self._input.late_answer_grace_ms)
            memo[LATE_ANSWERS_UNTIL_MEMO] = (workflow.now() + grace).isoformat()
            self._late_window_open = True
        workflow.upsert_memo(memo)
        # Nothing is recorded while the workflow replays (docs/metrics.md).
        operation_closed(
            workflow.metric_meter(),
            (self._op.result or ResultCode.CANCELLED).value,
            self._cancel_reason.value if self._cancel_reason else None,
        )
        if self._close_by_signal():
            self._report(
                JobSignal.CLOSED,
                OperationClosed(
                    operation_id=self._input.operation_id,
                    status=self._op.status,
                    result=self._op.result,
                    cancel_reason=self._cancel_reason,
                ),
            )
        await self._flush_reports()

    def _close_by_signal(self) -> bool:
        """Whether the job must hear of the close by signal: the completion tells the run that
        started this operation, unless that run has continued-as-new, or the operation stays open
        for a late answer (the job counts it closed now, not when the grace ends)."""
        return self._report_by_signal or self._cancel_reason == CancelReason.BY_TIMEOUT

    async def _take_late_answer(self) -> None:
        try:
            await workflow.wait_condition(
                lambda: self._final is not None,
                timeout=timedelta(milliseconds=self._input.late_answer_grace_ms),
                timeout_summary="grace for a late answer",
            )
        except TimeoutError:
            return
        finally:
            self._late_window_open = False
        final = self._final
        assert final is not None and final.result_code is not None
        self._op.out_of_time = True
        self._op.result = final.result_code
        self._op.description = final.result_description
        workflow.upsert_search_attributes([OPERATION_RESULT.value_set(final.result_code.value)])
        workflow.upsert_memo({OPERATION_MEMO: self._op, LATE_ANSWERS_UNTIL_MEMO: None})
        self._report(
            JobSignal.LATE,
            OperationLate(operation_id=self._input.operation_id, result=final.result_code),
        )
        await self._flush_reports()

    async def _flush_reports(self) -> None:
        # A signal still in flight when the workflow completes would be dropped.
        reports, self._reports = self._reports, []
        for report in reports:
            try:
                await report
            except Exception as err:  # the job is gone (terminated by hand): nothing to tell
                workflow.logger.warning("report to job %s lost: %s", self._input.job_id, err)
