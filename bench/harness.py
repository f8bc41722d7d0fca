"""What every bench shares: the run directory, the dev server and the stack's processes (started
by the project's supervisor, ``devstack.processes``), CPU accounting, and the exit code.

The processes run from ``source`` (a copy of the tree, see ``snapshot_source``) with their logs
under the run directory; every one is stopped (SIGTERM, then SIGKILL after ``STOP_GRACE_S``) on
success, failure, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.client import Client

from core.settings import Settings
from devstack import dev_server
from devstack.processes import (
    CLOCK_TICKS,
    HOST,
    Child,
    NotYet,
    StackError,
    Supervisor,
    eventually,
    start_listening,
)
from devstack.stack import tagged_devices
from inventory.keys import new_key

R = TypeVar("R")

REPO = Path(__file__).resolve().parents[1]
TAG = "bench"
OPERATION = "REBOOT_EQUIPMENT"
JOBS = "/north/v80/operation/jobs"
CLOSED_JOB_STATUSES = ("FINISHED", "CANCELLED")
POLL_INTERVAL = 0.2
STARTUP_TIMEOUT = 60.0
# Devices the simulator provisions through the API per second, at the least (measured: 60,000
# in the first minute of a 100,000-device run).
PROVISIONED_PER_S = 500
STOP_GRACE_S = 15.0
# Other processes' CPU, as a share of one core, above which a measurement is flagged as skewed.
NOISY_OTHERS = 0.15


class BenchError(StackError):
    """The bench cannot go on; printed as ``bench failed: ...`` (exit code 2)."""


# --- the processes -------------------------------------------------------------------------


@dataclass
class Run:
    """One bench run: its supervisor, the settings of its processes, and its dev server."""

    processes: Supervisor
    settings: Settings
    server: Child
    client: Client


@contextlib.asynccontextmanager
async def running_server(
    args: argparse.Namespace, workdir: Path, task_queue: str
) -> AsyncIterator[Run]:
    """The run's dev server, and the settings for the processes of the stack: ``task_queue``, an
    inventory in ``workdir``, a new admin key. The processes start from a copy of the tree (from
    the tree itself with ``--in-place``), log under ``workdir/logs``, and are all stopped on the
    way out."""
    source = REPO if args.in_place else snapshot_source(workdir)
    processes = Supervisor(workdir / "logs", cwd=source)
    _, admin_key, _ = new_key()
    settings = Settings(
        task_queue=task_queue,
        database_url=f"sqlite+aiosqlite:///{workdir / 'inventory.db'}",
        bootstrap_admin_key=admin_key,
    )
    try:
        server, client = await start_server(processes, workdir, settings)
        yield Run(processes, settings, server, client)
    finally:
        await stop_all(processes)


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


def fleet_env(**values: object) -> dict[str, str]:
    """This process's environment with the given ``FLEET_*`` settings (other ``FLEET_*`` variables
    set by the caller, such as worker limits, pass through)."""
    env = dict(os.environ)
    env.update({f"FLEET_{k.upper()}": str(v) for k, v in values.items()})
    env["PYTHONUNBUFFERED"] = "1"
    return env


async def start_server(
    processes: Supervisor, workdir: Path, settings: Settings
) -> tuple[Child, Client]:
    """The dev server of the run (SQLite in ``workdir``, WAL, the project's search attributes, a
    free port); ``settings.temporal_address`` is set to it."""
    server, client = await dev_server.start(
        processes, settings, os.environ, db_file=workdir / "temporal.db", log_level="error"
    )
    settings.temporal_address = client.service_client.config.target_host
    print(f"temporal dev server on {settings.temporal_address}; logs in {processes.log_dir}")
    return server, client


@dataclass
class Stack:
    """The engine's processes of a run: the API, the workers and the device simulator."""

    api: Child
    api_url: str
    workers: list[Child]
    sim: Child
    sim_url: str

    @property
    def children(self) -> list[Child]:
        return [self.api, *self.workers, self.sim]


def stack_env(settings: Settings) -> dict[str, str]:
    """The ``FLEET_*`` environment the stack's processes of a run share."""
    return fleet_env(
        temporal_address=settings.temporal_address,
        task_queue=settings.task_queue,
        database_url=settings.database_url,
        bootstrap_admin_key=settings.bootstrap_admin_key,
        api_host=HOST,
    )


