"""Workflow runs as a job manages them: the orders a job gives its operations, and the closed run
an operator's retry leaves.

A job tells its open operations to hold, to stop, or to report their close by signal with an
update (``OPERATION_ORDER``) that this activity sends, a batch at a time; an operation that has
closed meanwhile is reported back, so the job knows its completion reaches it instead.

A retried operation keeps its id, and so its workflow id: the new attempt is a new run of the
same workflow. The closed run is deleted first, so every listing (a job's operations, searches,
the Temporal UI) shows one execution per operation, the current one; its outcome lives on in
the new run's attempt count and in the job's counters (docs/api.md, "Per-device control").
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from pydantic import BaseModel
from temporalio import activity
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import DeleteWorkflowExecutionRequest
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from core.temporal import OPERATION_ORDER, operation_workflow_id
from models.messages import OperationOrder

# The run to retire is no longer the operation's latest: another retry replaced it since the
# operator read it (through another API process), and retiring it again would count it twice.
RUN_REPLACED = "RunReplaced"


class RetireRunInput(BaseModel):
    workflow_id: str
    run_id: str
    # Refuse (RUN_REPLACED) when a later run of the workflow exists.
    check_latest: bool = False


# Updates in flight at once from one call: each waits for its operation's workflow task.
ORDER_CONCURRENCY = 50
HEARTBEAT_EVERY = timedelta(seconds=2)


class TellOperationsInput(BaseModel):
    operation_ids: list[str]
    order: OperationOrder
    # One per order the job gives (its run and a counter): a call tried again sends the same
    # updates, which the server answers from their first outcome.
    update_id: str


class TellOperationsResult(BaseModel):
    # The operations that had closed before the order reached them (their completion reaches
    # the job's run that started them, or their close was signalled already).
    closed: list[str] = []


class RunActivities:
    @activity.defn(name="tell_operations")
    async def tell_operations(self, input: TellOperationsInput) -> TellOperationsResult:
        client = activity.client()
        closed: list[str] = []
        slots = asyncio.Semaphore(ORDER_CONCURRENCY)

        async def tell(operation_id: str) -> None:
            async with slots:
                if not await _order(client, operation_id, input):
                    closed.append(operation_id)

        told = asyncio.ensure_future(asyncio.gather(*(tell(i) for i in input.operation_ids)))
        try:
            while not told.done():
                await asyncio.wait({told}, timeout=HEARTBEAT_EVERY.total_seconds())
                activity.heartbeat()
            told.result()
        finally:
            told.cancel()
        return TellOperationsResult(closed=sorted(closed))

    @activity.defn(name="retire_run")
    async def retire_run(self, input: RetireRunInput) -> None:
        """End the run if it still runs (an operation closed by timeout stays open for a late
        answer), then delete it. A run already gone is fine: this may be a retry of the call."""
        client = activity.client()
        if input.check_latest:
            await _check_latest(input)
        handle = client.get_workflow_handle(input.workflow_id, run_id=input.run_id)
        try:
            description = await handle.describe()
            if description.status == WorkflowExecutionStatus.RUNNING:
                await handle.terminate(reason="retried by an operator: a new attempt replaces it")
        except RPCError as exc:  # gone, or closed between the two calls
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
        try:
            await client.workflow_service.delete_workflow_execution(
                DeleteWorkflowExecutionRequest(
                    namespace=client.namespace,
                    workflow_execution=WorkflowExecution(
                        workflow_id=input.workflow_id, run_id=input.run_id
                    ),
                )
            )
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise


async def _check_latest(input: RetireRunInput) -> None:
    """The run is still the workflow's latest, or gone (this call, tried again, deleted it)."""
    try:
        latest = await activity.client().get_workflow_handle(input.workflow_id).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return
        raise
    if latest.run_id != input.run_id:
        raise ApplicationError(
            f"run {input.run_id} of {input.workflow_id} was replaced by run {latest.run_id}",
            type=RUN_REPLACED,
            non_retryable=True,
        )


async def _order(client: Client, operation_id: str, input: TellOperationsInput) -> bool:
    """Give one operation the order; False when it has closed (its workflow completed first)."""
    handle = client.get_workflow_handle(operation_workflow_id(operation_id))
    try:
        await handle.execute_update(OPERATION_ORDER, input.order, id=input.update_id)
    except RPCError as exc:  # "workflow execution already completed"
        if exc.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    except WorkflowUpdateFailedError:  # it completed while the update was on its way
        return False
    return True
