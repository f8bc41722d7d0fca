"""The simulator's HTTP server: the devices' own endpoint, and a control API for tests and tools.

Device endpoint (SPEC 4.1): ``POST /v80/devices/{deviceId}/operation/request``.
Control API (for tests and tools, not part of the SPEC): ``GET /sim/stats``,
``GET /sim/deliveries[?deviceId=]``, ``PUT /sim/devices/{id}`` (a ``Behaviour``),
``PUT /sim/default`` and ``POST /sim/reset``.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from simulator.fleet import Behaviour, Fleet


def create_app(fleet: Fleet) -> Starlette:
    async def operation_request(request: Request) -> Response:
        device_id = request.path_params["device_id"]
        if device_id not in fleet.device_ids:
            return JSONResponse({"error": f"no device {device_id} here"}, status_code=404)
        try:
            body: dict[str, Any] = json.loads(await request.body())
            operation = body["operation"]["request"]
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": "malformed request"}, status_code=400)
        if fleet.take_push_failure(device_id):
            return JSONResponse({"error": "simulated failure"}, status_code=503)
        answer = await fleet.receive(device_id, operation)
        if answer is None:  # acknowledged: the answer comes later through the south API
            return Response(status_code=200)
        return JSONResponse(answer)

    async def stats(_: Request) -> JSONResponse:
        return JSONResponse(fleet.stats())

    async def deliveries(request: Request) -> JSONResponse:
        device_id = request.query_params.get("deviceId")
        found = [asdict(d) for d in fleet.deliveries if device_id in (None, d.device_id)]
        return JSONResponse({"deliveries": found})

    async def set_behaviour(request: Request) -> JSONResponse:
        try:
            behaviour = Behaviour.model_validate_json(await request.body())
        except ValidationError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        if "device_id" in request.path_params:
            fleet.behaviours[request.path_params["device_id"]] = behaviour
        else:
            fleet.default = behaviour
        return JSONResponse(behaviour.model_dump())

    async def reset(_: Request) -> JSONResponse:
        fleet.reset()
        return JSONResponse(fleet.stats())

    return Starlette(
        routes=[
            Route(
                "/v80/devices/{device_id}/operation/request", operation_request, methods=["POST"]
            ),
            Route("/sim/stats", stats),
            Route("/sim/deliveries", deliveries),
            Route("/sim/devices/{device_id}", set_behaviour, methods=["PUT"]),
            Route("/sim/default", set_behaviour, methods=["PUT"]),
            Route("/sim/reset", reset, methods=["POST"]),
        ]
    )
