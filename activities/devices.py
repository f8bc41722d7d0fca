"""HTTP to devices: the platform → device request of SPEC 4.1."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import OrderedDict
from datetime import timedelta
from enum import StrEnum

import httpx
from pydantic import BaseModel, ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from core import metrics
from models.operations import DeviceRequest, DeviceResponse, DeviceResponseBody

# How often a push waiting for its device tells Temporal it is alive (the workflow's heartbeat
# timeout is a few times this).
HEARTBEAT_EVERY = timedelta(seconds=2)
# A synchronous answer is a few steps of JSON: a device that sends more is not read further, so
# no device can make a worker hold an unbounded body in memory.
MAX_ANSWER_BYTES = 1024 * 1024
# How long, and for how many pushes, a worker remembers its local pushes' answers (above).
LOCAL_PUSH_MEMORY = timedelta(minutes=2)
LOCAL_PUSH_MEMORY_BYTES = 32 * 1024 * 1024


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


class RecentLocalPushes:
    """What the local pushes of this worker answered lately, by workflow run and local activity.

    A local activity's result reaches Temporal only with the workflow task that ran it. When the
    server refuses that task's completion (a signal arrived while it ran: a pause's hold, a
    cancel, the job's hand-over), the operation replays and schedules the same local activity
    again; without this, the device would get the request a second time. The replay runs on the
    same worker (its sticky queue), so the answer is taken from here instead. A worker that died
    took this with it: its pushes in flight are sent again, as they must be.
    """

    def __init__(
        self,
        ttl: timedelta = LOCAL_PUSH_MEMORY,
        max_bytes: int = LOCAL_PUSH_MEMORY_BYTES,
    ) -> None:
        self._ttl = ttl.total_seconds()
        self._max_bytes = max_bytes
        self._bytes = 0
        # key -> (expiry, size, answer), oldest first.
        self._answers: OrderedDict[tuple[str, str], tuple[float, int, SendRequestResult]] = (
            OrderedDict()
        )

    def get(self, key: tuple[str, str]) -> SendRequestResult | None:
        self._expire(time.monotonic())
        kept = self._answers.get(key)
        return kept[2] if kept else None

    def put(self, key: tuple[str, str], result: SendRequestResult) -> None:
        # Devices choose the size of their answers (up to MAX_ANSWER_BYTES): the memory is
        # bounded in bytes, the oldest answers forgotten first.
        size = len(result.model_dump_json()) if result.response is not None else 64
        self._forget(key)
        self._answers[key] = (time.monotonic() + self._ttl, size, result)
        self._bytes += size
        while self._bytes > self._max_bytes and self._answers:
            self._forget(next(iter(self._answers)))

    def _forget(self, key: tuple[str, str]) -> None:
        kept = self._answers.pop(key, None)
        if kept is not None:
            self._bytes -= kept[1]

    def _expire(self, now: float) -> None:
        while self._answers:
            key, (expires, _, _) = next(iter(self._answers.items()))
            if expires > now:
                return
            self._forget(key)


class DeviceActivities:
    """Activities that reach devices; one shared HTTP client per worker."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http
        self._recent = RecentLocalPushes()

    @activity.defn(name="send_device_request")
    async def send_request(self, input: SendRequestInput) -> SendRequestResult:
        info = activity.info()
        if not info.is_local:
            return await self._push_heartbeating(input)
        key = (info.workflow_run_id or "", info.activity_id)
        answered = self._recent.get(key)
        if answered is None:
            answered = await self._push(input)
            self._recent.put(key, answered)
        return answered

    async def _push_heartbeating(self, input: SendRequestInput) -> SendRequestResult:
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
        meter = activity.metric_meter()
        if not input.address:
            metrics.device_unreachable(meter, "no_address")
            return SendRequestResult(delivery=Delivery.UNREACHABLE, detail="device has no address")
        # The push latency, by how the push went (docs/metrics.md).
        started, delivery = time.monotonic(), "ERROR"
        try:
            result = await self._post(input, input.address)
            delivery = result.delivery.value
            return result
        except ApplicationError:
            delivery = "DEVICE_ERROR"
            raise
        except asyncio.CancelledError:
            delivery = "CANCELLED"
            raise
        finally:
            took = timedelta(seconds=time.monotonic() - started)
            metrics.device_pushed(meter, delivery, took)

    async def _post(self, input: SendRequestInput, address: str) -> SendRequestResult:
        url = f"{address.rstrip('/')}/v80/devices/{input.device_id}/operation/request"
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
            # A bounded label: the certificate's complaint stays in the detail.
            reason = "tls_verify" if _unverified(exc) else type(exc).__name__
            metrics.device_unreachable(activity.metric_meter(), reason)
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
    unverified = _unverified(exc)
    if unverified is not None:
        return f"the device's TLS certificate does not verify ({unverified.verify_message})"
    return type(exc).__name__


def _unverified(exc: Exception) -> ssl.SSLCertVerificationError | None:
    """The certificate check that failed behind ``exc``, if one did."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return cause
        cause = cause.__cause__ or cause.__context__
    return None


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
