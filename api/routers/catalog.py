"""Operation types (SPEC 3.4): the built-in catalog, and custom types kept in the inventory."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Path, Response

from api.deps import InventoryDep, Reader, TemporalDep, Writer
from api.errors import ApiError, ErrorCode, Ids, declared
from api.job_service import open_jobs_of_type
from api.pages import PageRequest
from api.request_checks import CheckedRoute
from api.search_filter import TEXT, OptionalTypeSearch, TypeSearchBody, predicate
from core.catalog import BUILT_IN
from core.operation_types import UnknownCatalogEntry, resolve_definition, schema_errors
from inventory.operation_types import OperationTypeExists, OperationTypeStore
from inventory.store import Inventory
from models.operation_types import (
    TYPE_NAME_PATTERN,
    OpenGateOperationType,
    OperationType,
    OperationTypeIn,
    OperationTypeRecord,
)

router = APIRouter(
    prefix="/north/v80/operationTypes", tags=["operation types"], route_class=CheckedRoute
)

PATH = "/north/v80/operationTypes"
MAX_NAME = 100
# A name in a path: longer is a 400, another shape is no type of ours (404).
TypeName = Annotated[str, Path(max_length=MAX_NAME)]
TYPE_NAMES = Ids("Operation type", "name", re.compile(TYPE_NAME_PATTERN))


@router.get("/catalog", response_model_exclude_none=True)
async def catalog(_: Reader) -> dict[str, list[OperationType]]:
    return {"operationTypes": list(BUILT_IN.values())}


# The fields of the operation-type search (SPEC 3.4), compared without regard to case: the
# vendor's JS client upper-cases the names it looks for.
TYPE_SEARCH_FIELDS = {"name": TEXT, "title": TEXT, "description": TEXT}


async def search_types(
    inventory: Inventory, query: dict[str, Any], page: PageRequest | None
) -> list[OpenGateOperationType]:
    """The built-in and custom types ``query`` selects (built-in first, then custom by name), in
    OpenGate's shape; ``page`` (the body's ``limit``) cuts the list, none answers them all."""
    matches = predicate(query, TYPE_SEARCH_FIELDS, ignore_case=True)
    custom = await OperationTypeStore(inventory).list_types()
    found = [
        OpenGateOperationType.of(t)
        for t in [*BUILT_IN.values(), *custom]
        if matches({"name": t.name, "title": t.title, "description": t.description})
    ]
    return found if page is None else found[page.offset : page.offset + page.size]


@router.post("/search", response_model_exclude_none=True)
async def search(
    _: Reader, inventory: InventoryDep, body: OptionalTypeSearch = None
) -> list[OpenGateOperationType]:
    """The same as ``POST /search/operationTypes``: a bare JSON array of the matching types."""
    search = body or TypeSearchBody()
    return await search_types(inventory, search.filter, search.page)


@router.get("", response_model_exclude_none=True)
async def list_types(_: Reader, inventory: InventoryDep) -> dict[str, list[OperationTypeRecord]]:
    custom = await OperationTypeStore(inventory).list_types()
    return {"operationTypes": [*map(_built_in, BUILT_IN.values()), *custom]}


@router.post("", status_code=201, response_model_exclude_none=True, responses=declared(409))
async def create_type(
    _: Writer, inventory: InventoryDep, response: Response, given: OperationTypeIn
) -> OperationTypeRecord:
    if not given.name:
        raise ApiError(400, "An operation type needs a name", context=[("name", "required")])
    if given.name in BUILT_IN:
        raise _conflict(given.name, "is a built-in operation type")
    try:
        created = await OperationTypeStore(inventory).create(_definition(given.name, given))
    except OperationTypeExists:
        raise _conflict(given.name, "already exists") from None
    response.headers["Location"] = f"{PATH}/{created.name}"
    return created


@router.get("/{name}", response_model_exclude_none=True)
async def get_type(name: TypeName, _: Reader, inventory: InventoryDep) -> OperationTypeRecord:
    if name in BUILT_IN:
        return _built_in(BUILT_IN[name])
    found = await OperationTypeStore(inventory).get(TYPE_NAMES.known(name))
    if found is None:
        raise TYPE_NAMES.not_found(name)
    return found


@router.put("/{name}", response_model_exclude_none=True)
async def replace_type(
    name: TypeName, _: Writer, inventory: InventoryDep, given: OperationTypeIn
) -> OperationTypeRecord:
    """Replace a custom type whole (a job already accepted keeps the parameters it was given)."""
    _writable(name)
    TYPE_NAMES.known(name)
    if given.name not in (None, name):
        raise ApiError(
            400, "The name of an operation type cannot change", context=[("name", given.name)]
        )
    replaced = await OperationTypeStore(inventory).update(_definition(name, given))
    if replaced is None:
        raise TYPE_NAMES.not_found(name)
    return replaced


@router.delete("/{name}", response_model_exclude_none=True, responses=declared(409))
async def delete_type(
    name: TypeName, _: Writer, inventory: InventoryDep, client: TemporalDep
) -> OperationTypeRecord:
    _writable(name)
    store = OperationTypeStore(inventory)
    found = await store.get(TYPE_NAMES.known(name))
    if found is None:
        raise TYPE_NAMES.not_found(name)
    # A job already accepted does not read its type again, but it was accepted against it: the
    # type stays until no open job uses it. A job created between this count and the delete is
    # not seen (there is no transaction across Temporal and the inventory).
    open_jobs = await open_jobs_of_type(client, name)
    if open_jobs:
        raise _conflict(name, f"is used by {open_jobs} open job(s)")
    await store.delete(name)
    return found


def _definition(name: str, given: OperationTypeIn) -> OperationType:
    """The type the body describes, with a schema checked to be a valid JSON-Schema object."""
    try:
        definition = resolve_definition(name, given)
    except UnknownCatalogEntry as exc:
        raise ApiError(
            400,
            f"fromCatalog: no built-in operation type {exc}",
            ErrorCode.UNKNOWN_OPERATION_TYPE,
            [("fromCatalog", str(exc))],
        ) from None
    errors = schema_errors(definition.parameters)
    if errors:
        details = "; ".join(f"{e.field}: {e.message}" for e in errors)
        raise ApiError(
            400,
            f"Invalid parameters schema: {details}",
            ErrorCode.INVALID_REQUEST,
            [(e.field, e.message) for e in errors],
        )
    return definition


def _writable(name: str) -> None:
    if name in BUILT_IN:
        raise ApiError(
            403,
            f"{name} is a built-in operation type and cannot be changed or deleted; "
            "create a custom type from it with fromCatalog",
            context=[("name", name)],
        )


def _built_in(operation_type: OperationType) -> OperationTypeRecord:
    return OperationTypeRecord(**operation_type.model_dump())


def _conflict(name: str, why: str) -> ApiError:
    return ApiError(409, f"Operation type {name} {why}", context=[("name", name)])