async def start_stack(
    ctx: Run,
    *,
    devices: int,
    workers: int,
    api_env: Mapping[str, str] | None = None,
    sim_args: Sequence[str] = (),
    env_extra: Mapping[str, str] | None = None,
    sim_scheme: str = "http",
) -> Stack:
    """The API, ``workers`` workers and the simulator, configured by ``settings`` (the task
    queue, the inventory, the admin key); returns once the simulator has provisioned ``devices``
    devices tagged ``TAG``."""
    processes, settings = ctx.processes, ctx.settings
    env = stack_env(settings)
    env.update(env_extra or {})  # e.g. the device TLS settings of ``bench.fanout --tls``
    py = sys.executable

    async def spawn_api(port: int) -> Child:
        return await processes.start(
            "api",
            [py, "-m", "api", "--log-level", "warning", "--no-access-log"],
            {**env, **(api_env or {}), "FLEET_API_PORT": str(port)},
        )  # fmt: skip

    # The API first: it creates the inventory schema the workers and the simulator rely on.
    api, api_port, _ = await start_listening(
        processes, spawn_api, api_ready, "the API", STARTUP_TIMEOUT, POLL_INTERVAL
    )
    api_url = f"http://{HOST}:{api_port}"
    started = [
        await processes.start(f"worker-{i}", [py, "-m", "worker"], env)
        for i in range(1, workers + 1)
    ]
    await wait_for_pollers(ctx.client, settings.task_queue, started)

    async def spawn_simulator(port: int) -> Child:
        return await processes.start(
            "simulator",
            [py, "-m", "simulator", "--devices", str(devices), "--host", HOST,
             "--port", str(port), "--tag", TAG, *sim_args, "--provision", "--api", api_url,
             "--api-key", settings.bootstrap_admin_key],
            env,
        )  # fmt: skip

    async with api_client(api_url, settings.bootstrap_admin_key) as http:
        sim, sim_port, _ = await start_listening(
            processes,
            spawn_simulator,
            lambda _: provisioned_count(http, devices),
            f"the simulator and its {devices} devices",
            # Provisioning takes its own time on top: bulk pages, a key and a tag join each.
            STARTUP_TIMEOUT + devices / PROVISIONED_PER_S,
            POLL_INTERVAL,
        )
    return Stack(api, api_url, started, sim, f"{sim_scheme}://{HOST}:{sim_port}")


def api_client(api_url: str, admin_key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=api_url, headers={"X-ApiKey": admin_key}, timeout=60)


async def api_ready(port: int) -> None:
    try:
        async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", timeout=5) as http:
            answer = await http.get("/health/ready")
    except httpx.TransportError as exc:
        raise NotYet(f"{type(exc).__name__}: {exc}") from exc
    if answer.status_code != 200:
        raise NotYet(f"/health/ready answered {answer.status_code}")


async def provisioned_count(http: httpx.AsyncClient, count: int) -> int:
    found = await tagged_devices(http, TAG)
    if found < count:
        raise NotYet(f"{found} devices tagged {TAG!r}")
    return found


async def wait_for_pollers(client: Client, task_queue: str, workers: list[Child]) -> int:
    async def polled() -> int:
        kinds = (TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY)
        seen = [len(await dev_server.pollers(client, task_queue, kind)) for kind in kinds]
        if min(seen) < len(workers):
            raise NotYet(f"{min(seen)} polling")
        return min(seen)

    return await eventually(
        polled,
        STARTUP_TIMEOUT,
        POLL_INTERVAL,
        what=f"{len(workers)} worker(s) polling {task_queue}",
        alive=workers,
    )


def check_running(children: Sequence[Child]) -> None:
    for child in children:
        child.check_running()


# --- the job -------------------------------------------------------------------------------


async def create_job(http: httpx.AsyncClient, request: dict[str, Any]) -> dict[str, Any]:
    """POST the job; its first representation (``id``, ``report``)."""
    answer = await http.post(JOBS, json={"job": {"request": request}})
    if answer.status_code != 201:
        raise BenchError(f"creating the job answered {answer.status_code}: {answer.text}")
    job: dict[str, Any] = answer.json()
    return job


@dataclass
class JobPolls:
    """The job as the last successful GET read it, and how the GETs went."""

    job: dict[str, Any]
    seconds: list[float] = field(default_factory=list)
    failed: int = 0


