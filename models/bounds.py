"""Bounds on every value a client sends (docs/api.md, "Limits"), checked in one place.

A request past a bound is a 400 naming the field. The same models are also how every process
reads back what Temporal stores (workflow inputs, signals, memos), and there a bound must not
bite: a value that a later release bounds more tightly, or that reached Temporal without going
through the API, would otherwise fail to decode and fail its workflow task on every retry, and
a workflow whose task always fails is frozen for good. So the checks here are skipped under the
``STORED`` validation context, which the data converter of ``core.temporal`` passes, and the
workflows check their inputs explicitly (``violations``) and close what they cannot run instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    PlainSerializer,
    ValidationError,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from models.base import iso_utc

# The validation context of a payload read back from Temporal: the bounds are not checked.
STORED: dict[str, Any] = {"stored": True}

SECOND_MS = 1000
DAY_MS = 24 * 3600 * SECOND_MS
# Durations a device or a job may be given (ms).
MAX_OPERATION_MS = 30 * DAY_MS
MAX_RETRY_DELAY_MS = DAY_MS
MAX_DELAY_MS = 365 * DAY_MS
MAX_AHEAD = timedelta(days=365)
# Device timestamps (epoch ms) are taken between these instants.
MIN_EPOCH_MS = 946_684_800_000  # 2000-01-01T00:00:00Z
MAX_EPOCH_MS = 4_102_444_800_000  # 2100-01-01T00:00:00Z
# Counts.
MAX_COUNT = 1_000_000
MAX_PER_MINUTE = 100_000
# Text, in characters.
MAX_ID = 128
MAX_NAME = 64
MAX_TYPE_NAME = 100
MAX_TAG = 128
MAX_SHORT_TEXT = 256
MAX_DESCRIPTION = 2048
MAX_NOTES = 4096
MAX_URL = 2048
# Lists.
MAX_TAGS = 100
MAX_STEPS = 100
MAX_RESULT_CODES = 16
# Free JSON (job and device parameters): containers nested at most this deep.
MAX_JSON_DEPTH = 16


def is_stored(info: core_schema.ValidationInfo) -> bool:
    """Whether this validation reads back a stored payload (bounds are not checked)."""
    return bool(info.context and info.context.get("stored"))


@dataclass(frozen=True)
class Bound:
    """A check of a value that is skipped for stored payloads, with the JSON-Schema keywords
    that describe it in the OpenAPI document."""

    # Called with the value and the validation context (None, or e.g. ``{"now": ...}``).
    check: Callable[[Any, dict[str, Any] | None], None]
    schema: tuple[tuple[str, Any], ...] = ()
    # Checked on the raw input, before the inner type validates it (a list's length, before
    # 50,000 items are each validated only to be refused).
    before: bool = False

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        check = self.check

        def validate(value: Any, info: core_schema.ValidationInfo) -> Any:
            if not is_stored(info):
                check(value, info.context)
            return value

        if self.before:
            return core_schema.with_info_before_validator_function(validate, handler(source))
        return core_schema.with_info_after_validator_function(validate, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema.update(self.schema)
        return json_schema


def between(low: int | None, high: int) -> Bound:
    def check(value: int, _: Any) -> None:
        if low is not None and value < low:
            raise ValueError(f"must be at least {low}")
        if value > high:
            raise ValueError(f"must be at most {high}")

    keywords = (("maximum", high),) if low is None else (("minimum", low), ("maximum", high))
    return Bound(check, keywords)


_BAD_TEXT = re.compile("[\x00\ud800-\udfff]")


def text_problem(value: str) -> str | None:
    """Why ``value`` is not valid text, or None. Valid text is Unicode without a lone surrogate
    (it cannot be encoded to UTF-8, so it fails later in gRPC or SQL) and without NUL."""
    found = _BAD_TEXT.search(value)
    if found is None:
        return None
    if found.group() == "\x00":
        return "must not contain NUL characters"
    return "must be valid Unicode (a lone surrogate is not)"


def check_text(value: str) -> None:
    """ValueError unless ``value`` is valid text (``text_problem``)."""
    problem = text_problem(value)
    if problem is not None:
        raise ValueError(problem)


def text(max_length: int, min_length: int = 0) -> Bound:
    def check(value: str, _: Any) -> None:
        check_text(value)
        if len(value) < min_length:
            raise ValueError(f"must have at least {min_length} characters")
        if len(value) > max_length:
            raise ValueError(f"must have at most {max_length} characters")

    keywords: tuple[tuple[str, Any], ...] = (("maxLength", max_length),)
    if min_length:
        keywords += (("minLength", min_length),)
    return Bound(check, keywords)


def _check_id(value: str, _: Any) -> None:
    if "/" in value:
        raise ValueError("must not contain '/'")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ValueError("must not contain control characters")


# Characters a label (a name an operator reads in a report or a pause reason) may not hold:
# control characters (C0, DEL, C1: a newline or an escape sequence forges log lines and
# terminal output) and the bidirectional overrides (they reorder what a reader sees).
_NOT_IN_LABEL = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _check_label(value: str, _: Any) -> None:
    if _NOT_IN_LABEL.search(value):
        raise ValueError("must not contain control or bidirectional-override characters")
    if not value.strip():
        raise ValueError("must not be blank")


def items(max_items: int, min_items: int = 0) -> Bound:
    def check(value: Any, _: Any) -> None:
        if not isinstance(value, list | tuple):
            return  # not a list: the inner type says so
        if len(value) < min_items:
            raise ValueError(f"must have at least {min_items} items")
        if len(value) > max_items:
            raise ValueError(f"must have at most {max_items} items")

    keywords: tuple[tuple[str, Any], ...] = (("maxItems", max_items),)
    if min_items:
        keywords += (("minItems", min_items),)
    return Bound(check, keywords, before=True)


def check_json(value: Any, _: Any = None, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Free JSON: containers nested at most ``max_depth`` deep, every key and string valid text.
    Walked without recursion, so no depth makes it fail other than with a ValueError."""
    pending: list[tuple[Any, int, str]] = [(value, 0, "")]
    while pending:
        node, depth, path = pending.pop()
        if isinstance(node, dict | list):
            if depth >= max_depth:
                raise ValueError(f"nested deeper than {max_depth} levels at '{path or '.'}'")
            entries = node.items() if isinstance(node, dict) else enumerate(node)
            for key, child in entries:
                if isinstance(key, str):
                    _checked_at(key, f"{path}.{key}" if path else key)
                pending.append((child, depth + 1, f"{path}.{key}" if path else str(key)))
        elif isinstance(node, str):
            _checked_at(node, path)


