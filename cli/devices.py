"""``fleetops devices``: provision devices from a file (SPEC 3.5), list, show and delete them."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from cli import params
from cli.client import FleetClient
from cli.common import OutputOption, PageOption, SizeOption, build, client, handled
from cli.errors import EXIT_FAILED, ApiProblem, CliProblem, UsageProblem
from cli.render import (
    Output,
    as_json,
    devices_table,
    emit,
    plain,
    print_json_stream,
    stderr,
    stdout,
)
from models.devices import BulkResult, Device, DeviceIn, DeviceUpdate

app = typer.Typer(help="Devices: the provisioned inventory jobs target.", no_args_is_help=True)

# A CSV row's columns: the API's bulk header (tags separated by ``;``).
CSV_COLUMNS = ("id", "type", "tags", "address")
DEFAULT_BATCH = 500
# The API takes at most 100,000 devices and 10 MiB per bulk request (docs/api.md): 10,000
# devices of the longest ids, tags and addresses stay under the body limit.
MAX_BATCH = 10_000
MAX_LISTED_PROBLEMS = 10


class Listed:
    """A list an import reports, of any length: its count and first few items in memory, every
    item (when ``kept``, for ``--output json``) in a temporary file, one JSON value a line. New
    devices' south keys may go there: the file is private to the user and deleted on close."""

    def __init__(self, kept: bool) -> None:
        self.count = 0
        self.first: list[Any] = []
        self._file: Any = None
        if kept:  # closed by close(), once the import's report is out
            self._file = tempfile.SpooledTemporaryFile(  # noqa: SIM115
                max_size=1 << 20, mode="w+", encoding="utf-8"
            )

    def add(self, item: Any) -> None:
        self.count += 1
        if len(self.first) < MAX_LISTED_PROBLEMS:
            self.first.append(item)
        if self._file is not None:
            self._file.write(json.dumps(item) + "\n")

    def __iter__(self) -> Iterator[Any]:
        if self._file is None:
            raise RuntimeError("a list that was not kept")
        self._file.seek(0)
        for line in self._file:
            yield json.loads(line)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


class Imported:
    """What an import did, row by row."""

    def __init__(self, rows: int, kept: bool) -> None:
        self.rows = rows
        self.created = Listed(kept)  # the new devices with their south keys
        self.updated = Listed(kept)  # ids
        self.existing = Listed(kept)  # ids
        self.refused = Listed(kept)  # {"id", "message"}: rows the API did not take

    @property
    def done(self) -> int:
        return self.created.count + self.updated.count + self.existing.count

    def print_json(self) -> None:
        print_json_stream(
            {
                "rows": self.rows,
                "created": iter(self.created),
                "updated": iter(self.updated),
                "alreadyProvisioned": iter(self.existing),
                "refused": iter(self.refused),
            }
        )

    def close(self) -> None:
        for listed in (self.created, self.updated, self.existing, self.refused):
            listed.close()


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
        int, typer.Option(min=1, max=MAX_BATCH, help="devices per bulk request")
    ] = DEFAULT_BATCH,
    output: OutputOption = Output.TABLE,
) -> None:
    """Provision every device of FILE, in batches, with a progress bar. Exit 1 when the API
    refused some rows."""
    with params.regular_file(file) as path, _progress() as progress:
        rows = check_devices(path, progress)
        result = Imported(rows, kept=output is Output.JSON)
        try:
            with client(ctx) as api, _keys_writer(keys_file) as keys:
                sender = Sender(api, batch_size, update_existing, result, keys)
                try:
                    sender.send(path, progress)
                except CliProblem:
                    progress.stop()
                    stderr().print(f"stopped after {result.done} of {result.rows} rows")
                    if output is Output.JSON:
                        result.print_json()  # the keys of the devices created so far
                    raise
            progress.stop()
            if output is Output.JSON:
                result.print_json()
            else:
                _report(result, keys_file)
        finally:
            result.close()
    if result.refused.count:
        raise typer.Exit(EXIT_FAILED)


