"""Crashes mid-job cost seconds: a SIGKILL of the worker, or of the Temporal dev server.

Each test is ``bench.chaos``'s scenario on 300 devices, with every part its own process (a dev
server on a SQLite file, the API, one worker, the simulator) talking real HTTP and gRPC: the kill
of a process is what these tests are about, so nothing runs in the test's own process. The
scenario, its measurements and its checks live in ``bench/chaos.py``; ``ChaosResult.problems``
says which check failed and by how much.
"""

from __future__ import annotations

from pathlib import Path

from bench import chaos

DEVICES = 300
# Pushes in flight: each device answers after this long, at most this many operations at once.
SLOW_MS = 300
WINDOW = 50
# The whole job, crash included, on a busy machine: generous. The stall has its own bound.
JOB_TIMEOUT_S = 240


def _explained(result: chaos.ChaosResult) -> str:
    timeline = "\n".join(f"  {at:8.2f}  {label}" for label, at in result.timeline)
    return "\n".join([*result.problems(), *chaos.table([result]), "timeline:", timeline])


async def _crash_mid_job(scenario: str, tmp_path: Path) -> None:
    # In place: the suite tests the working tree as it is, not a copy.
    args = chaos.parse_args(
        ["--devices", str(DEVICES), "--slow-ms", str(SLOW_MS), "--window", str(WINDOW),
         "--timeout", str(JOB_TIMEOUT_S), "--in-place"]
    )  # fmt: skip

    result = await chaos.run_scenario(args, tmp_path, scenario)

    explained = _explained(result)
    assert result.finished_before_kill < DEVICES, f"the kill came too late\n{explained}"
    summary = result.summary
    assert summary["status"] == "FINISHED", explained
    assert summary["finished"]["successful"] == DEVICES, explained
    assert result.counters_ok(), explained
    # Every device reached, never with two operation ids.
    assert len(result.by_device()) == DEVICES, explained
    assert result.mixed_ids() == [], explained
    # Only pushes in flight at the kill were sent again.
    assert len(result.duplicated()) <= min(result.in_flight_at_kill(), WINDOW), explained
    assert result.resent_outside_the_kill() == [], explained
    # Seconds, not minutes: progress resumes soon after the restart, and the pushes in flight at
    # the kill are sent again within the push heartbeat timeout.
    stall = result.stall_s()
    assert stall is not None and stall < chaos.MAX_STALL_S, explained
    resend = result.last_resend_s()
    assert resend is None or resend < chaos.MAX_STALL_S, explained
    assert result.problems() == [], explained


async def test_a_job_comes_through_a_killed_worker_within_seconds(tmp_path: Path) -> None:
    """SIGKILL of the worker's process group once a third of the job is done, a new worker
    started at once: the pushes the dead worker had in flight are sent again (same operation
    id) within the push heartbeat timeout."""
    await _crash_mid_job(chaos.WORKER, tmp_path)


async def test_a_job_comes_through_a_killed_dev_server_within_seconds(tmp_path: Path) -> None:
    """SIGKILL of the Temporal dev server once a third of the job is done, started again on the
    same port and SQLite file: the API and the worker reconnect and the job goes on."""
    await _crash_mid_job(chaos.SERVER, tmp_path)
