"""API key management (SPEC 2), for admins only, and the client certificates bound to north keys
(docs/api.md, "Certificates")."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Path

from api.deps import Admin, InventoryDep
from api.errors import ApiError, Ids
from api.request_checks import CheckedRoute
from core.tls import describe
from models.certificates import BoundCertificate, CertificateIn
from models.devices import ApiKey, ApiKeyIn, NewApiKey

router = APIRouter(prefix="/north/v80/apiKeys", tags=["api keys"], route_class=CheckedRoute)

# Key ids are 16 hex digits (inventory.keys); anything else is no key of ours.
MAX_KEY_ID = 32
KEY_IDS = Ids("API key", "id", re.compile(r"^[0-9a-f]{1,32}$"))


@router.post("", status_code=201)
async def create_key(_: Admin, inventory: InventoryDep, wanted: ApiKeyIn) -> NewApiKey:
    return await inventory.create_key(wanted.name, wanted.role)


@router.get("")
async def list_keys(_: Admin, inventory: InventoryDep) -> dict[str, list[ApiKey]]:
    return {"apiKeys": await inventory.list_keys()}


@router.delete("/{key_id}")
async def delete_key(
    key_id: Annotated[str, Path(max_length=MAX_KEY_ID)], _: Admin, inventory: InventoryDep
) -> dict[str, str]:
    if not await inventory.delete_key(KEY_IDS.known(key_id)):
        raise KEY_IDS.not_found(key_id)
    return {"id": key_id}


# A certificate's SHA-256 fingerprint, as bound: 64 lower-case hex digits.
MAX_FINGERPRINT = 64
CERTIFICATES = Ids("Certificate", "fingerprint", re.compile(r"^[0-9a-f]{64}$"))
KeyId = Annotated[str, Path(max_length=MAX_KEY_ID)]


@router.post("/{key_id}/certificates", status_code=201)
async def bind_certificate(
    key_id: KeyId, _: Admin, inventory: InventoryDep, wanted: CertificateIn
) -> BoundCertificate:
    """Bind a client certificate to a north key: over mutual TLS, the certificate alone then
    acts with the key's name and role."""
    try:
        fingerprint, subject = describe(wanted.certificate)
    except ValueError as exc:
        raise ApiError(
            400, "Not a PEM certificate", context=[("certificate", wanted.certificate[:64])]
        ) from exc
    bound = await inventory.bind_certificate(KEY_IDS.known(key_id), fingerprint, subject)
    if bound is None:
        raise KEY_IDS.not_found(key_id)
    return bound


@router.get("/{key_id}/certificates")
async def list_certificates(
    key_id: KeyId, _: Admin, inventory: InventoryDep
) -> dict[str, list[BoundCertificate]]:
    return {"certificates": await inventory.certificates_of(KEY_IDS.known(key_id))}


@router.delete("/{key_id}/certificates/{fingerprint}")
async def unbind_certificate(
    key_id: KeyId,
    fingerprint: Annotated[str, Path(max_length=MAX_FINGERPRINT)],
    _: Admin,
    inventory: InventoryDep,
) -> dict[str, str]:
    known = CERTIFICATES.known(fingerprint)
    if not await inventory.unbind_certificate(KEY_IDS.known(key_id), known):
        raise CERTIFICATES.not_found(fingerprint)
    return {"fingerprint": fingerprint}
