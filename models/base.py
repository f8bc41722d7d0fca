"""The base of every model on the wire: Python names in code, the SPEC's camelCase in JSON."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, PlainSerializer
from pydantic.alias_generators import to_camel


def iso_utc(value: datetime) -> str:
    """SPEC 1: north dates are ISO 8601 in UTC with milliseconds and a Z, whatever offset they
    came with (years zero-padded; an instant UTC cannot hold keeps its own offset)."""
    try:
        value = value.astimezone(UTC)
    except OverflowError:
        return value.isoformat(timespec="milliseconds")
    return value.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


UtcDatetime = Annotated[datetime, PlainSerializer(iso_utc, return_type=str, when_used="json")]


class WireModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )


class StrictWireModel(WireModel):
    """A model for what clients send: an unknown field is an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid")
