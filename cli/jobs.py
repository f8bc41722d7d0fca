"""``fleetops jobs``: create, list, show, watch, pause, resume and cancel jobs (SPEC 3.1), and list
their operations (SPEC 3.2)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from cli import params
from cli.client import FleetClient
from cli.common import OutputOption, PageOption, SizeOption, build, client, handled
from cli.errors import UsageProblem
from cli.render import (
    Output,
    emit,
    job_view,
    jobs_table,
    operation_widths,
    operations_table,
    plain,
    print_json,
    print_json_stream,
    stderr,
    stdout,
)
from cli.watch import (
    DEFAULT_INTERVAL_S,
    DEFAULT_MAX_LISTED,
    DEFAULT_PATIENCE_S,
    FAILED_RESULTS,
    verdict,
    watch,
)
from models.enums import JobStatus, OperationStatus, ResultCode
from models.jobs import Job, JobEnvelope, JobPatch
from models.operations import Operation

app = typer.Typer(help="Jobs: one operation type run on a set of devices.", no_args_is_help=True)

JobId = Annotated[str, typer.Argument(help="the job's id")]
Interval = Annotated[
    float, typer.Option("--interval", min=0.1, help="seconds between two reads of the job")
]
WatchTimeout = Annotated[
    float | None,
    typer.Option(
        "--watch-timeout", min=1, help="give up watching after this many seconds (exit 3)"
    ),
]
MaxErrors = Annotated[
    int, typer.Option("--max-errors", min=0, help="list at most this many failed operations")
]
Patience = Annotated[
    float,
    typer.Option(
        "--patience",
        min=0,
        help="seconds to keep reconnecting when the API is unreachable or answers 5xx/429 "
        "(then exit 4)",
    ),
]


@app.command("create")
@handled
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="operation type, e.g. REBOOT_EQUIPMENT")],
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="a parameter key=value (value read as JSON if it is)"),
    ] = None,
    parameters_file: Annotated[
        Path | None, typer.Option("--parameters-file", help="the parameters as a JSON object")
    ] = None,
    tag: Annotated[
        list[str] | None, typer.Option("--tag", "-t", help="target every device with this tag")
    ] = None,
    device: Annotated[
        list[str] | None, typer.Option("--device", "-d", help="target this device id")
    ] = None,
    devices_file: Annotated[
        Path | None,
        typer.Option("--devices-file", help="device ids: one per line, CSV with id, or JSON"),
    ] = None,
    start: Annotated[
        str | None,
        typer.Option(help="not before: now, a delay (30s, 10m, 2h) or an ISO date with zone"),
    ] = None,
    stop: Annotated[
        str | None, typer.Option(help="deadline: a delay from the start, or an ISO date")
    ] = None,
    timeout: Annotated[
        str | None, typer.Option(help="time for a device to finish (operationParameters)")
    ] = None,
    ack_timeout: Annotated[
        str | None, typer.Option(help="time for a device to acknowledge the request")
    ] = None,
    retries: Annotated[int | None, typer.Option(min=0, help="re-sends after a failure")] = None,
    retries_delay: Annotated[str | None, typer.Option(help="time between two attempts")] = None,
    retry_on: Annotated[
        list[str] | None, typer.Option("--retry-on", help="retry only on this result code")
    ] = None,
    max_concurrency: Annotated[
        int | None, typer.Option(help="rollout: operations open at once")
    ] = None,
    max_per_minute: Annotated[
        int | None, typer.Option(help="rollout: operations started per minute")
    ] = None,
    abort_percent: Annotated[
        float | None,
        typer.Option(help="rollout: stop starting operations past this failure share (%)"),
    ] = None,
    abort_min_executed: Annotated[
        int | None, typer.Option(help="rollout: judge the failure share after this many")
    ] = None,
    inactive: Annotated[bool, typer.Option("--inactive", help="create it IDLE")] = False,
    notes: Annotated[str | None, typer.Option(help="free text (userNotes)")] = None,
    callback: Annotated[str | None, typer.Option(help="URL for lifecycle callbacks")] = None,
    request_file: Annotated[
        Path | None,
        typer.Option(help="a JSON job request to start from (the flags override its fields)"),
    ] = None,
    and_watch: Annotated[
        bool, typer.Option("--watch", help="then watch it (exit code as `jobs watch`)")
    ] = False,
    interval: Interval = DEFAULT_INTERVAL_S,
    patience: Patience = DEFAULT_PATIENCE_S,
    output: OutputOption = Output.TABLE,
) -> None:
    """Create a job: NAME on --tag(s) or --device(s)."""
    request = _base_request(request_file)
    request["name"] = name
    base = params.json_file(parameters_file) if parameters_file else {}
    if not isinstance(base, dict):
        raise UsageProblem(f"{parameters_file} must hold a JSON object")
    if param or base:
        request["parameters"] = params.parameters(
            param or [], {**request.get("parameters", {}), **base}
        )
    if tag or device or devices_file:
        request["target"] = _target(tag or [], device or [], devices_file)
    elif "target" not in request and not inactive:
        raise UsageProblem("give a target: --tag, --device or --devices-file")
    if inactive:
        request["active"] = False
    _merge(request, "schedule", _schedule(start, stop))
    _merge(
        request,
        "operationParameters",
        _operation_parameters(timeout, ack_timeout, retries, retries_delay, retry_on),
    )
    _merge(
        request,
        "rollout",
        _rollout(max_concurrency, max_per_minute, abort_percent, abort_min_executed),
    )
    request.update({k: v for k, v in (("userNotes", notes), ("callback", callback)) if v})
    body = build(JobEnvelope, {"job": {"request": request}}, "job request")
    with client(ctx) as api:
        job = api.create_job(body)
        if and_watch:
            stderr().print(plain(f"Created job {job.id}"))
            _watch(api, job.id, interval, None, DEFAULT_MAX_LISTED, patience, output)
            return
    _show_changed(job, "Created", output)


def _base_request(path: Path | None) -> dict[str, Any]:
    """The request of ``--request-file`` (a job request, or the whole ``{"job":{"request"}}``
    body): for what no flag says, such as ``rollout.rate`` or ``entitiesWithParameters``."""
    if path is None:
        return {}
    data = params.json_file(path)
    if isinstance(data, dict) and isinstance(data.get("job"), dict):
        data = data["job"].get("request")
    if not isinstance(data, dict):
        raise UsageProblem(f"{path} must hold a job request (a JSON object)")
    return data


def _merge(request: dict[str, Any], field: str, given: dict[str, Any]) -> None:
    """Put the flags' part of ``field`` over the request file's."""
    if given:
        current = request.get(field)
        request[field] = {**current, **given} if isinstance(current, dict) else given


def _target(tags: list[str], devices: list[str], devices_file: Path | None) -> dict[str, Any]:
    ids = [*devices, *(params.device_ids(devices_file) if devices_file else [])]
    if tags and ids:
        raise UsageProblem("target either --tag(s) or devices (--device, --devices-file), not both")
    if not (tags or ids):
        raise UsageProblem("give a target: --tag, --device or --devices-file")
    return {"append": {"tags": tags} if tags else {"entities": ids}}


def _schedule(start: str | None, stop: str | None) -> dict[str, Any]:
    schedule: dict[str, Any] = {}
    if start is not None:
        schedule["start"] = params.moment(start, "--start")
    if stop is not None:
        schedule["stop"] = params.moment(stop, "--stop")
        if not schedule["stop"]:
            raise UsageProblem("--stop takes a delay or a date, not now")
    return schedule


def _operation_parameters(
    timeout: str | None,
    ack_timeout: str | None,
    retries: int | None,
    retries_delay: str | None,
    retry_on: list[str] | None,
) -> dict[str, Any]:
    given: dict[str, Any] = {
        "timeout": params.millis(timeout, "--timeout") if timeout else None,
        "ackTimeout": params.millis(ack_timeout, "--ack-timeout") if ack_timeout else None,
        "retries": retries,
        "retriesDelay": params.millis(retries_delay, "--retries-delay") if retries_delay else None,
        "retryResultList": [code.upper() for code in retry_on] if retry_on else None,
    }
    return {k: v for k, v in given.items() if v is not None}


def _rollout(
    max_concurrency: int | None,
    max_per_minute: int | None,
    abort_percent: float | None,
    abort_min_executed: int | None,
) -> dict[str, Any]:
    rollout: dict[str, Any] = {
        k: v
        for k, v in (("maxConcurrency", max_concurrency), ("maxPerMinute", max_per_minute))
        if v is not None
    }
    if abort_percent is not None:
        rollout["abort"] = {"failureThresholdPercent": abort_percent}
        if abort_min_executed is not None:
            rollout["abort"]["minExecuted"] = abort_min_executed
    elif abort_min_executed is not None:
        raise UsageProblem("--abort-min-executed goes with --abort-percent")
    return rollout


def _show_changed(job: Job, verb: str, output: Output) -> None:
    if output is Output.JSON:
        print_json(job)
        return
    out = stdout()
    out.print(Text.assemble(f"{verb} job ", plain(job.id, style="bold")))
    out.print(job_view(job))


@app.command("list")
@handled
def list_jobs(
    ctx: typer.Context,
    status: Annotated[
        JobStatus | None, typer.Option(case_sensitive=False, help="only jobs in this status")
    ] = None,
    name: Annotated[str | None, typer.Option(help="only jobs of this operation type")] = None,
    user: Annotated[str | None, typer.Option(help="only jobs created by this key name")] = None,
    task: Annotated[str | None, typer.Option(help="only jobs started by this task id")] = None,
    page: PageOption = 1,
    size: SizeOption = 50,
    output: OutputOption = Output.TABLE,
) -> None:
    """List jobs, newest first."""
    with client(ctx) as api:
        found = api.jobs(
            page, size, status=status.value if status else None, name=name, user=user, taskId=task
        )
    emit(output, found, jobs_table(found.jobs))
    if output is Output.TABLE and found.page.of and found.page.of > page:
        stderr().print(f"page {page} of {found.page.of} (--page {page + 1} for more)")


@app.command("show")
@handled
def show(ctx: typer.Context, job_id: JobId, output: OutputOption = Output.TABLE) -> None:
    """A job's request, dates and counters."""
    with client(ctx) as api:
        job = api.job(job_id)
    emit(output, job, job_view(job))


