"""TLS on every hop: the contexts the API, the worker and the simulator build from their settings,
and who a client certificate names.

The identity rules (docs/api.md, "Certificates"):
- a device certificate names its device in the subject common name (CN), and is signed by the
  client CA (``FLEET_TLS_CLIENT_CA_FILE``);
- a fleet certificate is one signed directly by the fleet CA (``FLEET_TLS_FLEET_CA_FILE``): it may
  act for any device;
- a north certificate is any verified client certificate whose SHA-256 fingerprint an admin bound
  to a north API key: it acts with that key's identity and role.
"""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID


def server_context(
    cert_file: str,
    key_file: str,
    client_ca_files: Sequence[str] = (),
    client_cert: Literal["optional", "required"] = "optional",
) -> ssl.SSLContext:
    """A server context; with client CAs it asks for client certificates, verified against them."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    cas = [f for f in client_ca_files if f]
    if cas:
        for ca in cas:
            context.load_verify_locations(cafile=ca)
        context.verify_mode = ssl.CERT_REQUIRED if client_cert == "required" else ssl.CERT_OPTIONAL
    return context


def client_context(ca_file: str = "", cert_file: str = "", key_file: str = "") -> ssl.SSLContext:
    """A client context verifying the server against ``ca_file`` (the system store when empty),
    presenting ``cert_file`` when set."""
    context = ssl.create_default_context(cafile=ca_file or None)
    if cert_file:
        context.load_cert_chain(cert_file, key_file or None)
    return context


def fingerprint(der: bytes) -> str:
    """The SHA-256 fingerprint a north certificate is bound by: 64 lower-case hex digits."""
    return hashlib.sha256(der).hexdigest()


def describe(pem: str) -> tuple[str, str]:
    """A PEM certificate's fingerprint and subject (RFC 4514); ValueError when it is not one."""
    try:
        certificate = x509.load_pem_x509_certificate(pem.encode())
    except (ValueError, TypeError) as exc:
        raise ValueError("not a PEM certificate") from exc
    return fingerprint(certificate.public_bytes(Encoding.DER)), certificate.subject.rfc4514_string()


def pem_to_der(pem: str) -> bytes:
    """The DER form of one PEM certificate; ValueError when it is not one."""
    try:
        return x509.load_pem_x509_certificate(pem.encode()).public_bytes(Encoding.DER)
    except (ValueError, TypeError) as exc:
        raise ValueError("not a PEM certificate") from exc


@dataclass(frozen=True)
class PeerCertificate:
    """A client certificate the TLS layer verified (never one read from a header)."""

    der: bytes

    @cached_property
    def certificate(self) -> x509.Certificate:
        return x509.load_der_x509_certificate(self.der)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.der)

    @property
    def common_name(self) -> str | None:
        names = self.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        value = names[0].value if names else None
        return value if isinstance(value, str) else None

    def issued_by(self, issuer: x509.Certificate) -> bool:
        """Whether ``issuer``'s key signed this certificate (not merely a name that matches)."""
        try:
            self.certificate.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature):
            return False
        return True


def load_certificates(pem_file: str) -> list[x509.Certificate]:
    """Every certificate of a PEM file (a CA bundle); none for an empty path."""
    if not pem_file:
        return []
    return x509.load_pem_x509_certificates(Path(pem_file).read_bytes())


def peer_certificate(scope: Mapping[str, Any]) -> PeerCertificate | None:
    """The verified client certificate of a request, from the ASGI TLS extension the server
    fills from the TLS connection itself (``api.server``)."""
    tls = scope.get("extensions", {}).get("tls")
    if not tls:
        return None
    chain = tls.get("client_cert_chain") or ()
    if not chain:
        return None
    return PeerCertificate(ssl.PEM_cert_to_DER_cert(chain[0]))
