"""Test PKI and TLS plumbing: certificates made by the tests (trustme), an ASGI app served over
TLS the way ``python -m api`` serves it, and a TLS-terminating TCP proxy (for Temporal, whose
dev server has no TLS options)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trustme
import uvicorn

from core.tls import client_context, server_context


@dataclass(frozen=True)
class Issued:
    """A leaf certificate on disk: its PEM chain file and its key file."""

    cert: str
    key: str

    @property
    def pem(self) -> str:
        return Path(self.cert).read_text()


class Authority:
    """A test CA whose certificate and leaves are written under ``directory``."""

    def __init__(self, directory: Path, name: str) -> None:
        self.ca = trustme.CA(organization_name=f"fleet tests {name}")
        self.directory = directory / name
        self.directory.mkdir(parents=True, exist_ok=True)
        self.cert = str(self.directory / "ca.pem")
        self.ca.cert_pem.write_to_path(self.cert)

    def issue(self, name: str, *identities: str, common_name: str | None = None) -> Issued:
        leaf = self.ca.issue_cert(*(identities or (f"{name}.test",)), common_name=common_name)
        cert, key = self.directory / f"{name}.pem", self.directory / f"{name}.key"
        cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        leaf.private_key_pem.write_to_path(str(key))
        return Issued(str(cert), str(key))

    def server(self, name: str = "server") -> Issued:
        return self.issue(name, "127.0.0.1", "localhost", common_name=name)

    def client(self, common_name: str) -> Issued:
        return self.issue(f"client-{common_name}", common_name=common_name)


def client_tls(ca: Authority, cert: Issued | None = None) -> ssl.SSLContext:
    """What an httpx client verifies a server with (``ca``), presenting ``cert`` if given."""
    return client_context(ca.cert, cert.cert if cert else "", cert.key if cert else "")


def tls_config(app: Any, context: ssl.SSLContext) -> uvicorn.Config:
    """A device-side TLS server (the simulator's way, ``python -m simulator --tls-cert``)."""
    return uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_level="warning",
        lifespan="off",
        timeout_graceful_shutdown=2,
        ssl_context_factory=lambda _config, _default: context,
    )


@contextlib.asynccontextmanager
async def tls_proxy(
    target_host: str, target_port: int, context: ssl.SSLContext
) -> AsyncIterator[tuple[str, int]]:
    """A TCP proxy terminating TLS with ``context`` in front of ``target``; yields its address."""
    connections: set[asyncio.Task[None]] = set()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        connections.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection(target_host, target_port)
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        except (ConnectionError, OSError):
            writer.close()
        finally:
            connections.discard(task)

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    try:
        yield "127.0.0.1", port
    finally:
        server.close()
        for task in list(connections):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 5)


def grpc_server_context(cert: Issued, client_ca: Authority) -> ssl.SSLContext:
    """The proxy's context: client certificates required, HTTP/2 offered (gRPC asks for it)."""
    context = server_context(cert.cert, cert.key, [client_ca.cert], "required")
    context.set_alpn_protocols(["h2"])
    return context
