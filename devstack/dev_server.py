"""The one Temporal dev server command line (``temporal server start-dev``), and starting it on a
free port: shared by ``make run``, the benches and the test fixtures."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.service import RPCError

from core.settings import Settings
from core.temporal import connect, dev_server_search_attribute_args
from devstack.processes import HOST, Child, NotYet, Supervisor, find_binary, start_listening

NAME = "temporal"


def command(
    port: int,
    *,
    host: str = HOST,
    ui_port: int | None = None,
    db_file: Path | None = None,
    namespace: str = "default",
    log_level: str = "warn",
    dynamic_config: Mapping[str, object] | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """The arguments that start a dev server on ``host:port`` with the project's search
    attributes registered.

    ``ui_port`` None: no UI (``--headless``). ``db_file`` None: the state lives in memory and
    goes with the process; else a SQLite file in WAL mode (``synchronous=normal``: far fewer
    fsyncs on a busy fan-out, and a crash loses at most the last transactions of a dev server).
    ``dynamic_config``: ``--dynamic-config-value`` pairs, the values written as JSON.
    The HTTP API and metrics ports are left to the server, which picks free ones.
    """
    args = [find_binary("temporal"), "server", "start-dev", "--ip", host, "--port", str(port)]
    args += ["--headless"] if ui_port is None else ["--ui-port", str(ui_port)]
    if db_file is not None:
        args += ["--db-filename", str(db_file)]
        args += ["--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=normal"]
    args += ["--log-level", log_level]
    args += dev_server_search_attribute_args()
    for key, value in (dynamic_config or {}).items():
        args += ["--dynamic-config-value", f"{key}={json.dumps(value)}"]
    if namespace != "default":
        args += ["--namespace", namespace]
    return [*args, *extra]


async def start(
    supervisor: Supervisor,
    settings: Settings,
    env: Mapping[str, str],
    *,
    db_file: Path | None = None,
    log_level: str = "warn",
    dynamic_config: Mapping[str, object] | None = None,
    extra: Sequence[str] = (),
) -> tuple[Child, Client]:
    """A headless dev server on a free ``127.0.0.1`` port, once it answers (its namespace and
    visibility too); the client is connected as ``settings`` say, but to the new server:
    ``client.service_client.config.target_host`` is its address."""

    async def spawn(port: int) -> Child:
        args = command(
            port,
            db_file=db_file,
            namespace=settings.temporal_namespace,
            log_level=log_level,
            dynamic_config=dynamic_config,
            extra=extra,
        )
        return await supervisor.start(NAME, args, env)

    async def ready(port: int) -> Client:
        address = f"{HOST}:{port}"
        try:
            client = await connect(settings.model_copy(update={"temporal_address": address}))
            await client.count_workflows()
        except (RuntimeError, RPCError) as exc:
            raise NotYet(f"{type(exc).__name__}: {exc}") from exc
        return client

    server, _, client = await start_listening(supervisor, spawn, ready, "the Temporal dev server")
    return server, client


async def pollers(
    client: Client,
    task_queue: str,
    kind: TaskQueueType.ValueType = TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
) -> set[str]:
    """The identities polling ``task_queue`` for ``kind`` tasks in the client's namespace (a
    worker's identity is the SDK's default, ``<pid>@<host>``)."""
    answer = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace, task_queue=TaskQueue(name=task_queue), task_queue_type=kind
        )
    )
    return {poller.identity for poller in answer.pollers}
