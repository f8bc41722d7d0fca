"""Operation types, built-in and custom, and the JSON-Schema checks of their parameters.

Schemas are Draft 2020-12 (``jsonschema``). A schema is checked once, when its type is created or
replaced; job parameters are checked against it with its ``default``s filled in.

Schemas come from API clients and are checked on the API's event loop, so nothing in them may
take unbounded time: ``pattern``, ``patternProperties`` and the ``regex`` format run on RE2 (linear
time, no backtracking) instead of Python's ``re``, each check of parameters has a budget of
keyword evaluations, and a schema's size and depth are bounded (``models.operation_types``).
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol

from jsonschema import Draft202012Validator, FormatChecker, ValidationError, validators
from jsonschema.protocols import Validator
from jsonschema_specifications import REGISTRY as META_SCHEMAS
from referencing.exceptions import Unresolvable

from core.catalog import BUILT_IN
from core.patterns import (
    MAX_PATTERNS,
    MAX_PROGRAM_SIZE,
    Compiled,
    PatternError,
    check_pattern,
    compile_pattern,
    compiled,
    pattern_search,
)
from models.operation_types import OperationType, OperationTypeIn, schema_bounds_error


class CustomTypes(Protocol):
    """Where custom types are kept (``inventory.operation_types.OperationTypeStore``)."""

    async def get(self, name: str) -> OperationType | None: ...


DRAFT = Draft202012Validator.META_SCHEMA["$id"]


@dataclass(frozen=True)
class FieldError:
    """One failing field: ``field`` is a path like ``parameters.variableList[0].name``."""

    field: str
    message: str


class InvalidParameters(Exception):
    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(f"{e.field}: {e.message}" for e in errors))
        self.errors = errors


# --- patterns (core.patterns) ---

# For parameters of ``format: regex``: a compile costs up to ~4 ms at this size, charged to the
# check's budget as _VALUE_COMPILE_COST keyword evaluations.
_VALUE_PATTERN_MEMORY = 64 << 10
_CACHED_VALUES = 128
_VALUE_COMPILE_COST = 1000


@functools.lru_cache(maxsize=_CACHED_VALUES)
def _compile_value(pattern: str) -> Compiled:
    # A parameter of ``format: regex`` comes with every job, in any number: a smaller program
    # and its own cache, so values neither cost what a schema's patterns may nor evict them.
    _spend(_VALUE_COMPILE_COST)
    return compiled(pattern, _VALUE_PATTERN_MEMORY)


def _short(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= 80 else f"{shown[:77]}..."


def _were(names: list[str]) -> str:
    listed = ", ".join(_short(n) for n in names)
    return f"{listed} {'was' if len(names) == 1 else 'were'}"


def _matches(pattern: str, name: str) -> bool:
    """``pattern_search`` for property names: a name that is not valid Unicode or a pattern RE2
    cannot take matches nothing (``pattern`` and the checks at creation report those)."""
    try:
        return pattern_search(pattern, name)
    except (PatternError, UnicodeEncodeError):
        return False


# --- jsonschema keywords on RE2 ---
# jsonschema's own versions call ``re.search``; these are the same keywords with RE2. The
# ``unevaluatedProperties`` helper is copied from jsonschema 4.x (``_utils``) for the same reason.


def _pattern(
    validator: Validator, pattern: str, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "string"):
        return
    try:
        found = pattern_search(pattern, instance)
    except PatternError as exc:
        yield ValidationError(f"the schema's pattern {_short(pattern)} {exc}")
    except UnicodeEncodeError:
        yield ValidationError("must be valid Unicode text (it holds a lone surrogate)")
    else:
        if not found:
            yield ValidationError(f"{_short(instance)} does not match {_short(pattern)}")


def _pattern_properties(
    validator: Validator, patterns: Mapping[str, Any], instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        try:
            check_pattern(pattern)
        except PatternError as exc:
            yield ValidationError(f"the schema's pattern {_short(pattern)} {exc}")
            continue
        for name, value in instance.items():
            if _matches(pattern, name):
                yield from validator.descend(value, subschema, path=name, schema_path=pattern)


def _additional(instance: Mapping[str, Any], schema: Mapping[str, Any]) -> list[str]:
    """The properties of ``instance`` that neither ``properties`` nor ``patternProperties`` of
    ``schema`` take."""
    known = schema.get("properties", {})
    patterns = schema.get("patternProperties", {})
    return [
        name
        for name in instance
        if name not in known and not any(_matches(p, name) for p in patterns)
    ]


def _additional_properties(
    validator: Validator, additional: Any, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    extras = _additional(instance, schema)
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif not additional and extras:
        if "patternProperties" in schema:
            verb = "does" if len(extras) == 1 else "do"
            joined = ", ".join(_short(each) for each in sorted(extras))
            patterns = ", ".join(_short(each) for each in sorted(schema["patternProperties"]))
            yield ValidationError(f"{joined} {verb} not match any of the regexes: {patterns}")
        else:
            yield ValidationError(
                f"Additional properties are not allowed ({_were(sorted(extras))} unexpected)"
            )


def _unevaluated_properties(
    validator: Validator, unevaluated: Any, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    evaluated = _evaluated_keys(validator, instance, schema)
    failing = []
    for name in instance:
        if name not in evaluated:
            for _ in validator.descend(instance[name], unevaluated, path=name, schema_path=name):
                failing.append(name)
    if failing:
        if unevaluated is False:
            extras = sorted(failing, key=str)
            yield ValidationError(
                f"Unevaluated properties are not allowed ({_were(extras)} unexpected)"
            )
        else:
            yield ValidationError(
                "Unevaluated properties are not valid under the given schema "
                f"({_were(failing)} unevaluated and invalid)"
            )


def _evaluated_keys(validator: Any, instance: Mapping[str, Any], schema: Any) -> list[str]:
    """jsonschema's ``find_evaluated_property_keys_by_schema`` with RE2 for
    ``patternProperties``: the keys of ``instance`` that ``schema`` evaluates."""
    if validator.is_type(schema, "boolean"):
        return []
    keys = _referenced_keys(validator, instance, schema)
    properties = schema.get("properties")
    if validator.is_type(properties, "object"):
        keys += properties.keys() & instance.keys()
    for keyword in ("additionalProperties", "unevaluatedProperties"):
        subschema = schema.get(keyword)
        if subschema is not None:
            keys += (
                name
                for name, value in instance.items()
                if _valid(validator.descend(value, subschema))
            )
    for pattern in schema.get("patternProperties", {}):
        keys += (name for name in instance if _matches(pattern, name))
    return keys + _applied_keys(validator, instance, schema)


def _referenced_keys(validator: Any, instance: Mapping[str, Any], schema: Any) -> list[str]:
    """The keys the schemas ``schema`` refers to evaluate. ``_resolver`` is jsonschema's
    (private) reference resolver, which its own version uses the same way."""
    keys: list[str] = []
    for keyword in ("$ref", "$dynamicRef"):
        reference = schema.get(keyword)
        if reference is not None:
            resolved = validator._resolver.lookup(reference)
            keys += _evaluated_keys(
                validator.evolve(schema=resolved.contents, _resolver=resolved.resolver),
                instance,
                resolved.contents,
            )
    return keys


def _applied_keys(validator: Any, instance: Mapping[str, Any], schema: Any) -> list[str]:
    """The keys evaluated by the subschemas that apply to ``instance``: dependentSchemas,
    the passing ones of allOf/oneOf/anyOf, and if/then/else."""
    applied: list[Any] = [
        subschema
        for name, subschema in schema.get("dependentSchemas", {}).items()
        if name in instance
    ]
    for keyword in ("allOf", "oneOf", "anyOf"):
        applied += (s for s in schema.get(keyword, []) if _valid(validator.descend(instance, s)))
    if "if" in schema:
        if validator.evolve(schema=schema["if"]).is_valid(instance):
            applied += [schema["if"], *([schema["then"]] if "then" in schema else [])]
        elif "else" in schema:
            applied.append(schema["else"])
    return [key for subschema in applied for key in _evaluated_keys(validator, instance, subschema)]


def _valid(errors: Iterator[ValidationError]) -> bool:
    return next(errors, None) is None


def _unique_items(
    validator: Validator, unique: Any, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    # jsonschema's version falls back to comparing every pair for objects: quadratic in a
    # 10,000-item parameter. A canonical key per item is linear, with JSON's equality (1 == 1.0,
    # true != 1, objects unordered).
    if not unique or not validator.is_type(instance, "array"):
        return
    seen: set[Any] = set()
    for item in instance:
        key = _canonical(item)
        if key in seen:
            yield ValidationError(f"{_short(instance)} has non-unique elements")
            return
        seen.add(key)


def _canonical(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return ("literal", value)
    if isinstance(value, int | float):
        return ("number", value)
    if isinstance(value, str):
        return ("string", value)
    if isinstance(value, list):
        return ("array", tuple(_canonical(v) for v in value))
    if isinstance(value, dict):
        return ("object", frozenset((k, _canonical(v)) for k, v in value.items()))
    return ("other", id(value))


def _is_schema_regex(instance: object) -> bool:
    if isinstance(instance, str):
        check_pattern(instance)
    return True


def _is_regex_value(instance: object) -> bool:
    if isinstance(instance, str):
        compiled = _compile_value(instance)
        if compiled.regex is None:
            raise PatternError(compiled.error)
    return True


# Formats (``uri``, ``date-time``...) are assertions here, not annotations: a type that declares
# ``format: uri`` means it. ``uri`` needs rfc3986-validator, ``date-time`` rfc3339-validator.
# ``regex`` is RE2's: for parameters (FORMATS), and for the ``pattern``s and
# ``patternProperties`` of a schema checked against the meta-schema (_SCHEMA_FORMATS).
FORMATS = FormatChecker()
FORMATS.checks("regex", raises=(PatternError,))(_is_regex_value)
_SCHEMA_FORMATS = FormatChecker()
_SCHEMA_FORMATS.checks("regex", raises=(PatternError,))(_is_schema_regex)

_ON_RE2 = {
    "pattern": _pattern,
    "patternProperties": _pattern_properties,
    "additionalProperties": _additional_properties,
    "unevaluatedProperties": _unevaluated_properties,
    "uniqueItems": _unique_items,
}
_SafeValidator = validators.extend(Draft202012Validator, _ON_RE2)


# --- budget ---

# Keyword evaluations one check of parameters may spend: a base, plus a share per value in the
# parameters (a plain schema spends 2 to 5 per value). A schema of bounded size can still multiply
# work (``allOf`` of two ``$ref``s to a definition that does the same, 30 deep, is 2^30
# evaluations, at about 5 us each): past the budget the check stops with an error instead of
# holding the event loop.
BASE_KEYWORD_EVALUATIONS = 10_000
KEYWORD_EVALUATIONS_PER_VALUE = 10
_budget: ContextVar[list[int] | None] = ContextVar("schema_budget", default=None)


_TOO_COMPLEX = "the schema takes too many steps to check these parameters"
_RECURSIVE = "the schema refers to itself without end (a $ref cycle)"
_UNRESOLVABLE = "unresolvable schema reference"
# What a check of the empty object finds that would fail every job.
_AT_EVERY_JOB = (_TOO_COMPLEX, _RECURSIVE, _UNRESOLVABLE)


class _TooComplex(Exception):
    pass


def _spend(evaluations: int) -> None:
    """Charge the running check's budget (none outside ``ParameterSchema.check``)."""
    left = _budget.get()
    if left is not None:
        left[0] -= evaluations
        if left[0] < 0:
            raise _TooComplex