@app.command("watch")
@handled
def watch_command(
    ctx: typer.Context,
    job_id: JobId,
    interval: Interval = DEFAULT_INTERVAL_S,
    watch_timeout: WatchTimeout = None,
    max_errors: MaxErrors = DEFAULT_MAX_LISTED,
    patience: Patience = DEFAULT_PATIENCE_S,
    output: OutputOption = Output.TABLE,
) -> None:
    """Follow a job live until it closes. Exit 0 when it FINISHED with every operation
    successful, 1 when it closed otherwise, 3 when --watch-timeout ran out, 4 when the API
    stayed unreachable for --patience seconds."""
    with client(ctx) as api:
        _watch(api, job_id, interval, watch_timeout, max_errors, patience, output)


def _watch(
    api: FleetClient,
    job_id: str,
    interval: float,
    timeout: float | None,
    max_errors: int,
    patience: float,
    output: Output,
) -> None:
    # With --output json the live view goes to stderr and the closed job to stdout.
    console = stderr() if output is Output.JSON else stdout()
    result = watch(
        api,
        job_id,
        console,
        interval_s=interval,
        timeout_s=timeout,
        max_listed=max_errors,
        patience_s=patience,
    )
    if output is Output.JSON:
        print_json(result.job)
    console.print(plain(verdict(result), style="green" if result.exit_code == 0 else "red"))
    raise typer.Exit(result.exit_code)


