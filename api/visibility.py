"""Temporal visibility read page by page. Queries are built with ``core.temporal``'s builders,
which escape every value; a value they refuse is the client's (a 400, see ``api.errors``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import TypeVar

from temporalio.client import Client, WorkflowExecution
from temporalio.service import RPCError, RPCStatusCode

from api.errors import ApiError
from api.pages import PageRequest
from core.temporal import all_of, equals
from models.base import WireModel
from models.jobs import Page

T = TypeVar("T")


async def list_page(
    client: Client,
    query: str,
    page: PageRequest,
    read: Callable[[WorkflowExecution], Awaitable[T]],
) -> tuple[list[T], Page]:
    """The executions of one page, each read by ``read``, and the page of the answer.

    Visibility pages by token, so reaching page N reads the N-1 pages before it; the page size is
    the token page size, so that costs N-1 round trips at most.
    """
    with _refused_as_400():
        total = (await client.count_workflows(query)).count
        executions: list[WorkflowExecution] = []
        skipped = 0
        async for execution in client.list_workflows(query, page_size=page.size):
            if skipped < page.offset:
                skipped += 1
                continue
            executions.append(execution)
            if len(executions) >= page.size:
                break
    items = await asyncio.gather(*(read(e) for e in executions))
    return list(items), page.answer(total)


@contextlib.contextmanager
def _refused_as_400() -> Iterator[None]:
    try:
        yield
    except RPCError as exc:
        # Values are checked before they reach a query; should the server still refuse one, the
        # client hears why (a 400), not a 500.
        if exc.status == RPCStatusCode.INVALID_ARGUMENT:
            raise ApiError(
                400, f"Invalid search: {exc.message}", context=[("filter", exc.message)]
            ) from exc
        raise


# --- counts (the summaries of the searches) ---

# Count queries sent at once for one summary: the dev server's visibility groups only by
# ExecutionStatus, so a summary is one count query per value of each attribute.
MAX_CONCURRENT_COUNTS = 16


class CountEntry(WireModel):
    name: str
    count: int


class CountGroup(WireModel):
    """How the matching items spread over the values of one field: ``list`` holds each value
    with at least one item (most first), ``count`` is how many values that is."""

    count: int
    list: list[CountEntry]


class Counter:
    """Count queries over one base query, at most ``MAX_CONCURRENT_COUNTS`` at a time."""

    def __init__(self, client: Client, query: str) -> None:
        self.client = client
        self.query = query
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_COUNTS)

    async def count(self, clause: str | None = None) -> int:
        async with self._slots:
            with _refused_as_400():
                return (await self.client.count_workflows(all_of(self.query, clause))).count

    async def group(self, attribute: str, values: Iterable[str]) -> CountGroup:
        """The items of each value of ``attribute`` (a keyword search attribute), one count
        query per value, all at once; values with no item are left out."""
        names = list(dict.fromkeys(values))
        counts = await asyncio.gather(*(self.count(equals(attribute, v)) for v in names))
        entries = [CountEntry(name=n, count=c) for n, c in zip(names, counts, strict=True) if c]
        entries.sort(key=lambda e: -e.count)
        return CountGroup(count=len(entries), list=entries)
