"""Pause latency: how fast a paused job stops reaching devices, on the whole stack.

``python -m bench.pause --devices 1000 --slow-ms 200 --max-concurrency 50 [--repeats 3]``

The same process layout as ``bench.fanout``: one Temporal dev server (SQLite file, free 127.0.0.1
ports), the API (uvicorn), ``--workers`` workers and the device simulator, each its own process
configured by ``FLEET_*`` variables. The simulator provisions N devices tagged ``bench`` that
answer synchronously after ``--slow-ms``.

Each repeat runs one job of its own on the tag, with ``"rollout": {"maxConcurrency": M}``:

1. once the simulator has received about a third of the requests (``--pause-at``; ``GET
   /sim/stats`` polled every 20 ms), ``PUT /operation/jobs/{id}`` ``{"active": false}``; the
   moment its 200 arrives is the reference;
2. ``--watch`` seconds later, ``GET /sim/deliveries`` (``received_at``: the simulator's clock, the
   machine's): the requests received after the 200, and the time from the 200 to the last one;
3. resume (``"active": true``), wait for ``FINISHED``, and check that every device received
   exactly one request (simulator: ``requests == N``, ``duplicates == 0``; summary: N successful).

Between repeats ``POST /sim/reset`` clears the simulator's record. Every process is stopped
(SIGTERM, then SIGKILL after a timeout) on success, failure or Ctrl-C (``bench.harness``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shlex
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.harness import (
    JOBS,
    OPERATION,
    POLL_INTERVAL,
    TAG,
    BenchError,
    CpuMeter,
    add_run_options,
    api_client,
    check_running,
    create_job,
    poll_until_closed,
    run_bench,
    running_server,
    start_stack,
)
from devstack.processes import Child, NotYet, eventually

QUEUE = "bench-pause"
# How often the simulator's request count is read while waiting for the moment to pause: at
# 250 requests/s (50 in flight, 200 ms each) the pause lands within ~5 requests of its target.
TRIGGER_POLL = 0.02
# A request this close to the end of the watch means requests were still arriving: flagged.
SETTLED_MARGIN = 1.0


@dataclass
class Repeat:
    job_id: str
    at_put: int  # requests the simulator had received when the PUT was sent
    put_seconds: float  # PUT sent -> its 200
    during_put: int  # requests received while the PUT was in flight
    after_ok: int  # requests received after the PUT's 200
    last_after_ok: float  # the PUT's 200 -> the last request received after it (0 if none)
    settled: bool  # no request in the last SETTLED_MARGIN s of the watch
    paused_status: str  # the status the PUT answered
    resume_to_finished: float
    status: str
    successful: int
    total: int
    requests: int
    duplicates: int

    def problems(self, devices: int) -> list[str]:
        found = []
        if self.paused_status != "PAUSED":
            found.append(f"job {self.job_id}: the pause answered status {self.paused_status}")
        if self.status != "FINISHED" or self.successful != devices or self.total != devices:
            found.append(
                f"job {self.job_id} ended {self.status}, "
                f"{self.successful} successful of {self.total}, expected {devices}"
            )
        if self.requests != devices or self.duplicates:
            found.append(
                f"job {self.job_id}: the simulator saw {self.requests} requests and "
                f"{self.duplicates} duplicates, expected {devices} and 0"
            )
        if not self.settled:
            found.append(
                f"job {self.job_id}: requests still arrived in the last {SETTLED_MARGIN:.0f} s "
                "of the watch (raise --watch)"
            )
        return found


# --- the stack -----------------------------------------------------------------------------


async def run(args: argparse.Namespace, workdir: Path) -> tuple[list[Repeat], CpuMeter]:
    async with running_server(args, workdir, QUEUE) as ctx:
        stack = await start_stack(
            ctx,
            devices=args.devices,
            workers=args.workers,
            sim_args=["--slow-ms", str(args.slow_ms)],
        )
        alive = [ctx.server, *stack.children]
        check_running(alive)
        cpu = CpuMeter.of_stack(ctx.server, stack)
        async with (
            api_client(stack.api_url, ctx.settings.bootstrap_admin_key) as http,
            httpx.AsyncClient(base_url=stack.sim_url, timeout=30) as simc,
        ):
            repeats = []
            for index in range(1, args.repeats + 1):
                repeat = await measure_once(args, http, simc, alive)
                print_repeat(index, repeat)
                repeats.append(repeat)
        cpu.stop()
        return repeats, cpu


# --- one measurement -----------------------------------------------------------------------


async def _sim_requests(sim: httpx.AsyncClient) -> int:
    answer = await sim.get("/sim/stats")
    answer.raise_for_status()
    return int(answer.json()["requests"])


async def _change(http: httpx.AsyncClient, job_id: str, active: bool) -> dict[str, Any]:
    answer = await http.put(f"{JOBS}/{job_id}", json={"job": {"request": {"active": active}}})
    if answer.status_code != 200:
        verb = "resuming" if active else "pausing"
        raise BenchError(f"{verb} job {job_id} answered {answer.status_code}: {answer.text}")
    body: dict[str, Any] = answer.json()
    return body


async def measure_once(
    args: argparse.Namespace,
    http: httpx.AsyncClient,
    sim: httpx.AsyncClient,
    alive: list[Child],
) -> Repeat:
    (await sim.post("/sim/reset")).raise_for_status()
    request = {
        "name": OPERATION,
        "target": {"append": {"tags": [TAG]}},
        "rollout": {"maxConcurrency": args.max_concurrency},
    }
    job_id = str((await create_job(http, request))["id"])
    target = max(1, round(args.devices * args.pause_at))

    async def reached() -> int:
        count = await _sim_requests(sim)
        if count < target:
            raise NotYet(f"{count} requests")
        return count

    await eventually(
        reached,
        args.timeout,
        TRIGGER_POLL,
        what=f"{target} requests at the simulator (job {job_id})",
        alive=alive,
    )

    # The pause. Wall-clock times: the simulator stamps requests with the same clock.
    at_put = await _sim_requests(sim)
    put_sent = time.time()
    began = time.perf_counter()
    paused = await _change(http, job_id, active=False)
    put_seconds = time.perf_counter() - began
    put_ok = time.time()
    paused_status = str(paused["report"]["summary"]["status"])

    watch_end = put_ok + args.watch
    while time.time() < watch_end:
        check_running(alive)
        await asyncio.sleep(min(POLL_INTERVAL, max(0.0, watch_end - time.time())))
    answer = await sim.get("/sim/deliveries")
    answer.raise_for_status()
    received = [float(d["received_at"]) for d in answer.json()["deliveries"]]
    during = [t for t in received if put_sent < t <= put_ok]
    after = [t for t in received if t > put_ok]
    last_after = max(after) - put_ok if after else 0.0
    settled = not after or max(after) < watch_end - SETTLED_MARGIN

    # Resume, and let the job finish.
    resumed_at = time.perf_counter()
    resumed = await _change(http, job_id, active=True)
    late = f"{args.timeout:.0f} s after its resume"
    polls = await poll_until_closed(http, resumed, alive, resumed_at + args.timeout, late)
    job = polls.job
    resume_to_finished = time.perf_counter() - resumed_at
    stats = (await sim.get("/sim/stats")).json()
    summary = job["report"]["summary"]
    return Repeat(
        job_id=job_id,
        at_put=at_put,
        put_seconds=put_seconds,
        during_put=len(during),
        after_ok=len(after),
        last_after_ok=last_after,
        settled=settled,
        paused_status=paused_status,
        resume_to_finished=resume_to_finished,
        status=str(summary["status"]),
        successful=int(summary["finished"]["successful"]),
        total=int(summary["total"]),
        requests=int(stats["requests"]),
        duplicates=int(stats["duplicates"]),
    )


# --- the report ----------------------------------------------------------------------------


def print_repeat(index: int, r: Repeat) -> None:
    print(
        f"repeat {index}: job {r.job_id} paused at {r.at_put} requests; PUT {r.put_seconds:.3f} s, "
        f"{r.during_put} requests during it, {r.after_ok} after its 200 "
        f"(last +{r.last_after_ok:.3f} s); resumed -> {r.status} in {r.resume_to_finished:.2f} s, "
        f"{r.requests} requests, {r.duplicates} duplicates",
        flush=True,
    )


def print_table(args: argparse.Namespace, repeats: list[Repeat], cpu: CpuMeter) -> None:
    print()
    print(f"command  {args.command}")
    print(f"machine  nproc {os.cpu_count()}, Python {platform.python_version()}")
    print(f"code     {args.code_version}")
    print(
        f"setup    N {args.devices}, slow {args.slow_ms} ms, "
        f"maxConcurrency {args.max_concurrency}, {args.workers} worker(s), "
        f"pause at {args.pause_at:.0%} of N, watch {args.watch:.0f} s, "
        "one job per repeat"
    )
    print()
    header = (
        f"{'repeat':>6}  {'req at PUT':>10}  {'PUT ms':>7}  {'req during PUT':>14}  "
        f"{'req after 200':>13}  {'200 -> last req ms':>18}  {'resume -> FINISHED s':>20}  "
        f"{'requests / dup':>14}"
    )
    print(header)
    print("-" * len(header))
    for i, r in enumerate(repeats, 1):
        print(
            f"{i:>6}  {r.at_put:>10}  {r.put_seconds * 1000:>7.0f}  {r.during_put:>14}  "
            f"{r.after_ok:>13}  {r.last_after_ok * 1000:>18.0f}  {r.resume_to_finished:>20.2f}  "
            f"{f'{r.requests} / {r.duplicates}':>14}"
        )
    print("-" * len(header))
    for name, pick in (("median", statistics.median), ("max", max)):
        print(
            f"{name:>6}  {'':>10}  {pick(r.put_seconds for r in repeats) * 1000:>7.0f}  "
            f"{pick(r.during_put for r in repeats):>14g}  "
            f"{pick(r.after_ok for r in repeats):>13g}  "
            f"{pick(r.last_after_ok for r in repeats) * 1000:>18.0f}  "
            f"{pick(r.resume_to_finished for r in repeats):>20.2f}"
        )
    print()
    print(f"CPU over the {len(repeats)} repeat(s), {cpu.wall:.1f} s: {cpu.line()}")
    if cpu.noisy():
        print(
            f"WARNING: other processes used {cpu.used['others'] / cpu.wall:.0%} of a core "
            "meanwhile: the numbers are skewed"
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.pause", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--devices", type=int, default=1000, help="N: devices (default 1000)")
    parser.add_argument(
        "--slow-ms", type=int, default=200, help="the devices answer after this (default 200)"
    )
    parser.add_argument(
        "--max-concurrency", type=int, default=50, help="the job's rollout.maxConcurrency"
    )
    parser.add_argument("--repeats", type=int, default=3, help="jobs paused, one after the other")
    parser.add_argument(
        "--pause-at", type=float, default=1 / 3, help="share of N received before the pause"
    )
    parser.add_argument(
        "--watch", type=float, default=5.0, help="seconds to watch for requests after the pause"
    )
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    add_run_options(parser, 300.0, "seconds each wait of a repeat may take")
    args = parser.parse_args(argv)
    if min(args.devices, args.repeats, args.workers, args.max_concurrency) < 1:
        parser.error("--devices, --repeats, --workers and --max-concurrency must be at least 1")
    if args.max_concurrency > 2000:
        parser.error("--max-concurrency is at most 2000 (the API's bound)")
    if not 0 < args.pause_at < 1 or args.watch <= SETTLED_MARGIN or args.slow_ms < 0:
        parser.error(f"--pause-at must be in (0, 1), --watch above {SETTLED_MARGIN:.0f} s")
    args.command = shlex.join(
        [Path(sys.executable).name, "-m", "bench.pause", *(sys.argv[1:] if argv is None else argv)]
    )
    return args


def report(args: argparse.Namespace, result: tuple[list[Repeat], CpuMeter]) -> list[str]:
    repeats, cpu = result
    print_table(args, repeats, cpu)
    return [p for r in repeats for p in r.problems(args.devices)]


def main(argv: list[str] | None = None) -> int:
    return run_bench(parse_args(argv), "fleet-bench-pause-", run, report)


if __name__ == "__main__":
    sys.exit(main())
