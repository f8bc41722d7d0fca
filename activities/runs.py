"""Workflow runs as a job manages them: an operation an operator retries leaves its closed run.

A retried operation keeps its id, and so its workflow id: the new attempt is a new run of the
same workflow. The closed run is deleted first, so every listing (a job's operations, searches,
the Temporal UI) shows one execution per operation, the current one; its outcome lives on in
the new run's attempt count and in the job's counters (docs/api.md, "Per-device control").
"""

from __future__ import annotations

from pydantic import BaseModel
from temporalio import activity
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import DeleteWorkflowExecutionRequest
from temporalio.client import WorkflowExecutionStatus
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

# The run to retire is no longer the operation's latest: another retry replaced it since the
# operator read it (through another API process), and retiring it again would count it twice.
RUN_REPLACED = "RunReplaced"


class RetireRunInput(BaseModel):
    workflow_id: str
    run_id: str
    # Refuse (RUN_REPLACED) when a later run of the workflow exists.
    check_latest: bool = False


class RunActivities:
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
