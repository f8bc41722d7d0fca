"""North client certificates bound to API keys (docs/api.md, "Certificates")."""

from __future__ import annotations

from typing import Annotated

from models.base import StrictWireModel, UtcDatetime, WireModel
from models.bounds import text

# One PEM certificate: a few kilobytes at most.
MAX_CERTIFICATE_PEM = 16 * 1024


class CertificateIn(StrictWireModel):
    """``{"certificate": "-----BEGIN CERTIFICATE-----..."}``: the certificate to bind."""

    certificate: Annotated[str, text(MAX_CERTIFICATE_PEM, min_length=1)]


class BoundCertificate(WireModel):
    key_id: str
    # SHA-256 of the certificate's DER form, lower-case hex: what a connection is matched by.
    fingerprint: str
    subject: str
    created_at: UtcDatetime
