"""Scale: one job on a very large fleet, on one machine.

``python -m bench.scale --devices 100000 [--workers K] [--database-url postgresql+asyncpg://...]``

The process layout of ``bench.fanout`` (one Temporal dev server on SQLite in WAL mode, the API, K
workers and the device simulator, each its own process configured by ``FLEET_*`` variables, all
on 127.0.0.1). The simulator provisions N devices tagged ``bench`` that answer synchronously; one
job targets the tag. While it runs, ``GET /operation/jobs/{id}`` is polled once a second and the
resident memory of every process (with its children) is sampled once a second.

It prints: devices/s (N over the POST to the first GET that reads ``FINISHED``), the job's summary
and what the simulator received, the longest history of any run of the job (Temporal warns past
10,240 events), the number of runs, each process's peak resident memory, the p50/p99/max latency
of the GETs, and the cost per device (``bench.costs``). Checks: FINISHED with N successful, each
device reached once, the longest run under 10,240 events, the worker under 1 GiB, GET p99 under
100 ms.

With ``--database-url`` the inventory is on that database instead of a SQLite file: for
PostgreSQL the bench creates a database of its own on that server (``CREATE DATABASE``) and drops
it afterwards, so the server's other databases are not touched.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from bench.costs import JobCosts, job_costs
from bench.harness import (
    JOBS,
    OPERATION,
    TAG,
    BenchError,
    CpuMeter,
    Run,
    add_run_options,
    api_client,
    check_running,
    create_job,
    run_bench,
    running_server,
    start_stack,
    stop_all,
)
from devstack.processes import Child

SCALE_QUEUE = "bench-scale"
GET_EVERY_S = 1.0
HISTORY_WARNING = 10_240
WORKER_RSS_LIMIT = 1024**3
GET_P99_LIMIT_S = 0.100


# --- memory --------------------------------------------------------------------------------


def _rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and its descendants (Linux /proc; 0 once it is gone)."""
    total, seen, todo = 0, set(), [pid]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        todo.extend(int(child) for child in children)
    return total


@dataclass
class MemoryPeaks:
    """The highest resident memory seen for each process while it is sampled."""

    processes: dict[str, Child]
    peaks: dict[str, int] = field(default_factory=dict)

    def sample(self) -> None:
        for name, child in self.processes.items():
            rss = _rss_bytes(child.process.pid)
            self.peaks[name] = max(self.peaks.get(name, 0), rss)


# --- the inventory database ----------------------------------------------------------------


@contextlib.asynccontextmanager
async def inventory_database(url: str | None, workdir: Path) -> AsyncIterator[str]:
    """The inventory's URL: a SQLite file in ``workdir`` by default; on a PostgreSQL server, a
    database created for this run and dropped afterwards."""
    if url is None:
        yield f"sqlite+aiosqlite:///{workdir / 'inventory.db'}"
        return
    parsed = make_url(url)
    if not parsed.drivername.startswith("postgresql"):
        yield url
        return
    import asyncpg  # the postgres extra, as the inventory itself needs it

    name = f"fleet_scale_{uuid.uuid4().hex[:12]}"
    admin = {
        "host": parsed.host or "127.0.0.1",
        "port": parsed.port or 5432,
        "user": parsed.username or "postgres",
        "password": parsed.password,
        "database": parsed.database or "postgres",
    }
    connection = await asyncpg.connect(**admin)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    print(f"inventory on PostgreSQL database {name}")
    try:
        yield parsed.set(database=name).render_as_string(hide_password=False)
    finally:
        connection = await asyncpg.connect(**admin)
        try:
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await connection.close()


# --- the measurement -----------------------------------------------------------------------


@dataclass
class ScaleResult:
    devices: int
    seconds: float
    summary: dict[str, Any]
    stats: dict[str, Any]
    get_seconds: list[float]
    failed_gets: int
    memory: dict[str, int]
    cpu: CpuMeter
    costs: JobCosts
    database: str


async def run(args: argparse.Namespace, workdir: Path) -> ScaleResult:
    async with (
        inventory_database(args.database_url, workdir) as database_url,
        running_server(args, workdir, SCALE_QUEUE) as ctx,
    ):
        ctx.settings.database_url = database_url
        started = time.perf_counter()
        stack = await start_stack(
            ctx,
            devices=args.devices,
            workers=args.workers,
            env_extra={"FLEET_DATABASE_URL": database_url},
        )
        print(
            f"stack up, {args.devices} devices provisioned in {time.perf_counter() - started:.0f} s"
        )
        try:
            return await _measure(
                args, ctx, stack.children, stack.api_url, stack.sim_url, database_url
            )
        finally:
            await stop_all(ctx.processes, stack.children)


