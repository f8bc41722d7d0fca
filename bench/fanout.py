"""Fan-out throughput: the whole stack against the Temporal server's own ceiling, in one run.

``python -m bench.fanout --devices 2000 [--workers K] [--window W] [--batch B] [--skip-ceiling]
[--tls]``

One Temporal dev server (SQLite file in WAL mode, started here on free 127.0.0.1 ports) serves
two measurements, one after the other:

(a) the stack: the API (uvicorn), K workers (``worker.py``) and the device simulator, each its own
    process configured by ``FLEET_*`` variables. The simulator provisions N devices tagged
    ``bench`` that answer synchronously; one job targets the tag. Rate: N / (POST that creates
    the job → the first GET that reads ``FINISHED``, polling every 0.2 s). With ``--tls``, (a)
    runs a second time on the same server with the devices served over HTTPS (mutual TLS: the
    simulator requires the workers' client certificate), for the cost of TLS on the push path.
(b) the ceiling: N ``bench.minimal`` workflows of one no-op activity each, started straight from
    a client and run by K ``python -m bench.minimal`` workers with the same limits. Rate:
    N / (first start call → close of the last workflow, read from visibility once all closed).
(c) the floor of any workflow per device: the same with N workflows that run no activity.

The table also gives what each device cost the server (history events, workflow tasks and
Temporal Cloud actions, ``bench.costs``), for the stack and for each ceiling's workflow.

Every process binds to 127.0.0.1, writes its log under the run's temporary directory, and is
stopped (SIGTERM, then SIGKILL after a timeout) on success, failure or Ctrl-C: the processes are
those of ``bench.harness``, started by the project's supervisor (``devstack.processes``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx
from pydantic import ValidationError
from temporalio.client import Client, WorkflowExecution

from bench.costs import Costs, JobCosts, job_costs, workflow_costs
from bench.harness import (
    OPERATION,
    POLL_INTERVAL,
    TAG,
    CpuMeter,
    Run,
    Stack,
    add_run_options,
    api_client,
    check_running,
    create_job,
    fleet_env,
    poll_until_closed,
    run_bench,
    running_server,
    start_stack,
    stop_all,
    wait_for_pollers,
)
from bench.minimal import NO_ACTIVITY_WORKFLOW_TYPE
from bench.minimal import WORKFLOW_TYPE as MINIMAL_WORKFLOW
from core.settings import Settings
from core.tls import client_context
from devstack.processes import HOST, Child, NotYet, eventually

STACK_QUEUE = "bench-fanout"
CEILING_QUEUE = "bench-minimal"
# Workflow starts in flight at once while the ceiling is measured.
START_CONCURRENCY = 100


# --- measurements --------------------------------------------------------------------------


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
    costs: JobCosts


@dataclass
class CeilingResult:
    label: str
    workflows: int
    seconds: float
    observed: float
    completed: int
    cpu: CpuMeter
    timeline: Timeline
    costs: Costs

    def costs_name(self) -> str:
        return "one-activity" if self.label == "(b)" else "no-activity"


def _timestamp(value: str | None) -> float | None:
    return datetime.fromisoformat(value).timestamp() if value else None


async def closed_executions(client: Client, query: str, expected: int) -> list[WorkflowExecution]:
    """Every closed execution matching ``query``, once visibility shows ``expected`` of them."""

    async def all_closed() -> int:
        count = (await client.count_workflows(f"{query} AND ExecutionStatus != 'Running'")).count
        if count < expected:
            raise NotYet(f"{count} closed")
        return count

    await eventually(
        all_closed, 60, POLL_INTERVAL, what=f"{expected} closed workflows in visibility"
    )
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


@dataclass(frozen=True)
class DeviceTls:
    """``--tls``: the simulator serves its devices over HTTPS (a test CA made here) and requires
    the platform's client certificate; the workers verify the devices and present theirs."""

    env: dict[str, str]
    sim_args: list[str]
    # The device CA, and the platform's client certificate and key.
    client_files: tuple[str, str, str]

    @classmethod
    def make(cls, workdir: Path) -> DeviceTls:
        import trustme  # a dev dependency, as the bench is

        pki = workdir / "pki"
        pki.mkdir(exist_ok=True)
        devices_ca, platform_ca = trustme.CA(), trustme.CA()
        files = {name: str(pki / name) for name in ("ca", "sim", "sim-key", "pca", "wc", "wk")}
        devices_ca.cert_pem.write_to_path(files["ca"])
        platform_ca.cert_pem.write_to_path(files["pca"])
        sim = devices_ca.issue_cert(HOST, common_name="bench-devices")
        sim.private_key_and_cert_chain_pem.write_to_path(files["sim"])
        sim.private_key_pem.write_to_path(files["sim-key"])
        worker = platform_ca.issue_cert("bench-platform.test", common_name="bench-platform")
        worker.private_key_and_cert_chain_pem.write_to_path(files["wc"])
        worker.private_key_pem.write_to_path(files["wk"])
        return cls(
            env={
                # An inventory of its own: the plain run's devices (tagged alike, at http
                # addresses) must not be targeted while the simulator provisions these.
                "FLEET_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'inventory-tls.db'}",
                "FLEET_DEVICE_CA_FILE": files["ca"],
                "FLEET_DEVICE_CLIENT_CERT_FILE": files["wc"],
                "FLEET_DEVICE_CLIENT_KEY_FILE": files["wk"],
            },
            sim_args=[
                *("--tls-cert", files["sim"], "--tls-key", files["sim-key"]),
                *("--tls-client-ca", files["pca"]),
            ],
            client_files=(files["ca"], files["wc"], files["wk"]),
        )


