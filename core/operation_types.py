"""Operation types, built-in and custom, and the JSON-Schema checks of their parameters.

Schemas are Draft 2020-12 (``jsonschema``). A schema is checked once, when its type is created or
replaced; job parameters are checked against it with its ``default``s filled in.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jsonschema import Draft202012Validator, FormatChecker, ValidationError, validators
from jsonschema.protocols import Validator
from jsonschema_specifications import REGISTRY as META_SCHEMAS
from referencing.exceptions import Unresolvable

from core.catalog import BUILT_IN, OperationType, OperationTypeIn

if TYPE_CHECKING:
    from inventory.operation_types import OperationTypeStore

DRAFT = Draft202012Validator.META_SCHEMA["$id"]

# Formats (``uri``, ``date-time``...) are assertions here, not annotations: a type that declares
# ``format: uri`` means it. ``uri`` needs rfc3986-validator, ``date-time`` rfc3339-validator.
FORMATS = FormatChecker()


@dataclass(frozen=True)
class FieldError:
    """One failing field: ``field`` is a path like ``parameters.variableList[0].name``."""

    field: str
    message: str


class InvalidParameters(Exception):
    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(f"{e.field}: {e.message}" for e in errors))
        self.errors = errors


def _filling_defaults(base: type[Validator]) -> type[Validator]:
    """``base`` that also sets each missing property that has a ``default`` (jsonschema's FAQ
    recipe). Nested objects fill too: ``properties`` descends with the extended validator."""
    check_properties = base.VALIDATORS["properties"]

    def properties(
        validator: Validator, props: Mapping[str, Any], instance: Any, schema: Mapping[str, Any]
    ) -> Iterator[ValidationError]:
        if isinstance(instance, dict):
            for name, subschema in props.items():
                if isinstance(subschema, dict) and "default" in subschema:
                    instance.setdefault(name, copy.deepcopy(subschema["default"]))
        yield from check_properties(validator, props, instance, schema)

    return validators.extend(base, {"properties": properties})


_FillingValidator = _filling_defaults(Draft202012Validator)
# The meta-schema checks ``pattern``s compile (format ``regex``) only with a format checker.
_META_VALIDATOR = Draft202012Validator(Draft202012Validator.META_SCHEMA, format_checker=FORMATS)


# --- schemas ---


def schema_errors(schema: Any, prefix: str = "parameters") -> list[FieldError]:
    """Why ``schema`` cannot be a type's parameter schema: empty when it can."""
    if not isinstance(schema, dict):
        return [FieldError(prefix, "must be a JSON-Schema object")]
    declared = schema.get("$schema", DRAFT)
    if declared != DRAFT:
        return [FieldError(f"{prefix}.$schema", f"only {DRAFT} is supported")]
    errors = [
        FieldError(_path(prefix, e.absolute_path), e.message)
        for e in sorted(_META_VALIDATOR.iter_errors(schema), key=_path_order)
    ]
    if schema.get("type") != "object":
        errors.append(FieldError(f"{prefix}.type", "the parameters schema must be of type object"))
    errors += [
        FieldError(path, "only local references (#...) are allowed")
        for path in _remote_refs(schema, prefix)
    ]
    return errors


def _remote_refs(node: Any, path: str) -> Iterator[str]:
    # A remote $ref would make the API fetch a URL the schema's author chose.
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{path}.{key}"
            if key in ("$ref", "$dynamicRef") and not str(value).startswith("#"):
                yield here
            yield from _remote_refs(value, here)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _remote_refs(item, f"{path}[{i}]")


# --- parameters ---


class ParameterSchema:
    """A type's parameter schema, ready to check many parameter sets (one per device)."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self._validator = _FillingValidator(schema, registry=META_SCHEMAS, format_checker=FORMATS)

    def apply(self, parameters: dict[str, Any], prefix: str = "parameters") -> dict[str, Any]:
        """``parameters`` with the schema's defaults filled in; InvalidParameters naming every
        failing field (under ``prefix``) when they do not conform."""
        filled, errors = self.check(parameters, prefix)
        if errors:
            raise InvalidParameters(errors)
        return filled

    def check(
        self, parameters: dict[str, Any], prefix: str = "parameters"
    ) -> tuple[dict[str, Any], list[FieldError]]:
        """``parameters`` with the defaults filled in, and what fails in them."""
        filled = copy.deepcopy(parameters)
        try:
            found = sorted(self._validator.iter_errors(filled), key=_path_order)
        except Unresolvable as exc:
            return filled, [FieldError(prefix, f"unresolvable schema reference: {exc}")]
        return filled, [f for e in found for f in _field_errors(e, prefix)]


def _field_errors(error: ValidationError, prefix: str) -> list[FieldError]:
    """One error per failing field: a missing or unexpected property is named itself, not by
    the object that holds it."""
    here = _path(prefix, error.absolute_path)
    instance = error.instance
    if error.validator == "required" and isinstance(instance, dict):
        missing = [p for p in error.validator_value if p not in instance]
        named = [p for p in missing if error.message.startswith(repr(p))]
        return [FieldError(_path(here, [p]), "is required") for p in named or missing[:1]]
    if error.validator == "additionalProperties" and isinstance(instance, dict):
        return [
            FieldError(_path(here, [p]), "is not allowed (unknown property)")
            for p in _additional(instance, error.schema)
        ]
    return [FieldError(here, error.message)]


def _additional(instance: dict[str, Any], schema: Mapping[str, Any]) -> list[str]:
    known = schema.get("properties", {})
    patterns = schema.get("patternProperties", {})
    return [
        name
        for name in instance
        if name not in known and not any(re.search(p, name) for p in patterns)
    ]


def _path_order(error: ValidationError) -> list[str]:
    return [str(p) for p in error.absolute_path]


def _path(prefix: str, parts: Iterable[str | int]) -> str:
    path = prefix
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path = f"{path}.{part}" if path else str(part)
    return path


# --- lookup ---


async def find_type(name: str, custom: OperationTypeStore) -> OperationType | None:
    """A built-in type, else a custom one, else None."""
    built_in = BUILT_IN.get(name)
    if built_in is not None:
        return built_in
    return await custom.get(name)


class UnknownCatalogEntry(Exception):
    pass


def resolve_definition(name: str, body: OperationTypeIn) -> OperationType:
    """The type a create/replace body describes: ``fromCatalog``'s entry, overridden by the fields
    the body gives. The schema is not checked here (see ``schema_errors``)."""
    base = OperationType(name=name)
    if body.from_catalog is not None:
        entry = BUILT_IN.get(body.from_catalog)
        if entry is None:
            raise UnknownCatalogEntry(body.from_catalog)
        base = entry.model_copy(deep=True, update={"name": name})
    given = body.model_dump(exclude_unset=True, exclude_none=True, exclude={"name", "from_catalog"})
    return OperationType.model_validate({**base.model_dump(), **given, "name": name})
