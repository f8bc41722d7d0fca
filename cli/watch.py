"""``fleetops jobs watch``: follow a job until it closes, with a live view on a terminal and plain
lines elsewhere, listing failed operations as they come; the exit code says how it ended.

Also called in-process by ``make run``'s demo (``devstack/stack.py``), from a thread, with a
``stop`` event so that Ctrl-C there ends the watch at once.
"""

from __future__ import annotations

import contextlib
import math
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypeVar

from rich.console import Console, RenderableType
from rich.live import Live

from cli.client import FleetClient
from cli.errors import EXIT_FAILED, EXIT_OK, EXIT_TIMEOUT, EXIT_USAGE, CliProblem, GaveUp
from cli.render import Rate, duration, failure_line, plain, summary_line, watch_view
from models.enums import JobStatus, ResultCode
from models.jobs import Job
from models.operations import Operation

# Every closed result but success: the device's error codes and CANCELLED (with its reason).
FAILED_RESULTS = [
    r.value for r in ResultCode if r not in (ResultCode.SUCCESSFUL, ResultCode.OPERATION_PENDING)
]
T = TypeVar("T")
DEFAULT_INTERVAL_S = 1.0
DEFAULT_MAX_LISTED = 50
# A watch outlives blips and API restarts: a request that finds no API, or a 5xx/408/429 answer,
# is asked again with back-off for this long after the first failure of a row, then the watch
# gives up (exit 4). 4xx answers such as 401 or 404 end it at once.
DEFAULT_PATIENCE_S = 60.0
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 10.0
# A Retry-After is honoured up to this (and never past the patience).
RETRY_AFTER_MAX_S = 30.0
# Visibility lags the job's counters: at the end, wait this long for the failures to be listed.
CATCH_UP_S = 5.0
# Without a terminal, a line when the status changes, else at most one per this many seconds.
PLAIN_EVERY_S = 5.0
WAITING_NOTES = {
    JobStatus.SCHEDULED: "scheduled: waiting for its start",
    JobStatus.IDLE: "idle: waiting to be activated (fleetops jobs resume)",
    JobStatus.PAUSED: "paused: waiting to be resumed (fleetops jobs resume)",
    JobStatus.CANCELLING: "cancelling: waiting for open operations to close",
}


class Outcome(StrEnum):
    SUCCEEDED = "succeeded"  # FINISHED, and every operation successful
    FAILED = "failed"  # closed with errors or cancellations, or CANCELLED
    TIMED_OUT = "timed out"  # still open when the watch's own time ran out
    STOPPED = "stopped"  # the caller's stop event was set


EXIT_CODES = {
    Outcome.SUCCEEDED: EXIT_OK,
    Outcome.FAILED: EXIT_FAILED,
    Outcome.TIMED_OUT: EXIT_TIMEOUT,
    Outcome.STOPPED: EXIT_USAGE,
}


def outcome_of(job: Job) -> Outcome | None:
    """How a closed job ended; None while it is open."""
    summary = job.report.summary
    if not summary.status.is_closed:
        return None
    clean = (
        summary.status is JobStatus.FINISHED
        and summary.in_progress.total == 0
        and summary.finished.successful == summary.total
    )
    return Outcome.SUCCEEDED if clean else Outcome.FAILED


def failure_count(job: Job) -> int:
    finished = job.report.summary.finished
    return finished.error + finished.cancelled.total


@dataclass
class WatchResult:
    job: Job
    outcome: Outcome
    failures: list[Operation] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.outcome]


