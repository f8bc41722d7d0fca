"""The request body limit (``FLEET_MAX_BODY_BYTES``), counted as the bytes arrive.

A Content-Length past the limit is refused before anything is read; a body without one (chunked)
is counted chunk by chunk, and the first chunk past the limit stops the reading: the app's next
``receive`` raises ``BodyTooLarge``, which answers 413 in the SPEC body at once. Nothing past the
limit is buffered or parsed: the server discards what the client still sends (it does not close
the connection, since a client that writes its whole body before reading, as most do, would then
see a reset instead of the 413).
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import ErrorCode, WatchedSend, error_response


class BodyTooLarge(HTTPException):
    """An HTTPException, so that FastAPI's body reading lets it through to the error handler."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"Body larger than {limit} bytes")


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
        received = 0

        async def counted() -> Message:
            nonlocal received
            if received > self.max_bytes:  # asked again after the refusal: still refused
                raise BodyTooLarge(self.max_bytes)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        watched = WatchedSend(send)
        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge:
            # Raised where no exception handler was in the way (e.g. a middleware read the body).
            if watched.started:
                raise
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = f"Body larger than {self.max_bytes} bytes"
        response = error_response(413, ErrorCode.BODY_TOO_LARGE, message)
        await response(scope, receive, send)
