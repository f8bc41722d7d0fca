"""HTTP to devices: the platform → device request of SPEC 4.1."""

from __future__ import annotations

import asyncio
import ssl
from datetime import timedelta
from enum import StrEnum

import httpx
from pydantic import BaseModel, ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from models.operations import DeviceRequest, DeviceResponse, DeviceResponseBody

# How often a push waiting for its device tells Temporal it is alive (the workflow's heartbeat
# timeout is a few times this).
HEARTBEAT_EVERY = timedelta(seconds=2)
# A synchronous answer is a few steps of JSON: a device that sends more is not read further, so
# no device can make a worker hold an unbounded body in memory.
MAX_ANSWER_BYTES = 1024 * 1024


class SendRequestInput(BaseModel):
    operation_id: str
    device_id: str
    address: str | None
    request: DeviceRequest
    # How long the device may take to answer the HTTP request itself.
    answer_timeout_s: float


class Delivery(StrEnum):
    ANSWERED = "ANSWERED"  # a synchronous final response (with resultCode)
    ACCEPTED = "ACCEPTED"  # 2xx without a final response: the device answers asynchronously
    UNREACHABLE = "UNREACHABLE"  # no address, refused, DNS failure, no answer in time
    REJECTED = "REJECTED"  # the device refused the request (4xx)


class SendRequestResult(BaseModel):
    delivery: Delivery
    response: DeviceResponseBody | None = None
    detail: str | None = None


class DeviceActivities:
    """Activities that reach devices; one shared HTTP client per worker."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http

    @activity.defn(name="send_device_request")
    async def send_request(self, input: SendRequestInput) -> SendRequestResult:
        # Heartbeats while the device takes its time: if this worker dies, Temporal retries the
        # push on another within the heartbeat timeout, not after the whole answer timeout.
        push = asyncio.ensure_future(self._push(input))
        try:
            while True:
                done, _ = await asyncio.wait({push}, timeout=HEARTBEAT_EVERY.total_seconds())
                if done:
                    return push.result()
                activity.heartbeat()
        finally:
            push.cancel()

    async def _push(self, input: SendRequestInput) -> SendRequestResult:
        if not input.address:
            return SendRequestResult(delivery=Delivery.UNREACHABLE, detail="device has no address")
        url = f"{input.address.rstrip('/')}/v80/devices/{input.device_id}/operation/request"
        try:
            async with self._http.stream(
                "POST",
                url,
                content=input.request.model_dump_json(exclude_none=True),
                headers={"Content-Type": "application/json"},
                timeout=httpx.Timeout(
                    input.answer_timeout_s, connect=min(5.0, input.answer_timeout_s)
                ),
            ) as answer:
                if answer.status_code >= 500:
                    # A device-side failure may pass: let the activity retry policy try again.
                    raise ApplicationError(
                        f"device answered HTTP {answer.status_code}", type="DeviceError"
                    )
                if answer.status_code >= 400:
                    return SendRequestResult(
                        delivery=Delivery.REJECTED,
                        detail=f"device answered HTTP {answer.status_code}",
                    )
                content = await _read_capped(answer)
        except (httpx.TransportError, httpx.InvalidURL) as exc:
            activity.logger.info("device %s unreachable: %r", input.device_id, exc)
            return SendRequestResult(delivery=Delivery.UNREACHABLE, detail=_why(exc))
        if content is None:
            return SendRequestResult(
                delivery=Delivery.REJECTED,
                detail=f"answer larger than {MAX_ANSWER_BYTES} bytes",
            )
        return _read_answer(content, input.operation_id)


def _why(exc: Exception) -> str:
    """Why a device could not be reached; a certificate that does not verify says so (the
    handshake failed, so the request was never sent)."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"the device's TLS certificate does not verify ({cause.verify_message})"
        cause = cause.__cause__ or cause.__context__
    return type(exc).__name__


async def _read_capped(answer: httpx.Response) -> bytes | None:
    """The body of ``answer``, or None past ``MAX_ANSWER_BYTES`` (the rest is not read)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in answer.aiter_bytes():
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _read_answer(content: bytes, operation_id: str) -> SendRequestResult:
    if not content.strip():
        return SendRequestResult(delivery=Delivery.ACCEPTED)
    try:
        body = DeviceResponse.model_validate_json(content).operation.response
    except ValidationError as exc:
        return SendRequestResult(
            delivery=Delivery.REJECTED, detail=f"malformed answer: {exc.errors()[0]['msg']}"
        )
    if body.id != operation_id:
        return SendRequestResult(delivery=Delivery.REJECTED, detail="answer for another operation")
    delivery = Delivery.ACCEPTED if body.result_code is None else Delivery.ANSWERED
    return SendRequestResult(delivery=delivery, response=body)
