"""What every command shares: the output option, the client built from the global options, local
checks of request bodies, and the error handling that turns a problem into a message."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, ParamSpec, TypeVar

import typer
from pydantic import BaseModel, ValidationError
from rich.text import Text

from cli import config
from cli.client import FleetClient
from cli.errors import EXIT_USAGE, CliProblem, UsageProblem
from cli.render import Output, stderr, visible

P = ParamSpec("P")
R = TypeVar("R")
M = TypeVar("M", bound=BaseModel)
EXIT_INTERRUPTED = 130

OutputOption = Annotated[
    Output,
    typer.Option("--output", "-o", help="table for people, json for scripts", case_sensitive=False),
]
PageOption = Annotated[int, typer.Option("--page", min=1, help="page number (1-based)")]
SizeOption = Annotated[int, typer.Option("--size", min=1, max=1000, help="items per page")]


@dataclass(frozen=True)
class Given:
    """The global options as given (flags or their environment variables)."""

    profile: str | None = None
    url: str | None = None
    api_key: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    timeout: float | None = None

    def settings(self) -> config.Settings:
        return config.resolve(
            self.profile,
            url=self.url,
            api_key=self.api_key,
            ca_file=self.ca_file,
            cert_file=self.cert_file,
            key_file=self.key_file,
            timeout=self.timeout,
        )


def client(ctx: typer.Context) -> FleetClient:
    """A client for the API the global options (and the profile file) name."""
    given = ctx.find_root().obj
    if not isinstance(given, Given):
        given = Given()
    return FleetClient(given.settings())


def handled(command: Callable[P, R]) -> Callable[P, R]:
    """Run a command, showing a ``CliProblem`` as ``error: <message>`` on stderr with its exit
    code (and Ctrl-C as exit 130) instead of a traceback."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except CliProblem as problem:
            # The message may quote the server (an error body): controls are made visible.
            message = visible(str(problem), keep_newlines=True)
            stderr().print(Text.assemble(("error: ", "red"), message), soft_wrap=True)
            raise typer.Exit(problem.exit_code) from None
        except KeyboardInterrupt:
            stderr().print("interrupted")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise  # the command line's own ends (an exit code, a usage error)
        except Exception as exc:
            # A bug of the CLI: one line, unless FLEETOPS_DEBUG asks for the traceback.
            if os.environ.get("FLEETOPS_DEBUG"):
                raise
            stderr().print(
                Text.assemble(("error: ", "red"), visible(f"internal error: {exc!r}")),
                Text("(FLEETOPS_DEBUG=1 shows the traceback)", style="dim"),
                soft_wrap=True,
            )
            raise typer.Exit(EXIT_USAGE) from None

    return run


def build(model: type[M], data: Any, what: str) -> M:
    """``data`` checked as ``model`` before it is sent: a mistake is shown here, field by field,
    rather than as a round trip to the server."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        lines = []
        for error in exc.errors()[:10]:
            where = ".".join(str(p) for p in error["loc"]) or what
            message = error["msg"].removeprefix("Value error, ")
            lines.append(f"  {where}: {message}")
        raise UsageProblem(f"invalid {what}:\n" + "\n".join(lines)) from None
