"""Run a simulated fleet: ``python -m simulator --devices 1000 [--provision --api-key K]``.

Over TLS (SPEC 4.1: port 11235): ``--port 11235 --tls-cert C --tls-key K`` serves the devices
(and the control API) over HTTPS, and ``--tls-client-ca CA`` requires the platform's certificate.
``--platform-ca``/``--client-cert``/``--client-key``: the devices verify an https platform and
present a client certificate (a fleet certificate: then they need no south key)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os

import httpx
import uvicorn

from core.tls import client_context, server_context
from simulator.app import create_app
from simulator.fleet import Behaviour, Fleet, Mode, device_name

log = logging.getLogger("simulator")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m simulator", description=__doc__)
    parser.add_argument("--devices", type=int, default=200, help="how many devices to simulate")
    parser.add_argument("--prefix", default="sim-", help="device id prefix")
    parser.add_argument("--host", default="127.0.0.1", help="where the simulator listens")
    parser.add_argument("--port", type=int, default=1123)
    parser.add_argument(
        "--advertise-address",
        default="",
        help="the address the platform reaches the devices at (default http://HOST:PORT)",
    )
    parser.add_argument(
        "--tls-cert", default="", help="serve the devices over HTTPS with this certificate (PEM)"
    )
    parser.add_argument("--tls-key", default="", help="the key of --tls-cert")
    parser.add_argument(
        "--tls-client-ca",
        default="",
        help="with --tls-cert: require the platform's client certificate, signed by this CA",
    )
    parser.add_argument("--platform-ca", default="", help="verify an https platform with this CA")
    parser.add_argument(
        "--client-cert", default="", help="the client certificate the devices present (PEM)"
    )
    parser.add_argument("--client-key", default="", help="the key of --client-cert")
    parser.add_argument("--tag", action="append", default=[], help="tag every device (repeatable)")
    parser.add_argument("--mode", choices=[m.value for m in Mode], default=Mode.SYNC.value)
    parser.add_argument("--slow-ms", type=int, default=0, help="answer after this many ms")
    parser.add_argument(
        "--error-every", type=int, default=0, help="every Nth device answers an error"
    )
    parser.add_argument("--error-code", default="ERROR_PROCESSING")
    parser.add_argument("--sleepy-every", type=int, default=0, help="every Nth device is sleepy")
    parser.add_argument("--poll-ms", type=int, default=2000, help="sleepy devices poll this often")
    parser.add_argument("--provision", action="store_true", help="provision the devices first")
    parser.add_argument("--api", default="http://127.0.0.1:8080", help="the platform API")
    parser.add_argument(
        "--api-key",
        default=os.environ.get("FLEET_SIM_API_KEY", ""),
        help="an operator or admin key for --provision (default: $FLEET_SIM_API_KEY)",
    )
    return parser.parse_args(argv)


def build_fleet(args: argparse.Namespace) -> Fleet:
    fleet = Fleet.numbered(args.devices, args.prefix)
    fleet.platform_url = args.api
    if args.platform_ca or args.client_cert:
        fleet.platform_tls = client_context(args.platform_ca, args.client_cert, args.client_key)
    fleet.default = Behaviour(mode=Mode(args.mode), delay_ms=args.slow_ms)
    for every, change in (
        (args.error_every, {"result_code": args.error_code}),
        (args.sleepy_every, {"mode": Mode.SLEEPY, "poll_interval_ms": args.poll_ms}),
    ):
        for i in range(every, args.devices + 1, every) if every else ():
            name = device_name(args.prefix, i)
            fleet.behaviours[name] = fleet.behaviour(name).model_copy(update=change)
    return fleet


async def provision(fleet: Fleet, api_key: str, address: str, tags: list[str]) -> int:
    """Provision the fleet's devices through the platform's bulk endpoint and keep their south
    keys. A device provisioned before is provisioned again, since its key was shown only once."""
    ids = sorted(fleet.device_ids)
    async with httpx.AsyncClient(
        base_url=fleet.platform_url,
        headers={"X-ApiKey": api_key},
        timeout=120,
        verify=fleet.platform_tls or True,
    ) as http:
        for i in range(0, len(ids), 5000):
            body = [
                {
                    "id": d,
                    "type": "GATEWAY",
                    "tags": tags,
                    "address": None if fleet.behaviour(d).mode is Mode.SLEEPY else address,
                }
                for d in ids[i : i + 5000]
            ]
            answer = await http.post("/north/v80/provision/devices/bulk", json=body)
            answer.raise_for_status()
            result = answer.json()
            fleet.keys.update({d["id"]: d["apiKey"] for d in result["created"]})
            for error in result["errors"]:
                (
                    await http.delete(f"/north/v80/provision/devices/{error['id']}")
                ).raise_for_status()
            again = [d for d in body if d["id"] not in fleet.keys]
            if again:
                answer = await http.post("/north/v80/provision/devices/bulk", json=again)
                answer.raise_for_status()
                fleet.keys.update({d["id"]: d["apiKey"] for d in answer.json()["created"]})
    return len(fleet.keys)


async def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    fleet = build_fleet(args)
    tls = (
        server_context(args.tls_cert, args.tls_key, [args.tls_client_ca], "required")
        if args.tls_cert
        else None
    )
    config = uvicorn.Config(
        create_app(fleet),
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        # Platform connections kept alive (TLS ones too) do not hold a shutdown for long.
        timeout_graceful_shutdown=5,
        ssl_context_factory=(lambda _config, _default: tls) if tls else None,
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            await serving  # raises why the server could not start
            return
        await asyncio.sleep(0.05)
    scheme = "https" if tls else "http"
    address = args.advertise_address or f"{scheme}://{args.host}:{args.port}"
    log.info("simulating %d devices at %s", args.devices, address)
    try:
        if args.provision:
            count = await provision(fleet, args.api_key, address, args.tag)
            log.info("provisioned %d devices (tags %s)", count, args.tag)
            fleet.start_pollers()
        await serving
    finally:
        await fleet.aclose()


if __name__ == "__main__":
    asyncio.run(main())
