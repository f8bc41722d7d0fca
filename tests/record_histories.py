"""Record workflow histories for the replay test: ``python -m tests.record_histories``.

Runs a job on the real stack (dev server, worker, API, simulator) whose devices take every main
path: a synchronous answer, an asynchronous one with steps, a device that is unreachable and
collects its request by polling, and a retry. Writes the histories of the job and of each of its
operations to ``tests/histories/``. Record again (and commit the files) only for a deliberate
change that cannot break running workflows; otherwise use ``workflow.patched()``.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from tests.stack import eventually, running_stack, start_dev_server

HERE = Path(__file__).parent / "histories"


async def main() -> None:
    env = await start_dev_server()
    async with env, running_stack(env, Path(tempfile.mkdtemp())) as stack:
        sync, async_, flaky = (d["id"] for d in await stack.provision(3, prefix="rec-"))
        sleepy = (await stack.provision(1, prefix="sleepy-", reachable=False))[0]
        await stack.sim.put(f"/sim/devices/{async_}", json={"mode": "async", "steps": ["A", "B"]})
        await stack.sim.put(f"/sim/devices/{flaky}", json={"fail_first": 1})
        job = await stack.create_job(
            {
                "name": "REBOOT_EQUIPMENT",
                "target": {"append": {"entities": [sync, async_, flaky, sleepy["id"], "ghost"]}},
                "operationParameters": {"retries": 1, "retriesDelay": 100},
            }
        )

        async def waiting() -> None:
            summary = (await stack.job(job["id"]))["report"]["summary"]
            assert summary["inProgress"]["waitingForConnection"] == 1

        await eventually(waiting)
        await stack.fleet.poll(sleepy["id"])
        await stack.wait_finished(job["id"])
        handle = stack.client.get_workflow_handle(job["id"])
        await handle.result()
        (HERE / "job.json").write_text((await handle.fetch_history()).to_json())
        for op in await stack.operations(job["id"]):
            op_handle = stack.client.get_workflow_handle(f"operation-{op['operationId']}")
            await op_handle.result()
            name = f"operation-{op['entityId'].split('-')[0]}-{op['entityId'][-1]}.json"
            (HERE / name).write_text((await op_handle.fetch_history()).to_json())


if __name__ == "__main__":
    asyncio.run(main())
