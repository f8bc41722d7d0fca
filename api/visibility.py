"""Temporal visibility queries: built from checked values only, and read page by page."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from temporalio.client import Client, WorkflowExecution
from temporalio.service import RPCError, RPCStatusCode

from api.errors import ApiError

# Page numbers (1-based) and sizes a client may ask for: the offset stays far inside int64.
MAX_PAGE = 1_000_000
MAX_PAGE_SIZE = 1000


def literal(value: str) -> str:
    """A string literal for a visibility query: user input is never spliced in unescaped."""
    if any(ord(c) < 0x20 for c in value):
        raise ApiError(400, "Control characters are not allowed in filter values")
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


def all_of(*clauses: str | None) -> str:
    return " AND ".join(c for c in clauses if c)


def equals(attribute: str, value: str | None) -> str | None:
    return None if value is None else f"{attribute} = {literal(value)}"


@dataclass
class PageRequest:
    number: int  # 1-based
    size: int

    @property
    def offset(self) -> int:
        return (self.number - 1) * self.size


async def list_page(
    client: Client, query: str, page: PageRequest
) -> tuple[Sequence[WorkflowExecution], int]:
    """The executions of one page and how many pages there are.

    Visibility pages by token, so reaching page N reads the N-1 pages before it; the page size is
    the token page size, so that costs N-1 round trips at most.
    """
    try:
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
    except RPCError as exc:
        # Values are checked before they reach a query; should the server still refuse one, the
        # client hears why (a 400), not a 500.
        if exc.status == RPCStatusCode.INVALID_ARGUMENT:
            raise ApiError(
                400, f"Invalid search: {exc.message}", context=[("filter", exc.message)]
            ) from exc
        raise
    return executions, max(1, math.ceil(total / page.size))