def _change(
    ctx: typer.Context, job_id: str, patch: dict[str, Any], verb: str, output: Output
) -> None:
    with client(ctx) as api:
        job = api.change_job(job_id, build(JobPatch, patch, "change"))
    _show_changed(job, verb, output)


@app.command("pause")
@handled
def pause(ctx: typer.Context, job_id: JobId, output: OutputOption = Output.TABLE) -> None:
    """Pause a job (active false): nothing more is sent; operations already sent run on."""
    _change(ctx, job_id, {"active": False}, "Paused", output)


@app.command("resume")
@handled
def resume(ctx: typer.Context, job_id: JobId, output: OutputOption = Output.TABLE) -> None:
    """Resume a paused job, or activate an idle one (active true)."""
    _change(ctx, job_id, {"active": True}, "Resumed", output)


@app.command("cancel")
@handled
def cancel(ctx: typer.Context, job_id: JobId, output: OutputOption = Output.TABLE) -> None:
    """Cancel a job: open operations are cancelled byUser (CANCELLING, then CANCELLED)."""
    with client(ctx) as api:
        job = api.cancel_job(job_id)
    _show_changed(job, "Cancelling", output)


@app.command("operations")
@handled
def operations(
    ctx: typer.Context,
    job_id: JobId,
    result: Annotated[
        str | None,
        typer.Option(help="only this result code, or ERROR for every result but SUCCESSFUL"),
    ] = None,
    status: Annotated[
        OperationStatus | None, typer.Option(case_sensitive=False, help="only this status")
    ] = None,
    page: PageOption = 1,
    size: SizeOption = 100,
    every: Annotated[
        bool, typer.Option("--all", help="every page, printed as it comes, not just --page")
    ] = False,
    output: OutputOption = Output.TABLE,
) -> None:
    """The per-device operations of a job."""
    clauses = _operation_filter(job_id, result, status)
    with client(ctx) as api:
        if every:
            count = _stream_operations(api.operation_pages(clauses), output)
        else:
            if len(clauses) > 1:
                found = api.search_operations(clauses, page, size).operations
            else:
                found = api.job_operations(job_id, page, size).operations
            emit(output, {"operations": found}, operations_table(found))
            count = len(found)
    if output is Output.TABLE:
        stderr().print(f"{count} operation(s)")


