"""The ``fleetops`` CLI against the real stack: the console script runs as a child process (as an
operator or a CI pipeline runs it) and talks HTTP to the API served by this test's event loop."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cli import config, params
from cli.errors import UsageProblem
from tests.stack import Stack, eventually

CLI_TIMEOUT_S = 120.0


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
