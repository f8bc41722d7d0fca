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
from temporalio.service import RPCError, RPCStatusCode


class RetireRunInput(BaseModel):
    workflow_id: str
    run_id: str


class RunActivities:
    @activity.defn(name="retire_run")
    async def retire_run(self, input: RetireRunInput) -> None:
        """End the run if it still runs (an operation closed by timeout stays open for a late
        answer), then delete it. A run already gone is fine: this may be a retry of the call."""
        client = activity.client()
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