def _stream_operations(pages: Iterator[list[Operation]], output: Output) -> int:
    """Every page printed as it arrives, none kept (a job of a million operations): JSON as
    ``print_json`` prints ``{"operations": [...]}``, a table per page whose columns line up
    (the first page's widths). Returns how many were printed."""
    count = 0
    if output is Output.JSON:

        def every() -> Iterator[Operation]:
            nonlocal count
            for found in pages:
                count += len(found)
                yield from found

        print_json_stream({"operations": every()})
        return count
    out, widths = stdout(), None
    for found in pages:
        if not found:
            continue
        widths = widths or operation_widths(found)
        out.print(operations_table(found, widths, header=count == 0))
        count += len(found)
    if count == 0:
        out.print(operations_table([]))
    return count


def _operation_filter(
    job_id: str, result: str | None, status: OperationStatus | None
) -> list[dict[str, Any]]:
    clauses: list[dict[str, Any]] = [{"eq": {"jobId": job_id}}]
    if result is not None:
        wanted = result.upper()
        if wanted == "ERROR":
            clauses.append({"in": {"operationResult": FAILED_RESULTS}})
        elif wanted in ResultCode.__members__:
            clauses.append({"eq": {"operationResult": wanted}})
        else:
            codes = ", ".join(ResultCode.__members__)
            raise UsageProblem(f"--result takes ERROR or a result code ({codes}), not {result!r}")
    if status is not None:
        clauses.append({"eq": {"operationStatus": status.value}})
    return clauses
