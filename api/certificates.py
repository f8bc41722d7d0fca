"""Who a client certificate is (docs/api.md, "Certificates").

The certificate comes from the TLS connection itself (``api.server`` fills the ASGI TLS
extension after the handshake verified it against ``FLEET_TLS_CLIENT_CA_FILE`` and
``FLEET_TLS_FLEET_CA_FILE``); a header can never stand for one. In this order:

1. bound by an admin to a north key (by its SHA-256 fingerprint): that key, its name and role;
2. signed directly by the fleet CA: a device identity that may act for any device (the device
   of the request's path);
3. otherwise its subject common name (CN) is a provisioned device's id: that device.

Anything else is 401: the certificate names nobody we know.
"""

from __future__ import annotations

import functools

from cryptography import x509
from fastapi import Request

from api.errors import ApiError
from core.settings import Settings
from core.tls import PeerCertificate, load_certificates, peer_certificate
from inventory.store import Inventory
from models.devices import ApiKey
from models.enums import Role


@functools.lru_cache(maxsize=8)
def _fleet_cas(pem_file: str) -> tuple[x509.Certificate, ...]:
    return tuple(load_certificates(pem_file))


def is_fleet(peer: PeerCertificate, settings: Settings) -> bool:
    return any(peer.issued_by(ca) for ca in _fleet_cas(settings.tls_fleet_ca_file))


async def certificate_caller(
    request: Request, inventory: Inventory, settings: Settings
) -> ApiKey | None:
    """The identity of the request's verified client certificate; None without one."""
    peer = peer_certificate(request.scope)
    if peer is None:
        return None
    key = await inventory.key_of_certificate(peer.fingerprint)
    if key is not None:
        return key
    name = peer.common_name or peer.fingerprint
    # Not a key's: a stable id for logs, never a key id (those are 16 hex digits).
    cert_id = f"certificate:{peer.fingerprint[:16]}"
    if is_fleet(peer, settings):
        # Acts for the device of the path; on any other route it is a device without a device.
        return ApiKey(
            id=cert_id,
            name=f"fleet certificate {name}",
            role=Role.DEVICE,
            device_id=request.path_params.get("device_id"),
        )
    if peer.common_name and await inventory.has_device(peer.common_name):
        return ApiKey(
            id=cert_id,
            name=f"device certificate {name}",
            role=Role.DEVICE,
            device_id=peer.common_name,
        )
    raise ApiError(401, "The client certificate names no provisioned device and no API key")
