"""What the CLI prints: JSON for scripts, Rich tables for people, and the live view of a job."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import Any

import typer
from pydantic import BaseModel
from rich.console import Console, Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from models.devices import ApiKey, Device
from models.enums import JobStatus
from models.jobs import Job
from models.operation_types import OperationTypeRecord
from models.operations import Operation
from models.summary import JobSummary
from models.tasks import Task


class Output(StrEnum):
    TABLE = "table"
    JSON = "json"


STATUS_STYLES = {
    JobStatus.FINISHED: "green",
    JobStatus.IN_PROGRESS: "cyan",
    JobStatus.PAUSED: "yellow",
    JobStatus.CANCELLING: "magenta",
    JobStatus.CANCELLED: "red",
    JobStatus.SCHEDULED: "blue",
    JobStatus.IDLE: "dim",
}


def stdout() -> Console:
    # Made per call: the console must write to the sys.stdout of the moment (tests swap it).
    return Console(highlight=False)


def stderr() -> Console:
    return Console(stderr=True, highlight=False)


def as_json(value: Any) -> Any:
    """Models (also inside lists and dicts) as the API's JSON: camelCase, without empty fields."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True, exclude_none=True)
    if isinstance(value, dict):
        return {k: as_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [as_json(v) for v in value]
    return value


def print_json(value: Any) -> None:
    """Plain JSON on stdout (no Rich markup or wrapping: scripts parse it)."""
    typer.echo(json.dumps(as_json(value), indent=2, ensure_ascii=False))


def emit(output: Output, value: Any, table: RenderableType | None = None) -> None:
    """``value`` as JSON, or ``table`` for people."""
    if output is Output.JSON:
        print_json(value)
    elif table is not None:
        stdout().print(table)


def when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds < 0:
        return "-"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def status_text(status: JobStatus) -> Text:
    return Text(status.value, style=STATUS_STYLES.get(status, ""))


# -- jobs ---------------------------------------------------------------------------------------


def target_of(job: Job) -> str:
    target = job.request.target
    if target is None or target.append is None:
        return "-"
    selection = target.append
    if selection.tags:
        return "tags " + ",".join(selection.tags)
    ids = selection.listed_ids()
    return f"{len(ids)} device{'s' if len(ids) != 1 else ''}"


def jobs_table(jobs: Iterable[Job]) -> Table:
    """One line per job, narrow enough for 100 columns (``jobs show`` has the rest)."""
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("ID", no_wrap=True)
    table.add_column("OPERATION")
    table.add_column("STATUS", no_wrap=True)
    table.add_column("CLOSED", justify="right", no_wrap=True)
    table.add_column("FAILED", justify="right", no_wrap=True)
    table.add_column("STARTED", no_wrap=True)
    for job in jobs:
        summary = job.report.summary
        failed = summary.finished.error + summary.finished.cancelled.total
        execution = job.report.execution
        started = execution.started_date or execution.activated_date
        table.add_row(
            job.id,
            job.request.name,
            status_text(summary.status),
            f"{summary.finished.total}/{summary.total}",
            Text(str(failed), style="red" if failed else ""),
            started.strftime("%m-%d %H:%M") if started else "-",
        )
    return table


def job_view(job: Job) -> RenderableType:
    execution = job.report.execution
    details = Table.grid(padding=(0, 2))
    details.add_column(style="bold")
    details.add_column()
    rows: list[tuple[str, str | Text]] = [
        ("Job", job.id),
        ("Operation", job.request.name),
        ("Status", status_text(job.report.summary.status)),
        ("Target", target_of(job)),
        ("Parameters", json.dumps(job.request.parameters) if job.request.parameters else "-"),
        ("User", job.request.user or "-"),
        ("Activated", when(execution.activated_date)),
        ("Started", when(execution.started_date)),
        ("Finished", when(execution.finished_date)),
    ]
    if job.task_id:
        rows.insert(1, ("Task", job.task_id))
    report = job.report.target
    if report.not_provisioned:
        rows.append(("Not provisioned", ", ".join(report.not_provisioned)))
    if report.duplicated:
        rows.append(("Duplicated", ", ".join(report.duplicated)))
    for name, value in rows:
        details.add_row(name, value)
    return Group(details, Text(""), counters(job.report.summary))


def counters(summary: JobSummary) -> Table:
    """The SPEC summary counters by state, one line per group (the parts of in-progress and
    cancelled only when not zero, so that the view fits 80 columns)."""
    progress, finished = summary.in_progress, summary.finished
    cancelled = finished.cancelled
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(justify="right", no_wrap=True)
    grid.add_column()
    grid.add_row("total", str(summary.total), "")
    grid.add_row(
        "in progress",
        str(progress.total),
        _parts(
            False,
            scheduled=progress.scheduled,
            pendingExecution=progress.pending_execution,
            waitingForConnection=progress.waiting_for_connection,
            started=progress.started,
        ),
    )
    grid.add_row(
        "finished",
        str(finished.total),
        _parts(
            True, successful=finished.successful, error=finished.error, cancelled=cancelled.total
        ),
    )
    grid.add_row(
        "cancelled",
        str(cancelled.total),
        _parts(
            False,
            byUser=cancelled.by_user,
            byTimeout=cancelled.by_timeout,
            byEngine=cancelled.by_engine,
            byExternalTimeout=cancelled.by_external_timeout,
            byExternal=cancelled.by_external,
        ),
    )
    late = summary.finished_out_of_time
    if late.total:
        grid.add_row(
            "out of time",
            str(late.total),
            _parts(True, successful=late.successful, error=late.error),
        )
    return grid


def _parts(zeros: bool, **counts: int) -> Text:
    text = Text()
    for name, count in counts.items():
        if not (count or zeros):
            continue
        if text:
            text.append("  ")
        style = "" if count else "dim"
        if count and name in ("error", "cancelled"):
            style = "red"
        text.append(f"{name} {count}", style=style)
    return text


def operations_table(operations: Iterable[Operation]) -> Table:
    table = Table(box=None, header_style="bold")
    for column in ("DEVICE", "STATUS", "RESULT", "ATTEMPT", "FINISHED", "DESCRIPTION"):
        table.add_column(column, no_wrap=column != "DESCRIPTION")
    for op in operations:
        result = op.result.value if op.result else "-"
        style = "green" if result == "SUCCESSFUL" else ("red" if op.result else "")
        table.add_row(
            op.entity_id,
            op.status.value,
            Text(result, style=style),
            f"{op.attempts.current}/{op.attempts.total}",
            when(op.execution.finished_date),
            op.description or "",
        )
    return table


def failure_line(op: Operation) -> Text:
    """One failed or cancelled operation, as the watch view lists them."""
    line = Text("  ✗ ", style="red")
    line.append(op.entity_id, style="bold")
    line.append(f"  {op.result.value if op.result else op.status.value}", style="red")
    if op.description:
        line.append(f"  {op.description}")
    return line


# -- devices, tasks, types, keys ----------------------------------------------------------------


def devices_table(devices: Iterable[Device]) -> Table:
    table = Table(box=None, header_style="bold")
    for column in ("ID", "TYPE", "TAGS", "ADDRESS"):
        table.add_column(column, no_wrap=column == "ID")
    for device in devices:
        table.add_row(device.id, device.type, ",".join(device.tags), device.address or "-")
    return table


def tasks_table(tasks: Iterable[Task]) -> Table:
    table = Table(box=None, header_style="bold")
    for column in ("ID", "NAME", "STATE", "OPERATION", "NEXT EXECUTION"):
        table.add_column(column, no_wrap=column in ("ID", "STATE"))
    for task in tasks:
        table.add_row(
            task.id,
            task.name,
            task.state.value,
            task.job.request.name,
            when(task.next_execution),
        )
    return table


def task_view(task: Task) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("Task", task.id)
    grid.add_row("Name", task.name)
    grid.add_row("Description", task.description or "-")
    grid.add_row("State", f"{task.state.value} ({'active' if task.active else 'inactive'})")
    grid.add_row("Next execution", when(task.next_execution))
    schedule = task.schedule.model_dump(mode="json", by_alias=True, exclude_none=True)
    grid.add_row("Schedule", json.dumps(schedule))
    request = task.job.request.model_dump(mode="json", by_alias=True, exclude_none=True)
    grid.add_row("Job", json.dumps(request))
    return grid


def types_table(types: Iterable[OperationTypeRecord]) -> Table:
    table = Table(box=None, header_style="bold")
    for column in ("NAME", "KIND", "TITLE", "PARAMETERS", "STEPS"):
        table.add_column(column, no_wrap=column == "NAME")
    for kind in types:
        properties = kind.parameters.get("properties") or {}
        table.add_row(
            kind.name,
            "custom" if kind.custom else "built-in",
            kind.title or "",
            ", ".join(properties) or "-",
            ", ".join(s.name for s in kind.steps) or "-",
        )
    return table


def type_view(kind: OperationTypeRecord) -> RenderableType:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("Name", kind.name)
    grid.add_row("Kind", "custom" if kind.custom else "built-in")
    grid.add_row("Title", kind.title or "-")
    grid.add_row("Description", kind.description or "-")
    grid.add_row("Steps", ", ".join(s.name for s in kind.steps) or "-")
    return Group(grid, Text("Parameters (JSON-Schema):", style="bold"), _pretty(kind.parameters))


def _pretty(value: Any) -> Text:
    return Text(json.dumps(value, indent=2, ensure_ascii=False))


def keys_table(keys: Iterable[ApiKey]) -> Table:
    table = Table(box=None, header_style="bold")
    for column in ("ID", "NAME", "ROLE", "DEVICE"):
        table.add_column(column, no_wrap=True)
    for key in keys:
        table.add_row(key.id, key.name, key.role.value, key.device_id or "-")
    return table


# -- the live view of a job ---------------------------------------------------------------------


class Rate:
    """Operations closed per second over the last ``window_s`` seconds of samples."""

    def __init__(self, window_s: float = 30.0) -> None:
        self.window_s = window_s
        self.samples: list[tuple[float, int]] = []

    def add(self, at: float, closed: int) -> None:
        self.samples.append((at, closed))
        while len(self.samples) > 2 and at - self.samples[0][0] > self.window_s:
            self.samples.pop(0)

    @property
    def per_second(self) -> float | None:
        if len(self.samples) < 2:
            return None
        (t0, c0), (t1, c1) = self.samples[0], self.samples[-1]
        return (c1 - c0) / (t1 - t0) if t1 > t0 else None

    def eta(self, remaining: int) -> float | None:
        rate = self.per_second
        if remaining <= 0:
            return 0.0
        return remaining / rate if rate else None


def watch_view(
    job: Job, rate: Rate, elapsed_s: float, failures: int, note: str = ""
) -> RenderableType:
    """The live view of ``jobs watch``: a bar of closed operations, rate, ETA and the counters."""
    summary = job.report.summary
    closed = summary.finished.total
    header = Text()
    header.append(f"Job {job.id}\n", style="bold")
    header.append(f"{job.request.name} on {target_of(job)}  ")
    header.append_text(status_text(summary.status))
    header.append(f"  elapsed {duration(elapsed_s)}", style="dim")
    bar_line = Table.grid(padding=(0, 2))
    for _ in range(4):
        bar_line.add_column()
    per_second = rate.per_second
    bar_line.add_row(
        ProgressBar(total=max(summary.total, 1), completed=closed, width=40),
        f"{closed}/{summary.total}"
        + (f" {100 * closed // summary.total}%" if summary.total else ""),
        f"{per_second:.1f} ops/s" if per_second is not None else "- ops/s",
        f"ETA {duration(rate.eta(summary.in_progress.total))}",
    )
    parts: list[RenderableType] = [header, bar_line, counters(summary)]
    if failures:
        parts.append(Text(f"{failures} operation(s) failed or were cancelled", style="red"))
    if note:
        parts.append(Text(note, style="yellow"))
    return Group(*parts)


def summary_line(job: Job) -> str:
    """The counters on one plain line (for logs and pipes, where no live view runs)."""
    s = job.report.summary
    return (
        f"{s.status.value:<11} {s.finished.total}/{s.total} closed: "
        f"successful {s.finished.successful}, error {s.finished.error}, "
        f"cancelled {s.finished.cancelled.total}; in progress {s.in_progress.total}"
    )