async def measure_stack(
    args: argparse.Namespace, ctx: Run, tls: DeviceTls | None = None
) -> StackResult:
    fan_out = {"FLEET_JOB_WINDOW": args.window, "FLEET_JOB_START_BATCH": args.batch}
    stack: Stack | None = None
    try:
        stack = await start_stack(
            ctx,
            devices=args.devices,
            workers=args.workers,
            api_env={k: str(v) for k, v in fan_out.items() if v is not None},
            sim_args=tls.sim_args if tls else (),
            env_extra=tls.env if tls else None,
            sim_scheme="https" if tls else "http",
        )
        check_running([ctx.server, stack.api, *stack.workers])
        cpu = CpuMeter.of_stack(ctx.server, stack)
        alive = [*stack.children, ctx.server]
        # The simulator's control API is behind the same mutual TLS: the platform's certificate.
        verify = client_context(*tls.client_files) if tls else True
        async with (
            api_client(stack.api_url, ctx.settings.bootstrap_admin_key) as http,
            httpx.AsyncClient(base_url=stack.sim_url, timeout=30, verify=verify) as sim,
        ):
            return await _run_job(args, http, ctx.client, sim, alive, cpu)
    finally:
        # (b) measures the server alone: the stack's processes go first (on a failure, every
        # process left is stopped by the run).
        if stack is not None:
            await stop_all(ctx.processes, stack.children)


async def _run_job(
    args: argparse.Namespace,
    http: httpx.AsyncClient,
    client: Client,
    sim: httpx.AsyncClient,
    alive: list[Child],
    cpu: CpuMeter,
) -> StackResult:
    posted_at = time.time()
    began = time.perf_counter()
    created = await create_job(http, {"name": OPERATION, "target": {"append": {"tags": [TAG]}}})
    job_id = created["id"]
    print(f"(a) job {job_id}: {args.devices} devices", flush=True)
    polls = await poll_until_closed(
        http,
        created,
        alive,
        began + args.timeout,
        f"after {args.timeout:.0f} s",
        lambda: _operation_counts(client, job_id),
    )
    job = polls.job
    seconds = time.perf_counter() - began
    observed_at = time.time()
    cpu.stop()

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
    costs = await job_costs(client, job_id, summary["total"])
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
        failed_polls=polls.failed,
        poll_seconds=polls.seconds,
        cpu=cpu,
        timeline=timeline,
        costs=costs,
    )


