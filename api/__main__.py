"""The API's one entry point: ``python -m api`` serves it as the settings say (``FLEET_API_HOST``,
``FLEET_API_PORT``, and HTTPS / mutual TLS with ``FLEET_TLS_*``; docs/deployment.md)."""

from __future__ import annotations

import argparse
import logging

import uvicorn

from api.app import create_app
from api.server import scheme, server_config
from core.settings import get_settings

log = logging.getLogger("api")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m api", description=__doc__)
    parser.add_argument("--log-level", default="info", help="uvicorn's log level")
    parser.add_argument("--no-access-log", action="store_true", help="no line per request")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = get_settings()
    config = server_config(
        create_app(settings),
        settings,
        log_level=args.log_level,
        access_log=not args.no_access_log,
    )
    log.info(
        "serving the API on %s://%s:%d%s",
        scheme(settings),
        settings.api_host,
        settings.api_port,
        f" (client certificates {settings.tls_client_cert})" if settings.tls_client_ca_file else "",
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
