"""HTTP to callback receivers: the job lifecycle events of SPEC 6."""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from typing import Any

import httpx
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from core import metrics
from core.temporal import OPERATION_MEMO, operations_of_job
from models.messages import CallbackInput
from models.operations import Operation

# The first page of operations a finished callback carries.
RESULT_PAGE_SIZE = 100


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class CallbackActivities:
    """One shared HTTP client; the signing secret stays in the worker, out of workflow history."""

    def __init__(self, http: httpx.AsyncClient, client: Client, secret: str = "") -> None:
        self._http = http
        self._client = client
        self._secret = secret

    @activity.defn(name="deliver_callback")
    async def deliver(self, input: CallbackInput) -> int:
        payload = input.payload
        if input.job_id is not None:
            payload = {
                **payload,
                "job": {**payload["job"], "result": await self._result(input.job_id)},
            }
        body = json.dumps(payload, separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            "X-Event": input.event,
            "X-Delivery-Id": input.delivery_id,
        }
        if self._secret:
            headers["X-Signature"] = signature(self._secret, body)
        meter = activity.metric_meter()
        try:
            answer = await self._http.post(input.url, content=body, headers=headers, timeout=10)
        except httpx.HTTPError as exc:
            metrics.callback_delivery(meter, input.event.value, "unreachable")
            raise ApplicationError(
                f"callback receiver unreachable: {exc!r}", type="CallbackError"
            ) from exc
        if not answer.is_success:
            metrics.callback_delivery(meter, input.event.value, "http_error")
            # Retried with back-off by the activity's retry policy, within a bounded time.
            raise ApplicationError(
                f"callback receiver answered {answer.status_code}", type="CallbackError"
            )
        metrics.callback_delivery(meter, input.event.value, "delivered")
        return answer.status_code

    async def _result(self, job_id: str) -> dict[str, Any]:
        query = operations_of_job(job_id)
        total = (await self._client.count_workflows(query)).count
        operations: list[dict[str, Any]] = []
        async for execution in self._client.list_workflows(query, limit=RESULT_PAGE_SIZE):
            op = await execution.memo_value(OPERATION_MEMO, type_hint=Operation)
            operations.append(op.model_dump(mode="json", exclude_none=True))
        return {
            "page": {"number": 1, "of": max(1, math.ceil(total / RESULT_PAGE_SIZE))},
            "operations": operations,
        }
