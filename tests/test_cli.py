"""The ``fleetops`` CLI against the real stack: the console script runs as a child process (as an
operator or a CI pipeline runs it) and talks HTTP to the API served by this test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from cli import config, params
from cli.errors import EXIT_FAILED, EXIT_GAVE_UP, UsageProblem
from tests.stack import Stack, eventually
from tests.test_cli_unit import HOSTILE, SHOWN, assert_no_controls, squeezed

CLI_TIMEOUT_S = 120.0
JOBS = "/north/v80/operation/jobs"


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


ROOT = Path(__file__).resolve().parent.parent
# The console script the package installs, as operators run it.
_SCRIPT = Path(sys.executable).parent / "fleetops"
COMMAND = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "cli.main"]


async def fleetops(stack: Stack, *args: str, key: str | None = None, **env: str) -> Run:
    """Run the CLI as a child process configured by environment for ``stack``."""
    child_env = {
        **os.environ,
        "FLEETOPS_URL": stack.api_url,
        "FLEETOPS_API_KEY": key or stack.admin_key,
        # Never the developer's own profile file.
        "FLEETOPS_CONFIG": str(Path(os.devnull).parent / "no-fleetops-config.toml"),
        "COLUMNS": "200",
        **env,
    }
    # An empty value takes the variable away (to test the profile file alone).
    child_env = {name: value for name, value in child_env.items() if value != ""}
    process = await asyncio.create_subprocess_exec(
        *COMMAND,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=child_env,
        cwd=ROOT,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), CLI_TIMEOUT_S)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return Run(process.returncode, out.decode(), err.decode())


async def _fail(stack: Stack, device_ids: list[str], code: str = "ERROR_PROCESSING") -> None:
    for device_id in device_ids:
        answer = await stack.sim.put(f"/sim/devices/{device_id}", json={"result_code": code})
        assert answer.status_code == 200


async def test_create_on_a_tag_and_watch_to_the_end(stack: Stack) -> None:
    await stack.provision(20, tags=["cli-ok"])
    created = await fleetops(
        stack,
        "jobs", "create", "REBOOT_EQUIPMENT", "--tag", "cli-ok", "-p", "type=SOFTWARE",
        "--timeout", "30s", "--retries", "1", "--max-concurrency", "5", "-o", "json",
    )  # fmt: skip
    assert created.code == 0, created.err
    job_id = created.json()["id"]
    request = (await stack.job(job_id))["request"]
    assert request["name"] == "REBOOT_EQUIPMENT"
    assert request["parameters"] == {"type": "SOFTWARE"}
    assert request["target"] == {"append": {"tags": ["cli-ok"]}}
    assert request["operationParameters"]["timeout"] == 30_000
    assert request["operationParameters"]["retries"] == 1
    assert request["rollout"]["maxConcurrency"] == 5

    watched = await fleetops(stack, "jobs", "watch", job_id, "--interval", "0.3")
    assert watched.code == 0, watched.out + watched.err
    assert "Traceback" not in watched.err
    # The final view: the counters by state, and the verdict.
    assert "FINISHED" in watched.out
    assert "successful 20" in watched.out
    assert "error 0" in watched.out
    assert f"Job {job_id} FINISHED: all 20 operations successful." in watched.out
    summary = (await stack.job(job_id))["report"]["summary"]
    assert summary["finished"]["successful"] == 20

    shown = await fleetops(stack, "jobs", "show", job_id, "-o", "json")
    assert shown.code == 0 and shown.json()["report"]["summary"]["total"] == 20
    listed = await fleetops(stack, "jobs", "list", "--status", "finished", "-o", "json")
    assert job_id in [j["id"] for j in listed.json()["jobs"]]
    table = await fleetops(stack, "jobs", "list")
    assert table.code == 0 and job_id in table.out


async def test_watch_of_a_job_with_errors_exits_non_zero(stack: Stack) -> None:
    devices = await stack.provision(10, tags=["cli-bad"])
    failing = sorted(d["id"] for d in devices)[:3]
    await _fail(stack, failing)

    run = await fleetops(
        stack, "jobs", "create", "REBOOT_EQUIPMENT", "-t", "cli-bad", "--watch",
        "--interval", "0.3",
    )  # fmt: skip
    assert run.code == 1, run.out + run.err
    assert "successful 7" in run.out and "error 3" in run.out
    # Errors listed as they came (or at the end, once visibility lists them).
    for device_id in failing:
        assert device_id in run.out
    assert "ERROR_PROCESSING" in run.out
    job_id = run.err.split("Created job ")[1].split()[0]

    async def listed() -> list[dict[str, Any]]:
        errors = await fleetops(
            stack, "jobs", "operations", job_id, "--result", "ERROR", "-o", "json"
        )
        assert errors.code == 0, errors.err
        operations: list[dict[str, Any]] = errors.json()["operations"]
        assert sorted(o["entityId"] for o in operations) == failing, operations
        return operations

    await eventually(listed, timeout=30)
    every = await fleetops(stack, "jobs", "operations", job_id, "--all", "-o", "json")
    assert len(every.json()["operations"]) == 10


async def test_pause_resume_and_cancel_take_effect(stack: Stack, tmp_path: Path) -> None:
    devices = await stack.provision(8, tags=["cli-slow"])
    for device in devices:
        answer = await stack.sim.put(f"/sim/devices/{device['id']}", json={"delay_ms": 1500})
        assert answer.status_code == 200
    # What no flag says comes from a request file; the flags go over it.
    request_file = tmp_path / "request.json"
    request_file.write_text(
        json.dumps({"userNotes": "from a file", "operationParameters": {"timeout": 20_000}})
    )
    created = await fleetops(
        stack, "jobs", "create", "REFRESH_INFO", "-t", "cli-slow", "--max-concurrency", "1",
        "--request-file", str(request_file), "--retries", "2", "-o", "json",
    )  # fmt: skip
    assert created.code == 0, created.err
    job_id = created.json()["id"]
    request = (await stack.job(job_id))["request"]
    assert request["userNotes"] == "from a file"
    assert request["operationParameters"]["timeout"] == 20_000
    assert request["operationParameters"]["retries"] == 2
    assert request["rollout"] == {"maxConcurrency": 1}

    async def status_is(wanted: str) -> dict[str, Any]:
        job = await stack.job(job_id)
        assert job["report"]["summary"]["status"] == wanted, job["report"]["summary"]
        return job

    paused = await fleetops(stack, "jobs", "pause", job_id)
    assert paused.code == 0, paused.err
    assert "PAUSED" in paused.out
    await eventually(lambda: status_is("PAUSED"), timeout=15)
    assert (await stack.job(job_id))["request"]["active"] is False
    # Watching a paused job: it says why nothing moves, and --watch-timeout ends it with 3.
    waited = await fleetops(stack, "jobs", "watch", job_id, "--watch-timeout", "1")
    assert waited.code == 3, waited.out + waited.err
    assert "paused: waiting to be resumed" in waited.out

    resumed = await fleetops(stack, "jobs", "resume", job_id, "-o", "json")
    assert resumed.code == 0, resumed.err
    assert resumed.json()["report"]["summary"]["status"] == "IN_PROGRESS"
    await eventually(lambda: status_is("IN_PROGRESS"), timeout=15)

    cancelled = await fleetops(stack, "jobs", "cancel", job_id)
    assert cancelled.code == 0, cancelled.err
    job = await eventually(lambda: status_is("CANCELLED"), timeout=30)
    assert job["report"]["summary"]["finished"]["cancelled"]["byUser"] >= 1

    # A watch of a cancelled job says so, with exit code 1; a second cancel is the SPEC's 1015.
    watched = await fleetops(stack, "jobs", "watch", job_id)
    assert watched.code == 1 and "CANCELLED" in watched.out
    again = await fleetops(stack, "jobs", "cancel", job_id)
    assert again.code == 2
    assert "Job state transition error" in again.err and "Traceback" not in again.err


async def test_devices_import_of_a_csv_provisions_every_row(stack: Stack, tmp_path: Path) -> None:
    path = tmp_path / "fleet.csv"
    rows = [
        {
            "id": f"imp-{i:03d}",
            "type": "GATEWAY" if i % 2 else "METER",
            "tags": "imported;line-9" if i % 3 else "imported",
            "address": stack.sim_url if i % 4 else "",
        }
        for i in range(1, 31)
    ]
    with path.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=["id", "type", "tags", "address"])
        writer.writeheader()
        writer.writerows(rows)
    keys = tmp_path / "keys.csv"

    run = await fleetops(
        stack, "devices", "import", str(path), "--keys-file", str(keys), "--batch-size", "7"
    )
    assert run.code == 0, run.out + run.err
    assert "30 of 30 devices provisioned" in run.out
    for row in rows:
        answer = await stack.api.get(f"/north/v80/provision/devices/{row['id']}")
        assert answer.status_code == 200, answer.text
        device = answer.json()
        assert device["type"] == row["type"]
        assert device["tags"] == sorted(row["tags"].split(";"))
        assert device.get("address") == (row["address"] or None)
    with keys.open() as saved:
        key_rows = list(csv.DictReader(saved))
    assert sorted(k["id"] for k in key_rows) == [r["id"] for r in rows]
    assert all("." in k["apiKey"] for k in key_rows)

    listed = await fleetops(stack, "devices", "list", "--tag", "line-9", "-o", "json")
    assert listed.code == 0
    assert len(listed.json()["devices"]) == sum(1 for r in rows if "line-9" in r["tags"])

    # Again: nothing new, every row reported as already there; a bad row stops everything.
    again = await fleetops(stack, "devices", "import", str(path))
    assert again.code == 0 and "30 already provisioned" in again.err
    as_json = await fleetops(stack, "devices", "import", str(path), "-o", "json")
    assert as_json.code == 0, as_json.err
    assert as_json.json()["created"] == []
    assert sorted(as_json.json()["alreadyProvisioned"]) == [r["id"] for r in rows]
    bad = tmp_path / "bad.csv"
    bad.write_text("id,tags\nok-1,a\nnot/an id,b\n")
    refused = await fleetops(stack, "devices", "import", str(bad))
    assert refused.code == 2 and "bad.csv line 3" in refused.err
    assert (await stack.api.get("/north/v80/provision/devices/ok-1")).status_code == 404


async def test_a_bad_key_prints_the_spec_message(stack: Stack) -> None:
    answer = await stack.as_key("0123456789abcdef.wrong").get("/north/v80/operation/jobs")
    message = answer.json()["errors"][0]["message"]

    run = await fleetops(stack, "jobs", "list", key="0123456789abcdef.wrong")
    assert run.code == 2
    assert message in run.err and "401" in run.err
    assert "Traceback" not in run.err and run.out == ""

    unreachable = await fleetops(stack, "types", "list", FLEETOPS_URL="http://127.0.0.1:9")
    assert unreachable.code == 2
    assert "http://127.0.0.1:9/north/v80/operationTypes" in unreachable.err
    assert "Traceback" not in unreachable.err


async def test_keys_types_tasks_and_a_profile(stack: Stack, tmp_path: Path) -> None:
    created = await fleetops(stack, "keys", "create", "ci-viewer", "--role", "viewer", "-o", "json")
    assert created.code == 0, created.err
    viewer = created.json()

    # A profile file instead of the environment.
    config = tmp_path / "config.toml"
    config.write_text(f'[ro]\nurl = "{stack.api_url}"\napi_key = "{viewer["apiKey"]}"\n')
    env = {"FLEETOPS_CONFIG": str(config), "FLEETOPS_URL": "", "FLEETOPS_API_KEY": ""}
    types = await fleetops(stack, "--profile", "ro", "types", "list", "-o", "json", **env)
    assert types.code == 0, types.err
    assert "REBOOT_EQUIPMENT" in [t["name"] for t in types.json()["operationTypes"]]
    shown = await fleetops(stack, "--profile", "ro", "types", "show", "UPDATE", **env)
    assert shown.code == 0 and "BEGINUPDATE" in shown.out
    refused = await fleetops(
        stack, "--profile", "ro", "jobs", "create", "REFRESH_INFO", "-d", "x-1", **env
    )
    assert refused.code == 2 and "403" in refused.err

    task = await fleetops(
        stack, "tasks", "create", "nightly", "--operation", "REFRESH_INFO", "-t", "none",
        "--cron", "0 3 * * *", "-o", "json",
    )  # fmt: skip
    assert task.code == 0, task.err
    task_id = task.json()["id"]
    tasks = await fleetops(stack, "tasks", "list", "-o", "json")
    assert task_id in [t["id"] for t in tasks.json()["tasks"]]
    assert (await fleetops(stack, "tasks", "delete", task_id)).code == 0
    assert (await stack.api.get(f"/north/v80/operation/tasks/{task_id}")).status_code == 404

    keys = await fleetops(stack, "keys", "list", "-o", "json")
    assert viewer["id"] in [k["id"] for k in keys.json()["apiKeys"]]
    assert (await fleetops(stack, "keys", "delete", viewer["id"])).code == 0
    gone = await fleetops(stack, "--profile", "ro", "types", "list", **env)
    assert gone.code == 2 and "401" in gone.err


def test_parameters_durations_and_moments() -> None:
    assert params.parameters(["n=3", "s=abc", 'j={"a":[1]}', "b=true", "e="]) == {
        "n": 3,
        "s": "abc",
        "j": {"a": [1]},
        "b": True,
        "e": "",
    }
    assert params.millis("1500", "--timeout") == 1500
    assert params.millis("30s", "--timeout") == 30_000
    assert params.millis("2h", "--timeout") == 7_200_000
    assert params.moment("now", "--start") == {}
    assert params.moment("10m", "--start") == {"delayed": 600_000}
    assert params.moment("2030-01-01T00:00:00Z", "--start") == {"date": "2030-01-01T00:00:00Z"}
    with pytest.raises(UsageProblem):
        params.parameter("no-equals-sign")
    with pytest.raises(UsageProblem):
        params.millis("soon", "--timeout")


def test_configuration_flags_over_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        '[default]\nurl = "http://a:1/"\napi_key = "k.default"\n'
        '[prod]\nurl = "https://b"\napi_key = "k.prod"\nca_file = "ca.pem"\n'
    )
    monkeypatch.setenv("FLEETOPS_CONFIG", str(path))
    assert config.resolve() == config.Settings(url="http://a:1", api_key="k.default")
    prod = config.resolve("prod", api_key="k.flag")
    assert (prod.url, prod.api_key, prod.ca_file) == (
        "https://b",
        "k.flag",
        str(tmp_path / "ca.pem"),
    )
    with pytest.raises(UsageProblem, match="no profile 'staging'"):
        config.resolve("staging")
    path.write_text('[default]\nurl = "ftp://x"\n')
    with pytest.raises(UsageProblem, match="http:// or https://"):
        config.resolve()
    path.write_text("[default]\nurll = 1\n")
    with pytest.raises(UsageProblem, match="unknown keys"):
        config.resolve()


# -- what devices say reaches the terminal as text ------------------------------------------------


async def test_a_device_description_is_shown_not_obeyed(stack: Stack) -> None:
    """A device answers an error whose description holds escape sequences and Rich markup:
    watch and operations show it escaped, the JSON carries it exactly."""
    (device,) = await stack.provision(1, prefix="hostile-")
    device_id = device["id"]
    silent = await stack.sim.put(f"/sim/devices/{device_id}", json={"mode": "silent"})
    assert silent.status_code == 200
    job = await stack.create_job(
        {"name": "REBOOT_EQUIPMENT", "target": {"append": {"entities": [device_id]}}}
    )

    async def delivered() -> str:
        found = [d for d in stack.fleet.deliveries if d.device_id == device_id]
        assert len(found) == 1, found
        return found[0].operation_id

    operation_id = await eventually(delivered, timeout=30)
    now = int(time.time() * 1000)
    answer = await stack.as_key(device["apiKey"]).post(
        f"/south/v80/devices/{device_id}/operation/response",
        json={
            "version": "1.0",
            "operation": {
                "response": {
                    "id": operation_id,
                    "deviceId": device_id,
                    "name": "REBOOT_EQUIPMENT",
                    "timestamp": now,
                    "resultCode": "ERROR_PROCESSING",
                    "resultDescription": HOSTILE,
                    "steps": [],
                }
            },
        },
    )
    assert answer.status_code == 200, answer.text

    watched = await fleetops(stack, "jobs", "watch", job["id"], "--interval", "0.3")
    assert watched.code == EXIT_FAILED, watched.out + watched.err
    assert_no_controls(watched.out + watched.err)
    assert SHOWN in squeezed(watched.out)

    async def listed() -> Run:
        table = await fleetops(stack, "jobs", "operations", job["id"], "--result", "ERROR")
        assert table.code == 0, table.err
        assert SHOWN in squeezed(table.out), table.out
        return table

    table = await eventually(listed, timeout=30)
    assert_no_controls(table.out + table.err)
    as_json = await fleetops(stack, "jobs", "operations", job["id"], "-o", "json")
    assert as_json.code == 0
    assert as_json.json()["operations"][0]["description"] == HOSTILE
    assert_no_controls(as_json.out.replace("\n", ""))


# -- jobs watch through an API outage -------------------------------------------------------------


class FlakyProxy:
    """A TCP proxy to the API that can be cut: while down, connections in flight are reset and
    new ones closed before any answer (what a client sees of an API restarting)."""

    def __init__(self, target: str) -> None:
        parts = urlsplit(target)
        self.target = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.down = False
        self.url = ""
        self.requests = 0
        self._open: set[asyncio.StreamWriter] = set()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[FlakyProxy]:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        async with server:
            yield self
            self.cut()

    def cut(self) -> None:
        self.down = True
        for writer in list(self._open):
            writer.transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            writer.transport.abort()
            return
        try:
            upstream_reader, upstream = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._open |= {writer, upstream}
        try:
            await asyncio.gather(
                self._pipe(reader, upstream, count_requests=True),
                self._pipe(upstream_reader, writer),
            )
        finally:
            self._open -= {writer, upstream}

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        count_requests: bool = False,
    ) -> None:
        try:
            while data := await reader.read(65536):
                if count_requests and data.startswith((b"GET ", b"POST ", b"PUT ", b"DELETE ")):
                    self.requests += 1
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.transport.abort()


async def test_watch_rides_out_an_api_outage_and_gives_up_past_its_patience(
    stack: Stack,
) -> None:
    devices = await stack.provision(3, prefix="outage-")
    for device in devices:
        slow = await stack.sim.put(f"/sim/devices/{device['id']}", json={"delay_ms": 700})
        assert slow.status_code == 200
    # Created IDLE and started during the outage: the watch is running before the API goes away
    # and the job is still open when it comes back, however slowly the CLI starts.
    job = await stack.create_job(
        {
            "name": "REBOOT_EQUIPMENT",
            "target": {"append": {"entities": [d["id"] for d in devices]}},
            "rollout": {"maxConcurrency": 1},
            "active": False,
        }
    )
    async with FlakyProxy(stack.api_url).running() as proxy:
        watch = ("jobs", "watch", job["id"], "--interval", "0.3", "--patience", "30")
        watching = asyncio.ensure_future(fleetops(stack, *watch, FLEETOPS_URL=proxy.url))

        # A second request means the CLI has read (and drawn) the answer to its first.
        async def watch_reads() -> None:
            assert proxy.requests >= 2

        await eventually(watch_reads, timeout=30)
        proxy.cut()  # the API goes away for 2.5 s; the job starts meanwhile
        activated = await stack.api.put(
            f"{JOBS}/{job['id']}", json={"job": {"request": {"active": True}}}
        )
        assert activated.status_code == 200, activated.text
        await asyncio.sleep(2.5)
        proxy.down = False
        watched = await watching
        assert watched.code == 0, watched.out + watched.err
        assert watched.out.startswith("IDLE ")  # it was watching before the outage
        assert "reconnecting: cannot reach the API" in watched.out
        assert "reconnected after" in watched.out
        assert f"Job {job['id']} FINISHED: all 3 operations successful." in watched.out

        proxy.cut()  # and now for good
        started = time.monotonic()
        gave_up = await fleetops(
            stack, "jobs", "watch", job["id"], "--patience", "2", FLEETOPS_URL=proxy.url
        )
        assert gave_up.code == EXIT_GAVE_UP, gave_up.out + gave_up.err
        assert "gave up reaching the API after" in gave_up.err
        assert "Traceback" not in gave_up.err
        assert 2 <= time.monotonic() - started < 20


# -- flags and files ------------------------------------------------------------------------------


async def test_create_flags_devices_files_json_import_and_task_show(
    stack: Stack, tmp_path: Path
) -> None:
    # devices import of JSON (the {"devices": [...]} form) ...
    fleet = tmp_path / "fleet.json"
    listed = [{"id": f"json-{i}", "type": "METER", "tags": ["cli-json"]} for i in range(3)]
    fleet.write_text(json.dumps({"devices": listed}))
    imported = await fleetops(stack, "devices", "import", str(fleet), "-o", "json")
    assert imported.code == 0, imported.err
    assert [d["id"] for d in imported.json()["created"]] == [d["id"] for d in listed]
    device = (await stack.api.get("/north/v80/provision/devices/json-1")).json()
    assert (device["type"], device["tags"]) == ("METER", ["cli-json"])

    # ... then a job on a devices file, paced and scheduled.
    ids = tmp_path / "canary.txt"
    ids.write_text("# the canary\njson-0\n\njson-2\n")
    start = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
    local = start.astimezone(timezone(timedelta(hours=1))).isoformat()  # 2026-...T..+01:00
    created = await fleetops(
        stack, "jobs", "create", "REFRESH_INFO", "--devices-file", str(ids),
        "--max-per-minute", "600", "--start", local, "--stop", "30m", "-o", "json",
    )  # fmt: skip
    assert created.code == 0, created.err
    job_id = created.json()["id"]
    shown = await fleetops(stack, "jobs", "show", job_id, "-o", "json")
    assert shown.code == 0, shown.err
    request = shown.json()["request"]
    assert request["target"] == {"append": {"entities": ["json-0", "json-2"]}}
    assert request["rollout"]["maxPerMinute"] == 600
    assert request["schedule"]["stop"] == {"delayed": 30 * 60_000}
    assert request["schedule"]["start"]["date"] == start.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    assert shown.json()["report"]["summary"]["status"] == "SCHEDULED"
    delayed = await fleetops(
        stack, "jobs", "create", "REFRESH_INFO", "-d", "json-1", "--start", "2h", "-o", "json"
    )
    assert delayed.code == 0, delayed.err
    assert delayed.json()["request"]["schedule"]["start"] == {"delayed": 2 * 3_600_000}
    for scheduled in (job_id, delayed.json()["id"]):
        assert (await fleetops(stack, "jobs", "cancel", scheduled)).code == 0

    # tasks show
    task = await fleetops(
        stack, "tasks", "create", "show-me", "--operation", "REFRESH_INFO", "-t", "cli-json",
        "--cron", "0 4 * * *", "--description", "[/x] nightly", "-o", "json",
    )  # fmt: skip
    assert task.code == 0, task.err
    task_id = task.json()["id"]
    table = await fleetops(stack, "tasks", "show", task_id)
    assert table.code == 0, table.err
    assert task_id in table.out and "show-me" in table.out and "[/x] nightly" in table.out
    assert "0 4 * * *" in table.out
    as_json = await fleetops(stack, "tasks", "show", task_id, "-o", "json")
    assert as_json.json()["id"] == task_id and as_json.json()["name"] == "show-me"
    assert (await fleetops(stack, "tasks", "delete", task_id)).code == 0


async def test_devices_import_of_thousands_of_rows(stack: Stack, tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    rows = 3000
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["id", "tags"])
        writer.writerows([f"bulk-{i:05d}", "bulk"] for i in range(rows))
    keys = tmp_path / "keys.csv"
    run = await fleetops(
        stack, "devices", "import", str(path), "--keys-file", str(keys), "--batch-size", "1000"
    )
    assert run.code == 0, run.out + run.err
    assert f"{rows} of {rows} devices provisioned" in run.out
    assert "provisioning" in run.err and f"{rows}/{rows}" in run.err
    with keys.open() as saved:
        assert sum(1 for _ in csv.DictReader(saved)) == rows
    page = await stack.api.get("/north/v80/provision/devices", params={"tag": "bulk", "size": 1})
    assert page.json()["page"]["of"] == rows
