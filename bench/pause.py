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
(SIGTERM, then SIGKILL after a timeout) on success, failure or Ctrl-C.
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

from bench.fanout import (
    HOST,
    NOISY_OTHERS,
    OPERATION,
    POLL_INTERVAL,
    REPO,
    TAG,
    BenchError,
    CpuMeter,
    Process,
    Processes,
    api_ready,
    code_version,
    eventually,
    fleet_env,
    provisioned_count,
    run_bench,
    snapshot_source,
    start_dev_server,
    start_listening,
    wait_for_pollers,
)
from core.settings import Settings
from inventory.keys import new_key

QUEUE = "bench-pause"
JOBS = "/north/v80/operation/jobs"
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
    source = REPO if args.in_place else snapshot_source(workdir)
    processes = Processes(workdir / "logs", source)
    _, admin_key, _ = new_key()
    settings = Settings(
        task_queue=QUEUE,
        database_url=f"sqlite+aiosqlite:///{workdir / 'inventory.db'}",
        bootstrap_admin_key=admin_key,
    )
    py = sys.executable

    try:
        server, client = await start_dev_server(processes, workdir, settings)
        print(f"temporal dev server on {settings.temporal_address}; logs in {workdir / 'logs'}")
        env = fleet_env(
            temporal_address=settings.temporal_address,
            task_queue=QUEUE,
            database_url=settings.database_url,
            bootstrap_admin_key=admin_key,
            api_host=HOST,
        )

        def spawn_api(port: int) -> Process:
            return processes.start(
                "api",
                [py, "-m", "uvicorn", "api.app:create_app", "--factory", "--host", HOST,
                 "--port", str(port), "--log-level", "warning", "--no-access-log"],
                {**env, "FLEET_API_PORT": str(port)},
            )  # fmt: skip

        # The API first: it creates the inventory schema the workers and the simulator rely on.
        api, api_port, _ = await start_listening(processes, spawn_api, api_ready, "the API")
        api_url = f"http://{HOST}:{api_port}"
        workers = [
            processes.start(f"worker-{i}", [py, "-m", "worker"], env)
            for i in range(1, args.workers + 1)
        ]
        await wait_for_pollers(client, QUEUE, workers)

        def spawn_simulator(port: int) -> Process:
            return processes.start(
                "simulator",
                [py, "-m", "simulator", "--devices", str(args.devices), "--host", HOST,
                 "--port", str(port), "--tag", TAG, "--slow-ms", str(args.slow_ms),
                 "--provision", "--api", api_url, "--api-key", admin_key],
                env,
            )  # fmt: skip

        async with httpx.AsyncClient(
            base_url=api_url, headers={"X-ApiKey": admin_key}, timeout=60
        ) as http:
            sim, sim_port, _ = await start_listening(
                processes,
                spawn_simulator,
                lambda _: provisioned_count(http, args.devices),
                f"the simulator and its {args.devices} devices",
            )
            alive = [server, api, *workers, sim]
            for process in alive:
                process.check()
            cpu = CpuMeter({"temporal": [server], "workers": workers, "api": [api], "sim": [sim]})
            async with httpx.AsyncClient(base_url=f"http://{HOST}:{sim_port}", timeout=30) as simc:
                repeats = []
                for index in range(1, args.repeats + 1):
                    repeat = await measure_once(args, http, simc, alive)
                    print_repeat(index, repeat)
                    repeats.append(repeat)
            cpu.stop()
            return repeats, cpu
    finally:
        processes.stop()


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
    alive: list[Process],
) -> Repeat:
    (await sim.post("/sim/reset")).raise_for_status()
    body = {
        "job": {
            "request": {
                "name": OPERATION,
                "target": {"append": {"tags": [TAG]}},
                "rollout": {"maxConcurrency": args.max_concurrency},
            }
        }
    }
    answer = await http.post(JOBS, json=body)
    if answer.status_code != 201:
        raise BenchError(f"creating the job answered {answer.status_code}: {answer.text}")
    job_id = str(answer.json()["id"])
    target = max(1, round(args.devices * args.pause_at))

    async def reached() -> int | None:
        count = await _sim_requests(sim)
        return count if count >= target else None

    await eventually(
        reached,
        f"{target} requests at the simulator (job {job_id})",
        alive,
        timeout=args.timeout,
        interval=TRIGGER_POLL,
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
        for process in alive:
            process.check()
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
    job = await _change(http, job_id, active=True)
    deadline = resumed_at + args.timeout
    while job["report"]["summary"]["status"] not in ("FINISHED", "CANCELLED"):
        if time.perf_counter() > deadline:
            raise BenchError(
                f"job {job_id} not finished {args.timeout:.0f} s after its resume: "
                f"{job['report']['summary']}"
            )
        for process in alive:
            process.check()
        await asyncio.sleep(POLL_INTERVAL)
        answer = await http.get(f"{JOBS}/{job_id}")
        if answer.status_code == 200:
            job = answer.json()
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
    parts = [f"{name} {used:.1f}s ({used / cpu.wall:.0%})" for name, used in cpu.used.items()]
    print(f"CPU over the {len(repeats)} repeat(s), {cpu.wall:.1f} s: {', '.join(parts)}")
    if cpu.used["others"] > NOISY_OTHERS * cpu.wall:
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
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds each wait of a repeat may take"
    )
    parser.add_argument("--keep", action="store_true", help="keep the run directory and logs")
    parser.add_argument(
        "--in-place",
        action="store_true",
        help="run the processes from the working tree instead of a copy taken at the start",
    )
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.code_version = code_version()

    async def measure(workdir: Path) -> list[str]:
        repeats, cpu = await run(args, workdir)
        print_table(args, repeats, cpu)
        return [p for r in repeats for p in r.problems(args.devices)]

    return run_bench(args, "fleet-bench-pause-", measure)


if __name__ == "__main__":
    sys.exit(main())