def _checked_at(value: str, path: str) -> None:
    try:
        check_text(value)
    except ValueError as exc:
        raise ValueError(f"{exc} at '{path}'") from None


Text = Annotated[str, text(MAX_SHORT_TEXT)]
Name = Annotated[str, text(MAX_NAME, min_length=1)]
# A name shown to operators (a rollout group's): printable, not blank.
Label = Annotated[str, text(MAX_NAME, min_length=1), Bound(_check_label)]
# A type's name as a job or an answer gives it (a type's own rule: models/operation_types.py).
TypeName = Annotated[str, text(MAX_TYPE_NAME, min_length=1)]
Description = Annotated[str, text(MAX_DESCRIPTION)]
Notes = Annotated[str, text(MAX_NOTES)]
Id = Annotated[str, text(MAX_ID, min_length=1), Bound(_check_id)]
Tag = Annotated[str, text(MAX_TAG, min_length=1)]
JsonObject = Annotated[dict[str, Any], Bound(check_json)]
# Durations in ms, and counts.
OperationMillis = Annotated[int, between(1, MAX_OPERATION_MS)]
RetryDelayMillis = Annotated[int, between(0, MAX_RETRY_DELAY_MS)]
DelayMillis = Annotated[int, between(0, MAX_DELAY_MS)]
EpochMillis = Annotated[int, between(MIN_EPOCH_MS, MAX_EPOCH_MS)]
Count = Annotated[int, between(1, MAX_COUNT)]


FIRST_DATE = datetime(2000, 1, 1, tzinfo=UTC)
LAST_DATE = datetime(2100, 1, 1, tzinfo=UTC)


def _check_date(value: datetime, _: Any) -> None:
    if value.tzinfo is None:
        raise ValueError("a date needs a time zone (e.g. 2026-11-22T10:15:30Z)")
    if not FIRST_DATE <= value < LAST_DATE:
        raise ValueError("must be between 2000-01-01 and 2100-01-01")


def _check_ahead(value: datetime, context: dict[str, Any] | None) -> None:
    _check_date(value, context)
    # A workflow passes its own clock: it may not read the system's.
    now = (context or {}).get("now") or datetime.now(UTC)
    if value - now > MAX_AHEAD:
        raise ValueError(f"must be at most {MAX_AHEAD.days} days ahead")


_IN_UTC = PlainSerializer(iso_utc, return_type=str, when_used="json")
# A job's date: with a time zone, in this century, and at most a year ahead.
FutureDate = Annotated[datetime, Bound(_check_ahead), _IN_UTC]
# A task's date: with a time zone, in this century.
Date = Annotated[datetime, Bound(_check_date), _IN_UTC]


def violations(model: BaseModel, now: datetime) -> str | None:
    """Why ``model`` (read back from Temporal without its bounds) would not pass the API's
    validation at ``now``; None when it would. Workflows ask this before acting on an input."""
    try:
        type(model).model_validate(
            model.model_dump(by_alias=True, mode="json"), context={"now": now}
        )
    except ValidationError as exc:
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors()
        )
    return None
