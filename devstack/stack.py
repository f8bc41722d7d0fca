"""Bring the embedded stack up, run the demo job, and take everything down again.

This is a CLI: it talks to the person at the terminal with ``print``; the children write their
own logs under ``.data/logs/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
from rich.console import Console
from temporalio.client import Client

from cli.client import FleetClient
from cli.config import Settings as CliSettings
from cli.errors import CliProblem
from cli.watch import Outcome, WatchResult, verdict, watch
from core.settings import Settings
from core.temporal import connect
from devstack import dev_server
from devstack.processes import (
    STOPPED,
    Child,
    NotYet,
    StackError,
    Supervisor,
    TimedOut,
    busy_ports,
    eventually,
)
from inventory.keys import key_from_secret, new_key
from models.jobs import Job

T = TypeVar("T")

HOST = "127.0.0.1"
TEMPORAL_PORT = 7233
TEMPORAL_UI_PORT = 8233
API_PORT = 8080
SIMULATOR_PORT = 1123
PORTS = {
    TEMPORAL_PORT: "the Temporal server",
    TEMPORAL_UI_PORT: "the Temporal UI",
    API_PORT: "the API",
    SIMULATOR_PORT: "the device simulator",
}
TEMPORAL_ADDRESS = f"{HOST}:{TEMPORAL_PORT}"
API_URL = f"http://{HOST}:{API_PORT}"
UI_URL = f"http://{HOST}:{TEMPORAL_UI_PORT}"
SIMULATOR_URL = f"http://{HOST}:{SIMULATOR_PORT}"
DEMO_TAG = "demo"
DEMO_JOB: dict[str, Any] = {
    "job": {
        "request": {
            "name": "REBOOT_EQUIPMENT",
            "parameters": {"type": "SOFTWARE"},
            "target": {"append": {"tags": [DEMO_TAG]}},
        }
    }
}
# Stopped stage by stage: nothing new comes in, then the worker, then the server it talks to.
STOP_ORDER: tuple[tuple[str, ...], ...] = (("api", "simulator"), ("worker",), ("temporal",))
STOP_GRACE_S = 10.0
SIGNAL_REPEAT_S = 1.0
POLL_S = 0.25
JOB_POLL_S = 0.5
# The watch thread notices a stop between two reads, or when a read times out.
WATCH_HTTP_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Options:
    root: Path
    devices: int = 200
    startup_timeout_s: float = 60.0
    job_timeout_s: float = 600.0


class DevStack:
    def __init__(self, options: Options) -> None:
        self.options = options
        self.root = options.root
        self.data = self.root / ".data"
        self.logs = self.data / "logs"
        # The address is forced: the stack starts its own server there, whatever .env says.
        self.settings = Settings(_env_file=self.root / ".env", temporal_address=TEMPORAL_ADDRESS)
        self.supervisor = Supervisor(self.logs, cwd=self.root)
        self.children: dict[str, Child] = {}
        self.stopping = False
        # Set by a second Ctrl-C: stop waiting for graceful exits.
        self.hurry = asyncio.Event()

    # -- up ---------------------------------------------------------------------------------

    async def start(self) -> str:
        """Start every process and wait until the fleet is provisioned; returns the admin key."""
        busy = busy_ports(HOST, list(PORTS))
        if busy:
            lines = [f"  {port} ({PORTS[port]})" for port in busy]
            raise StackError(
                f"ports already in use on {HOST}:\n" + "\n".join(lines) + "\n"
                "Is another `make run` still running? "
                f"`ss -ltnp 'sport = :{busy[0]}'` shows who holds the port."
            )
        self.logs.mkdir(parents=True, exist_ok=True)
        admin_key = self.admin_key()

        started = time.monotonic()
        await self.spawn("temporal", self.temporal_command())
        client = await self.until(
            f"the Temporal server on {TEMPORAL_ADDRESS}",
            lambda: asyncio.wait_for(connect(self.settings), timeout=5),
        )
        done(f"Temporal dev server on {TEMPORAL_ADDRESS}, UI {UI_URL}", started)

        started = time.monotonic()
        worker = await self.spawn("worker", [sys.executable, "worker.py"])
        await self.spawn("api", self.api_command(), FLEET_BOOTSTRAP_ADMIN_KEY=admin_key)
        await self.until(
            f"the worker to poll task queue {self.settings.task_queue}",
            lambda: self.worker_polling(client, worker),
        )
        done(f"worker polling task queue {self.settings.task_queue}", started)
        async with (
            self.api(admin_key) as api,
            httpx.AsyncClient(base_url=SIMULATOR_URL, timeout=5) as simulator,
        ):
            await self.until(f"the API at {API_URL}/health/ready", lambda: self.api_ready(api))
            done(f"API on {API_URL}", started)

            started = time.monotonic()
            await self.spawn("simulator", self.simulator_command(), FLEET_SIM_API_KEY=admin_key)
            # Provisioning a big fleet takes a while: give it time in proportion.
            count = await self.until(
                f"the simulator, and {self.options.devices} devices tagged {DEMO_TAG!r}",
                lambda: self.demo_devices(api, simulator),
                timeout_s=self.options.startup_timeout_s + self.options.devices / 500,
            )
        done(f"simulator on {SIMULATOR_URL}, {count} devices provisioned", started)
        if count > self.options.devices:
            print(
                f"  note: {count - self.options.devices} devices tagged {DEMO_TAG!r} come from an "
                "earlier run with more devices; the simulator does not serve them "
                "(`make clean` starts afresh)"
            )
        return admin_key

    def admin_key(self) -> str:
        """The first admin key: generated once, then kept in ``.data/admin-key``."""
        path = self.data / "admin-key"
        if path.exists():
            key = path.read_text().strip()
            if not key_from_secret(key)[0]:
                raise StackError(
                    f"{path} does not hold a key of the form <id>.<secret>; "
                    "delete it and a new one is made"
                )
            return key
        _, key, _ = new_key()
        # Created with owner-only permissions: the key administers everything.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(key + "\n")
        return key

    def temporal_command(self) -> list[str]:
        return dev_server.command(
            TEMPORAL_PORT,
            host=HOST,
            ui_port=TEMPORAL_UI_PORT,
            db_file=self.data / "temporal.db",
            namespace=self.settings.temporal_namespace,
        )

    @staticmethod
    def api_command() -> list[str]:
        # Host and port reach it as settings (FLEET_API_HOST/PORT, set by spawn()).
        return [sys.executable, "-m", "api"]

    def simulator_command(self) -> list[str]:
        command = [sys.executable, "-m", "simulator", "--devices", str(self.options.devices)]
        command += ["--port", str(SIMULATOR_PORT), "--tag", DEMO_TAG, "--provision"]
        command += ["--api", API_URL]
        return command

    async def spawn(self, name: str, args: list[str], **env: str) -> Child:
        child_env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "FLEET_TEMPORAL_ADDRESS": TEMPORAL_ADDRESS,
            "FLEET_API_HOST": HOST,
            "FLEET_API_PORT": str(API_PORT),
            **env,
        }
        child = await self.supervisor.start(name, args, child_env)
        self.children[name] = child
        return child

    async def until(
        self, what: str, check: Callable[[], Awaitable[T]], timeout_s: float | None = None
    ) -> T:
        """Poll ``check`` until it returns; any exception (``NotYet`` included) means not yet,
        a readiness probe's failure. Every child must still run meanwhile."""
        timeout_s = timeout_s or self.options.startup_timeout_s
        try:
            return await eventually(
                check,
                timeout_s,
                POLL_S,
                what=what,
                alive=self.children.values(),
                retry_on=(Exception,),
            )
        except TimedOut as exc:
            raise StackError(f"{exc}; the logs are in {self.logs}") from exc

    def check_children(self) -> None:
        self.supervisor.check_running()

    async def worker_polling(self, client: Client, worker: Child) -> None:
        # A worker of an earlier run stays listed as a poller for a while: look for this one.
        mine = f"{worker.process.pid}@"
        polling = await dev_server.pollers(client, self.settings.task_queue)
        if not any(identity.startswith(mine) for identity in polling):
            raise NotYet

    def api(self, admin_key: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=API_URL, headers={"X-ApiKey": admin_key}, timeout=30)

    @staticmethod
    async def api_ready(api: httpx.AsyncClient) -> None:
        answer = await api.get("/health/ready")
        if answer.status_code != 200:
            raise NotYet(f"/health/ready answered {answer.status_code}")

    async def demo_devices(self, api: httpx.AsyncClient, simulator: httpx.AsyncClient) -> int:
        # The simulator holds every device's key once it has provisioned them all (devices of an
        # earlier run are provisioned again, for their keys).
        stats = await simulator.get("/sim/stats")
        if stats.status_code != 200 or stats.json()["provisioned"] < self.options.devices:
            raise NotYet
        count = await tagged_devices(api, DEMO_TAG)
        if count < self.options.devices:
            raise NotYet(f"{count} devices tagged {DEMO_TAG!r}")
        return count

    # -- the demo job -----------------------------------------------------------------------

    async def demo(self, admin_key: str) -> Job:
        """Create the demo job and show its progress with the CLI's watch view
        (``fleetops jobs watch``) until it closes; returns the closed job."""
        async with self.api(admin_key) as api:
            answer = await api.post("/north/v80/operation/jobs", json=DEMO_JOB)
            if answer.status_code != 201:
                raise StackError(
                    f"the demo job was refused: {answer.status_code} {answer.text}; "
                    f"see {self.logs / 'api.log'}"
                )
            job_id = answer.json()["id"]
        print(f"Demo job {job_id}: REBOOT_EQUIPMENT on every device tagged {DEMO_TAG!r}")
        result = await self.watch_job(job_id, admin_key)
        if result.outcome is Outcome.TIMED_OUT:
            raise StackError(
                f"the demo job did not finish within {self.options.job_timeout_s:.0f} s; "
                f"look at it in {self.ui_url(job_id)}"
            )
        print(verdict(result), flush=True)
        return result.job

    async def watch_job(self, job_id: str, admin_key: str) -> WatchResult:
        """The CLI's watch, in a thread (it is synchronous), while this loop keeps answering
        signals and notices a child that exits; either ends the watch through ``stop``."""
        stop = threading.Event()
        settings = CliSettings(url=API_URL, api_key=admin_key, timeout=WATCH_HTTP_TIMEOUT_S)

        def follow() -> WatchResult:
            with FleetClient(settings) as client:
                return watch(
                    client,
                    job_id,
                    Console(),
                    interval_s=JOB_POLL_S,
                    timeout_s=self.options.job_timeout_s,
                    stop=stop,
                )

        watching = asyncio.ensure_future(asyncio.to_thread(follow))
        exited = asyncio.ensure_future(self.watch())
        try:
            await asyncio.wait({watching, exited}, return_when=asyncio.FIRST_COMPLETED)
            if exited.done():
                exited.result()  # a child exited: StackError
            return watching.result()
        except CliProblem as exc:
            raise StackError(f"watching the demo job: {exc}") from exc
        finally:
            stop.set()
            exited.cancel()
            # The thread ends within one HTTP timeout; never leave it behind.
            with contextlib.suppress(Exception):
                await asyncio.shield(watching)

    def ui_url(self, job_id: str) -> str:
        return f"{UI_URL}/namespaces/{self.settings.temporal_namespace}/workflows/{job_id}"

    def show_ready(self, job: Job, admin_key: str) -> None:
        job_id = job.id
        status = job.report.summary.status.value
        logs = ", ".join(str(c.log_path.relative_to(self.root)) for c in self.children.values())
        print(
            f"\nThe stack is up; the demo job is {status}.\n"
            f"  API docs     {API_URL}/docs\n"
            f"  Temporal UI  {self.ui_url(job_id)}\n"
            f"  Admin key    {admin_key}  (kept in .data/admin-key)\n"
            f"  Logs         {logs}\n"
            "\nTry:\n"
            f"  export FLEETOPS_URL={API_URL} FLEETOPS_API_KEY={admin_key}\n"
            f"  fleetops jobs show {job_id}\n"
            "  fleetops jobs create REBOOT_EQUIPMENT --tag demo --watch\n"
            f"  curl -s -H 'X-ApiKey: {admin_key}' {API_URL}/north/v80/operation/jobs/{job_id}\n"
            "\nPress Ctrl-C to stop.",
            flush=True,
        )

    async def watch(self) -> None:
        """Wait until a child exits on its own, which is an error: the stack is incomplete."""
        waits = {asyncio.ensure_future(c.process.wait()): c for c in self.children.values()}
        try:
            done_waits, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
        waits[next(iter(done_waits))].check_running()

    # -- down -------------------------------------------------------------------------------

    async def stop(self) -> None:
        """Stop what was started, stage by stage; a second Ctrl-C kills at once."""
        self.stopping = True
        for stage in STOP_ORDER:
            children = [self.children[name] for name in stage if name in self.children]
            if not children:
                continue
            names = ", ".join(c.name for c in children)
            print(f"Stopping {names}...", end=" ", flush=True)
            outcomes = await self.supervisor.stop(children, STOP_GRACE_S, self.hurry)
            unusual = [
                f"{c.name} {outcome}"
                for c, outcome in zip(children, outcomes, strict=True)
                if outcome != STOPPED
            ]
            print("; ".join(unusual) or "done", flush=True)
        # Anything not in STOP_ORDER (nothing today) goes last.
        await self.supervisor.stop(grace_s=STOP_GRACE_S, hurry=self.hurry)


