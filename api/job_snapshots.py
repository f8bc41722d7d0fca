"""Jobs that clients are watching, kept fresh in the background, so ``GET /operation/jobs/{id}``
answers from memory while the Temporal server is busy running the job.

A job's report is what its workflow last published in its memo (at most once a second while its
counters move), and reading it is a ``describe`` of the job's workflow: on a server at full load
(the job's own fan-out), that read waits behind the job's work, and a client polling once a second
saw answers take up to several hundred milliseconds. Here, the first read of a job is a live
read; the job is then read again in the background about once a second for as long as clients
keep reading it (``WATCH_FOR`` after the last read), and reads are answered from that snapshot
while it is at most ``MAX_AGE`` old; an older snapshot (Temporal slow or unreachable) is never
served: the read is live again, with its own errors. A change or cancel made through this process
replaces the snapshot with the job it answered, so a read after a write sees the write. Another
API replica's snapshot may be up to ``MAX_AGE`` behind a write made elsewhere (docs/api.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from models.jobs import Job

log = logging.getLogger(__name__)

REFRESH_EVERY_S = 1.0
MAX_AGE_S = 3.0
WATCH_FOR_S = 15.0
# At most this many jobs are kept fresh at once; reads of others are live.
MAX_WATCHED = 200

ReadJob = Callable[[str], Awaitable[Job]]


@dataclass
class _Watched:
    job: Job
    fetched_at: float
    read_at: float
    refresher: asyncio.Task[None] | None = field(default=None, repr=False)


class JobSnapshots:
    def __init__(
        self,
        read: ReadJob,
        *,
        refresh_every_s: float = REFRESH_EVERY_S,
        max_age_s: float = MAX_AGE_S,
        watch_for_s: float = WATCH_FOR_S,
        max_watched: int = MAX_WATCHED,
    ) -> None:
        self._read = read
        self._refresh_every = refresh_every_s
        self._max_age = max_age_s
        self._watch_for = watch_for_s
        self._max_watched = max_watched
        self._watched: dict[str, _Watched] = {}

    async def read(self, job_id: str) -> Job:
        now = time.monotonic()
        watched = self._watched.get(job_id)
        if watched is not None and now - watched.fetched_at <= self._max_age:
            watched.read_at = now
            return watched.job
        job = await self._read(job_id)
        self._keep(job_id, job)
        return job

    def store(self, job: Job) -> None:
        """A job as a change or cancel through this process answered it: the newest there is."""
        if job.id in self._watched:
            self._keep(job.id, job)

    def _keep(self, job_id: str, job: Job) -> None:
        now = time.monotonic()
        watched = self._watched.get(job_id)
        if watched is not None:
            watched.job, watched.fetched_at, watched.read_at = job, now, now
            return
        if len(self._watched) >= self._max_watched:
            return
        watched = _Watched(job=job, fetched_at=now, read_at=now)
        watched.refresher = asyncio.create_task(self._refresh(job_id, watched))
        self._watched[job_id] = watched

    async def _refresh(self, job_id: str, watched: _Watched) -> None:
        try:
            while time.monotonic() - watched.read_at < self._watch_for:
                await asyncio.sleep(self._refresh_every)
                began = time.monotonic()
                try:
                    job = await self._read(job_id)
                except Exception as exc:  # a live read will answer (and report) it
                    log.info("job %s not refreshed: %s", job_id, exc)
                    continue
                # A write answered while this read was on its way is newer than what it read.
                if began >= watched.fetched_at:
                    watched.job, watched.fetched_at = job, began
        finally:
            if self._watched.get(job_id) is watched:
                del self._watched[job_id]

    async def close(self) -> None:
        tasks = [w.refresher for w in self._watched.values() if w.refresher is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._watched.clear()
