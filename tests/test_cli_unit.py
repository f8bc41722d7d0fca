"""The ``fleetops`` CLI without a server: what it prints (server text shown, never obeyed),
how ``jobs watch`` rides out an unreachable API, and how ``devices import`` and
``jobs operations --all`` stream files and pages of any size. The API is an
``httpx.MockTransport``; tests/test_cli.py runs the same commands against the real stack."""

from __future__ import annotations

import csv
import io
import json
import ssl
import threading
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console
from typer.testing import CliRunner

from cli import client as client_module
from cli import devices as devices_command
from cli import jobs as jobs_command
from cli import params, render
from cli.client import FleetClient, parsed
from cli.config import Settings
from cli.errors import (
    EXIT_FAILED,
    EXIT_GAVE_UP,
    EXIT_USAGE,
    ApiProblem,
    ConnectionProblem,
    GaveUp,
    UsageProblem,
)
from cli.main import app
from cli.watch import RETRY_AFTER_MAX_S, Outcome, Watcher
from models.devices import ApiKey
from models.jobs import Job
from models.operation_types import OperationTypeRecord
from models.operations import Operation
from models.tasks import Task

# What a device may put in its answer's description (the API takes any text but NUL and lone
# surrogates): clear the screen, a Rich closing tag, an 8-bit CSI, a window title, DEL.
HOSTILE = "\x1b[2J[/x]\x9b31m\x1b]0;owned\x07\x7f"
SHOWN = "\\x1b[2J[/x]\\x9b31m\\x1b]0;owned\\x07\\x7f"
CONTROLS = [chr(c) for c in (*range(0x20), 0x7F, *range(0x80, 0xA0)) if c != 0x0A]
JOB_ID = "6f1c2a53-0000-4000-8000-000000000001"
API = "http://api.test"


def job_json(status: str = "IN_PROGRESS", total: int = 4, successful: int = 0, **more: Any):
    finished = {"total": successful, "successful": successful}
    open_ = total - successful
    return {
        "id": JOB_ID,
        "request": {"name": "REBOOT_EQUIPMENT", "target": {"append": {"tags": ["t"]}}},
        "report": {
            "summary": {
                "status": status,
                "total": total,
                "inProgress": {"total": open_, "started": open_},
                "finished": finished,
            },
            **more,
        },
    }


def operation_json(**fields: Any) -> dict[str, Any]:
    return {
        "operationId": fields.pop("operationId", "op-1"),
        "jobId": JOB_ID,
        "entityId": "dev-1",
        "name": "REBOOT_EQUIPMENT",
        "status": "FINISHED",
        "result": "ERROR_PROCESSING",
        "description": HOSTILE,
        **fields,
    }


def rendered(*renderables: Any) -> str:
    """What a console shows (no terminal: Rich adds no escape codes of its own, so any ESC in
    the output came from the data)."""
    console = Console(file=io.StringIO(), width=300, force_terminal=False, markup=False)
    for renderable in renderables:
        console.print(renderable)
    out = console.file.getvalue()  # type: ignore[attr-defined]
    return out


def squeezed(out: str) -> str:
    """``out`` without its white space (a table wraps long cells)."""
    return "".join(out.split())


def assert_no_controls(out: str) -> None:
    found = sorted({hex(ord(c)) for c in out if c in CONTROLS})
    assert not found, f"control characters reached the terminal: {found}"


# -- server text is shown, never obeyed ------------------------------------------------------------


def test_server_text_is_rendered_as_visible_plain_text() -> None:
    op = parsed(Operation, operation_json(entityId="dev[/x]\x1b[1A"))
    job = parsed(
        Job,
        job_json(
            target={"notProvisioned": ["[/x]\x1b[2J"], "duplicated": ["[bold]x"]},
        )
        | {
            "request": {
                "name": f"T{HOSTILE}",
                "parameters": {"k": HOSTILE},
                "user": HOSTILE,
                "target": {"append": {"tags": [HOSTILE]}},
            }
        },
    )
    kind = parsed(
        OperationTypeRecord,
        {
            "name": "T[/x]",
            "title": HOSTILE,
            "description": HOSTILE,
            "parameters": {"type": "object", "properties": {f"p{HOSTILE}": {"type": "string"}}},
            "steps": [{"name": f"S{HOSTILE}"}],
        },
    )
    task = parsed(
        Task,
        {
            "id": "task-1",
            "name": HOSTILE,
            "description": HOSTILE,
            "active": True,
            "state": "ACTIVE",
            "schedule": {"cron": "0 3 * * *"},
            "job": {"request": {"name": HOSTILE, "target": {"append": {"tags": [HOSTILE]}}}},
        },
    )
    key = parsed(ApiKey, {"id": "k1", "name": HOSTILE, "role": "viewer"})
    out = rendered(
        render.operations_table([op]),
        render.failure_line(op),
        render.job_view(job),
        render.jobs_table([job]),
        render.watch_view(job, render.Rate(), 1.0, 1, HOSTILE),
        render.types_table([kind]),
        render.type_view(kind),
        render.tasks_table([task]),
        render.task_view(task),
        render.keys_table([key]),
    )
    assert_no_controls(out)
    assert SHOWN in squeezed(out)  # the description, visible as escapes
    assert "[/x]" in out and "[bold]x" in out  # shown as written, not read as markup
    assert "dev[/x]\\x1b[1A" in out