def _progress() -> Progress:
    columns = (
        TextColumn("{task.description:<12}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    return Progress(*columns, console=stderr(), transient=False)


class Sender:
    """Sends the file's devices in batches and sorts the API's answers into ``result``."""

    def __init__(
        self,
        api: FleetClient,
        batch_size: int,
        update_existing: bool,
        result: Imported,
        keys: Any,  # a csv writer, or None
    ) -> None:
        self.api = api
        self.batch_size = batch_size
        self.update_existing = update_existing
        self.result = result
        self.keys = keys

    def send(self, path: Path, progress: Progress) -> None:
        """One batch in memory at a time: read, sent, answered, then the next."""
        task = progress.add_task("provisioning", total=self.result.rows)
        batch: dict[str, DeviceIn] = {}
        with device_rows(path) as rows:
            for number, row in rows:
                device = build(DeviceIn, row, f"device ({_where(path, number)})")
                batch[device.id] = device
                if len(batch) == self.batch_size:
                    self._send(batch, progress, task)
                    batch = {}
        if batch:
            self._send(batch, progress, task)

    def _send(self, batch: dict[str, DeviceIn], progress: Progress, task: TaskID) -> None:
        answer = self.api.provision(list(batch.values()))
        self._sort(batch, answer)
        progress.advance(task, len(batch))

    def _sort(self, batch: dict[str, DeviceIn], answer: BulkResult) -> None:
        """Each row of the batch is created, already there, or refused; an answer that does not
        account for a row (or names rows that were not sent) is reported, never a crash."""
        unanswered = dict(batch)
        for device in answer.created:
            self.result.created.add(as_json(device))
            if self.keys is not None:
                self.keys.writerow([device.id, device.api_key])
            if unanswered.pop(device.id, None) is None:
                self._refuse(device.id, "created, but not sent in this batch (unexpected answer)")
        for error in answer.errors:
            device_id = error.get("id") if isinstance(error, dict) else None
            message = str(error.get("message") or "") if isinstance(error, dict) else ""
            row = unanswered.pop(device_id, None) if isinstance(device_id, str) else None
            if row is None:
                self._refuse(str(device_id or "?"), f"unexpected answer: {error}")
            elif not message or "exist" in message.lower():
                self._existing(row)
            else:
                self._refuse(row.id, message)
        for device_id in unanswered:
            self._refuse(device_id, "the API did not say what it did with this row")

    def _existing(self, device: DeviceIn) -> None:
        if not self.update_existing:
            self.result.existing.add(device.id)
            return
        change = DeviceUpdate(type=device.type, tags=device.tags, address=device.address)
        try:
            self.api.change_device(device.id, change)
        except ApiProblem as problem:
            if problem.transient:
                raise
            self._refuse(device.id, f"not updated: {problem}")  # e.g. deleted meanwhile
            return
        self.result.updated.add(device.id)

    def _refuse(self, device_id: str, message: str) -> None:
        self.result.refused.add({"id": device_id, "message": message})


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
    out, err = stdout(), stderr()
    out.print(f"{result.created.count} of {result.rows} devices provisioned")
    if result.updated.count:
        out.print(f"{result.updated.count} already provisioned, updated from the file")
    if result.existing.count:
        err.print(
            plain(
                f"{result.existing.count} already provisioned, left as they are "
                f"(--update-existing applies the file): {_sample(result.existing)}"
            )
        )
    if result.refused.count:
        err.print(plain(f"{result.refused.count} row(s) refused by the API:"), style="red")
        for refused in result.refused.first:
            err.print(plain(f"  {refused['id']}: {refused['message']}"))
        if result.refused.count > MAX_LISTED_PROBLEMS:
            more = result.refused.count - MAX_LISTED_PROBLEMS
            err.print(f"  … and {more} more (--output json lists them all)")
    if result.created.count and keys_file is None:
        err.print(
            "note: the new devices' south keys are shown only once: "
            "--keys-file saves them, --output json prints them",
        )
    elif keys_file is not None:
        out.print(plain(f"south keys written to {keys_file}"))


def _sample(listed: Listed) -> str:
    more = listed.count - len(listed.first)
    return ", ".join(listed.first) + (f" … and {more} more" if more > 0 else "")


# -- reading the file -----------------------------------------------------------------------------


def check_devices(path: Path, progress: Progress) -> int:
    """Every row of the file checked (the API's device model, no id twice) before anything is
    sent, one row at a time: the number of rows, or a ``UsageProblem`` listing the bad ones.

    Memory: the rows are not kept; only a 96-bit digest of each id is, for the check of ids
    listed twice (about 70 bytes a row: 70 MB for a million rows)."""
    task = progress.add_task("checking", total=None)
    problems: list[str] = []
    bad, count = 0, 0
    seen: set[int] = set()
    with device_rows(path) as rows:
        for number, row in rows:
            count += 1
            if count % 1000 == 0:
                progress.update(task, completed=count)
            problem = _problem(row, seen)
            if problem:
                bad += 1
                if len(problems) < MAX_LISTED_PROBLEMS:
                    problems.append(f"{_where(path, number)}: {problem}")
    progress.update(task, completed=count, total=count)
    if bad:
        more = bad - len(problems)
        raise UsageProblem(
            f"nothing imported: {bad} bad row(s)\n"
            + "\n".join(problems)
            + (f"\n… and {more} more" if more > 0 else "")
        )
    if not count:
        raise UsageProblem(f"{path} lists no devices")
    return count


def _problem(row: Any, seen: set[int]) -> str | None:
    try:
        device = build(DeviceIn, row, "device")
    except UsageProblem as exc:
        return str(exc)
    digest = int.from_bytes(hashlib.blake2b(device.id.encode(), digest_size=12).digest())
    if digest in seen:
        return f"device {device.id} is listed twice"
    seen.add(digest)
    return None


@contextlib.contextmanager
def device_rows(path: Path) -> Iterator[Iterator[tuple[int, Any]]]:
    """The rows of a CSV or JSON file as ``(line or item number, row)``, read one at a time."""
    with params.text_file(path) as stream:
        is_json = path.suffix.lower() == ".json" or params.first_char(stream) in ("[", "{")
        if is_json:
            items = params.JsonStream(stream, path).items("devices")
            yield enumerate(items, start=1)
        else:
            yield _csv_rows(stream, path)


def _where(path: Path, number: int) -> str:
    return f"{path.name} {'line' if path.suffix.lower() == '.csv' else 'item'} {number}"


def _csv_rows(text: TextIO, path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
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
    return _csv_lines(reader)


def _csv_lines(reader: csv.DictReader[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    for line in reader:
        row: dict[str, Any] = {"id": (line.get("id") or "").strip()}
        for column in ("type", "address"):
            if (line.get(column) or "").strip():
                row[column] = line[column].strip()
        tags = (line.get("tags") or "").split(";")
        row["tags"] = [t.strip() for t in tags if t.strip()]
        yield reader.line_num, row


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
    stdout().print(plain(f"Deleted device {device_id}"))
