"""The simulated devices: how each one behaves, and a record of every request it received."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import time
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import httpx
from pydantic import BaseModel

from core.catalog import BUILT_IN

log = logging.getLogger(__name__)


class Mode(StrEnum):
    SYNC = "sync"  # answers the request with its final result (after ``delay_ms``)
    ASYNC = "async"  # acknowledges, then posts partial steps and the final answer to the platform
    SILENT = "silent"  # acknowledges and never answers
    SLEEPY = "sleepy"  # unreachable (no address); polls the platform for pending work


class Behaviour(BaseModel):
    mode: Mode = Mode.SYNC
    result_code: str = "SUCCESSFUL"
    # SYNC: time before the answer. ASYNC: time before the final answer (after the steps).
    delay_ms: int = 0
    # ASYNC: partial answers, one step each; empty means the operation type's declared steps.
    steps: list[str] = []
    step_interval_ms: int = 50
    # The first ``fail_first`` requests of each operation end with ``fail_code`` instead.
    fail_first: int = 0
    fail_code: str = "ERROR_PROCESSING"
    # The first ``http_fail_first`` requests the device receives are answered HTTP 503.
    http_fail_first: int = 0
    # SLEEPY: time between two polls for pending work.
    poll_interval_ms: int = 1000


@dataclass(frozen=True)
class Delivery:
    device_id: str
    operation_id: str
    name: str
    parameters: dict[str, Any]
    received_at: float
    via: str = "push"  # or "poll"


@dataclass
class Fleet:
    default: Behaviour = field(default_factory=Behaviour)
    behaviours: dict[str, Behaviour] = field(default_factory=dict)
    device_ids: set[str] = field(default_factory=set)
    deliveries: list[Delivery] = field(default_factory=list)
    per_operation: Counter[str] = field(default_factory=Counter)
    http_failures: Counter[str] = field(default_factory=Counter)
    # Where the platform is, and each device's south key: needed to answer asynchronously.
    platform_url: str = ""
    keys: dict[str, str] = field(default_factory=dict)
    answers_sent: int = 0
    # Each device's variables: SET_DEVICE_PARAMETERS writes them, GET_DEVICE_PARAMETERS reads them.
    variables: dict[str, dict[str, Any]] = field(default_factory=dict)
    # How the devices reach an https platform: its CA, and the client certificate they present
    # (a fleet certificate, or none). A device without a key authenticates by that certificate.
    platform_tls: ssl.SSLContext | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _platform: httpx.AsyncClient | None = None

    @classmethod
    def numbered(cls, count: int, prefix: str = "sim-") -> Fleet:
        return cls(device_ids={device_name(prefix, i) for i in range(1, count + 1)})

    def behaviour(self, device_id: str) -> Behaviour:
        return self.behaviours.get(device_id, self.default)

    def record(self, device_id: str, request: dict[str, Any], via: str = "push") -> Delivery:
        delivery = Delivery(
            device_id=device_id,
            operation_id=str(request.get("id", "")),
            name=str(request.get("name", "")),
            parameters=dict(request.get("parameters") or {}),
            received_at=time.time(),
            via=via,
        )
        self.deliveries.append(delivery)
        self.per_operation[delivery.operation_id] += 1
        return delivery

    def stats(self) -> dict[str, int]:
        return {
            "devices": len(self.device_ids),
            "requests": len(self.deliveries),
            "operations": len(self.per_operation),
            "duplicates": sum(n - 1 for n in self.per_operation.values() if n > 1),
            "devicesReached": len({d.device_id for d in self.deliveries}),
            "answersSent": self.answers_sent,
            # Devices whose south key the simulator holds: all of them once provisioning is done.
            "provisioned": len(self.keys),
        }

    def reset(self) -> None:
        self.deliveries.clear()
        self.per_operation.clear()
        self.http_failures.clear()
        self.variables.clear()

    # --- the device side of SPEC 4.1 ---

    def take_push_failure(self, device_id: str) -> bool:
        """Whether this push should fail with HTTP 503 (the flaky behaviour)."""
        if self.http_failures[device_id] < self.behaviour(device_id).http_fail_first:
            self.http_failures[device_id] += 1
            return True
        return False

    async def receive(
        self, device_id: str, request: dict[str, Any], via: str = "push"
    ) -> dict[str, Any] | None:
        """Take one request; the synchronous final response, or None when answering later."""
        delivery = self.record(device_id, request, via)
        behaviour = self.behaviour(device_id)
        result_code = self._result_for(delivery, behaviour)
        if behaviour.mode is Mode.SILENT:
            return None
        if result_code == "SUCCESSFUL":
            self._execute(delivery)
        if behaviour.mode is Mode.ASYNC or via == "poll":
            self._spawn(self._answer_later(delivery, behaviour, result_code))
            return None
        if behaviour.delay_ms:
            await asyncio.sleep(behaviour.delay_ms / 1000)
        return response_body(delivery, result_code, steps=self._sync_steps(delivery, result_code))

    def _execute(self, delivery: Delivery) -> None:
        if delivery.name == "SET_DEVICE_PARAMETERS":
            variables = self.variables.setdefault(delivery.device_id, {})
            for variable in delivery.parameters.get("variableList", []):
                variables[variable["name"]] = variable.get("value")

    def _sync_steps(self, delivery: Delivery, result_code: str) -> list[dict[str, Any]]:
        """A multi-step type's declared steps (the last one failing on an error), else one step
        named after the operation."""
        names = _declared_steps(delivery.name)
        if not names:
            return [self._closing_step(delivery, result_code)]
        steps = [step(name, "SUCCESSFUL") for name in names[:-1]]
        return [*steps, step(names[-1], result_code)]

    def _closing_step(self, delivery: Delivery, result_code: str) -> dict[str, Any]:
        closing = step(delivery.name, result_code)
        if delivery.name == "GET_DEVICE_PARAMETERS" and result_code == "SUCCESSFUL":
            # SPEC 4.2 has no field for the values read and DeviceResponse forbids extra fields:
            # the values travel as JSON in the final step's description (docs/operation-types.md).
            closing["description"] = json.dumps({"variableList": self._read(delivery)})
        return closing

    def _read(self, delivery: Delivery) -> list[dict[str, Any]]:
        """The requested variables with their values (every known variable when none is named);
        a variable the device never had is read as null."""
        known = self.variables.get(delivery.device_id, {})
        requested = delivery.parameters.get("variableList") or [{"name": n} for n in known]
        return [{"name": v["name"], "value": known.get(v["name"])} for v in requested]

    def _result_for(self, delivery: Delivery, behaviour: Behaviour) -> str:
        attempt = self.per_operation[delivery.operation_id]
        return behaviour.fail_code if attempt <= behaviour.fail_first else behaviour.result_code

    async def _answer_later(
        self, delivery: Delivery, behaviour: Behaviour, result_code: str
    ) -> None:
        names = behaviour.steps or _declared_steps(delivery.name)
        for name in names:
            await asyncio.sleep(behaviour.step_interval_ms / 1000)
            await self.post_answer(delivery, None, steps=[step(name, "SUCCESSFUL")])
        if behaviour.delay_ms:
            await asyncio.sleep(behaviour.delay_ms / 1000)
        final_steps = [] if names else [self._closing_step(delivery, result_code)]
        await self.post_answer(delivery, result_code, steps=final_steps)

    async def post_answer(
        self, delivery: Delivery, result_code: str | None, steps: list[dict[str, Any]]
    ) -> httpx.Response:
        """POST a partial (no result code) or final answer to the platform's south API."""
        url = f"/south/v80/devices/{delivery.device_id}/operation/response"
        body = response_body(delivery, result_code, steps)
        answer = await self.platform.post(url, json=body, headers=self._auth(delivery.device_id))
        self.answers_sent += 1
        if answer.status_code != 200:
            log.info("platform answered %s to %s: %s", answer.status_code, url, answer.text)
        return answer

    # --- sleepy devices ---

    def start_pollers(self) -> None:
        for device_id in sorted(self.device_ids):
            if self.behaviour(device_id).mode is Mode.SLEEPY:
                self._spawn(self._poll_loop(device_id))

    async def poll(self, device_id: str) -> list[dict[str, Any]]:
        """Ask the platform for pending work once, and take every request handed out."""
        answer = await self.platform.get(
            f"/south/v80/devices/{device_id}/operation/pending",
            headers=self._auth(device_id),
        )
        answer.raise_for_status()
        requests = [entry["operation"]["request"] for entry in answer.json()["operations"]]
        for request in requests:
            await self.receive(device_id, request, via="poll")
        return requests

    async def _poll_loop(self, device_id: str) -> None:
        while True:
            try:
                await self.poll(device_id)
            except httpx.HTTPError as exc:
                log.info("poll of %s failed: %r", device_id, exc)
            await asyncio.sleep(self.behaviour(device_id).poll_interval_ms / 1000)

    # --- plumbing ---

    def _auth(self, device_id: str) -> dict[str, str]:
        key = self.keys.get(device_id)
        return {"X-ApiKey": key} if key else {}

    @property
    def platform(self) -> httpx.AsyncClient:
        if self._platform is None:
            self._platform = httpx.AsyncClient(
                base_url=self.platform_url, timeout=30, verify=self.platform_tls or True
            )
        return self._platform

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._platform is not None:
            await self._platform.aclose()
            self._platform = None


def _declared_steps(operation_name: str) -> list[str]:
    known = BUILT_IN.get(operation_name)
    return [s.name for s in known.steps] if known else []


def step(name: str, result_code: str) -> dict[str, Any]:
    return {
        "name": name,
        "timestamp": int(time.time() * 1000),
        "result": "SUCCESSFUL" if result_code == "SUCCESSFUL" else "ERROR",
        "description": f"{name}: {result_code}",
    }


def response_body(
    delivery: Delivery, result_code: str | None, steps: list[dict[str, Any]]
) -> dict[str, Any]:
    response: dict[str, Any] = {
        "id": delivery.operation_id,
        "deviceId": delivery.device_id,
        "name": delivery.name,
        "timestamp": int(time.time() * 1000),
        "steps": steps,
    }
    if result_code is not None:
        response["resultCode"] = result_code
        ok = result_code == "SUCCESSFUL"
        response["resultDescription"] = "Success" if ok else f"Simulated {result_code}"
    return {"version": "1.0", "operation": {"response": response}}


def device_name(prefix: str, number: int) -> str:
    return f"{prefix}{number:06d}"