async def _measure(
    args: argparse.Namespace,
    ctx: Run,
    children: Sequence[Child],
    api_url: str,
    sim_url: str,
    database_url: str,
) -> ScaleResult:
    processes = {child.name: child for child in children}
    processes["temporal"] = ctx.server
    memory = MemoryPeaks(processes)
    workers = [c for c in children if c.name.startswith("worker")]
    api = next(c for c in children if c.name == "api")
    sim = next(c for c in children if c.name == "simulator")
    cpu = CpuMeter({"temporal": [ctx.server], "workers": workers, "api": [api], "sim": [sim]})
    alive = [*children, ctx.server]
    gets: list[float] = []
    failed = 0
    async with api_client(api_url, ctx.settings.bootstrap_admin_key) as http:
        began = time.perf_counter()
        job = await create_job(http, {"name": OPERATION, "target": {"append": {"tags": [TAG]}}})
        print(f"job {job['id']}: {args.devices} devices", flush=True)
        last_report = began
        while job["report"]["summary"]["status"] not in ("FINISHED", "CANCELLED"):
            if time.perf_counter() - began > args.timeout:
                raise BenchError(f"job not finished after {args.timeout:.0f} s: {job['report']}")
            check_running(alive)
            memory.sample()
            await asyncio.sleep(GET_EVERY_S)
            asked = time.perf_counter()
            answer = await http.get(f"{JOBS}/{job['id']}")
            gets.append(time.perf_counter() - asked)
            if answer.status_code == 200:
                job = answer.json()
            else:
                failed += 1
            if time.perf_counter() - last_report >= 60:
                last_report = time.perf_counter()
                done = job["report"]["summary"]["finished"]["total"]
                elapsed = last_report - began
                print(f"  {elapsed:6.0f} s: {done} finished ({done / elapsed:.1f}/s)", flush=True)
        seconds = time.perf_counter() - began
        memory.sample()
        cpu.stop()
    async with api_client(sim_url, ctx.settings.bootstrap_admin_key) as sim_http:
        stats = (await sim_http.get("/sim/stats")).json()
    summary = job["report"]["summary"]
    # What was measured is printed first: reading the histories afterwards asks a lot of a
    # server that has just run a very large job (a 100,000-device run lost its table that way).
    print(
        f"measured: {summary['status']}, {summary['finished']['successful']} successful in "
        f"{seconds:.0f} s; GET p50/p99/max {_percentile(gets, 0.5) * 1000:.0f}/"
        f"{_percentile(gets, 0.99) * 1000:.0f}/{max(gets, default=0) * 1000:.0f} ms; peak RSS "
        + ", ".join(f"{name} {_mib(rss)}" for name, rss in sorted(memory.peaks.items())),
        flush=True,
    )
    costs = await job_costs(ctx.client, job["id"], summary["total"], fetch_concurrency=2)
    return ScaleResult(
        devices=args.devices,
        seconds=seconds,
        summary=summary,
        stats=stats,
        get_seconds=gets,
        failed_gets=failed,
        memory=memory.peaks,
        cpu=cpu,
        costs=costs,
        database=make_url(database_url).get_backend_name(),
    )


# --- the report ----------------------------------------------------------------------------


def _percentile(values: list[float], share: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def _mib(value: int) -> str:
    return f"{value / 1024**2:.0f} MiB"


def report(args: argparse.Namespace, result: ScaleResult) -> list[str]:
    summary, stats, gets = result.summary, result.stats, result.get_seconds
    rows = [
        ("machine", f"nproc {os.cpu_count()}, Python {platform.python_version()}"),
        ("code", args.code_version),
        ("N / workers / inventory", f"{result.devices} / {args.workers} / {result.database}"),
        ("devices/s", f"{result.devices / result.seconds:.1f}"),
        ("POST -> FINISHED seen", f"{result.seconds:.0f} s ({result.seconds / 60:.1f} min)"),
        (
            "job summary",
            f"{summary['status']}, {summary['finished']['successful']} successful of "
            f"{summary['total']}",
        ),
        ("sim requests / duplicates", f"{stats['requests']} / {stats['duplicates']}"),
        (
            "job runs / longest run",
            f"{result.costs.job.histories} / {result.costs.longest_run} events",
        ),
        *((f"peak RSS {name}", _mib(rss)) for name, rss in sorted(result.memory.items())),
        (
            f"GET job every {GET_EVERY_S:.0f} s: p50 / p99 / max",
            f"{_percentile(gets, 0.5) * 1000:.0f} / {_percentile(gets, 0.99) * 1000:.0f} / "
            f"{max(gets, default=0) * 1000:.0f} ms ({len(gets)} GETs, {result.failed_gets} failed)",
        ),
        ("CPU", result.cpu.line()),
        *result.costs.rows(),
    ]
    width = max(len(label) for label, _ in rows)
    print()
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    if result.cpu.noisy():
        print("WARNING: other processes used the CPU meanwhile: the numbers are skewed")
    return _problems(result)


def _problems(result: ScaleResult) -> list[str]:
    summary, stats = result.summary, result.stats
    problems = []
    if summary["status"] != "FINISHED" or summary["finished"]["successful"] != result.devices:
        problems.append(f"the job ended {summary['status']}: {summary}")
    if stats["requests"] != result.devices or stats["duplicates"]:
        problems.append(f"{stats['requests']} requests, {stats['duplicates']} duplicates")
    if result.costs.longest_run >= HISTORY_WARNING:
        problems.append(f"a run of the job had {result.costs.longest_run} events")
    workers = [rss for name, rss in result.memory.items() if name.startswith("worker")]
    if max(workers, default=0) >= WORKER_RSS_LIMIT:
        problems.append(f"a worker peaked at {_mib(max(workers))}")
    p99 = _percentile(result.get_seconds, 0.99)
    if p99 >= GET_P99_LIMIT_S:
        problems.append(f"GET p99 {p99 * 1000:.0f} ms")
    return problems


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.scale", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--devices", type=int, default=100_000, help="N (default 100,000)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument(
        "--database-url",
        help="the inventory's database (default: a SQLite file in the run directory); on a "
        "PostgreSQL server the bench creates and drops a database of its own",
    )
    add_run_options(parser, 3600.0, "seconds the job may take (default one hour)")
    args = parser.parse_args(argv)
    if args.devices < 1 or args.workers < 1:
        parser.error("--devices and --workers must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    return run_bench(parse_args(argv), "fleet-bench-scale-", run, report)


if __name__ == "__main__":
    sys.exit(main())