def _metered(check: Any) -> Any:
    def metered(
        validator: Validator, value: Any, instance: Any, schema: Mapping[str, Any]
    ) -> Iterable[ValidationError]:
        _spend(1)
        return check(validator, value, instance, schema) or ()

    return metered


def _with_budget(base: type[Validator]) -> type[Validator]:
    return validators.extend(base, {k: _metered(v) for k, v in base.VALIDATORS.items()})


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


_FillingValidator = _with_budget(_filling_defaults(_SafeValidator))
# The meta-schema checks ``pattern``s compile (format ``regex``) only with a format checker.
_META_VALIDATOR = _SafeValidator(Draft202012Validator.META_SCHEMA, format_checker=_SCHEMA_FORMATS)


# --- schemas ---


def schema_errors(schema: Any, prefix: str = "parameters") -> list[FieldError]:
    """Why ``schema`` cannot be a type's parameter schema: empty when it can."""
    if not isinstance(schema, dict):
        return [FieldError(prefix, "must be a JSON-Schema object")]
    out_of_bounds = schema_bounds_error(schema)
    if out_of_bounds is not None:
        where, why = out_of_bounds
        return [FieldError(_path(prefix, where), why)]
    declared = schema.get("$schema", DRAFT)
    if declared != DRAFT:
        return [FieldError(f"{prefix}.$schema", f"only {DRAFT} is supported")]
    too_many = _pattern_budget_error(schema, prefix)
    if too_many is not None:
        return [too_many]
    errors = [
        FieldError(_path(prefix, e.absolute_path), _schema_message(e))
        for e in sorted(_META_VALIDATOR.iter_errors(schema), key=_path_order)
    ]
    if schema.get("type") != "object":
        errors.append(FieldError(f"{prefix}.type", "the parameters schema must be of type object"))
    errors += [
        FieldError(path, "only local references (#...) are allowed")
        for path in _remote_refs(schema, prefix)
    ]
    if not errors:
        # A reference cycle that consumes no input (``{"$ref": "#"}``) fails every job: say so now.
        _, trial = ParameterSchema(schema).check({}, prefix)
        errors += [e for e in trial if e.message.startswith(_AT_EVERY_JOB)]
    return errors