async def _operation_counts(client: Client, job_id: str) -> str:
    """Where a stuck job's operation workflows stand, from visibility."""
    query = f"WorkflowType = 'OperationWorkflow' AND JobId = '{job_id}'"
    running = await client.count_workflows(f"{query} AND ExecutionStatus = 'Running'")
    closed = await client.count_workflows(f"{query} AND ExecutionStatus != 'Running'")
    return f"operation workflows: {running.count} running, {closed.count} closed"


async def measure_ceiling(
    args: argparse.Namespace, ctx: Run, label: str, workflow_type: str
) -> CeilingResult:
    processes, server, client = ctx.processes, ctx.server, ctx.client
    env = fleet_env(temporal_address=client.service_client.config.target_host)
    env["FLEET_TASK_QUEUE"] = CEILING_QUEUE
    workers = [
        await processes.start(f"minimal-worker-{i}", [sys.executable, "-m", "bench.minimal"], env)
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
                    workflow_type, index, id=f"minimal-{run}-{index}", task_queue=CEILING_QUEUE
                )

        began_at = time.time()
        began = time.perf_counter()
        await asyncio.gather(*(start(i) for i in range(args.devices)))
        starts_done_at = time.time()
        query = f"WorkflowType = '{workflow_type}' AND TaskQueue = '{CEILING_QUEUE}'"

        async def all_closed() -> int:
            count = await client.count_workflows(f"{query} AND ExecutionStatus != 'Running'")
            if count.count < args.devices:
                raise NotYet(f"{count.count} closed")
            return count.count

        await eventually(
            all_closed,
            args.timeout,
            POLL_INTERVAL,
            what=f"{args.devices} {workflow_type} workflows closed",
            alive=[*workers, server],
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
            label=label,
            workflows=args.devices,
            seconds=last_close - began_at,
            observed=observed,
            completed=completed,
            cpu=cpu,
            timeline=timeline,
            costs=await workflow_costs(client, query),
        )
    finally:
        await stop_all(processes, workers)


# --- the run -------------------------------------------------------------------------------


Results = tuple[StackResult, list[CeilingResult], StackResult | None]
# The ceilings: (b) one activity per workflow, (c) none.
CEILINGS = (("(b)", MINIMAL_WORKFLOW), ("(c)", NO_ACTIVITY_WORKFLOW_TYPE))


async def run(args: argparse.Namespace, workdir: Path) -> Results:
    async with running_server(args, workdir, STACK_QUEUE) as ctx:
        stack = await measure_stack(args, ctx)
        print_stack(stack)
        tls = None
        if args.tls:
            # The same devices again, provisioned at https addresses, on the same dev server.
            tls = await measure_stack(args, ctx, DeviceTls.make(workdir))
            print("(a) over TLS:")
            print_stack(tls)
        ceilings = []
        if not args.skip_ceiling:
            for label, workflow_type in CEILINGS:
                ceiling = await measure_ceiling(args, ctx, label, workflow_type)
                print_ceiling(ceiling)
                ceilings.append(ceiling)
        return stack, ceilings, tls


# --- the report ----------------------------------------------------------------------------


def _polls_line(stack: StackResult) -> str:
    polls = stack.poll_seconds or [0.0]
    return f"{stack.failed_polls}, {sum(polls) / len(polls):.3f} / {max(polls):.3f}"


def print_stack(result: StackResult) -> None:
    print(f"(a) finished in {result.seconds:.2f} s; timeline (s since the POST):")
    for label, at in result.timeline.points:
        print(f"      {at:8.2f}  {label}")


def print_ceiling(result: CeilingResult) -> None:
    print(f"{result.label} finished in {result.seconds:.2f} s; timeline (s since the first start):")
    for label, at in result.timeline.points:
        print(f"      {at:8.2f}  {label}")


