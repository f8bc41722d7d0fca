"""Operation types (SPEC 3.4) on the wire: what an operator sends, and the type objects served.

Bounded like every request (models/bounds.py); a parameter schema is bounded in depth and size
before anything walks it. What the schema says is checked by ``core.operation_types``.
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any

from pydantic import AfterValidator, Field

from models.base import StrictWireModel, UtcDatetime, WireModel
from models.bounds import MAX_TYPE_NAME, items, text, text_problem

# Names travel in URLs, visibility queries (the OperationName search attribute) and device
# requests: keep them plain.
TYPE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
MAX_NAME_LENGTH = MAX_TYPE_NAME
MAX_TITLE_LENGTH = 200
MAX_DESCRIPTION_LENGTH = 2000
MAX_STEPS = 50

# A parameter schema is checked by recursive code (jsonschema, pydantic's serialiser) at every job:
# its depth and size are bounded before anything walks it recursively.
MAX_SCHEMA_DEPTH = 32
MAX_SCHEMA_BYTES = 64 * 1024


def schema_bounds_error(schema: Any) -> tuple[list[str | int], str] | None:
    """Where and why ``schema`` (decoded JSON) is out of bounds: nested deeper than
    ``MAX_SCHEMA_DEPTH``, larger than ``MAX_SCHEMA_BYTES`` as JSON, text that is not valid Unicode,
    a number that is not finite; None when it is within them. Iterative on purpose: a hostile depth
    must not exhaust the stack."""
    stack: list[tuple[Any, int, tuple[str | int, ...]]] = [(schema, 1, ())]
    nodes = 0
    while stack:
        node, depth, path = stack.pop()
        nodes += 1
        if nodes > MAX_SCHEMA_BYTES:  # every JSON value takes at least one byte
            return [], f"is larger than {MAX_SCHEMA_BYTES} bytes as JSON"
        if isinstance(node, dict | list) and depth > MAX_SCHEMA_DEPTH:
            return list(path), f"nests deeper than {MAX_SCHEMA_DEPTH} levels"
        if isinstance(node, dict):
            for key, value in node.items():
                why = text_problem(key) if isinstance(key, str) else "keys must be strings"
                if why is not None:
                    return list(path), f"a property name {why}"
                stack.append((value, depth + 1, (*path, key)))
        elif isinstance(node, list):
            stack.extend((item, depth + 1, (*path, i)) for i, item in enumerate(node))
        elif isinstance(node, str):
            why = text_problem(node)
            if why is not None:
                return list(path), why
        elif isinstance(node, float) and not math.isfinite(node):
            return list(path), "numbers must be finite"
    size = len(json.dumps(schema, ensure_ascii=False, separators=(",", ":")).encode())
    if size > MAX_SCHEMA_BYTES:
        return [], f"is larger than {MAX_SCHEMA_BYTES} bytes as JSON ({size})"
    return None


def _bounded_schema(schema: dict[str, Any]) -> dict[str, Any]:
    found = schema_bounds_error(schema)
    if found is not None:
        where, why = found
        inside = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in where)
        raise ValueError(f"{inside.lstrip('.')}: {why}" if inside else why)
    return schema


TypeName = Annotated[str, Field(pattern=TYPE_NAME_PATTERN), text(MAX_NAME_LENGTH)]
Title = Annotated[str, text(MAX_TITLE_LENGTH)]
Description = Annotated[str, text(MAX_DESCRIPTION_LENGTH)]


class StepDefinition(StrictWireModel):
    name: Annotated[str, text(MAX_NAME_LENGTH, min_length=1)]
    title: Title | None = None
    description: Description | None = None


class OperationType(WireModel):
    """The operation type object of SPEC 3.4."""

    name: str
    title: str | None = None
    description: str | None = None
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})
    steps: list[StepDefinition] = []


class OperationTypeRecord(OperationType):
    """An operation type as listed by the API: built-in or custom, and when a custom one changed."""

    custom: bool = False
    created_date: UtcDatetime | None = None
    updated_date: UtcDatetime | None = None


class OperationTypeIn(StrictWireModel):
    """The body of ``POST``/``PUT /operationTypes``; ``fromCatalog`` starts from a built-in type's
    schema and steps, and the fields given here override them. Bounded here, before anything
    walks the schema; what the schema says is checked by ``core.operation_types.schema_errors``."""

    name: TypeName | None = None
    title: Title | None = None
    description: Description | None = None
    parameters: Annotated[dict[str, Any], AfterValidator(_bounded_schema)] | None = None
    steps: Annotated[list[StepDefinition], items(MAX_STEPS)] | None = None
    from_catalog: TypeName | None = None


# --- the OpenGate shape of a type, as the vendor's clients read it from the type search ---

# What a job of ours can target: provisioned devices (the JS client reads this list only to target
# by filter, which the SPEC does not have).
APPLICABLE_TO = ("entity.device",)
# The formats Ajv 6 (the JS client's validator, draft-07) knows; it refuses to compile any other.
AJV6_FORMATS = frozenset(
    {
        "date", "time", "date-time", "uri", "uri-reference", "uri-template", "url", "email",
        "hostname", "ipv4", "ipv6", "regex", "uuid", "json-pointer", "json-pointer-uri-fragment",
        "relative-json-pointer",
    }
)  # fmt: skip
# Keywords whose values are data, not schemas: copied as they are.
_DATA_KEYWORDS = frozenset({"enum", "const", "default", "examples"})
# Keywords a schema may hold without declaring any parameter.
_NO_PARAMETERS = frozenset({"$schema", "$id", "$comment", "title", "description", "type"})


def draft07(schema: Any) -> Any:
    """A Draft 2020-12 schema as Ajv 6 (draft-07) compiles it: no ``$schema`` (Ajv 6 throws on
    the 2020-12 URI), no ``format`` it does not know (it throws on those too), ``prefixItems`` as
    draft-07's array ``items`` (with ``items`` as ``additionalItems``) and ``dependentRequired`` /
    ``dependentSchemas`` as ``dependencies``. Other 2020-12 keywords (``unevaluatedProperties``,
    ``$defs``...) are kept: Ajv 6 ignores unknown keywords, and resolves ``#/$defs/...`` as a
    JSON pointer. The server still checks parameters with the original schema."""
    if isinstance(schema, list):
        return [draft07(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    converted: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "$schema" or (key == "format" and value not in AJV6_FORMATS):
            continue
        converted[key] = value if key in _DATA_KEYWORDS else draft07(value)
    if "prefixItems" in converted:
        if "items" in converted:
            converted["additionalItems"] = converted.pop("items")
        converted["items"] = converted.pop("prefixItems")
    dependencies = {
        **converted.pop("dependentSchemas", {}),
        **converted.pop("dependentRequired", {}),
    }
    if dependencies:
        converted["dependencies"] = {**converted.get("dependencies", {}), **dependencies}
    return converted


def declares_parameters(schema: dict[str, Any]) -> bool:
    """Whether a type's schema declares any parameter: anything beyond an object type with no
    properties (``additionalProperties: false`` included) and annotations."""
    for key, value in schema.items():
        if key in _NO_PARAMETERS or (key in ("properties", "patternProperties") and not value):
            continue
        if key == "additionalProperties" and value is False:
            continue
        return True
    return False


class OpenGateParameters(WireModel):
    json_schema: dict[str, Any] = Field(alias="schema")


class OpenGateOperationType(WireModel):
    """An operation type as OpenGate's type search answers it (the vendor's JS builder reads
    ``name``, ``parameters.schema`` and ``applicableTo``)."""

    name: str
    title: str | None = None
    description: str | None = None
    # Absent for a type that declares no parameter: the JS client then sends no ``parameters``.
    parameters: OpenGateParameters | None = None
    steps: list[StepDefinition] = []
    applicable_to: list[str] = list(APPLICABLE_TO)

    @classmethod
    def of(cls, operation_type: OperationType) -> OpenGateOperationType:
        schema = operation_type.parameters
        return cls(
            name=operation_type.name,
            title=operation_type.title,
            description=operation_type.description,
            parameters=OpenGateParameters(json_schema=draft07(schema))
            if declares_parameters(schema)
            else None,
            steps=operation_type.steps,
        )
