"""Schema-driven fuzzing of the running stack (issue 9, "Fuzzing in the suite").

schemathesis reads the live ``/openapi.json`` of the stack's API and sends real HTTP requests to
it, every operation of the document in turn (tests/fuzz_support.py says how each is fuzzed and
how much), with the checks ``not_a_server_error``, ``status_code_conformance``,
``response_schema_conformance`` and ``content_type_conformance``. Afterwards the same stack must
still run a normal job on the simulated devices, the devices provisioned before the fuzzing must
still be there, and no workflow may have failed a workflow task on what the API let through.

What the fuzzer may touch, and what it may not:
- It authenticates with an admin key of its own. That key and the stack's bootstrap admin key
  (which runs the checks afterwards) are protected: a DELETE /apiKeys/{id} naming either is never
  sent, since it would only prove that a revoked key is refused. Both are checked afterwards. A
  third key is offered to the fuzzer to revoke.
- The devices checked afterwards (``keep-*``) are never offered to it. One device of its own
  (``fuzz-00001``), a custom operation type, a job, an operation and a task are, as the ids of
  the paths that take one, so generated requests reach existing things; the fuzzer may change or
  delete them, and nothing afterwards relies on them. The south calls are signed with the key of
  ``fuzz-south-00001``, whose id the north paths are never given, and answer its open operation.
No operation is excluded because it fails.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from dataclasses import asdict, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.fuzz_support import Plan
from tests.stack import Stack, eventually, failed_workflow_tasks

log = logging.getLogger(__name__)
NORTH = "/north/v80"
ROOT = Path(__file__).resolve().parent.parent
# The fuzzing sends about 115 requests per operation at 50 positive / 50 negative examples and
# 120 coverage cases (4,762 requests over 41 operations in 78-82 s on 2 cores). At 40 / 40 / 100
# (tests/fuzz_support.py), to keep `make test` under 15 minutes: the test's call takes 107 s in
# the full suite on 2 cores, against 139 s before. This limit only stops a fuzzer that hangs.
FUZZ_TIME_LIMIT = 420.0
# A deeper search by hand: FUZZ_SCALE=10 multiplies the examples (and the time limit; give pytest
# a --timeout to match), FUZZ_SEED=n changes the examples. `make test` uses neither.
SCALE = float(os.environ.get("FUZZ_SCALE", "1"))

FUZZ_TYPE: dict[str, Any] = {
    "name": "FUZZ_CALIBRATE",
    "title": "Calibrate (fuzzing target)",
    "parameters": {
        "type": "object",
        "properties": {
            "level": {"type": "integer", "minimum": 0, "maximum": 10, "default": 5},
            "mode": {"type": "string", "enum": ["FAST", "FULL"]},
        },
        "additionalProperties": False,
    },
    "steps": [{"name": "MEASURE"}, {"name": "APPLY"}],
}


async def created(stack: Stack, path: str, body: Any) -> dict[str, Any]:
    answer = await stack.api.post(f"{NORTH}{path}", json=body)
    assert answer.status_code == 201, answer.text
    result: dict[str, Any] = answer.json()
    return result


async def prepare(stack: Stack) -> Plan:
    """The things the fuzzer is given: its key, devices, a type, jobs, an operation, a task."""
    # fuzz-00001 for the north paths (the fuzzer may change or delete it); fuzz-south-00001
    # signs the south calls, and only polls, so that its operation stays open for the answers
    # the fuzzer sends.
    [device] = await stack.provision(1, prefix="fuzz-")
    [south] = await stack.provision(1, prefix="fuzz-south-", reachable=False)
    await created(stack, "/operationTypes", FUZZ_TYPE)
    fuzzer = await created(stack, "/apiKeys", {"name": "fuzzer", "role": "admin"})
    victim = await created(stack, "/apiKeys", {"name": "fuzz-victim", "role": "viewer"})
    target = {"append": {"entities": [device["id"]]}}
    done = await stack.create_job({"name": "REBOOT_EQUIPMENT", "target": target})
    await stack.wait_finished(done["id"])
    [operation] = await stack.operations(done["id"])
    idle = await stack.create_job(
        {"name": FUZZ_TYPE["name"], "target": target, "active": False, "parameters": {}}
    )
    waiting = await stack.create_job(
        {
            "name": "REBOOT_EQUIPMENT",
            "target": {"append": {"entities": [south["id"]]}},
            "operationParameters": {"timeout": 3_600_000},
        }
    )

    async def opened() -> str:
        operations = await stack.operations(waiting["id"])
        assert operations, "the south device's operation is not created yet"
        return str(operations[0]["operationId"])

    open_operation = await eventually(opened)
    later = datetime.now(UTC) + timedelta(days=100)
    task = await created(
        stack,
        "/operation/tasks",
        {
            "task": {
                "name": "fuzz-task",
                # Once, far enough ahead that it never runs during the test.
                "schedule": {"start": {"date": later.strftime("%Y-%m-%dT%H:%M:%SZ")}},
                "job": {"request": {"name": "REBOOT_EQUIPMENT", "target": target}},
            }
        },
    )
    keys = (await stack.api.get(f"{NORTH}/apiKeys")).json()["apiKeys"]
    bootstrap = [k["id"] for k in keys if k["name"] == "bootstrap-admin"]
    assert bootstrap, keys
    return Plan(
        api_url=stack.api_url,
        admin_key=fuzzer["apiKey"],
        device_id=south["id"],
        device_key=south["apiKey"],
        known_ids={
            "devices": device["id"],
            "operationTypes": str(FUZZ_TYPE["name"]),
            "jobs": idle["id"],
            "operations": operation["operationId"],
            "tasks": task["id"],
            "apiKeys": victim["id"],
        },
        protected_key_ids=[*bootstrap, fuzzer["id"]],
        steer={
            "POST /operation/jobs": {
                "job.request.name": "REBOOT_EQUIPMENT",
                "job.request.target": target,
            },
            "POST /operation/tasks": {
                "task.job.request.name": "REBOOT_EQUIPMENT",
                "task.job.request.target": target,
                "task.job.request.parameters": {},
            },
            "POST /operation/response": {
                "operation.response.id": open_operation,
                "operation.response.deviceId": south["id"],
            },
        },
    )


def scaled(plan: Plan) -> Plan:
    seed = int(os.environ.get("FUZZ_SEED", plan.seed))
    if SCALE == 1 and seed == plan.seed:
        return plan
    return replace(
        plan,
        seed=seed,
        positive_examples=round(plan.positive_examples * SCALE),
        negative_examples=round(plan.negative_examples * SCALE),
        free_id_examples=round(plan.free_id_examples * SCALE),
        coverage_cases=round(plan.coverage_cases * SCALE),
    )


async def fuzz(plan: Plan, tmp_path: Path) -> dict[str, Any]:
    """Run tests/fuzz_support.py in a child process (see there why) and read its result."""
    plan_file, result_file = tmp_path / "fuzz-plan.json", tmp_path / "fuzz-result.json"
    plan_file.write_text(json.dumps(asdict(plan)))
    child = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "tests.fuzz_support", str(plan_file), str(result_file)),
        cwd=ROOT,
        # A fixed hash seed too: nothing in the generation may depend on the process.
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    try:
        code = await asyncio.wait_for(child.wait(), FUZZ_TIME_LIMIT * SCALE)
    except TimeoutError:
        child.kill()
        await child.wait()
        pytest.fail(f"the fuzzer did not finish in {FUZZ_TIME_LIMIT * SCALE:.0f} s")
    assert code == 0, f"the fuzzer exited with {code} (its output is above)"
    result: dict[str, Any] = json.loads(result_file.read_text())
    return result


def summary(result: dict[str, Any]) -> str:
    lines = [
        f"{len(result['findings'])} distinct failures in {result['requests']} requests "
        f"({result['runs']} runs over {len(result['operations'])} operations, "
        f"{result['seconds']} s):"
    ]
    for n, f in enumerate(result["findings"], 1):
        lines += [
            "",
            f"{n}. {f['operation']}: {f['check']} (status {f['status']}, {f['count']}x, "
            f"run {f['run']})",
            f"   {f['message']}".replace("\n", "\n   "),
            f"   request: {f['request']}".replace("\n", "\n   "),
            f"   response: {f['response']}".replace("\n", "\n   "),
        ]
    return "\n".join(lines)


async def still_serving(stack: Stack, plan: Plan, kept: list[str]) -> list[str]:
    """What is wrong with the stack after the fuzzing: a key revoked, a device gone (all but
    the one offered to the fuzzer), a normal job on the simulated devices not succeeding, or a
    workflow that failed a task."""
    problems = []
    async with stack.as_key(plan.admin_key) as fuzzer:
        answer = await fuzzer.get(f"{NORTH}/apiKeys")
        if answer.status_code != 200:
            problems.append(f"the fuzzer's key: {answer.status_code} {answer.text[:300]}")
    for device_id in [*kept, plan.device_id]:
        answer = await stack.api.get(f"{NORTH}/provision/devices/{device_id}")
        if answer.status_code != 200:
            problems.append(f"GET device {device_id}: {answer.status_code} {answer.text[:300]}")
    # Through the bootstrap admin key: this also shows that it still works.
    request = {"name": "REBOOT_EQUIPMENT", "target": {"append": {"entities": kept}}}
    answer = await stack.api.post(f"{NORTH}/operation/jobs", json={"job": {"request": request}})
    if answer.status_code != 201:
        return [*problems, f"POST job: {answer.status_code} {answer.text[:300]}"]
    job_id = answer.json()["id"]

    async def finished() -> dict[str, Any]:
        counters: dict[str, Any] = (await stack.job(job_id))["report"]["summary"]
        assert counters["status"] == "FINISHED", counters
        return counters

    try:
        counters = await eventually(finished, timeout=120, interval=0.5)
    except AssertionError as exc:
        problems.append(f"job {job_id} did not finish: {exc}")
    else:
        if counters["finished"]["successful"] != len(kept) or counters["total"] != len(kept):
            problems.append(f"job {job_id} finished with {counters}")
    seen, failed = await failed_workflow_tasks(stack)
    log.info("workflow histories read after fuzzing: %d", seen)
    return problems + failed


async def test_fuzzing_finds_nothing_and_leaves_the_stack_serving(
    stack: Stack, tmp_path: Path
) -> None:
    kept = [d["id"] for d in await stack.provision(3, prefix="keep-")]
    plan = scaled(await prepare(stack))

    result = await fuzz(plan, tmp_path)
    problems = await still_serving(stack, plan, kept)

    report = summary(result)
    log.info("fuzzing: %s", report)  # the counts, also when nothing failed
    for operation, answers in result["refused"].items():
        log.info("valid by the schema, refused by %s: %s", operation, answers)
    assert not problems, "after fuzzing:\n" + "\n".join(problems) + "\n\n" + report
    assert not result["findings"], report
