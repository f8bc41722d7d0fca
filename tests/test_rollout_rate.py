"""The exponential rollout rate (``rollout.rate``, beyond OpenGate) on the time-skipping server: a
job whose rate starts at 60 a minute and doubles every 20 successes, on real simulated devices
pushed over real HTTP, its minutes of pacing run in seconds."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from core.temporal import operation_workflow_id
from models.operations import Operation
from simulator.fleet import Fleet
from tests.test_timers import run_job

DEVICES = 140
BASE, EVERY, CEILING = 60, 20, 480
RATE = {
    "basePerMinute": BASE,
    "incrementFactor": 2,
    "every": EVERY,
    "criterion": "succeeded",
    "maxPerMinute": CEILING,
}


def allowed_per_minute(successes: int) -> int:
    return int(min(CEILING, BASE * 2 ** (successes // EVERY)))


async def operations(client: Client, fleet: Fleet) -> list[Operation]:
    """Each operation as it closed (its workflow's result), in the order the job started them."""
    found = []
    for operation_id in {d.operation_id for d in fleet.deliveries}:
        handle = client.get_workflow_handle(
            operation_workflow_id(operation_id), result_type=Operation
        )
        found.append(await handle.result())
    return sorted(found, key=lambda o: o.execution.activated_date or datetime.min)


# Seconds here; a run that stops getting workflow tasks should fail fast, not at the suite's limit.
@pytest.mark.timeout(120)
async def test_a_rate_doubling_every_20_successes_follows_its_schedule(
    skipping: WorkflowEnvironment, tmp_path: Path
) -> None:
    fleet = Fleet.numbered(DEVICES, prefix="rate-")
    job = await run_job(
        skipping.client,
        tmp_path,
        fleet,
        {"name": "REBOOT_EQUIPMENT", "rollout": {"rate": RATE}},
    )
    assert job.report.summary.finished.successful == DEVICES
    assert fleet.stats()["requests"] == DEVICES
    ops = await operations(skipping.client, fleet)
    starts = [o.execution.activated_date for o in ops]
    successes = sorted(o.execution.finished_date for o in ops if o.execution.finished_date)
    assert len(successes) == DEVICES and all(starts)
    first = starts[0]
    assert first is not None
    offsets = [(t - first).total_seconds() for t in starts if t is not None]

    # Measured (devices answering at once): 20 starts a second apart, then 2 a second from 20 s,
    # 4 a second from 30 s, 8 a second (the ceiling, 480) from 35 s; all 140 by about 44 s.
    # A device's answer may reach the job a little later in skipped time than the timer it
    # raced, so each phase is checked with some slack after it, none before.
    # The base rate: nothing has succeeded 20 times before the 20th start, so the first 20
    # start one a second (60 a minute), no faster.
    gaps = [b - a for a, b in itertools.pairwise(offsets[:20])]
    assert all(gap >= 1.0 for gap in gaps), gaps
    assert 19.0 <= offsets[19] < 22.0, offsets[:20]
    # Doubled after 20 successes: the next 20 go two a second (about 9 s, not 20)...
    assert 9.0 <= offsets[39] - offsets[20] < 12.0, offsets[20:40]
    # ... four a second after 40 (about 4 s) ...
    assert 4.0 <= offsets[59] - offsets[40] < 7.0, offsets[40:60]
    # ... and eight a second from 60 on, the ceiling of 480: the last 80 in about 10 s.
    assert 9.0 <= offsets[-1] - offsets[60] < 14.0, offsets[60:]

    # Never above the schedule: in any second, at most two seconds' worth of the rate that the
    # successes recorded by the end of that second allow (the bucket holds one second's starts
    # and earns one more).
    for i, start in enumerate(starts):
        assert start is not None
        end = start + timedelta(seconds=1)
        within = sum(1 for t in starts[i:] if t is not None and t < end)
        done = sum(1 for t in successes if t <= end)
        assert within <= max(2, 2 * allowed_per_minute(done) // 60), (i, within, done)


def test_the_schedule_helper_reads_the_rate() -> None:
    assert [allowed_per_minute(n) for n in (0, 19, 20, 40, 60, 1000)] == [
        60,
        60,
        120,
        240,
        480,
        480,
    ]