async def tagged_devices(api: httpx.AsyncClient, tag: str) -> int:
    """How many devices in the inventory carry ``tag``, read through the API."""
    answer = await api.get("/north/v80/provision/devices", params={"tag": tag, "size": 1})
    answer.raise_for_status()
    body = answer.json()
    # With size=1 the page count is the device count (an empty list still says "of": 1).
    return int(body["page"]["of"]) if body["devices"] else 0


def done(what: str, since: float) -> None:
    print(f"  ok  {what} ({time.monotonic() - since:.1f} s)", flush=True)


async def run(options: Options) -> int:
    """The whole life of the stack; returns the process exit code."""
    stack = DevStack(options)
    main = asyncio.current_task()
    assert main is not None
    loop = asyncio.get_running_loop()

    first_signal = 0.0

    def on_signal() -> None:
        nonlocal first_signal
        if not stack.stopping:
            stack.stopping = True
            first_signal = time.monotonic()
            main.cancel()
        elif time.monotonic() - first_signal > SIGNAL_REPEAT_S:
            # Only a deliberate second Ctrl-C: wrappers such as make or timeout pass one signal
            # on to the whole process group, so the same stop request can arrive twice at once.
            stack.hurry.set()

    # Installed through the loop (not left to Python's KeyboardInterrupt), which also works when
    # the shell started us in the background with SIGINT ignored.
    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    for sig in handled:
        loop.add_signal_handler(sig, on_signal)
    error = ""
    try:
        print(f"Starting the stack in {options.root} (logs in .data/logs/)", flush=True)
        admin_key = await stack.start()
        job = await stack.demo(admin_key)
        stack.show_ready(job, admin_key)
        await stack.watch()
    except asyncio.CancelledError:
        if not stack.stopping:
            raise
        main.uncancel()
        print("\nStopping the stack (Ctrl-C again to kill at once)", flush=True)
    except StackError as exc:
        error = str(exc)
    except httpx.HTTPError as exc:
        error = f"talking to the API: {exc!r}"
    finally:
        if error:
            print("\nSomething went wrong; stopping the stack.", flush=True)
        await stack.stop()
        for sig in handled:
            loop.remove_signal_handler(sig)
    if error:
        # Last, so that it is what the terminal shows once everything has stopped.
        print(f"\nerror: {error}", file=sys.stderr, flush=True)
        return 1
    return 0
