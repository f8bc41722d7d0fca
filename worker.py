"""The worker: builds the Temporal client, the activity objects and the worker; nothing else."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from temporalio.client import Client
from temporalio.runtime import Runtime
from temporalio.worker import Worker

from activities.callbacks import CallbackActivities
from activities.devices import DeviceActivities
from activities.inventory import InventoryActivities
from activities.runs import RunActivities
from core.metrics import metrics_address, on_runtime, worker_runtime
from core.settings import Settings, get_settings
from core.temporal import connect
from core.tls import client_context
from inventory.store import Inventory
from workflows.job import JobWorkflow
from workflows.operation import OperationWorkflow

log = logging.getLogger("worker")

WORKFLOWS = [JobWorkflow, OperationWorkflow]


def keep_workflow_bytecode() -> None:
    """Let this process keep compiled bytecode, even under ``PYTHONDONTWRITEBYTECODE``.

    The workflow sandbox imports the workflow modules afresh for every workflow run, one per
    device. Without bytecode on disk (that variable, as this machine and the image set it, or a
    read-only tree) every such import compiles their source again: a fifth of the worker's CPU
    in a 100,000-device run (bench.scale, profiled). The bytecode goes to a directory of this
    user's own under the temporary directory, never into the source tree.
    """
    if not sys.dont_write_bytecode:
        return
    cache = Path(tempfile.gettempdir()) / f"fleetops-pycache-{os.getuid()}"
    try:
        cache.mkdir(mode=0o700, exist_ok=True)
        if cache.stat().st_uid != os.getuid():  # someone else's: not ours to read code from
            return
    except OSError:
        return
    sys.pycache_prefix = str(cache)
    sys.dont_write_bytecode = False


@asynccontextmanager
async def running_worker(
    settings: Settings, client: Client | None = None, task_queue: str | None = None
) -> AsyncIterator[Worker]:
    """A started worker with its HTTP client and inventory; all closed cleanly on exit."""
    keep_workflow_bytecode()
    # With metrics on, the worker's client is on the runtime that exports them (docs/metrics.md).
    client = await on_runtime(client or await connect(settings), worker_runtime(settings))
    inventory = Inventory.from_url(settings.database_url)
    await inventory.create_schema()
    limits = httpx.Limits(
        max_connections=settings.device_max_connections,
        max_keepalive_connections=settings.device_max_connections,
    )
    # https devices are verified against the device CA, and see the platform's certificate;
    # callback receivers are verified against theirs (each the system store when unset).
    device_tls = client_context(
        settings.device_ca_file, settings.device_client_cert_file, settings.device_client_key_file
    )
    async with (
        httpx.AsyncClient(limits=limits, verify=device_tls) as http,
        httpx.AsyncClient(verify=client_context(settings.callback_ca_file)) as callback_http,
    ):
        devices = DeviceActivities(http)
        targets = InventoryActivities(inventory)
        runs = RunActivities()
        callbacks = CallbackActivities(callback_http, client, settings.callback_secret)
        worker = Worker(
            client,
            task_queue=task_queue or settings.task_queue,
            workflows=WORKFLOWS,
            activities=[
                devices.send_request,
                targets.count_targets,
                targets.read_targets,
                targets.read_joins,
                runs.retire_run,
                runs.tell_operations,
                callbacks.deliver,
            ],
            max_concurrent_activities=settings.worker_max_concurrent_activities,
            # First pushes run as local activities (workflows/operation.py): the same room.
            max_concurrent_local_activities=settings.worker_max_concurrent_activities,
            max_concurrent_workflow_tasks=settings.worker_max_concurrent_workflow_tasks,
        )
        try:
            async with worker:
                yield worker
        finally:
            await inventory.close()


async def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # One line per device request is noise at fleet scale.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    settings = get_settings()
    runtime = worker_runtime(settings)
    if runtime is not None:
        # Before any client: every client of this process connects on the exporting runtime.
        Runtime.set_default(runtime)
        log.info("metrics on http://%s/metrics", metrics_address(settings))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with running_worker(settings):
        log.info("worker polling %s on %s", settings.task_queue, settings.temporal_address)
        await stop.wait()
        log.info("worker shutting down")


if __name__ == "__main__":
    asyncio.run(main())
