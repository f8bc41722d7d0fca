"""Paging of list answers: what a client may ask for (``start``, ``size``), how many pages a
total makes, and the ``page`` object of an answer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Query

from models.jobs import Page

# Page numbers (1-based) and sizes a client may ask for: the offset stays far inside int64.
MAX_PAGE = 1_000_000
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100


def page_count(total: int, size: int) -> int:
    """How many pages of ``size`` hold ``total`` items: one at least, empty as it may be."""
    return max(1, -(-total // size))


@dataclass(frozen=True)
class PageRequest:
    number: int  # 1-based
    size: int = DEFAULT_PAGE_SIZE

    @property
    def offset(self) -> int:
        return (self.number - 1) * self.size

    def answer(self, total: int) -> Page:
        """The ``page`` of an answer to this request, out of ``total`` items."""
        return Page(number=self.number, of=page_count(total, self.size))


def _paging(
    start: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1,
    size: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
) -> PageRequest:
    return PageRequest(start, size)


# The ``start`` and ``size`` query parameters of a list route.
Paging = Annotated[PageRequest, Depends(_paging)]
