"""Entry point of the ``fleetops`` console script: the command tree and the global options."""

from __future__ import annotations

from typing import Annotated

import typer

from cli import admin, devices, jobs
from cli.common import Given

app = typer.Typer(
    name="fleetops",
    help="Operate the fleet through the north API: jobs, devices, tasks, types and keys.\n\n"
    "Configuration: flags, then FLEETOPS_* variables, then the profile file "
    "(~/.config/fleetops/config.toml or FLEETOPS_CONFIG). See docs/cli.md.",
    no_args_is_help=True,
    add_completion=False,
    # Problems are shown as messages by each command; anything else is a bug worth a plain
    # traceback, not a page of locals (which could hold the API key).
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(jobs.app, name="jobs")
app.add_typer(devices.app, name="devices")
app.add_typer(admin.tasks, name="tasks")
app.add_typer(admin.types, name="types")
app.add_typer(admin.keys, name="keys")


@app.callback()
def options(
    ctx: typer.Context,
    url: Annotated[
        str | None,
        typer.Option(envvar="FLEETOPS_URL", help="the API's base URL (http://127.0.0.1:8080)"),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(envvar="FLEETOPS_API_KEY", help="the X-ApiKey to send", show_default=False),
    ] = None,
    profile: Annotated[
        str | None,
        typer.Option(envvar="FLEETOPS_PROFILE", help="a profile of the config file"),
    ] = None,
    ca_file: Annotated[
        str | None,
        typer.Option(envvar="FLEETOPS_CA_FILE", help="verify the API's certificate with this CA"),
    ] = None,
    cert: Annotated[
        str | None,
        typer.Option(envvar="FLEETOPS_CERT_FILE", help="client certificate (mutual TLS)"),
    ] = None,
    key: Annotated[
        str | None,
        typer.Option(envvar="FLEETOPS_KEY_FILE", help="the client certificate's private key"),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(envvar="FLEETOPS_TIMEOUT", min=0.1, help="seconds per HTTP request"),
    ] = None,
) -> None:
    ctx.obj = Given(profile, url, api_key, ca_file, cert, key, timeout)


def main() -> None:
    app(prog_name="fleetops")


if __name__ == "__main__":
    main()