@dataclass
class Watcher:
    client: FleetClient
    job_id: str
    console: Console
    interval_s: float = DEFAULT_INTERVAL_S
    timeout_s: float | None = None
    max_listed: int = DEFAULT_MAX_LISTED
    stop: threading.Event = field(default_factory=threading.Event)
    clock: Callable[[], float] = time.monotonic
    patience_s: float = DEFAULT_PATIENCE_S
    backoff_s: float = BACKOFF_FIRST_S

    def __post_init__(self) -> None:
        self.rate = Rate()
        self.listed: dict[str, Operation] = {}
        self._plain_last = (0.0, "", JobStatus.IDLE)
        self._deadline: float | None = None
        self._last: Job | None = None

    def run(self) -> WatchResult:
        started = self.clock()
        if self.timeout_s is not None:
            self._deadline = started + self.timeout_s
        with self._display() as show:
            try:
                return self._follow(show)
            except _Interrupted as ended:
                if self._last is None:
                    raise GaveUp(ended.reason) from None
                return self._result(self._last, ended.outcome)

    def _follow(self, show: Shower) -> WatchResult:
        while True:
            job = self._ask(lambda: self.client.job(self.job_id), show)
            self._last = job
            self.rate.add(self.clock(), job.report.summary.finished.total)
            self._list_failures(job, show)
            show(job, None)
            outcome = outcome_of(job)
            if outcome is not None:
                self._catch_up(job, show)
                return self._result(job, outcome)
            if self._deadline is not None and self.clock() >= self._deadline:
                return self._result(job, Outcome.TIMED_OUT)
            if self.stop.wait(self.interval_s):
                return self._result(job, Outcome.STOPPED)

    def _result(self, job: Job, outcome: Outcome) -> WatchResult:
        return WatchResult(job, outcome, list(self.listed.values()))

    # -- asking the API through blips -------------------------------------------------------------

    def _ask(self, call: Callable[[], T], show: Shower) -> T:
        """``call()``, asked again while it fails transiently (no connection, 5xx, 408, 429) with
        exponential back-off (honouring Retry-After) for up to ``patience_s`` from the first
        failure; then ``GaveUp``. Any other problem (a 401, a 404) ends the watch at once."""
        failing_since: float | None = None
        attempt = 0
        while True:
            try:
                value = call()
            except CliProblem as problem:
                if not problem.transient:
                    raise
                if failing_since is None:
                    failing_since = self.clock()
                self._wait_out(problem, failing_since, attempt, show)
                attempt += 1
                continue
            if failing_since is not None:
                show.note(f"reconnected after {duration(self.clock() - failing_since)}")
            return value

    def _wait_out(self, problem: CliProblem, since: float, attempt: int, show: Shower) -> None:
        """Wait before asking again, or raise: ``GaveUp`` once the patience is spent,
        ``_Interrupted`` when the watch's own timeout runs out or its stop event is set."""
        now = self.clock()
        give_up_at = since + self.patience_s
        if now >= give_up_at:
            raise GaveUp(
                f"gave up reaching the API after {duration(now - since)} "
                f"(--patience {self.patience_s:g}): {problem}"
            )
        deadline = math.inf if self._deadline is None else self._deadline
        if now >= deadline:
            raise _Interrupted(Outcome.TIMED_OUT, f"the watch timed out: {problem}")
        # Jittered, so that the watches of many pipelines do not all come back at once after an
        # API restart.
        delay = min(self.backoff_s * 2 ** min(attempt, 30), BACKOFF_MAX_S)
        delay *= random.uniform(0.5, 1.0)
        if problem.retry_after is not None:
            delay = max(delay, min(problem.retry_after, RETRY_AFTER_MAX_S))
        delay = min(delay, give_up_at - now, deadline - now)
        show.reconnecting(
            f"reconnecting: {problem} (again in {delay:.1f} s, "
            f"giving up in {give_up_at - now:.0f} s)"
        )
        if self.stop.wait(delay):
            raise _Interrupted(Outcome.STOPPED, "stopped before the API answered")

    # -- failures -------------------------------------------------------------------------------

    def _list_failures(self, job: Job, show: Shower) -> None:
        """Print the failed operations not printed yet (up to ``max_listed`` in all)."""
        wanted = min(failure_count(job), self.max_listed)
        if len(self.listed) >= wanted:
            return
        clauses: list[dict[str, Any]] = [
            {"eq": {"jobId": job.id}},
            {"in": {"operationResult": FAILED_RESULTS}},
        ]
        found = self._ask(lambda: self.client.search_operations(clauses, 1, self.max_listed), show)
        for op in found.operations:
            if op.operation_id not in self.listed and len(self.listed) < self.max_listed:
                self.listed[op.operation_id] = op
                show(None, op)

    def _catch_up(self, job: Job, show: Shower) -> None:
        """The job is closed: give visibility a moment to list the last failures."""
        deadline = self.clock() + CATCH_UP_S
        wanted = min(failure_count(job), self.max_listed)
        # Targets cancelled before they started have no operation to list: stop once two
        # searches in a row find nothing new.
        idle = 0
        while len(self.listed) < wanted and self.clock() < deadline and idle < 2:
            if self.stop.wait(min(self.interval_s, 0.5)):
                return
            before = len(self.listed)
            self._list_failures(job, show)
            idle = idle + 1 if len(self.listed) == before else 0
        more = failure_count(job) - len(self.listed)
        if more > 0:
            show.note(f"  … and {more} more: fleetops jobs operations {job.id} --result ERROR")

    # -- display --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _display(self) -> Iterator[Shower]:
        if not self.console.is_terminal:

            def line(text: str) -> None:
                self.console.print(plain(text), soft_wrap=True)

            shower = Shower(self._plain, line, line)
            try:
                yield shower
            finally:
                if shower.last is not None:
                    self.console.print(self._view(shower.last))
            return
        with Live(console=self.console, refresh_per_second=4, transient=False) as live:

            def update(job: Job | None, op: Operation | None) -> None:
                if op is not None:
                    live.console.print(failure_line(op))
                if job is not None:
                    live.update(self._view(job), refresh=True)

            def note(text: str) -> None:
                live.console.print(plain(text))

            def reconnecting(text: str) -> None:
                # In the view while there is one (it stays in place), else as a line.
                if shower.last is None:
                    note(text)
                else:
                    live.update(self._view(shower.last, text), refresh=True)

            shower = Shower(update, note, reconnecting)
            yield shower

    def _plain(self, job: Job | None, op: Operation | None) -> None:
        if op is not None:
            self.console.print(failure_line(op))
        if job is None:
            return
        line = summary_line(job)
        at, last_line, last_status = self._plain_last
        status = job.report.summary.status
        changed = line != last_line
        due = self.clock() - at >= PLAIN_EVERY_S
        if status != last_status or (changed and due) or not last_line:
            self.console.print(line, soft_wrap=True)
            self._plain_last = (self.clock(), line, status)

    def _view(self, job: Job, note: str = "") -> RenderableType:
        return watch_view(
            job,
            self.rate,
            _elapsed(job),
            failure_count(job),
            note or WAITING_NOTES.get(job.report.summary.status, ""),
        )


