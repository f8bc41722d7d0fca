"""GET of a job being watched answers from a snapshot kept fresh in the background
(api/job_snapshots.py): never older than its bound, and a write through the API is seen at once."""

from __future__ import annotations

import asyncio

from api.job_snapshots import JobSnapshots
from models.jobs import Job, JobRequest
from tests.stack import Stack


def _job(job_id: str, notes: str) -> Job:
    request = JobRequest.model_validate(
        {"name": "REBOOT_EQUIPMENT", "active": False, "userNotes": notes}
    )
    report = {"summary": {"status": "IDLE"}}
    return Job.model_validate(
        {"id": job_id, "request": request.model_dump(by_alias=True), "report": report}
    )


class _Source:
    """The job as Temporal would answer it, and how many reads it took."""

    def __init__(self) -> None:
        self.notes = "v1"
        self.reads = 0
        self.fail = False

    async def read(self, job_id: str) -> Job:
        self.reads += 1
        if self.fail:
            raise RuntimeError("Temporal is unreachable")
        return _job(job_id, self.notes)


async def test_reads_come_from_a_snapshot_refreshed_in_the_background() -> None:
    source = _Source()
    snapshots = JobSnapshots(source.read, refresh_every_s=0.05, max_age_s=0.3, watch_for_s=0.5)
    try:
        first = await snapshots.read("j")
        assert first.request.user_notes == "v1" and source.reads == 1
        assert (await snapshots.read("j")).request.user_notes == "v1"
        assert source.reads == 1  # the second read came from memory
        source.notes = "v2"
        await asyncio.sleep(0.2)
        assert (await snapshots.read("j")).request.user_notes == "v2"
        # A write's answer replaces the snapshot at once.
        snapshots.store(_job("j", "written"))
        assert (await snapshots.read("j")).request.user_notes == "written"
        # Temporal stops answering: the snapshot ages past its bound and is not served.
        source.fail = True
        await asyncio.sleep(0.4)
        try:
            await snapshots.read("j")
        except RuntimeError:
            pass
        else:
            raise AssertionError("a snapshot past its age was served")
        # Nobody reads: the job is no longer refreshed.
        source.fail = False
        await asyncio.sleep(0.7)
        reads = source.reads
        await asyncio.sleep(0.2)
        assert source.reads == reads
    finally:
        await snapshots.close()


async def test_a_read_after_a_pause_shows_it_at_once(stack: Stack) -> None:
    await stack.provision(5, tags=["watched"])
    stack.fleet.default.delay_ms = 2000
    job = await stack.create_job(
        {
            "name": "REBOOT_EQUIPMENT",
            "target": {"append": {"tags": ["watched"]}},
            "rollout": {"maxConcurrency": 1},
        }
    )
    url = f"/north/v80/operation/jobs/{job['id']}"
    assert (await stack.api.get(url)).json()["report"]["summary"]["status"] == "IN_PROGRESS"
    paused = await stack.api.put(url, json={"job": {"request": {"active": False}}})
    assert paused.status_code == 200
    assert (await stack.api.get(url)).json()["report"]["summary"]["status"] == "PAUSED"
    resumed = await stack.api.put(url, json={"job": {"request": {"active": True}}})
    assert resumed.status_code == 200
    assert (await stack.api.get(url)).json()["report"]["summary"]["status"] == "IN_PROGRESS"
    cancelled = await stack.api.delete(url)
    assert cancelled.status_code == 200
    assert (await stack.api.get(url)).json()["report"]["summary"]["status"] in (
        "CANCELLING",
        "CANCELLED",
    )
