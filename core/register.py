"""Prepare a Temporal cluster for the project: ``python -m core.register``.

The one-shot job that docker-compose runs once the Temporal server answers (the dev server gets
the same keys on its command line through ``core.temporal.dev_server_search_attribute_args``).
It makes sure the configured namespace exists, since the plain ``temporalio/server`` image,
unlike the deprecated ``auto-setup`` one, creates none, then registers every key of
``core.temporal.SEARCH_ATTRIBUTES`` as Keyword in it. Idempotent: a second run changes nothing
and succeeds. Exits non-zero when the cluster cannot be prepared before the deadline, or when a
key is already registered with another type.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

from google.protobuf.duration_pb2 import Duration
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest, RegisterNamespaceRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from core.settings import Settings
from core.temporal import SEARCH_ATTRIBUTES, connect

log = logging.getLogger("core.register")

KEYWORD = IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
DEFAULT_TIMEOUT_S = 60.0
RETRY_INTERVAL_S = 2.0
RPC_TIMEOUT = timedelta(seconds=10)
DEFAULT_RETENTION_DAYS = 3

# Worth another try until the deadline: the server is still starting, or a namespace registered
# a moment ago is not yet in the frontend's namespace cache (refreshed every few seconds).
_TRANSIENT = frozenset(
    {
        RPCStatusCode.UNAVAILABLE,
        RPCStatusCode.DEADLINE_EXCEEDED,
        RPCStatusCode.RESOURCE_EXHAUSTED,
        RPCStatusCode.NOT_FOUND,
        RPCStatusCode.INTERNAL,
    }
)

T = TypeVar("T")


class RegistrationError(Exception):
    """The cluster holds something this job must not overwrite."""


class NotYetVisible(Exception):
    """Added, but not listed yet: the server's caches have not caught up."""


async def connect_with_retry(settings: Settings, deadline: float) -> Client:
    """The client, once the server answers; the last connection error after the deadline."""
    attempt = 0
    while True:
        attempt += 1
        try:
            return await connect(settings)
        # The SDK reports every connection failure (refused, DNS, TLS) as a RuntimeError.
        except RuntimeError as exc:
            if time.monotonic() + RETRY_INTERVAL_S > deadline:
                raise
            log.info(
                "Temporal at %s not answering yet (attempt %d): %s",
                settings.temporal_address,
                attempt,
                exc,
            )
            await asyncio.sleep(RETRY_INTERVAL_S)


async def retrying(step: Callable[[], Awaitable[T]], what: str, deadline: float) -> T:
    """Run ``step`` again after transient errors until the deadline."""
    while True:
        try:
            return await step()
        except (RPCError, NotYetVisible) as exc:
            transient = isinstance(exc, NotYetVisible) or exc.status in _TRANSIENT
            if not transient or time.monotonic() + RETRY_INTERVAL_S > deadline:
                raise
            log.info("%s: %s, retrying", what, exc)
            await asyncio.sleep(RETRY_INTERVAL_S)


async def ensure_namespace(client: Client, namespace: str, retention: timedelta) -> bool:
    """Register the namespace unless it exists; True when this call created it."""
    try:
        await client.workflow_service.describe_namespace(
            DescribeNamespaceRequest(namespace=namespace), timeout=RPC_TIMEOUT
        )
        return False
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
    retention_period = Duration()
    retention_period.FromTimedelta(retention)
    try:
        await client.workflow_service.register_namespace(
            RegisterNamespaceRequest(
                namespace=namespace, workflow_execution_retention_period=retention_period
            ),
            timeout=RPC_TIMEOUT,
        )
    except RPCError as exc:
        # Another registrant won the race: the namespace exists, which is all we need.
        if exc.status != RPCStatusCode.ALREADY_EXISTS:
            raise
        return False
    return True


async def registered_search_attributes(
    client: Client, namespace: str
) -> dict[str, IndexedValueType.ValueType]:
    answer = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=namespace), timeout=RPC_TIMEOUT
    )
    return dict(answer.custom_attributes)


async def ensure_search_attributes(client: Client, namespace: str) -> list[str]:
    """Register every project key missing from the namespace; returns the names added."""
    existing = await registered_search_attributes(client, namespace)
    wrong = {
        key.name: IndexedValueType.Name(existing[key.name])
        for key in SEARCH_ATTRIBUTES
        if key.name in existing and existing[key.name] != KEYWORD
    }
    if wrong:
        raise RegistrationError(
            f"search attributes registered with another type than Keyword: {wrong}"
        )
    missing = [key.name for key in SEARCH_ATTRIBUTES if key.name not in existing]
    if not missing:
        return []
    try:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=namespace, search_attributes=dict.fromkeys(missing, KEYWORD)
            ),
            timeout=RPC_TIMEOUT,
        )
    except RPCError as exc:
        # A concurrent run added some of them first; the check below decides.
        if exc.status != RPCStatusCode.ALREADY_EXISTS:
            raise
    after = await registered_search_attributes(client, namespace)
    still_missing = [name for name in missing if after.get(name) != KEYWORD]
    if still_missing:
        raise NotYetVisible(f"added but not yet listed: {still_missing}")
    return missing


async def register(settings: Settings, timeout_s: float, retention: timedelta) -> None:
    deadline = time.monotonic() + timeout_s
    namespace = settings.temporal_namespace
    client = await connect_with_retry(settings, deadline)
    created = await retrying(
        lambda: ensure_namespace(client, namespace, retention), "namespace", deadline
    )
    if created:
        log.info("registered namespace %s (retention %d days)", namespace, retention.days)
    else:
        log.info("namespace %s already exists", namespace)
    added = await retrying(
        lambda: ensure_search_attributes(client, namespace), "search attributes", deadline
    )
    if added:
        log.info("registered search attributes in %s: %s", namespace, ", ".join(added))
    skipped = [key.name for key in SEARCH_ATTRIBUTES if key.name not in added]
    if skipped:
        log.info("search attributes already registered in %s: %s", namespace, ", ".join(skipped))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m core.register", description=__doc__)
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        help="seconds to keep retrying while the server is not ready (default %(default)s)",
    )
    parser.add_argument(
        "--retention-days",
        type=int,
        default=DEFAULT_RETENTION_DAYS,
        help="retention of closed workflows when the namespace has to be created "
        "(default %(default)s)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    args = parse_args(argv)
    settings = Settings()
    try:
        asyncio.run(register(settings, args.timeout, timedelta(days=args.retention_days)))
    except (RuntimeError, RPCError, RegistrationError, NotYetVisible) as exc:
        log.error(
            "could not prepare namespace %s at %s: %s",
            settings.temporal_namespace,
            settings.temporal_address,
            exc,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