class _Interrupted(Exception):
    """The watch ended while the API was not answering (its timeout, its stop event)."""

    def __init__(self, outcome: Outcome, reason: str) -> None:
        super().__init__(reason)
        self.outcome = outcome
        self.reason = reason


class Shower:
    """Where the watch loop sends a job's state, each failed operation, notes, and the state of
    its reconnection attempts."""

    def __init__(
        self,
        show: Callable[[Job | None, Operation | None], None],
        note: Callable[[str], None],
        reconnecting: Callable[[str], None],
    ) -> None:
        self._show = show
        self.note = note
        self.reconnecting = reconnecting
        self.last: Job | None = None

    def __call__(self, job: Job | None, op: Operation | None) -> None:
        if job is not None:
            self.last = job
        self._show(job, op)


def _elapsed(job: Job) -> float:
    execution = job.report.execution
    start = execution.started_date or execution.activated_date
    if start is None:
        return 0.0
    end = execution.finished_date or datetime.now(UTC)
    return max((end - start).total_seconds(), 0.0)


def watch(
    client: FleetClient,
    job_id: str,
    console: Console,
    *,
    interval_s: float = DEFAULT_INTERVAL_S,
    timeout_s: float | None = None,
    max_listed: int = DEFAULT_MAX_LISTED,
    stop: threading.Event | None = None,
    patience_s: float = DEFAULT_PATIENCE_S,
) -> WatchResult:
    """Follow job ``job_id`` until it closes (or ``timeout_s`` runs out, or ``stop`` is set);
    ``GaveUp`` when the API stays unreachable for ``patience_s``."""
    watcher = Watcher(
        client,
        job_id,
        console,
        interval_s=interval_s,
        timeout_s=timeout_s,
        max_listed=max_listed,
        stop=stop or threading.Event(),
        patience_s=patience_s,
    )
    return watcher.run()


def verdict(result: WatchResult) -> str:
    """The last line of a watch: how the job ended, in words."""
    summary = result.job.report.summary
    if result.outcome is Outcome.SUCCEEDED:
        return f"Job {result.job.id} FINISHED: all {summary.total} operations successful."
    if result.outcome is Outcome.TIMED_OUT:
        return f"Job {result.job.id} is still {summary.status.value}: the watch timed out."
    if result.outcome is Outcome.STOPPED:
        return f"Stopped watching job {result.job.id} ({summary.status.value})."
    finished = summary.finished
    return (
        f"Job {result.job.id} {summary.status.value} with {finished.error} error(s) and "
        f"{finished.cancelled.total} cancelled of {summary.total} operations."
    )