def test_json_output_is_exact_and_has_no_raw_controls(capsys: pytest.CaptureFixture[str]) -> None:
    value = {"description": HOSTILE, "all": "".join(CONTROLS) + "\u2028é"}
    render.print_json(value)
    out = capsys.readouterr().out
    assert json.loads(out) == value
    assert_no_controls(out.replace("\n", ""))


# -- the CLI in process, against a fake API --------------------------------------------------------


class FakeApi:
    """A north API answering from ``routes``: ``(method, path)`` to a function of the request,
    or to a list of answers given one per call (the last one repeated)."""

    def __init__(self, routes: dict[tuple[str, str], Any]) -> None:
        self.routes = routes
        self.calls: list[tuple[str, str]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        key = (request.method, request.url.path.removeprefix("/north/v80"))
        self.calls.append(key)
        answer = self.routes[key]
        if isinstance(answer, list):
            answer = answer.pop(0) if len(answer) > 1 else answer[0]
        if callable(answer):
            answer = answer(request)
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, httpx.Response):
            return answer
        return httpx.Response(200, json=answer)

    def client(self) -> FleetClient:
        return FleetClient(Settings(url=API, api_key="k.s"), transport=httpx.MockTransport(self))


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    """``run(api, *args)``: the CLI in this process, its commands talking to ``api``."""

    def invoke(api: FakeApi, *args: str) -> Any:
        for module in (jobs_command, devices_command):
            monkeypatch.setattr(module, "client", lambda _ctx: api.client())
        return CliRunner().invoke(app, list(args))

    return invoke


def error(status: int, message: str, **headers: str) -> httpx.Response:
    body = {"errors": [{"code": 1000 + status, "message": message}]}
    return httpx.Response(status, json=body, headers=headers)


def test_jobs_operations_shows_a_hostile_description(run: Callable[..., Any]) -> None:
    page = {"operations": [operation_json()], "page": {"number": 1, "of": 1}}
    api = FakeApi({("GET", f"/operation/jobs/{JOB_ID}/operations"): page})
    table = run(api, "jobs", "operations", JOB_ID)
    assert table.exit_code == 0, table.output
    assert_no_controls(table.stdout)
    assert SHOWN in squeezed(table.stdout)
    as_json = run(api, "jobs", "operations", JOB_ID, "-o", "json")
    assert as_json.exit_code == 0
    assert json.loads(as_json.stdout)["operations"][0]["description"] == HOSTILE
    assert_no_controls(as_json.stdout.replace("\n", ""))


def test_an_error_message_from_the_server_is_shown_not_obeyed(run: Callable[..., Any]) -> None:
    api = FakeApi({("GET", f"/operation/jobs/{JOB_ID}/operations"): error(400, HOSTILE)})
    refused = run(api, "jobs", "operations", JOB_ID)
    assert refused.exit_code == EXIT_USAGE
    assert "internal error" not in refused.stderr
    assert_no_controls(refused.stderr.replace("\n", ""))
    assert SHOWN in squeezed(refused.stderr)


# -- jobs operations --all: streamed ---------------------------------------------------------------


