"""Chaos: a job survives a SIGKILL of its worker, or of the Temporal dev server, mid-run.

``python -m bench.chaos --devices 1000 [--scenario worker|server] [--slow-ms 300] [--window W]``

Each scenario gets a run of its own, laid out as ``bench.fanout``'s: one Temporal dev server
(SQLite file in WAL mode, free 127.0.0.1 ports), the API (uvicorn), one worker (``python -m
worker``) and the device simulator, each its own process configured by ``FLEET_*`` variables. The
simulator provisions N devices tagged ``bench`` that answer synchronously after ``--slow-ms``, so
pushes are in flight at any moment; one job targets the tag. Once a third of its operations are
finished (the job's summary, read every 0.2 s):

- ``worker``: the worker's whole process group gets SIGKILL, and a new worker process starts at
  once; the reference moment ("restart") is that start.
- ``server``: the dev server's process group gets SIGKILL, and the same command line (same port,
  same database file) starts it again a moment later; the reference moment is the first answer of
  the restarted server. The API and the worker reconnect by themselves.

Then the job must finish, and what the simulator recorded (every request each device received,
with the operation id and the time) is checked against the job's summary:

- the job FINISHED with N successful, and its counters add up (total = finished.total,
  inProgress.total = 0);
- every device was reached, and a device that received the request twice received the same
  operation id each time;
- only pushes in flight at the kill were sent again: a device received a second request only after
  the kill and its first before it, and no more devices than were in flight at the kill (devices
  reached before it minus operations the summary counted finished just before it) received one;
- the stall after the restart: the time from the reference moment to the next request a device
  received, and to the next operation that finished (its workflow's close time), each under 15 s;
  and a push in flight at the kill is sent again within 15 s of that moment too (it heartbeats, so
  Temporal retries it after the heartbeat timeout, not after the whole answer timeout).

The table also counts the job's workflow tasks that failed or timed out (by cause, over all its
runs) and the most of them in a row: a crash may cost one or two (the task out on the dead worker
times out, or the server force-closes it once more than 100 events are buffered behind it, which
frees the job sooner); more than two in a row means the job replays in a loop, and fails the run.

Every process is stopped (SIGTERM, then SIGKILL after a timeout) on success, failure or Ctrl-C
(``bench.harness``). The test suite runs the same scenarios on 300 devices (tests/test_chaos.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import signal
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from pydantic import ValidationError
from temporalio.api.enums.v1 import EventType, WorkflowTaskFailedCause
from temporalio.client import Client
from temporalio.service import RPCError

from bench.fanout import closed_executions
from bench.harness import (
    JOBS,
    OPERATION,
    POLL_INTERVAL,
    TAG,
    BenchError,
    Run,
    Stack,
    add_run_options,
    api_client,
    create_job,
    poll_until_closed,
    run_bench,
    running_server,
    stack_env,
    start_stack,
)
from core.settings import Settings
from core.temporal import connect
from devstack import dev_server
from devstack.processes import Child, NotYet, Supervisor, eventually

WORKER = "worker"
SERVER = "server"
SCENARIOS = (WORKER, SERVER)
# The bound: a crash costs seconds, not minutes.
MAX_STALL_S = 15.0
# The share of the operations finished when the kill comes.
KILL_AT = 1 / 3
# How long the dev server stays dead before it is started again: the clients see it gone.
SERVER_DOWN_S = 1.0
# A request written to its socket just before the kill reaches the simulator just after it.
KILL_SLACK_S = 1.0
# The file bench.harness.start_server gives the dev server, in the run's directory.
TEMPORAL_DB = "temporal.db"
RESTART_TIMEOUT = 60.0
TASK_FAILED_PREFIX = "WORKFLOW_TASK_FAILED_CAUSE_"
# The job's workflow tasks that may fail one after the other with no task completed between them:
# the one out on the dead worker (it times out, or the server force-closes it once more than 100
# events are buffered behind it), and the first one after a restart. More is a replay loop.
MAX_FAILED_IN_A_ROW = 2


@dataclass(frozen=True)
class Request:
    """One request a device received, as the simulator recorded it."""

    device_id: str
    operation_id: str
    received_at: float  # epoch seconds, the machine's clock


@dataclass
class ChaosResult:
    scenario: str
    devices: int
    window: int
    seconds: float  # the POST -> the GET that read the job closed
    summary: dict[str, Any]
    killed_at: float  # epoch seconds
    restarted_at: float  # epoch seconds: the new worker's start / the restarted server's answer
    finished_before_kill: int  # the summary's finished.total read last before the kill
    requests: list[Request]
    operation_closes: list[float]  # epoch seconds: each operation workflow's close time
    # The job's workflow tasks that failed or timed out, by cause, over all its runs: a task out
    # on a dead worker times out once; a task force-closed again and again means a replay loop.
    job_task_failures: dict[str, int] = field(default_factory=dict)
    # The most of them that came one after the other, no workflow task completed in between.
    job_tasks_failed_in_a_row: int = 0
    failed_polls: int = 0
    timeline: list[tuple[str, float]] = field(default_factory=list)

    # --- what the simulator saw ---

    def by_device(self) -> dict[str, list[Request]]:
        found: dict[str, list[Request]] = defaultdict(list)
        for request in sorted(self.requests, key=lambda r: r.received_at):
            found[request.device_id].append(request)
        return found

    def duplicated(self) -> dict[str, list[Request]]:
        """The devices that received more than one request."""
        return {d: rs for d, rs in self.by_device().items() if len(rs) > 1}

    def mixed_ids(self) -> list[str]:
        """Devices that received more than one operation id: never allowed."""
        return [d for d, rs in self.by_device().items() if len({r.operation_id for r in rs}) > 1]

    def in_flight_at_kill(self) -> int:
        """An upper bound of the pushes in flight at the kill: devices reached before it, minus
        operations the summary counted finished before it (a finished operation is never sent
        again; the summary lags, which only makes the bound larger)."""
        reached_by = self.killed_at + KILL_SLACK_S
        reached = {r.device_id for r in self.requests if r.received_at <= reached_by}
        return max(0, len(reached) - self.finished_before_kill)

    def resent_outside_the_kill(self) -> list[str]:
        """Devices re-sent a request other than across the kill: a second request before the
        kill, or a first one only after it."""
        late_first = self.killed_at + KILL_SLACK_S
        return [
            d
            for d, rs in self.duplicated().items()
            if rs[0].received_at > late_first or rs[1].received_at < self.killed_at
        ]

    # --- the stall ---

    def next_request_s(self) -> float | None:
        """The restart -> the next request a device received."""
        after = [r.received_at for r in self.requests if r.received_at > self.restarted_at]
        return min(after) - self.restarted_at if after else None

    def next_finish_s(self) -> float | None:
        """The restart -> the next operation workflow that closed."""
        after = [at for at in self.operation_closes if at > self.restarted_at]
        return min(after) - self.restarted_at if after else None

    def last_resend_s(self) -> float | None:
        """The restart -> the last push in flight at the kill sent again (None: none was)."""
        resent = [rs[1].received_at for rs in self.duplicated().values()]
        return max(resent) - self.restarted_at if resent else None

    def stall_s(self) -> float | None:
        """The longer of the two: progress of both kinds resumed within it."""
        seen = [s for s in (self.next_request_s(), self.next_finish_s()) if s is not None]
        return max(seen) if seen else None

    # --- the verdict ---

    def counters_ok(self) -> bool:
        s = self.summary
        return (
            s["status"] == "FINISHED"
            and s["total"] == self.devices
            and s["finished"]["successful"] == self.devices
            and s["finished"]["total"] == s["total"]
            and s["inProgress"]["total"] == 0
            and s["total"] == s["inProgress"]["total"] + s["finished"]["total"]
        )

    def problems(self) -> list[str]:
        """Every check that failed, in words; empty when the job came through the crash."""
        name = f"{self.scenario} killed"
        found = []
        if not self.counters_ok():
            found.append(f"{name}: the summary does not add up to {self.devices}: {self.summary}")
        if self.finished_before_kill >= self.devices:
            found.append(f"{name}: the kill came once the job was done: nothing was tested")
        reached = len(self.by_device())
        if reached != self.devices:
            found.append(f"{name}: {reached} of {self.devices} devices reached")
        mixed = self.mixed_ids()
        if mixed:
            found.append(f"{name}: {len(mixed)} devices got two operation ids, e.g. {mixed[:3]}")
        dup, bound = len(self.duplicated()), min(self.in_flight_at_kill(), self.window)
        if dup > bound:
            found.append(
                f"{name}: {dup} devices got the request twice, more than the {bound} "
                "pushes in flight at the kill"
            )
        outside = self.resent_outside_the_kill()
        if outside:
            found.append(
                f"{name}: {len(outside)} devices were re-sent a request not in flight "
                f"at the kill, e.g. {outside[:3]}"
            )
        resend = self.last_resend_s()
        if resend is not None and resend > MAX_STALL_S:
            found.append(
                f"{name}: a push in flight at the kill was sent again {resend:.1f} s after the "
                f"restart, expected within {MAX_STALL_S:.0f} s"
            )
        if self.job_tasks_failed_in_a_row > MAX_FAILED_IN_A_ROW:
            found.append(
                f"{name}: {self.job_tasks_failed_in_a_row} of the job's workflow tasks failed one "
                f"after the other (a replay loop), expected at most {MAX_FAILED_IN_A_ROW}"
            )
        for what, stall in (("request", self.next_request_s()), ("finish", self.next_finish_s())):
            if stall is None or stall > MAX_STALL_S:
                shown = "none at all" if stall is None else f"{stall:.1f} s"
                found.append(
                    f"{name}: the next {what} after the restart came {shown}, "
                    f"expected under {MAX_STALL_S:.0f} s"
                )
        return found


# --- the crashes ---------------------------------------------------------------------------


async def kill(processes: Supervisor, child: Child) -> float:
    """SIGKILL ``child``'s whole process group at once (a crash, not a stop: no SIGTERM first);
    the moment of the kill, epoch seconds. The supervisor forgets the dead child."""
    killed_at = time.time()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.process.pid, signal.SIGKILL)
    await child.process.wait()
    await processes.stop([child])
    return killed_at


async def restart_worker(ctx: Run) -> Child:
    """A new worker process, configured as ``bench.harness.start_stack`` configures the first."""
    env = stack_env(ctx.settings)
    return await ctx.processes.start("worker-restarted", [sys.executable, "-m", "worker"], env)


async def restart_server(ctx: Run, workdir: Path) -> Child:
    """The dev server again, on the same port and the same database file; returns once it
    answers (visibility included)."""
    settings = ctx.settings
    port = int(settings.temporal_address.rsplit(":", 1)[1])
    args = dev_server.command(
        port,
        db_file=workdir / TEMPORAL_DB,
        namespace=settings.temporal_namespace,
        log_level="error",
    )
    server = await ctx.processes.start(f"{dev_server.NAME}-restarted", args, os.environ)

    async def answers() -> None:
        try:
            client = await connect(settings)
            await client.count_workflows()
        except (RuntimeError, RPCError) as exc:
            raise NotYet(f"{type(exc).__name__}: {exc}") from exc

    await eventually(
        answers, RESTART_TIMEOUT, POLL_INTERVAL, what="the restarted dev server", alive=[server]
    )
    return server


# --- one scenario --------------------------------------------------------------------------


async def run_scenario(args: argparse.Namespace, workdir: Path, scenario: str) -> ChaosResult:
    """``scenario`` in a run of its own under ``workdir/<scenario>``: its own dev server, API,
    worker and simulator, all stopped on the way out."""
    workdir = workdir / scenario
    (workdir / "logs").mkdir(parents=True)
    async with running_server(args, workdir, f"chaos-{scenario}") as ctx:
        stack = await start_stack(
            ctx,
            devices=args.devices,
            workers=1,
            api_env={"FLEET_JOB_WINDOW": str(args.window)},
            sim_args=["--slow-ms", str(args.slow_ms)],
        )
        async with (
            api_client(stack.api_url, ctx.settings.bootstrap_admin_key) as http,
            httpx.AsyncClient(base_url=stack.sim_url, timeout=60) as sim,
        ):
            return await _crash_during_job(args, workdir, scenario, ctx, stack, http, sim)


async def _crash_during_job(
    args: argparse.Namespace,
    workdir: Path,
    scenario: str,
    ctx: Run,
    stack: Stack,
    http: httpx.AsyncClient,
    sim: httpx.AsyncClient,
) -> ChaosResult:
    posted_at = time.time()
    began = time.perf_counter()
    deadline = began + args.timeout
    created = await create_job(http, {"name": OPERATION, "target": {"append": {"tags": [TAG]}}})
    job_id = created["id"]
    print(f"[{scenario}] job {job_id}: {args.devices} devices", flush=True)
    alive = [ctx.server, *stack.children]
    before = await _until_finished(http, job_id, math.ceil(args.devices * KILL_AT), alive, deadline)
    finished_before_kill = int(before["report"]["summary"]["finished"]["total"])
    if scenario == WORKER:
        (worker,) = stack.workers
        killed_at = await kill(ctx.processes, worker)
        restarted_at = time.time()
        replacement = await restart_worker(ctx)
        alive = [ctx.server, stack.api, stack.sim, replacement]
    else:
        killed_at = await kill(ctx.processes, ctx.server)
        await asyncio.sleep(SERVER_DOWN_S)
        replacement = await restart_server(ctx, workdir)
        restarted_at = time.time()
        alive = [replacement, *stack.children]
    print(f"[{scenario}] killed with {finished_before_kill} finished; restarted", flush=True)
    polls = await poll_until_closed(
        http, before, alive, deadline, f"within {args.timeout:.0f} s of its POST"
    )
    seconds = time.perf_counter() - began
    summary = polls.job["report"]["summary"]
    operations = await closed_executions(
        ctx.client,
        f"WorkflowType = 'OperationWorkflow' AND JobId = '{job_id}'",
        int(summary["total"]),
    )
    failures, in_a_row = await job_task_failures(ctx.client, job_id)
    answer = await sim.get("/sim/deliveries")
    answer.raise_for_status()
    requests = [
        Request(d["device_id"], d["operation_id"], d["received_at"])
        for d in answer.json()["deliveries"]
    ]
    result = ChaosResult(
        scenario=scenario,
        devices=args.devices,
        window=args.window,
        seconds=seconds,
        summary=summary,
        killed_at=killed_at,
        restarted_at=restarted_at,
        finished_before_kill=finished_before_kill,
        requests=requests,
        operation_closes=[e.close_time.timestamp() for e in operations if e.close_time],
        job_task_failures=failures,
        job_tasks_failed_in_a_row=in_a_row,
        failed_polls=polls.failed,
    )
    result.timeline = _timeline(result, posted_at)
    return result


async def _until_finished(
    http: httpx.AsyncClient, job_id: str, count: int, alive: list[Child], deadline: float
) -> dict[str, Any]:
    """GET the job every ``POLL_INTERVAL`` until its summary counts ``count`` finished."""

    async def enough() -> dict[str, Any]:
        if time.perf_counter() > deadline:
            raise BenchError(f"job {job_id} did not reach {count} finished operations in time")
        answer = await http.get(f"{JOBS}/{job_id}")
        if answer.status_code != 200:
            raise NotYet(f"GET answered {answer.status_code}")
        job: dict[str, Any] = answer.json()
        finished = job["report"]["summary"]["finished"]["total"]
        if finished < count:
            raise NotYet(f"{finished} finished")
        return job

    # The deadline is the caller's; ``eventually``'s own timeout only backs it up.
    return await eventually(
        enough, math.inf, POLL_INTERVAL, what=f"{count} finished operations", alive=alive
    )


async def job_task_failures(client: Client, job_id: str) -> tuple[dict[str, int], int]:
    """The job's failed and timed-out workflow tasks over all its runs, by cause, and the most of
    them in a row (no workflow task completed between them)."""
    found: Counter[str] = Counter()
    longest = 0
    async for run in client.list_workflows(f"WorkflowId = '{job_id}'"):
        history = await client.get_workflow_handle(job_id, run_id=run.run_id).fetch_history()
        in_a_row = 0
        for event in history.events:
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
                in_a_row = 0
                continue
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT:
                found["timed out"] += 1
            elif event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
                cause = event.workflow_task_failed_event_attributes.cause
                found[WorkflowTaskFailedCause.Name(cause).removeprefix(TASK_FAILED_PREFIX)] += 1
            else:
                continue
            in_a_row += 1
            longest = max(longest, in_a_row)
    return dict(found), longest


def _timeline(result: ChaosResult, origin: float) -> list[tuple[str, float]]:
    points = [("kill", result.killed_at), ("restart", result.restarted_at)]
    for label, stall in (
        ("next request after the restart", result.next_request_s()),
        ("next operation finished after the restart", result.next_finish_s()),
    ):
        if stall is not None:
            points.append((label, result.restarted_at + stall))
    resent = [rs[1].received_at for rs in result.duplicated().values()]
    if resent:
        points += [("first request re-sent", min(resent)), ("last request re-sent", max(resent))]
    if result.requests:
        points.append(("last request", max(r.received_at for r in result.requests)))
    if result.operation_closes:
        points.append(("last operation finished", max(result.operation_closes)))
    return sorted(((label, at - origin) for label, at in points), key=lambda p: p[1])


# --- the run -------------------------------------------------------------------------------


async def run(args: argparse.Namespace, workdir: Path) -> list[ChaosResult]:
    results = []
    for scenario in args.scenario or SCENARIOS:
        result = await run_scenario(args, workdir, scenario)
        print_timeline(result)
        results.append(result)
    return results


# --- the report ----------------------------------------------------------------------------


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def print_timeline(result: ChaosResult) -> None:
    print(f"[{result.scenario}] closed in {result.seconds:.1f} s; timeline (s since the POST):")
    for label, at in result.timeline:
        print(f"      {at:8.2f}  {label}")


def table(results: list[ChaosResult]) -> list[str]:
    """The table's lines: one row per scenario."""
    header = (
        "scenario",
        "devices",
        "status",
        "duration",
        "in flight at kill",
        "duplicates (same id)",
        "last re-sent after restart",
        "stall after restart: request / finish",
        "counters OK",
        "job workflow tasks failed or timed out",
        "most in a row",
    )
    rows = [header]
    for r in results:
        same_id = len(r.duplicated()) - len(set(r.mixed_ids()) & set(r.duplicated()))
        rows.append(
            (
                f"{r.scenario} killed",
                str(r.devices),
                str(r.summary["status"]),
                f"{r.seconds:.1f} s",
                str(r.in_flight_at_kill()),
                f"{len(r.duplicated())} ({same_id})",
                _seconds(r.last_resend_s()),
                f"{_seconds(r.next_request_s())} / {_seconds(r.next_finish_s())}",
                "yes" if r.counters_ok() else "NO",
                ", ".join(f"{n} {cause}" for cause, n in sorted(r.job_task_failures.items()))
                or "0",
                str(r.job_tasks_failed_in_a_row),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def report(args: argparse.Namespace, results: list[ChaosResult]) -> list[str]:
    print()
    print(f"code {args.code_version}; devices answer after {args.slow_ms} ms; window {args.window}")
    for line in table(results):
        print(line)
    return [problem for result in results for problem in result.problems()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.chaos", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--devices", type=int, default=1000, help="N: devices (default 1000)")
    parser.add_argument(
        "--scenario",
        action="append",
        choices=SCENARIOS,
        help="what to kill (repeatable; default: each in turn)",
    )
    parser.add_argument(
        "--slow-ms", type=int, default=300, help="devices answer after this many ms (300)"
    )
    parser.add_argument(
        "--window",
        type=int,
        default=Settings().job_window,
        help="FLEET_JOB_WINDOW for the API: operations in flight (default: the product's)",
    )
    add_run_options(parser, 600.0, "seconds each job may take")
    args = parser.parse_args(argv)
    if args.devices < 3:
        parser.error("--devices must be at least 3")
    try:
        Settings(job_window=args.window)
    except ValidationError as exc:
        parser.error(f"--window out of bounds: {exc}")
    return args


def main(argv: list[str] | None = None) -> int:
    return run_bench(parse_args(argv), "fleet-chaos-", run, report)


if __name__ == "__main__":
    sys.exit(main())
