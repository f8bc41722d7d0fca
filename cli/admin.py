"""``fleetops tasks``, ``fleetops types`` and ``fleetops keys``: schedules that create jobs
(SPEC 3.3), operation types (SPEC 3.4) and API keys (SPEC 2)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from cli import params
from cli.common import OutputOption, PageOption, SizeOption, build, client, handled
from cli.errors import UsageProblem
from cli.render import (
    Output,
    emit,
    jobs_table,
    keys_table,
    plain,
    print_json,
    stdout,
    task_view,
    tasks_table,
    type_view,
    types_table,
)
from models.devices import ApiKeyIn
from models.enums import Role
from models.tasks import TaskDefinition

tasks = typer.Typer(help="Tasks: schedules that create jobs.", no_args_is_help=True)
types = typer.Typer(help="Operation types: the commands devices understand.", no_args_is_help=True)
keys = typer.Typer(help="API keys (admin only).", no_args_is_help=True)

TaskId = Annotated[str, typer.Argument(help="the task's id")]
_EVERY = re.compile(r"^\s*(\d+)\s*(m|min|minutes?|h|hours?|d|days?)\s*$", re.IGNORECASE)
_UNITS = {"m": "MINUTES", "h": "HOURS", "d": "DAYS"}

# -- tasks ----------------------------------------------------------------------------------------


@tasks.command("list")
@handled
def list_tasks(
    ctx: typer.Context,
    page: PageOption = 1,
    size: SizeOption = 100,
    output: OutputOption = Output.TABLE,
) -> None:
    """List tasks, newest first."""
    with client(ctx) as api:
        found = api.tasks(page, size)
    emit(output, found, tasks_table(found.tasks))


@tasks.command("show")
@handled
def show_task(ctx: typer.Context, task_id: TaskId, output: OutputOption = Output.TABLE) -> None:
    """A task: its schedule, state, next execution and job template."""
    with client(ctx) as api:
        task = api.task(task_id)
    emit(output, task, task_view(task))


@tasks.command("jobs")
@handled
def task_jobs(
    ctx: typer.Context,
    task_id: TaskId,
    page: PageOption = 1,
    size: SizeOption = 50,
    output: OutputOption = Output.TABLE,
) -> None:
    """The jobs a task created, newest first."""
    with client(ctx) as api:
        found = api.task_jobs(task_id, page, size)
    emit(output, found, jobs_table(found.jobs))


@tasks.command("create")
@handled
def create_task(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="the task's name")] = None,
    file: Annotated[
        Path | None,
        typer.Option("--file", "-f", help='the whole task as JSON ({"task": {...}} or the task)'),
    ] = None,
    operation: Annotated[str | None, typer.Option(help="the jobs' operation type")] = None,
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="key=value")] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", "-t", help="target tag")] = None,
    device: Annotated[list[str] | None, typer.Option("--device", "-d", help="target id")] = None,
    cron: Annotated[str | None, typer.Option(help="a 5-field cron expression")] = None,
    every: Annotated[str | None, typer.Option(help="a period: 30m, 2h, 1d")] = None,
    daily_at: Annotated[str | None, typer.Option(help="every day at HH:MM:SSZ")] = None,
    start: Annotated[str | None, typer.Option(help="first run not before (ISO date, zone)")] = None,
    stop: Annotated[str | None, typer.Option(help="no run after (ISO date, zone)")] = None,
    executions: Annotated[int | None, typer.Option(min=1, help="stop after n jobs")] = None,
    timezone: Annotated[str | None, typer.Option(help="zone of --cron/--daily-at")] = None,
    description: Annotated[str | None, typer.Option(help="free text")] = None,
    inactive: Annotated[bool, typer.Option("--inactive", help="create it paused")] = False,
    output: OutputOption = Output.TABLE,
) -> None:
    """Create a task: from --file, or NAME with --operation, a target and a schedule."""
    if file is not None:
        data = params.json_file(file)
        definition = data.get("task", data) if isinstance(data, dict) else data
    else:
        if not (name and operation):
            raise UsageProblem("give --file, or a NAME with --operation and a target")
        job: dict[str, Any] = {"name": operation, "parameters": params.parameters(param or [])}
        job["target"] = _target(tag or [], device or [])
        schedule = _task_schedule(cron, every, daily_at, start, stop, executions, timezone)
        definition = {"name": name, "schedule": schedule, "job": {"request": job}}
        if description:
            definition["description"] = description
        if inactive:
            definition["active"] = False
    task = build(TaskDefinition, definition, "task")
    with client(ctx) as api:
        created = api.create_task(task)
    if output is Output.JSON:
        print_json(created)
    else:
        stdout().print(Text.assemble("Created task ", plain(created.id, style="bold")))
        stdout().print(task_view(created))


def _target(tags: list[str], devices: list[str]) -> dict[str, Any]:
    if bool(tags) == bool(devices):
        raise UsageProblem("target either --tag(s) or --device(s)")
    return {"append": {"tags": tags} if tags else {"entities": devices}}


def _task_schedule(
    cron: str | None,
    every: str | None,
    daily_at: str | None,
    start: str | None,
    stop: str | None,
    executions: int | None,
    timezone: str | None,
) -> dict[str, Any]:
    if sum(x is not None for x in (cron, every, daily_at)) > 1:
        raise UsageProblem("give one of --cron, --every, --daily-at (none: once at --start)")
    schedule: dict[str, Any] = {}
    if start:
        schedule["start"] = {"date": start}
    if stop or executions:
        schedule["stop"] = {"date": stop} if stop else {"executions": executions}
    if cron:
        schedule["cron"] = cron
    elif every:
        schedule["repeating"] = {"period": _period(every)}
    elif daily_at:
        schedule["repeating"] = {"pattern": {"time": daily_at}}
    elif not start:
        raise UsageProblem("a task needs --cron, --every, --daily-at or --start")
    if timezone:
        schedule["timezone"] = timezone
    return schedule


def _period(text: str) -> dict[str, Any]:
    match = _EVERY.match(text)
    if not match:
        raise UsageProblem(f"--every takes a period such as 30m, 2h or 1d, not {text!r}")
    return {"each": int(match.group(1)), "unit": _UNITS[match.group(2)[0].lower()]}


@tasks.command("delete")
@handled
def delete_task(ctx: typer.Context, task_id: TaskId) -> None:
    """Delete a task: it creates no more jobs; those it created stay."""
    with client(ctx) as api:
        api.delete_task(task_id)
    stdout().print(plain(f"Deleted task {task_id}"))


# -- operation types ------------------------------------------------------------------------------


@types.command("list")
@handled
def list_types(ctx: typer.Context, output: OutputOption = Output.TABLE) -> None:
    """The built-in catalog and the custom types."""
    with client(ctx) as api:
        found = api.operation_types()
    emit(output, {"operationTypes": found}, types_table(found))


@types.command("show")
@handled
def show_type(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="the type's name, e.g. REBOOT_EQUIPMENT")],
    output: OutputOption = Output.TABLE,
) -> None:
    """One operation type with its parameter schema and steps."""
    with client(ctx) as api:
        found = api.operation_type(name)
    emit(output, found, type_view(found))


# -- keys -----------------------------------------------------------------------------------------


@keys.command("list")
@handled
def list_keys(ctx: typer.Context, output: OutputOption = Output.TABLE) -> None:
    """Every key, without secrets."""
    with client(ctx) as api:
        found = api.keys()
    emit(output, {"apiKeys": found}, keys_table(found))


@keys.command("create")
@handled
def create_key(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="who or what uses the key, e.g. ci-bot")],
    role: Annotated[Role, typer.Option(case_sensitive=False, help="admin, operator or viewer")],
    output: OutputOption = Output.TABLE,
) -> None:
    """Create a key; its secret is shown this once."""
    wanted = build(ApiKeyIn, {"name": name, "role": role}, "key")
    with client(ctx) as api:
        created = api.create_key(wanted)
    if output is Output.JSON:
        print_json(created)
        return
    out = stdout()
    out.print(keys_table([created]))
    out.print(plain(f"API key (shown once): {created.api_key}"), soft_wrap=True)


@keys.command("delete")
@handled
def delete_key(
    ctx: typer.Context, key_id: Annotated[str, typer.Argument(help="the key's id")]
) -> None:
    """Revoke a key at once."""
    with client(ctx) as api:
        api.delete_key(key_id)
    stdout().print(plain(f"Deleted key {key_id}"))