def _pattern_budget_error(schema: dict[str, Any], prefix: str) -> FieldError | None:
    """Compiles the schema's patterns (into the cache, for the meta-schema check and the jobs),
    and stops at the first past MAX_PATTERNS or MAX_PROGRAM_SIZE: a schema of many large patterns
    would otherwise hold the event loop for seconds. Data that looks like a pattern (an object
    with a ``pattern`` string inside a ``default``) counts too: over-counting is safe."""
    seen: set[str] = set()
    size = 0
    for path, pattern in _patterns_in(schema, prefix):
        if pattern in seen:
            continue
        seen.add(pattern)
        if len(seen) > MAX_PATTERNS:
            return FieldError(path, f"a schema may hold at most {MAX_PATTERNS} distinct patterns")
        size += compile_pattern(pattern).size
        if size > MAX_PROGRAM_SIZE:
            return FieldError(
                path,
                f"the schema's patterns compile to more than {MAX_PROGRAM_SIZE} RE2 instructions "
                "(large Unicode classes such as \\pL with long repetitions cost the most)",
            )
    return None


def _patterns_in(schema: dict[str, Any], prefix: str) -> Iterator[tuple[str, str]]:
    stack: list[tuple[Any, str]] = [(schema, prefix)]
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict):
            if isinstance(node.get("pattern"), str):
                yield f"{path}.pattern", node["pattern"]
            if isinstance(node.get("patternProperties"), dict):
                yield from ((f"{path}.patternProperties", p) for p in node["patternProperties"])
            stack.extend((value, f"{path}.{key}") for key, value in reversed(node.items()))
        elif isinstance(node, list):
            stack.extend((item, f"{path}[{i}]") for i, item in reversed(list(enumerate(node))))


