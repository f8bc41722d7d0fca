"""The simulated devices: how each one behaves, and a record of every request it received."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import BaseModel


class Mode(StrEnum):
    SYNC = "sync"  # answers the request at once with its final result
    SLOW = "slow"  # answers the request with its final result after ``delay_ms``


class Behaviour(BaseModel):
    mode: Mode = Mode.SYNC
    result_code: str = "SUCCESSFUL"
    delay_ms: int = 0


@dataclass(frozen=True)
class Delivery:
    device_id: str
    operation_id: str
    name: str
    parameters: dict[str, Any]
    received_at: float


@dataclass
class Fleet:
    default: Behaviour = field(default_factory=Behaviour)
    behaviours: dict[str, Behaviour] = field(default_factory=dict)
    device_ids: set[str] = field(default_factory=set)
    deliveries: list[Delivery] = field(default_factory=list)
    per_operation: Counter[str] = field(default_factory=Counter)

    @classmethod
    def numbered(cls, count: int, prefix: str = "sim-") -> Fleet:
        return cls(device_ids={device_name(prefix, i) for i in range(1, count + 1)})

    def behaviour(self, device_id: str) -> Behaviour:
        return self.behaviours.get(device_id, self.default)

    def record(self, device_id: str, request: dict[str, Any]) -> Delivery:
        delivery = Delivery(
            device_id=device_id,
            operation_id=str(request.get("id", "")),
            name=str(request.get("name", "")),
            parameters=dict(request.get("parameters") or {}),
            received_at=time.time(),
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
        }

    def reset(self) -> None:
        self.deliveries.clear()
        self.per_operation.clear()

    async def answer(self, device_id: str, request: dict[str, Any]) -> dict[str, Any]:
        """Receive one request and return the device's synchronous final response."""
        self.record(device_id, request)
        behaviour = self.behaviour(device_id)
        if behaviour.mode is Mode.SLOW and behaviour.delay_ms:
            await asyncio.sleep(behaviour.delay_ms / 1000)
        now = int(time.time() * 1000)
        name = str(request.get("name", ""))
        ok = behaviour.result_code == "SUCCESSFUL"
        return {
            "version": "1.0",
            "operation": {
                "response": {
                    "id": request.get("id"),
                    "deviceId": device_id,
                    "name": name,
                    "timestamp": now,
                    "resultCode": behaviour.result_code,
                    "resultDescription": "Success" if ok else f"Simulated {behaviour.result_code}",
                    "steps": [
                        {
                            "name": name,
                            "timestamp": now,
                            "result": "SUCCESSFUL" if ok else "ERROR",
                            "description": f"{name} done by {device_id}",
                        }
                    ],
                }
            },
        }


def device_name(prefix: str, number: int) -> str:
    return f"{prefix}{number:06d}"
