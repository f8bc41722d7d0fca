"""What the CLI prints: JSON for scripts, Rich tables for people, and the live view of a job."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
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


# Characters a terminal may act on rather than show: C0 controls (ESC starts an escape
# sequence), DEL and the C1 controls (U+009B is a one-character CSI on some terminals). Text the
# server sends (a device's description, names, ids) is shown with these made visible, and never
# read as Rich markup: a device must not be able to move the cursor, clear the screen, retitle
# the window or break a table (``[/x]`` is a markup error).
_CONTROLS = [*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0)]
_VISIBLE = {c: f"\\x{c:02x}" for c in _CONTROLS} | {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}
_VISIBLE_KEEP_NEWLINES = {c: v for c, v in _VISIBLE.items() if c != 0x0A}
# In JSON output: json.dumps escapes C0 but leaves DEL and C1 raw (ensure_ascii=False).
_JSON_ESCAPES = {c: f"\\u{c:04x}" for c in (0x7F, *range(0x80, 0xA0))}


def visible(text: str, keep_newlines: bool = False) -> str:
    """``text`` with every control character written as an escape (``\\x1b``, ``\\n``)."""
    return text.translate(_VISIBLE_KEEP_NEWLINES if keep_newlines else _VISIBLE)


def plain(value: object, style: str = "") -> Text:
    """A value from the server (or a file) as Rich text: no markup, controls made visible."""
    return Text(visible(str(value)), style=style)


def stdout() -> Console:
    # Made per call: the console must write to the sys.stdout of the moment (tests swap it).
    # No markup or emoji codes in printed strings: much of what is printed comes from the server
    # (styles are given as Text).
    return Console(highlight=False, markup=False, emoji=False)


def stderr() -> Console:
    return Console(stderr=True, highlight=False, markup=False, emoji=False)


def as_json(value: Any) -> Any:
    """Models (also inside lists and dicts) as the API's JSON: camelCase, without empty fields."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True, exclude_none=True)
    if isinstance(value, dict):
        return {k: as_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [as_json(v) for v in value]
    return value


def json_text(value: Any, indent: int | None = 2) -> str:
    """``value`` as JSON (the API's, unchanged once parsed) with no raw control character: outside
    strings JSON has none, so every DEL or C1 character is inside a string, where its ``\\u``
    escape reads back as the same value."""
    return json.dumps(as_json(value), indent=indent, ensure_ascii=False).translate(_JSON_ESCAPES)


def print_json(value: Any) -> None:
    """Plain JSON on stdout (no Rich markup or wrapping: scripts parse it)."""
    typer.echo(json_text(value))


def print_json_stream(fields: dict[str, Any]) -> None:
    """The JSON object ``fields`` on stdout, exactly as ``print_json`` would print it, where a
    field whose value is an iterator is written item by item as it yields them (a list too long
    to hold in memory: every operation of a job, the devices of an import)."""
    typer.echo("{")
    last = len(fields) - 1
    for number, (key, value) in enumerate(fields.items()):
        name, comma = json.dumps(key), "," if number < last else ""
        if not isinstance(value, Iterator):
            typer.echo(f"  {name}: " + _indented(json_text(value), "  ").lstrip() + comma)
            continue
        empty = True
        for item in value:
            typer.echo(f"  {name}: [\n" if empty else ",\n", nl=False)
            typer.echo(_indented(json_text(item), "    "), nl=False)
            empty = False
        typer.echo(f"  {name}: []{comma}" if empty else f"\n  ]{comma}")
    typer.echo("}")


def _indented(text: str, prefix: str) -> str:
    return "\n".join(prefix + line for line in text.split("\n"))


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
            plain(job.id),
            plain(job.request.name),
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
    parameters = job.request.parameters
    rows: list[tuple[str, str | Text]] = [
        ("Job", plain(job.id)),
        ("Operation", plain(job.request.name)),
        ("Status", status_text(job.report.summary.status)),
        ("Target", plain(target_of(job))),
        ("Parameters", plain(json_text(parameters, indent=None)) if parameters else "-"),
        ("User", plain(job.request.user or "-")),
        ("Activated", when(execution.activated_date)),
        ("Started", when(execution.started_date)),
        ("Finished", when(execution.finished_date)),
    ]
    if job.task_id:
        rows.insert(1, ("Task", plain(job.task_id)))
    report = job.report.target
    if report.not_provisioned:
        rows.append(("Not provisioned", plain(", ".join(report.not_provisioned))))
    if report.duplicated:
        rows.append(("Duplicated", plain(", ".join(report.duplicated))))
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


OPERATION_COLUMNS = ("DEVICE", "STATUS", "RESULT", "ATTEMPT", "FINISHED", "DESCRIPTION")


def operations_table(
    operations: Iterable[Operation], widths: dict[str, int] | None = None, header: bool = True
) -> Table:
    """The operations, one per line. ``widths`` fixes the columns' widths (the pages of a
    streamed ``--all`` print as tables of their own that must line up)."""
    table = Table(box=None, header_style="bold", show_header=header)
    for column in OPERATION_COLUMNS:
        width = (widths or {}).get(column)
        table.add_column(
            column,
            no_wrap=column != "DESCRIPTION",
            width=width,
            min_width=width,
            overflow="ellipsis" if column != "DESCRIPTION" else "fold",
        )
    for op in operations:
        result = op.result.value if op.result else "-"
        style = "green" if result == "SUCCESSFUL" else ("red" if op.result else "")
        table.add_row(
            plain(op.entity_id),
            op.status.value,
            Text(result, style=style),
            f"{op.attempts.current}/{op.attempts.total}",
            when(op.execution.finished_date),
            plain(op.description or ""),
        )
    return table


def operation_widths(operations: list[Operation]) -> dict[str, int]:
    """Column widths that fit these operations (and most pages after them): the device column as
    wide as its longest id (at least 12, at most 40), the others as wide as they can get."""
    device = max((len(visible(op.entity_id)) for op in operations), default=0)
    return {
        "DEVICE": min(max(device, 12), 40),
        "STATUS": len("WAITING_FOR_CONNECTION"),
        "RESULT": len("CANCELLED_INTERNAL"),
        "ATTEMPT": 7,
        "FINISHED": len("2026-01-01 00:00:00"),
    }


def failure_line(op: Operation) -> Text:
    """One failed or cancelled operation, as the watch view lists them."""
    line = Text("  ✗ ", style="red")
    line.append_text(plain(op.entity_id, style="bold"))
    line.append(f"  {op.result.value if op.result else op.status.value}", style="red")
    if op.description:
        line.append("  ")
        line.append_text(plain(op.description))
    return line


# -- devices, tasks, types, keys ----------------------------------------------------------------


def devices_table(devices: Iterable[Device]) -> Table:
    table = Table(box=None, header_style="bold")
    for column in ("ID", "TYPE", "TAGS", "ADDRESS"):
        table.add_column(column, no_wrap=column == "ID")
    for device in devices:
        table.add_row(
            plain(device.id),
            plain(device.type),
            plain(",".join(device.tags)),
            plain(device.address or "-"),
        )
    return table


def tasks_table(tasks: Iterable[Task]) -> Table:
    table = Table(box=None, header_style="bold")
    for column in ("ID", "NAME", "STATE", "OPERATION", "NEXT EXECUTION"):
        table.add_column(column, no_wrap=column in ("ID", "STATE"))
    for task in tasks:
        table.add_row(
            plain(task.id),
            plain(task.name),
            task.state.value,
            plain(task.job.request.name),
            when(task.next_execution),
        )
    return table


def task_view(task: Task) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("Task", plain(task.id))
    grid.add_row("Name", plain(task.name))
    grid.add_row("Description", plain(task.description or "-"))
    grid.add_row("State", f"{task.state.value} ({'active' if task.active else 'inactive'})")
    grid.add_row("Next execution", when(task.next_execution))
    grid.add_row("Schedule", plain(json_text(task.schedule, indent=None)))
    grid.add_row("Job", plain(json_text(task.job.request, indent=None)))
    return grid


def types_table(types: Iterable[OperationTypeRecord]) -> Table:
    table = Table(box=None, header_style="bold")
    for column in ("NAME", "KIND", "TITLE", "PARAMETERS", "STEPS"):
        table.add_column(column, no_wrap=column == "NAME")
    for kind in types:
        properties = kind.parameters.get("properties") or {}
        table.add_row(
            plain(kind.name),
            "custom" if kind.custom else "built-in",
            plain(kind.title or ""),
            plain(", ".join(properties) or "-"),
            plain(", ".join(s.name for s in kind.steps) or "-"),
        )
    return table


def type_view(kind: OperationTypeRecord) -> RenderableType:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("Name", plain(kind.name))
    grid.add_row("Kind", "custom" if kind.custom else "built-in")
    grid.add_row("Title", plain(kind.title or "-"))
    grid.add_row("Description", plain(kind.description or "-"))
    grid.add_row("Steps", plain(", ".join(s.name for s in kind.steps) or "-"))
    return Group(grid, Text("Parameters (JSON-Schema):", style="bold"), _pretty(kind.parameters))


def _pretty(value: Any) -> Text:
    # Indented JSON keeps its newlines; any other control is escaped by json_text already.
    return Text(json_text(value))


def keys_table(keys: Iterable[ApiKey]) -> Table:
    table = Table(box=None, header_style="bold")
    for column in ("ID", "NAME", "ROLE", "DEVICE"):
        table.add_column(column, no_wrap=True)
    for key in keys:
        table.add_row(plain(key.id), plain(key.name), key.role.value, plain(key.device_id or "-"))
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
    header.append_text(plain(f"Job {job.id}", style="bold"))
    header.append("\n")
    header.append_text(plain(f"{job.request.name} on {target_of(job)}"))
    header.append("  ")
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
        parts.append(plain(note, style="yellow"))
    return Group(*parts)


def summary_line(job: Job) -> str:
    """The counters on one plain line (for logs and pipes, where no live view runs)."""
    s = job.report.summary
    return (
        f"{s.status.value:<11} {s.finished.total}/{s.total} closed: "
        f"successful {s.finished.successful}, error {s.finished.error}, "
        f"cancelled {s.finished.cancelled.total}; in progress {s.in_progress.total}"
    )
