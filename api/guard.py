"""Request bodies refused before they are read: a pure ASGI middleware.

FastAPI reads and parses a route's body before the route's dependencies run, so a key
check or a size check in a route comes after the bytes are in memory.  This
middleware sits in front of the routes and decides from the headers alone:

1. a request with a body to a protected route (``/api/...``, ``/metrics``) without a
   valid API key: 401, nothing read;
2. a ``Content-Length`` over the route's limit: 413, nothing read;
3. a streamed body (chunked, no length) is counted as the route reads it, and cut off
   with 413 the moment it passes the limit.

It wraps ``receive`` and ``send`` only: unlike Starlette's ``BaseHTTPMiddleware``
it buffers nothing.  A refusal sent before the body was read asks the client to
close the connection (``Connection: close``): the server then reads no more of it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from foursave.api.keys import MISSING_KEY, REFUSED_KEY, KeyStore, presented_key

PUBLIC_PREFIXES = ("/display", "/health", "/docs", "/openapi.json", "/redoc")


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a streamed body passes its limit."""


def too_large(limit_bytes: int, setting: str) -> str:
    return f"the request body is larger than {limit_bytes} bytes (services.api.{setting})"


class BodyGuard:
    """``limit_for(path)`` → (largest body [bytes], the setting that says so);
    ``keys()`` → the key store once the app has started (``None`` before)."""

    def __init__(
        self,
        app: ASGIApp,
        limit_for: Callable[[str], tuple[int, str]],
        keys: Callable[[], KeyStore | None],
    ):
        self.app = app
        self.limit_for = limit_for
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        path: str = scope["path"]
        length = headers.get("content-length")
        has_body = "transfer-encoding" in headers or (length is not None and length != "0")
        if has_body and not path.startswith(PUBLIC_PREFIXES):
            refused = self._unauthenticated(headers)
            if refused:
                await _refuse(scope, receive, send, 401, refused, {"WWW-Authenticate": "Bearer"})
                return
        limit, setting = self.limit_for(path)
        if length is not None and length.isdigit() and int(length) > limit:
            await _refuse(scope, receive, send, 413, too_large(limit, setting))
            return

        received = 0
        exceeded = started = False

        async def counted() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise BodyTooLarge(413, too_large(limit, setting))
            return message

        async def sending(message: Message) -> None:
            nonlocal started
            if exceeded:
                return  # the 413 below answers, whatever the app made of the exception
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, sending)
        except BodyTooLarge:
            if started:
                raise
        if exceeded and not started:
            await _refuse(scope, receive, send, 413, too_large(limit, setting))

    def _unauthenticated(self, headers: Headers) -> str | None:
        """Why the request's key is refused (``None``: it is valid, or the app has not
        started, when the route's own check refuses it)."""
        store = self.keys()
        if store is None:
            return None
        key = presented_key(headers.get("x-api-key"), headers.get("authorization"))
        if key is None:
            return MISSING_KEY
        return None if store.authenticate(key) is not None else REFUSED_KEY


async def _refuse(
    scope: Scope,
    receive: Receive,
    send: Send,
    status: int,
    detail: str,
    headers: dict[str, Any] | None = None,
) -> None:
    response = JSONResponse(
        {"detail": detail}, status_code=status, headers={**(headers or {}), "Connection": "close"}
    )
    await response(scope, receive, send)