def test_all_operations_are_streamed_page_by_page(
    run: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each page is printed before the next is asked for; the JSON is what one document would
    have been."""
    size, pages = 40, 3
    monkeypatch.setattr(client_module, "PAGE_SIZE", size)
    printed_before: list[int] = []
    out = io.StringIO()

    def search(request: httpx.Request) -> dict[str, Any]:
        printed_before.append(len(out.getvalue()))
        number = json.loads(request.content)["limit"]["start"]
        count = size if number < pages else 7
        ops = [
            operation_json(operationId=f"op-{number}-{i}", entityId=f"d-{number}-{i}")
            for i in range(count)
        ]
        return {"operations": ops, "page": {"number": number}}

    api = FakeApi({("POST", "/search/entities/operations/history"): search})
    with api.client() as client:
        pages_seen = client.operation_pages([{"eq": {"jobId": JOB_ID}}])
        count = 0
        for page in pages_seen:
            out.write("x" * len(page))  # a consumer that prints each page
            count += len(page)
    assert count == 2 * size + 7
    assert printed_before == [0, size, 2 * size], "a page was read before the last was used"

    every = run(api, "jobs", "operations", JOB_ID, "--all", "-o", "json")
    assert every.exit_code == 0, every.output
    operations = json.loads(every.stdout)["operations"]
    assert len(operations) == 2 * size + 7
    assert operations[-1]["entityId"] == "d-3-6"
    table = run(api, "jobs", "operations", JOB_ID, "--all")
    assert table.exit_code == 0
    assert table.stdout.count("DEVICE") == 1  # one header, pages aligned under it
    assert f"{2 * size + 7} operation(s)" in table.stderr


# -- jobs watch through blips ----------------------------------------------------------------------


class FakeTime:
    """A clock and a stop event whose waits take no time: each wait moves the clock."""

    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []

    def clock(self) -> float:
        return self.now

    def event(self) -> threading.Event:
        fake = self

        class Stop(threading.Event):
            def wait(self, timeout: float | None = None) -> bool:
                fake.waits.append(timeout or 0.0)
                fake.now += timeout or 0.0
                return False

        return Stop()


def watcher(api: FakeApi, time: FakeTime, **options: Any) -> tuple[Watcher, io.StringIO]:
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=200)
    watch = Watcher(api.client(), JOB_ID, console, stop=time.event(), clock=time.clock, **options)
    return watch, out


def connection_reset(request: httpx.Request) -> Exception:
    return httpx.ReadError("connection reset by peer", request=request)


def refused(request: httpx.Request) -> Exception:
    return httpx.ConnectError("[Errno 111] Connection refused", request=request)


def test_watch_rides_out_resets_5xx_and_429(run: Callable[..., Any]) -> None:
    time = FakeTime()
    api = FakeApi(
        {
            ("GET", f"/operation/jobs/{JOB_ID}"): [
                job_json(),
                connection_reset,
                refused,
                error(503, "restarting", **{"Retry-After": "3"}),
                error(429, "slow down", **{"Retry-After": "600"}),
                httpx.Response(502, text="<html>bad gateway</html>"),
                job_json("FINISHED", successful=4),
            ]
        }
    )
    watch, out = watcher(api, time, interval_s=1.0, patience_s=60.0)
    result = watch.run()
    assert result.outcome is Outcome.SUCCEEDED and result.exit_code == 0
    shown = out.getvalue()
    assert shown.count("reconnecting") == 5
    assert "restarting (HTTP 503" in shown and "reconnected after" in shown
    retries = time.waits[1:]  # the first wait is the interval between two reads
    assert retries[2] >= 3  # Retry-After honoured
    assert retries[3] == RETRY_AFTER_MAX_S  # ... within reason
    assert all(wait <= RETRY_AFTER_MAX_S for wait in retries)


def test_watch_gives_up_after_its_patience_and_not_before() -> None:
    time = FakeTime()
    api = FakeApi({("GET", f"/operation/jobs/{JOB_ID}"): [job_json(), refused]})
    watch, _ = watcher(api, time, patience_s=45.0)
    with pytest.raises(GaveUp) as gave_up:
        watch.run()
    assert gave_up.value.exit_code == EXIT_GAVE_UP == 4
    assert "gave up reaching the API after 0:00:45" in str(gave_up.value)
    assert "Connection refused" in str(gave_up.value)
    assert 45 <= time.now - 1.0 <= 45.001  # the interval, then exactly the patience
    assert len(api.calls) > 5  # backed off, not a tight loop: 0.5 s doubling to 10 s
    assert len(api.calls) < 15


def test_watch_ends_at_once_on_a_4xx() -> None:
    time = FakeTime()
    api = FakeApi({("GET", f"/operation/jobs/{JOB_ID}"): [job_json(), error(404, "Job not found")]})
    watch, _ = watcher(api, time)
    with pytest.raises(ApiProblem) as problem:
        watch.run()
    assert problem.value.exit_code == EXIT_USAGE and problem.value.status == 404
    assert len(api.calls) == 2


def test_watch_ends_at_once_on_a_certificate_that_does_not_verify() -> None:
    def untrusted(request: httpx.Request) -> Exception:
        failure = httpx.ConnectError("certificate verify failed", request=request)
        failure.__cause__ = ssl.SSLCertVerificationError("unable to get local issuer certificate")
        return failure

    time = FakeTime()
    api = FakeApi({("GET", f"/operation/jobs/{JOB_ID}"): [untrusted]})
    watch, _ = watcher(api, time)
    with pytest.raises(ConnectionProblem, match="certificate verify failed") as problem:
        watch.run()
    assert problem.value.exit_code == EXIT_USAGE and len(api.calls) == 1


def test_watch_timeout_while_reconnecting_is_a_timeout() -> None:
    time = FakeTime()
    api = FakeApi({("GET", f"/operation/jobs/{JOB_ID}"): [job_json(), refused]})
    watch, _ = watcher(api, time, timeout_s=5.0, patience_s=60.0)
    assert watch.run().outcome is Outcome.TIMED_OUT
    assert time.now == pytest.approx(5.0)


def test_jobs_watch_exit_code_when_it_gives_up(run: Callable[..., Any]) -> None:
    api = FakeApi({("GET", f"/operation/jobs/{JOB_ID}"): [refused]})
    gave_up = run(api, "jobs", "watch", JOB_ID, "--patience", "0.3")
    assert gave_up.exit_code == EXIT_GAVE_UP, gave_up.output
    assert "gave up reaching the API" in gave_up.stderr
    assert "reconnecting" in gave_up.stdout


# -- the watch view: rate and ETA ------------------------------------------------------------------


def test_rate_and_eta_from_a_progress_history() -> None:
    rate = render.Rate(window_s=30.0)
    assert rate.per_second is None and rate.eta(10) is None
    for at, closed in ((0.0, 0), (10.0, 5), (20.0, 20), (40.0, 60)):
        rate.add(at, closed)
    # The sample at 0 s left the 30 s window: (60 - 5) closed in 30 s.
    assert rate.samples[0] == (10.0, 5)
    assert rate.per_second == pytest.approx(55 / 30)
    job = parsed(Job, job_json(total=100, successful=60))
    out = rendered(render.watch_view(job, rate, 75.0, 0))
    assert "60/100 60%" in out
    assert "1.8 ops/s" in out
    assert "ETA 0:00:22" in out  # 40 open at 55/30 a second
    assert "elapsed 0:01:15" in out
    stalled = render.Rate()
    stalled.add(0.0, 3)
    stalled.add(5.0, 3)
    assert "ETA -" in rendered(render.watch_view(job, stalled, 5.0, 0))
    assert "- ops/s" in rendered(render.watch_view(job, render.Rate(), 0.0, 0))


# -- devices import --------------------------------------------------------------------------------


def bulk_api(answer: Callable[[list[dict[str, Any]]], dict[str, Any]] | None = None) -> FakeApi:
    def provision(request: httpx.Request) -> httpx.Response:
        rows = json.loads(request.content)
        if answer is not None:
            return httpx.Response(201, json=answer(rows))
        created = [{"type": "GATEWAY", **row, "apiKey": f"{row['id']}.secret"} for row in rows]
        return httpx.Response(201, json={"created": created, "errors": []})

    return FakeApi({("POST", "/provision/devices/bulk"): provision})


def test_import_reports_rows_the_api_refused_or_did_not_answer(
    run: Callable[..., Any], tmp_path: Path
) -> None:
    path = tmp_path / "fleet.csv"
    path.write_text("id,tags\nd-1,a\nd-2,a\nd-3,a\nd-4,a\n")

    def odd(rows: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "created": [{**rows[0], "type": "GATEWAY", "apiKey": "d-1.s"}],
            "errors": [
                {"id": "d-2", "message": "device already exists"},
                {"id": "d-3", "message": "quota exceeded"},
                {"id": "not-sent", "message": "device already exists"},
                {"message": "no id at all"},
            ],
        }  # and nothing about d-4

    result = run(bulk_api(odd), "devices", "import", str(path))
    assert result.exit_code == EXIT_FAILED, result.output
    assert "internal error" not in result.stderr
    assert "1 of 4 devices provisioned" in result.stdout
    assert "1 already provisioned" in result.stderr
    assert "4 row(s) refused by the API" in result.stderr
    assert "d-3: quota exceeded" in result.stderr
    assert "d-4: the API did not say" in result.stderr
    as_json = run(bulk_api(odd), "devices", "import", str(path), "-o", "json")
    assert as_json.exit_code == EXIT_FAILED
    report = json.loads(as_json.stdout)
    assert [d["id"] for d in report["created"]] == ["d-1"]
    assert report["alreadyProvisioned"] == ["d-2"]
    assert sorted(r["id"] for r in report["refused"]) == ["?", "d-3", "d-4", "not-sent"]


def test_import_of_json_streams_both_shapes(run: Callable[..., Any], tmp_path: Path) -> None:
    devices = [{"id": f"j-{i}", "type": "METER", "tags": ["x"]} for i in range(5)]
    for name, document in (("a.json", devices), ("b.json", {"note": [1], "devices": devices})):
        path = tmp_path / name
        path.write_text(json.dumps(document, indent=1))
        result = run(bulk_api(), "devices", "import", str(path), "-o", "json", "--batch-size", "2")
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        assert [d["id"] for d in report["created"]] == [d["id"] for d in devices]
        assert report["rows"] == 5 and report["refused"] == []
    bad = tmp_path / "bad.json"
    bad.write_text('[{"id": "ok-1"}, {"id": "not/an id"}, "x", {"id": "ok-1"}]')
    refused = run(bulk_api(), "devices", "import", str(bad))
    assert refused.exit_code == EXIT_USAGE
    assert "3 bad row(s)" in refused.stderr
    assert "bad.json item 2" in refused.stderr and "bad.json item 3" in refused.stderr
    assert "device ok-1 is listed twice" in refused.stderr


def _csv(path: Path, rows: int) -> Path:
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["id", "type", "tags", "address"])
        for i in range(rows):
            writer.writerow([f"gw-{i:07d}", "GATEWAY", "line-7;plant-3", "http://10.0.0.1:1123"])
    return path


def _import_peak(api: FakeApi, path: Path) -> int:
    """The peak of memory allocated while importing ``path`` (the keys to a file)."""
    tracemalloc.start()
    try:
        result = CliRunner().invoke(
            app, ["devices", "import", str(path), "--keys-file", str(path.with_suffix(".keys"))]
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.exit_code == 0, result.output
    return peak


def test_import_memory_does_not_grow_with_the_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    api = bulk_api()
    monkeypatch.setattr(devices_command, "client", lambda _ctx: api.client())
    small = _import_peak(api, _csv(tmp_path / "small.csv", 1_000))
    large = _import_peak(api, _csv(tmp_path / "large.csv", 4_000))
    with (tmp_path / "large.keys").open() as keys:
        assert sum(1 for _ in keys) == 4_001
    # Kept per row: a digest of its id (for ids listed twice), not the row.
    per_row = (large - small) / 3_000
    # (Before the rows were streamed: about 2,000 bytes a row.)
    assert per_row < 150, f"{per_row:.0f} bytes more per row ({small} -> {large})"


# -- device id files -------------------------------------------------------------------------------


def test_device_id_files_are_read_a_row_at_a_time_up_to_the_job_limit(tmp_path: Path) -> None:
    lines = tmp_path / "ids.txt"
    lines.write_text("# canary\nd-1\n\n d-2 \n")
    assert params.device_ids(lines) == ["d-1", "d-2"]
    table = tmp_path / "ids.csv"
    table.write_text("\ufeffid,note\nd-1,x\n,empty\nd-3,y\n")
    assert params.device_ids(table) == ["d-1", "d-3"]
    array = tmp_path / "ids.json"
    array.write_text(json.dumps(["d-1", {"id": "d-2"}]))
    assert params.device_ids(array) == ["d-1", "d-2"]
    huge = tmp_path / "huge.json"
    huge.write_text(json.dumps([f"d-{i}" for i in range(20)]))
    with pytest.raises(UsageProblem, match="more than 10 devices"):
        params.device_ids(huge, limit=10)
    assert len(params.device_ids(huge, limit=20)) == 20


def test_json_stream_reads_items_across_chunk_boundaries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(params, "CHUNK", 5)
    document = [1, 2, 345678, "a,b]", {"x": [1, {"y": "}"}]}, 1.5e10, True, None, -0.25]
    for text in (json.dumps(document), json.dumps({"a": [9], "devices": document}, indent=3)):
        stream = params.JsonStream(io.StringIO(text), Path("f.json"))
        assert list(stream.items("devices")) == document
    for bad in ("[1,", "[1 2]", "[1] 2", '{"devices": [1],}', "{}", "[1,]"):
        with pytest.raises(UsageProblem):
            list(params.JsonStream(io.StringIO(bad), Path("f.json")).items("devices"))