async def poll_until_closed(
    http: httpx.AsyncClient,
    job: dict[str, Any],
    alive: Sequence[Child],
    deadline: float,
    late: str,
    detail: Callable[[], Awaitable[str]] | None = None,
) -> JobPolls:
    """GET the job every ``POLL_INTERVAL`` until it is closed, while every process in ``alive``
    runs. Past ``deadline`` (``time.perf_counter``): "job <id> not finished ``late``", with the
    job's summary and ``await detail()``."""
    polls = JobPolls(job)
    while polls.job["report"]["summary"]["status"] not in CLOSED_JOB_STATUSES:
        if time.perf_counter() > deadline:
            more = f"; {await detail()}" if detail else ""
            summary = polls.job["report"]["summary"]
            raise BenchError(f"job {polls.job['id']} not finished {late}: {summary}{more}")
        check_running(alive)
        await asyncio.sleep(POLL_INTERVAL)
        asked = time.perf_counter()
        answer = await http.get(f"{JOBS}/{polls.job['id']}")
        polls.seconds.append(time.perf_counter() - asked)
        if answer.status_code == 200:
            polls.job = answer.json()
        else:
            polls.failed += 1
    return polls


# --- CPU -----------------------------------------------------------------------------------


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy so far (Linux /proc/stat; 0 elsewhere)."""
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in first[1:9])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


class CpuMeter:
    """CPU seconds each group of processes (and the bench itself) spent during a measurement, and
    what the rest of the machine spent meanwhile: other people's tests skew a measurement."""

    def __init__(self, groups: dict[str, list[Child]]) -> None:
        self._groups = groups
        self._start = self._sample()
        self._wall = time.perf_counter()
        self.used: dict[str, float] = {}
        self.wall = 0.0

    @classmethod
    def of_stack(cls, server: Child, stack: Stack) -> CpuMeter:
        return cls({"temporal": [server], "workers": stack.workers, "api": [stack.api],
                    "sim": [stack.sim]})  # fmt: skip

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

    def line(self) -> str:
        """``name 1.2s (34%)`` per group: seconds, and their share of one core over the wall."""
        parts = [f"{name} {used:.1f}s ({used / self.wall:.0%})" for name, used in self.used.items()]
        return ", ".join(parts)

    def noisy(self) -> bool:
        return self.used["others"] > NOISY_OTHERS * self.wall


# --- the run -------------------------------------------------------------------------------


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


def add_run_options(parser: argparse.ArgumentParser, timeout: float, timeout_help: str) -> None:
    """The options every bench has: ``--timeout``, ``--keep`` and ``--in-place``."""
    parser.add_argument("--timeout", type=float, default=timeout, help=timeout_help)
    parser.add_argument("--keep", action="store_true", help="keep the run directory and logs")
    parser.add_argument(
        "--in-place",
        action="store_true",
        help="run the processes from the working tree instead of a copy taken at the start",
    )


def run_bench(
    args: argparse.Namespace,
    prefix: str,
    run: Callable[[argparse.Namespace, Path], Awaitable[R]],
    report: Callable[[argparse.Namespace, R], list[str]],
) -> int:
    """``run`` in a fresh run directory, then ``report`` (the table; returns the failed checks),
    and the exit code: 0 all good, 1 a check failed, 2 the bench itself failed, 130
    interrupted."""
    # Read at the start: the processes import the working tree as it is when they start.
    args.code_version = code_version()
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    (workdir / "logs").mkdir()
    code = 2
    try:
        result = asyncio.run(_cancelled_by_sigterm(run(args, workdir)))
        problems = report(args, result)
        for problem in problems:
            print(f"CHECK FAILED: {problem}", file=sys.stderr)
        code = 1 if problems else 0
    except StackError as exc:
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


async def _cancelled_by_sigterm(measurement: Awaitable[R]) -> R:
    # SIGTERM cancels the run like Ctrl-C does, so the processes are stopped either way.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await measurement


async def stop_all(processes: Supervisor, children: Sequence[Child] | None = None) -> None:
    """Stop ``children`` (default: every process left), saying which had to be killed."""
    targets = list(processes.children if children is None else children)
    await processes.stop(targets, STOP_GRACE_S)
    for child in targets:
        if child.killed:
            print(f"{child.name} did not stop in {STOP_GRACE_S:.0f} s: killed")
