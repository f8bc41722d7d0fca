"""Timer-heavy paths on the time-skipping server: hours of back-off, timeouts and retry delays
run in seconds. Real activities: pushes go over real HTTP to the simulator, or find no address."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from core.settings import Settings
from inventory.store import Inventory
from models.devices import DeviceIn
from models.jobs import Job, JobRequest
from models.messages import JobInput
from simulator.app import create_app as create_simulator
from simulator.fleet import Behaviour, Fleet, Mode
from tests.stack import serve
from worker import running_worker
from workflows.job import JobWorkflow


def duration(job: Job) -> timedelta:
    started, finished = job.report.execution.started_date, job.report.execution.finished_date
    assert started is not None and finished is not None
    return finished - started


async def run_job(
    client: Client, tmp_path: Path, fleet: Fleet, request: dict, reachable: bool = True
) -> Job:
    settings = Settings(
        task_queue=f"tq-{uuid.uuid4()}",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'inventory.db'}",
    )
    inventory = Inventory.from_url(settings.database_url)
    await inventory.create_schema()
    async with serve(create_simulator(fleet)) as sim_url:
        await inventory.create_devices(
            [
                DeviceIn(id=d, address=sim_url if reachable else None)
                for d in sorted(fleet.device_ids)
            ]
        )
        await inventory.close()
        async with running_worker(settings, client=client):
            job_id = str(uuid.uuid4())
            return await client.execute_workflow(
                JobWorkflow.run,
                JobInput(
                    job_id=job_id,
                    request=JobRequest.model_validate(
                        {**request, "target": {"append": {"entities": sorted(fleet.device_ids)}}}
                    ),
                    created_at=datetime.now(UTC),
                ),
                id=job_id,
                task_queue=settings.task_queue,
            )


async def test_unreachable_device_is_given_up_after_the_connection_deadline(
    skipping: WorkflowEnvironment, tmp_path: Path
) -> None:
    job = await run_job(
        skipping.client,
        tmp_path,
        Fleet(device_ids={"far-away"}),
        {"name": "REBOOT_EQUIPMENT", "operationParameters": {"connectionTimeout": 6 * 3600_000}},
        reachable=False,
    )
    summary = job.report.summary
    assert summary.status == "FINISHED"
    assert summary.finished.cancelled.by_engine == 1
    assert duration(job) >= timedelta(hours=6)


async def test_silent_device_times_out_after_an_hour(
    skipping: WorkflowEnvironment, tmp_path: Path
) -> None:
    fleet = Fleet(device_ids={"mute"}, default=Behaviour(mode=Mode.SILENT))
    job = await run_job(
        skipping.client,
        tmp_path,
        fleet,
        {"name": "REBOOT_EQUIPMENT", "operationParameters": {"timeout": 3600_000}},
    )
    assert job.report.summary.finished.cancelled.by_timeout == 1
    assert job.report.summary.finished_out_of_time.total == 0
    assert fleet.stats()["requests"] == 1


async def test_retries_wait_their_delay(skipping: WorkflowEnvironment, tmp_path: Path) -> None:
    fleet = Fleet(device_ids={"flaky"}, default=Behaviour(fail_first=2, fail_code="ERROR_TIMEOUT"))
    job = await run_job(
        skipping.client,
        tmp_path,
        fleet,
        {
            "name": "REBOOT_EQUIPMENT",
            "operationParameters": {"retries": 2, "retriesDelay": 1800_000},
        },
    )
    assert job.report.summary.finished.successful == 1
    times = [d.received_at for d in fleet.deliveries]
    assert len(times) == 3
    # Two retry delays of 30 minutes passed in workflow time, not in real time.
    assert duration(job) >= timedelta(hours=1)
    assert times[-1] - times[0] < 60


async def test_max_per_minute_paces_the_starts(
    skipping: WorkflowEnvironment, tmp_path: Path
) -> None:
    fleet = Fleet(device_ids={f"paced-{i}" for i in range(5)})
    job = await run_job(
        skipping.client,
        tmp_path,
        fleet,
        {"name": "REBOOT_EQUIPMENT", "rollout": {"maxPerMinute": 2}},
    )
    assert job.report.summary.finished.successful == 5
    # 2 + 2 + 1 starts: the last one waits for the third one-minute window.
    assert timedelta(minutes=2) <= duration(job) < timedelta(minutes=3)