def print_table(
    args: argparse.Namespace,
    stack: StackResult,
    ceilings: list[CeilingResult],
    tls: StackResult | None = None,
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
        ("(a) CPU", stack.cpu.line()),
        *((f"(a) {label}", value) for label, value in stack.costs.rows()),
    ]
    if tls is not None:
        tls_rate = tls.devices / tls.seconds
        rows += [
            ("(a) TLS devices/s", f"{tls_rate:.1f}"),
            ("(a) TLS POST -> FINISHED seen", f"{tls.seconds:.2f} s"),
            ("(a) TLS job summary", f"{tls.status}, {tls.successful} successful of {tls.total}"),
            ("(a) TLS CPU", tls.cpu.line()),
            ("TLS / plain devices/s", f"{tls_rate / a_rate:.2f}"),
        ]
    for ceiling in ceilings:
        rows += _ceiling_rows(ceiling, a_rate)
    width = max(len(label) for label, _ in rows)
    print()
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    phases = [("(a)", stack.cpu), *((c.label, c.cpu) for c in ceilings)]
    for phase, cpu in phases:
        if cpu.noisy():
            print(
                f"WARNING: other processes used {cpu.used['others'] / cpu.wall:.0%} of a core "
                f"during {phase}: its numbers are skewed"
            )


def _ceiling_rows(ceiling: CeilingResult, a_rate: float) -> list[tuple[str, str]]:
    label, costs = ceiling.label, ceiling.costs
    rate = ceiling.workflows / ceiling.seconds
    per = max(1, costs.histories)
    return [
        (f"{label} {ceiling.costs_name()} workflows/s", f"{rate:.1f}"),
        (f"{label} first start -> last close", f"{ceiling.seconds:.2f} s"),
        (f"{label} completed", f"{ceiling.completed} of {ceiling.workflows}"),
        (f"{label} CPU", ceiling.cpu.line()),
        (
            f"{label} cost/workflow: events, tasks, actions",
            f"{costs.events / per:.1f}, {costs.workflow_tasks / per:.2f}, "
            f"{costs.total_actions / per:.2f}",
        ),
        (f"ratio a/{label.strip('()')}", f"{a_rate / rate:.2f}"),
    ]


def check(
    args: argparse.Namespace,
    stack: StackResult,
    ceilings: list[CeilingResult],
    tls: StackResult | None = None,
) -> list[str]:
    problems = [] if tls is None else [f"TLS: {p}" for p in check(args, tls, [])]
    if stack.status != "FINISHED":
        problems.append(f"the job ended {stack.status}")
    if stack.total != args.devices or stack.successful != args.devices:
        problems.append(f"{stack.successful} of {stack.total} successful, expected {args.devices}")
    if stack.requests != args.devices or stack.duplicates:
        problems.append(
            f"the simulator saw {stack.requests} requests and {stack.duplicates} duplicates"
        )
    problems += [
        f"{c.completed} of {c.workflows} {c.label} workflows completed"
        for c in ceilings
        if c.completed != c.workflows
    ]
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
        "--tls", action="store_true", help="measure (a) again with the devices over HTTPS"
    )
    add_run_options(parser, 600.0, "seconds each measurement may take")
    args = parser.parse_args(argv)
    if args.devices < 1 or args.workers < 1:
        parser.error("--devices and --workers must be at least 1")
    # The API refuses to start with values out of the settings' bounds: say so here instead.
    try:
        Settings(job_window=args.window or 1, job_start_batch=args.batch or 1)
    except ValidationError as exc:
        parser.error(f"--window/--batch out of bounds: {exc}")
    return args


def report(args: argparse.Namespace, result: Results) -> list[str]:
    print_table(args, *result)
    return check(args, *result)


def main(argv: list[str] | None = None) -> int:
    return run_bench(parse_args(argv), "fleet-bench-", run, report)


if __name__ == "__main__":
    sys.exit(main())
