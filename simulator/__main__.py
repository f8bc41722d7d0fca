"""Run a simulated fleet: ``python -m simulator --devices 1000 [--provision --api-key K]``."""

from __future__ import annotations

import argparse
import asyncio
import logging

import httpx
import uvicorn

from simulator.app import create_app
from simulator.fleet import Behaviour, Fleet, Mode, device_name

log = logging.getLogger("simulator")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m simulator", description=__doc__)
    parser.add_argument("--devices", type=int, default=200, help="how many devices to simulate")
    parser.add_argument("--prefix", default="sim-", help="device id prefix")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1123)
    parser.add_argument("--tag", action="append", default=[], help="tag every device (repeatable)")
    parser.add_argument("--slow-ms", type=int, default=0, help="answer after this many ms")
    parser.add_argument(
        "--error-every", type=int, default=0, help="every Nth device answers an error"
    )
    parser.add_argument("--error-code", default="ERROR_PROCESSING")
    parser.add_argument("--provision", action="store_true", help="provision the devices first")
    parser.add_argument("--api", default="http://127.0.0.1:8080", help="the platform API")
    parser.add_argument("--api-key", default="", help="an operator or admin key for --provision")
    return parser.parse_args(argv)


def build_fleet(args: argparse.Namespace) -> Fleet:
    fleet = Fleet.numbered(args.devices, args.prefix)
    mode = Mode.SLOW if args.slow_ms else Mode.SYNC
    fleet.default = Behaviour(mode=mode, delay_ms=args.slow_ms)
    if args.error_every:
        for i in range(args.error_every, args.devices + 1, args.error_every):
            fleet.behaviours[device_name(args.prefix, i)] = Behaviour(
                mode=mode, delay_ms=args.slow_ms, result_code=args.error_code
            )
    return fleet


async def provision(
    api: str, api_key: str, fleet: Fleet, address: str, tags: list[str], chunk: int = 5000
) -> int:
    """Provision the fleet's devices through the platform's bulk endpoint; returns how many were
    new (devices already provisioned are left as they are)."""
    created = 0
    ids = sorted(fleet.device_ids)
    async with httpx.AsyncClient(base_url=api, headers={"X-ApiKey": api_key}, timeout=120) as http:
        for i in range(0, len(ids), chunk):
            body = [
                {"id": d, "type": "GATEWAY", "tags": tags, "address": address}
                for d in ids[i : i + chunk]
            ]
            answer = await http.post("/north/v80/provision/devices/bulk", json=body)
            answer.raise_for_status()
            created += len(answer.json()["created"])
    return created


async def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    fleet = build_fleet(args)
    config = uvicorn.Config(
        create_app(fleet), host=args.host, port=args.port, log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            await serving  # raises why the server could not start
            return
        await asyncio.sleep(0.05)
    address = f"http://{args.host}:{args.port}"
    log.info("simulating %d devices at %s", args.devices, address)
    if args.provision:
        created = await provision(args.api, args.api_key, fleet, address, args.tag)
        log.info("provisioned %d new devices (tags %s)", created, args.tag)
    await serving


if __name__ == "__main__":
    asyncio.run(main())
