"""``fleetops devices``: provision devices from a file (SPEC 3.5), list, show and delete them."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cli import params
from cli.client import FleetClient
from cli.common import OutputOption, PageOption, SizeOption, build, client, handled
from cli.errors import CliProblem, UsageProblem
from cli.render import Output, devices_table, emit, print_json, stderr, stdout
from models.devices import Device, DeviceIn, DeviceUpdate, ProvisionedDevice

app = typer.Typer(help="Devices: the provisioned inventory jobs target.", no_args_is_help=True)

# A CSV row's columns: the API's bulk header (tags separated by ``;``).
CSV_COLUMNS = ("id", "type", "tags", "address")
DEFAULT_BATCH = 500
MAX_LISTED_PROBLEMS = 10


@dataclass
class Imported:
    """What an import did, row by row."""

    rows: int
    created: list[ProvisionedDevice] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)

    @property
    def done(self) -> int:
        return len(self.created) + len(self.updated) + len(self.existing)

    def as_json(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "created": self.created,
            "updated": self.updated,
            "alreadyProvisioned": self.existing,
        }


@app.command("import")
@handled
def import_devices(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="a .csv (header id[,type,tags,address]) or .json")],
    keys_file: Annotated[
        Path | None,
        typer.Option(help="write each new device's south key here (CSV id,apiKey; shown once)"),
    ] = None,
    update_existing: Annotated[
        bool, typer.Option(help="apply the file's type, tags and address to devices that exist")
    ] = False,
    batch_size: Annotated[
        int, typer.Option(min=1, max=10_000, help="devices per bulk request")
    ] = DEFAULT_BATCH,
    output: OutputOption = Output.TABLE,
) -> None:
    """Provision every device of FILE, in batches, with a progress bar."""
    devices = read_devices(file)
    result = Imported(rows=len(devices))
    with client(ctx) as api, _keys_writer(keys_file) as keys:
        try:
            _provision(api, devices, batch_size, update_existing, result, keys)
        except CliProblem:
            stderr().print(f"stopped after {result.done} of {result.rows} rows")
            raise
    if output is Output.JSON:
        print_json(result.as_json())
    else:
        _report(result, keys_file)


def _provision(
    api: FleetClient,
    devices: list[DeviceIn],
    batch_size: int,
    update_existing: bool,
    result: Imported,
    keys: Any,  # a csv writer, or None
) -> None:
    columns = (
        TextColumn("provisioning"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    by_id = {d.id: d for d in devices}
    with Progress(*columns, console=stderr(), transient=False) as progress:
        task = progress.add_task("devices", total=len(devices))
        for start in range(0, len(devices), batch_size):
            batch = devices[start : start + batch_size]
            answer = api.provision(batch)
            result.created += answer.created
            if keys is not None:
                keys.writerows([d.id, d.api_key] for d in answer.created)
            for error in answer.errors:
                _existing(api, by_id[error["id"]], update_existing, result)
            progress.advance(task, len(batch))


def _existing(api: FleetClient, device: DeviceIn, update: bool, result: Imported) -> None:
    if not update:
        result.existing.append(device.id)
        return
    change = DeviceUpdate(type=device.type, tags=device.tags, address=device.address)
    api.change_device(device.id, change)
    result.updated.append(device.id)


@contextlib.contextmanager
def _keys_writer(path: Path | None) -> Iterator[Any]:
    if path is None:
        yield None
        return
    try:
        # Owner-only: each key acts for its device.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as exc:
        raise UsageProblem(f"cannot write {path}: {exc}") from exc
    with os.fdopen(fd, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["id", "apiKey"])
        yield writer


def _report(result: Imported, keys_file: Path | None) -> None:
    out = stdout()
    out.print(f"{len(result.created)} of {result.rows} devices provisioned", highlight=False)
    if result.updated:
        out.print(f"{len(result.updated)} already provisioned, updated from the file")
    if result.existing:
        sample = ", ".join(result.existing[:MAX_LISTED_PROBLEMS])
        more = len(result.existing) - MAX_LISTED_PROBLEMS
        stderr().print(
            f"{len(result.existing)} already provisioned, left as they are "
            f"(--update-existing applies the file): {sample}"
            + (f" … and {more} more" if more > 0 else ""),
            highlight=False,
        )
    if result.created and keys_file is None:
        stderr().print(
            "note: the new devices' south keys are shown only once: "
            "--keys-file saves them, --output json prints them",
        )
    elif keys_file is not None:
        out.print(f"south keys written to {keys_file}")


# -- reading the file -----------------------------------------------------------------------------


def read_devices(path: Path) -> list[DeviceIn]:
    """The devices of a CSV or JSON file, every row checked before anything is sent."""
    text = params.read_text(path)
    is_json = path.suffix.lower() == ".json" or text.lstrip()[:1] in ("[", "{")
    rows = _json_rows(text, path) if is_json else _csv_rows(io.StringIO(text), path)
    devices, problems, seen = [], [], set()
    for number, row in rows:
        try:
            device = build(DeviceIn, row, "device")
        except UsageProblem as exc:
            problems.append(f"{_where(path, number)}: {exc}")
            continue
        if device.id in seen:
            problems.append(f"{_where(path, number)}: device {device.id} is listed twice")
        seen.add(device.id)
        devices.append(device)
    if problems:
        more = len(problems) - MAX_LISTED_PROBLEMS
        listed = "\n".join(problems[:MAX_LISTED_PROBLEMS])
        raise UsageProblem(
            f"nothing imported: {len(problems)} bad row(s)\n{listed}"
            + (f"\n… and {more} more" if more > 0 else "")
        )
    if not devices:
        raise UsageProblem(f"{path} lists no devices")
    return devices


def _where(path: Path, number: int) -> str:
    return f"{path.name} {'line' if path.suffix.lower() == '.csv' else 'item'} {number}"


def _csv_rows(text: TextIO, path: Path) -> list[tuple[int, dict[str, Any]]]:
    reader = csv.DictReader(text)
    header = [c.strip() for c in reader.fieldnames or []]
    if "id" not in header:
        raise UsageProblem(f"{path}: the first line must be a header with an 'id' column")
    unknown = [c for c in header if c not in CSV_COLUMNS]
    if unknown:
        raise UsageProblem(
            f"{path}: unknown column(s) {', '.join(unknown)} (known: {', '.join(CSV_COLUMNS)})"
        )
    reader.fieldnames = header
    rows = []
    for line in reader:
        row: dict[str, Any] = {"id": (line.get("id") or "").strip()}
        for column in ("type", "address"):
            if (line.get(column) or "").strip():
                row[column] = line[column].strip()
        tags = (line.get("tags") or "").split(";")
        row["tags"] = [t.strip() for t in tags if t.strip()]
        rows.append((reader.line_num, row))
    return rows


def _json_rows(text: str, path: Path) -> list[tuple[int, dict[str, Any]]]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise UsageProblem(f"{path} is not valid JSON: {exc}") from exc
    if isinstance(data, dict) and isinstance(data.get("devices"), list):
        data = data["devices"]
    if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
        raise UsageProblem(f"{path}: give a JSON array of devices (objects with an id)")
    return list(enumerate(data, start=1))


# -- reading the inventory ------------------------------------------------------------------------


@app.command("list")
@handled
def list_devices(
    ctx: typer.Context,
    tag: Annotated[str | None, typer.Option(help="only devices with this tag")] = None,
    page: PageOption = 1,
    size: SizeOption = 100,
    output: OutputOption = Output.TABLE,
) -> None:
    """List provisioned devices."""
    with client(ctx) as api:
        found = api.devices(tag, page, size)
    emit(output, found, devices_table(found.devices))
    pages = found.page.get("of")
    if output is Output.TABLE and pages and pages > page:
        stderr().print(f"page {page} of {pages} (--page {page + 1} for more)")


@app.command("show")
@handled
def show(
    ctx: typer.Context,
    device_id: Annotated[str, typer.Argument(help="the device's id")],
    output: OutputOption = Output.TABLE,
) -> None:
    """One device."""
    with client(ctx) as api:
        device: Device = api.device(device_id)
    emit(output, device, devices_table([device]))


@app.command("delete")
@handled
def delete(
    ctx: typer.Context, device_id: Annotated[str, typer.Argument(help="the device's id")]
) -> None:
    """Delete a device (its south key stops working at once)."""
    with client(ctx) as api:
        api.delete_device(device_id)
    stdout().print(f"Deleted device {device_id}", highlight=False)