def _schema_message(error: ValidationError) -> str:
    if error.validator == "format" and error.validator_value == "regex" and error.cause:
        return f"{_short(error.instance)} {error.cause}"
    return error.message


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
        budget = BASE_KEYWORD_EVALUATIONS + KEYWORD_EVALUATIONS_PER_VALUE * _values(parameters)
        token = _budget.set([budget])
        try:
            found = sorted(self._validator.iter_errors(filled), key=_path_order)
        except Unresolvable as exc:
            return filled, [FieldError(prefix, f"{_UNRESOLVABLE}: {exc}")]
        except _TooComplex:
            return filled, [
                FieldError(prefix, f"{_TOO_COMPLEX} (more than {budget} keyword evaluations)")
            ]
        except RecursionError:
            # A reference cycle (``{"$ref": "#"}``): jsonschema recurses until the stack ends.
            return filled, [FieldError(prefix, _RECURSIVE)]
        finally:
            _budget.reset(token)
        return filled, [f for e in found for f in _field_errors(e, prefix)]


def _values(value: Any) -> int:
    """How many JSON values ``value`` holds, itself included (iterative: depth is the caller's)."""
    count, stack = 0, [value]
    while stack:
        node = stack.pop()
        count += 1
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return count


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


async def find_type(name: str, custom: CustomTypes) -> OperationType | None:
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
