"""The CLI's failures: each is shown as one message on stderr with an exit code, never a
traceback (docs/cli.md, "Exit codes")."""

from __future__ import annotations

from dataclasses import dataclass, field

# Exit codes shared by every command.
EXIT_OK = 0
EXIT_FAILED = 1  # the work was done and failed: a job closed with errors, rows not imported
EXIT_USAGE = 2  # bad flags or config, the API refused the request, the API was unreachable
EXIT_TIMEOUT = 3  # `jobs watch --watch-timeout` ran out before the job closed
EXIT_GAVE_UP = 4  # `jobs watch`: the API stayed unreachable (or failing) for --patience


class CliProblem(Exception):
    """A failure the CLI explains in one message."""

    exit_code = EXIT_USAGE

    @property
    def transient(self) -> bool:
        """Whether asking again later may succeed (a watch retries these)."""
        return False

    @property
    def retry_after(self) -> float | None:
        """The seconds the server asked to wait before asking again, if it said."""
        return None


class UsageProblem(CliProblem):
    """Bad flags, arguments, files or configuration."""


class ConnectionProblem(CliProblem):
    """The API could not be reached (or answered something that is not HTTP JSON)."""


class Unreachable(ConnectionProblem):
    """No HTTP answer at all: refused, reset, timed out, a TLS or DNS failure."""

    @property
    def transient(self) -> bool:
        return True


class GaveUp(CliProblem):
    """A watch stopped asking: the API stayed unreachable or failing for its whole patience."""

    exit_code = EXIT_GAVE_UP


@dataclass(eq=False)
class ApiProblem(CliProblem):
    """The API answered with the SPEC error body."""

    status: int
    message: str
    code: int | None = None
    context: list[tuple[str, str]] = field(default_factory=list)
    wait_s: float | None = None  # its Retry-After header, in seconds

    @property
    def transient(self) -> bool:
        # The API (or a proxy before it) restarting, overloaded or slow: 5xx, 408, 429.
        return self.status >= 500 or self.status in (408, 429)

    @property
    def retry_after(self) -> float | None:
        return self.wait_s

    def __str__(self) -> str:
        text = self.message
        # The context names the fields; a value the message already shows is not repeated.
        text += "".join(
            f"\n  {name}: {value}" for name, value in self.context if value not in self.message
        )
        return f"{text} (HTTP {self.status}" + (f", code {self.code})" if self.code else ")")
