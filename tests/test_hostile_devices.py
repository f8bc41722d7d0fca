"""Devices that answer the platform's push with hostile bodies: the worker reads a bounded amount
and closes the operation, and the job goes on."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.responses import StreamingResponse

from activities.devices import MAX_ANSWER_BYTES
from tests.stack import Stack, serve

CHUNK = 64 * 1024
# Far more than the worker reads: 64 MiB, if a reader took it all.
CHUNKS = 1024


def endless_device() -> tuple[FastAPI, list[int]]:
    """A device whose answer to a request is a JSON body that never seems to end."""
    app = FastAPI()
    sent: list[int] = []

    @app.post("/v80/devices/{device_id}/operation/request")
    async def request(device_id: str) -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            yield b'{"operation":{"response":{"resultDescription":"'
            for _ in range(CHUNKS):
                sent.append(CHUNK)
                yield b"x" * CHUNK

        return StreamingResponse(body(), media_type="application/json")

    return app, sent


async def test_a_device_answering_an_endless_body_is_not_read_whole(stack: Stack) -> None:
    app, sent = endless_device()
    async with serve(app) as device_url:
        answer = await stack.api.post(
            "/north/v80/provision/devices",
            json={"id": "endless-1", "address": device_url},
        )
        assert answer.status_code == 201, answer.text
        well = (await stack.provision(1, prefix="well-"))[0]["id"]
        job = await stack.create_job(
            {"name": "REBOOT_EQUIPMENT", "target": {"append": {"entities": ["endless-1", well]}}}
        )
        done = await stack.wait_finished(job["id"])

    summary = done["report"]["summary"]
    assert summary["finished"]["successful"] == 1
    assert summary["finished"]["cancelled"]["byEngine"] == 1
    operations = {o["entityId"]: o for o in await stack.operations(job["id"])}
    assert operations["endless-1"]["status"] == "CANCELLED"
    assert f"larger than {MAX_ANSWER_BYTES} bytes" in operations["endless-1"]["description"]
    # The device did offer the whole body: the worker stopped at its bound instead of parsing it.
    assert sum(sent) == CHUNKS * CHUNK
