"""How the API is served: uvicorn, over HTTPS and mutual TLS when configured, with the client
certificate handed to the application in the ASGI TLS extension.

uvicorn (0.54) and hypercorn (0.18) both terminate TLS but neither fills the ASGI TLS extension
(``scope["extensions"]["tls"]``; uvicorn #1118/#3133, hypercorn #62 are still open). So the HTTP
protocol below, uvicorn's own h11 protocol, reads the peer certificate from the TLS connection
when it is made (after the handshake, so it is verified against the client CAs) and puts it in
every request's scope in the extension's shape (``client_cert_chain[0]`` the client certificate,
PEM). The application reads it there and only there: nothing a client sends in a header can
stand for a certificate. When uvicorn ships the extension, this module shrinks to its config.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from core.settings import Settings, tls_served
from core.tls import server_context

log = logging.getLogger(__name__)

ASGIApp = Any


def tls_extension(transport: asyncio.BaseTransport) -> dict[str, Any] | None:
    """The ASGI TLS extension of one connection; None on plain HTTP."""
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return {
        "server_cert": None,
        # Python < 3.13 reaches only the leaf: the chain was verified by the handshake.
        "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else [],
        "client_cert_name": None,
        "client_cert_error": None,
        "tls_version": None,
        "cipher_suite": None,
    }


def _with_tls(app: ASGIApp, tls: dict[str, Any]) -> ASGIApp:
    async def with_tls(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            scope = {**scope, "extensions": {**(scope.get("extensions") or {}), "tls": tls}}
        await app(scope, receive, send)

    return with_tls


class TLSExtensionProtocol(H11Protocol):
    """uvicorn's h11 protocol, filling the ASGI TLS extension from the connection."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        tls = tls_extension(transport)
        if tls is not None:
            self.app = _with_tls(self.app, tls)


class TLSSettingsError(ValueError):
    """TLS settings that cannot mean what they say: refused at start, not served half-secure."""


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The API's server context from the settings; None for plain HTTP."""
    client_cas = [settings.tls_client_ca_file, settings.tls_fleet_ca_file]
    if bool(settings.tls_cert_file) != bool(settings.tls_key_file):
        raise TLSSettingsError("set both FLEET_TLS_CERT_FILE and FLEET_TLS_KEY_FILE, or neither")
    if not tls_served(settings):
        if any(client_cas) or settings.tls_client_cert == "required":
            raise TLSSettingsError("client certificates need HTTPS: set FLEET_TLS_CERT_FILE")
        return None
    if settings.tls_client_cert == "required" and not any(client_cas):
        raise TLSSettingsError("FLEET_TLS_CLIENT_CERT=required needs FLEET_TLS_CLIENT_CA_FILE")
    return server_context(
        settings.tls_cert_file,
        settings.tls_key_file,
        client_ca_files=client_cas,
        client_cert=settings.tls_client_cert,
    )


def server_config(app: ASGIApp, settings: Settings, **options: Any) -> uvicorn.Config:
    """The uvicorn config serving ``app`` as the settings say (host, port, TLS)."""
    context = ssl_context(settings)
    options.setdefault("host", settings.api_host)
    options.setdefault("port", settings.api_port)
    config = uvicorn.Config(
        app,
        http=TLSExtensionProtocol,
        ssl_context_factory=(lambda _config, _default: context) if context else None,
        **options,
    )
    return config


def scheme(settings: Settings) -> str:
    return "https" if tls_served(settings) else "http"
