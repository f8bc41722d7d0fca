"""The server's ceilings: the smallest workflow that runs one activity, the smallest that runs
none, and a worker for both.

``python -m bench.fanout`` starts N of these straight from a client to measure what the Temporal
server, the SDK and the worker process layout can do at all, with none of the engine's work.
Run a worker: ``python -m bench.minimal`` (configured by the same ``FLEET_*`` environment as
``worker.py``, and with the same worker limits).

The workflow takes and returns plain values, not pydantic models: the sandbox re-runs this
module's body for every workflow run, and model classes defined here would be rebuilt each time.
Everything else is imported passed through, as the engine's workflow modules do.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from datetime import timedelta

from temporalio import activity, workflow

with workflow.unsafe.imports_passed_through():
    from temporalio.worker import Worker

    from core.settings import get_settings
    from core.temporal import connect

WORKFLOW_TYPE = "MinimalWorkflow"
NO_ACTIVITY_WORKFLOW_TYPE = "MinimalNoActivityWorkflow"
ACTIVITY_TIMEOUT = timedelta(seconds=30)

log = logging.getLogger("bench.minimal")


@activity.defn(name="bench_noop")
async def noop(index: int) -> int:
    return index


@workflow.defn(name=WORKFLOW_TYPE)
class MinimalWorkflow:
    @workflow.run
    async def run(self, index: int) -> int:
        return await workflow.execute_activity(noop, index, start_to_close_timeout=ACTIVITY_TIMEOUT)


@workflow.defn(name=NO_ACTIVITY_WORKFLOW_TYPE)
class NoActivityWorkflow:
    """The least a workflow per device can cost: one workflow task, started and completed."""

    @workflow.run
    async def run(self, index: int) -> int:
        return index


async def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = get_settings()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    client = await connect(settings)
    # The same limits as worker.py, so the ceiling is measured with the engine's worker shape.
    worker = Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[MinimalWorkflow, NoActivityWorkflow],
        activities=[noop],
        max_concurrent_activities=settings.worker_max_concurrent_activities,
        max_concurrent_workflow_tasks=settings.worker_max_concurrent_workflow_tasks,
    )
    async with worker:
        log.info("minimal worker polling %s on %s", settings.task_queue, settings.temporal_address)
        await stop.wait()
        log.info("minimal worker shutting down")


if __name__ == "__main__":
    asyncio.run(main())
