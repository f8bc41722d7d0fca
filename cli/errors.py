"""The CLI's failures: each is shown as one message on stderr with an exit code, never a
traceback (docs/cli.md, "Exit codes")."""

from __future__ import annotations

from dataclasses import dataclass, field

# Exit codes shared by every command.
EXIT_OK = 0
EXIT_FAILED = 1  # the work was done and failed: a job closed with errors, rows not imported
EXIT_USAGE = 2  # bad flags or config, the API refused the request, the API was unreachable
EXIT_TIMEOUT = 3  # `jobs watch --timeout` ran out before the job closed


class CliProblem(Exception):
    """A failure the CLI explains in one message."""

    exit_code = EXIT_USAGE


class UsageProblem(CliProblem):
    """Bad flags, arguments, files or configuration."""


class ConnectionProblem(CliProblem):
    """The API could not be reached (or answered something that is not HTTP JSON)."""


@dataclass(eq=False)
class ApiProblem(CliProblem):
    """The API answered with the SPEC error body."""

    status: int
    message: str
    code: int | None = None
    context: list[tuple[str, str]] = field(default_factory=list)

    def __str__(self) -> str:
        text = self.message
        # The context names the fields; a value the message already shows is not repeated.
        text += "".join(
            f"\n  {name}: {value}" for name, value in self.context if value not in self.message
        )
        return f"{text} (HTTP {self.status}" + (f", code {self.code})" if self.code else ")")
