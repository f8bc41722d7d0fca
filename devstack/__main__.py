"""``python -m devstack run [--devices 200]``: the whole stack on this machine, with a demo job."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from devstack.stack import Options, run

# devstack/ sits in the repository root, next to worker.py: the children run from there.
ROOT = Path(__file__).resolve().parent.parent


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser(
        "run",
        help="start Temporal, the worker, the API and the simulator, then run a demo job",
        description="Start the Temporal dev server, the worker, the API and the device "
        "simulator, provision the simulated devices, run a demo job, and keep everything "
        "running until Ctrl-C. State and logs live in .data/.",
    )
    run_parser.add_argument(
        "--devices", type=positive_int, default=200, help="how many devices to simulate"
    )
    run_parser.add_argument(
        "--startup-timeout",
        type=float,
        default=60.0,
        help="seconds to wait for each process to become ready",
    )
    run_parser.add_argument(
        "--job-timeout", type=float, default=600.0, help="seconds to wait for the demo job"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not (ROOT / "worker.py").is_file():
        print(f"error: {ROOT} is not the project's root (no worker.py)", file=sys.stderr)
        return 2
    options = Options(
        root=ROOT,
        devices=args.devices,
        startup_timeout_s=args.startup_timeout,
        job_timeout_s=args.job_timeout,
    )
    return asyncio.run(run(options))


if __name__ == "__main__":
    sys.exit(main())
