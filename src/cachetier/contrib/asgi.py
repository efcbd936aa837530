"""`ResponseCacheMiddleware`: HTTP response caching for any ASGI application, by path prefix.

Pure ASGI, so it works with Starlette, FastAPI, Litestar, Quart or a bare ASGI callable, and
needs no framework installed::

    from cachetier.contrib.asgi import ResponseCacheMiddleware, ResponseCachePolicy

    app = ResponseCacheMiddleware(
        app,
        cache=cache,
        paths={
            "/api/metrics": ResponseCachePolicy(ttl=60),
            "/api/content": ResponseCachePolicy(ttl=300, vary=("Accept-Language",)),
        },
    )

With Starlette: ``Middleware(ResponseCacheMiddleware, cache=cache, paths={...})``. The rules
(keys, which responses are stored, ``ETag`` and 304, ``Cache-Control``, ``X-Cache``,
``Authorization``) are those of `cachetier.contrib._http`, shared with the FastAPI integration.

A cached path's response is buffered whole before it is sent, on a miss as on a hit, so do not
configure paths that stream without end (server-sent events). Background work an application
runs after sending its response (Starlette's ``BackgroundTasks``) finishes before a miss is
sent. Invalidate with `invalidate_responses` or ``cache.delete_pattern("http:GET:/api/tasks*")``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any, Final, TypeAlias, final

from .._cache import Cache
from ._http import (
    CapturedResponse,
    RequestInfo,
    ResponseCache,
    ResponseCachePolicy,
    invalidate_responses,
    response_key_prefix,
)

__all__ = (
    "ASGIApp",
    "ResponseCacheMiddleware",
    "ResponseCachePolicy",
    "invalidate_responses",
    "response_key_prefix",
)

Scope: TypeAlias = MutableMapping[str, Any]
Message: TypeAlias = MutableMapping[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[Message]]
Send: TypeAlias = Callable[[Message], Awaitable[None]]
ASGIApp: TypeAlias = Callable[[Scope, Receive, Send], Awaitable[None]]
"""An ASGI 3 application."""

# Extensions that let an application answer without body messages (a file path, a socket
# write); hidden from cached routes so that every response arrives as bytes we can store.
_BODYLESS_EXTENSIONS: Final = ("http.response.pathsend", "http.response.zerocopy")


@final
class ResponseCacheMiddleware:
    """Caches GET and HEAD responses of the paths in ``paths``; everything else passes through.

    ``paths`` maps a path prefix to its `ResponseCachePolicy`. A prefix matches itself and the
    paths below it (``"/api/tasks"`` matches ``/api/tasks`` and ``/api/tasks/7``, not
    ``/api/tasksets``); the longest matching prefix wins. Construction does no I/O.
    """

    __slots__ = ("_app", "_routes")

    def __init__(
        self, app: ASGIApp, *, cache: Cache, paths: Mapping[str, ResponseCachePolicy]
    ) -> None:
        self._app = app
        # Longest first, so the most specific prefix wins.
        self._routes = tuple(
            (prefix.rstrip("/"), ResponseCache(cache, policy))
            for prefix, policy in sorted(paths.items(), key=lambda item: -len(item[0]))
        )

    def _match(self, path: str) -> ResponseCache | None:
        for prefix, responder in self._routes:
            if not prefix or path == prefix or path.startswith(prefix + "/"):
                return responder
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in ("GET", "HEAD"):
            await self._app(scope, receive, send)
            return
        responder = self._match(scope["path"])
        if responder is None:
            await self._app(scope, receive, send)
            return
        request = RequestInfo(
            method=scope["method"],
            path=scope["path"],
            query_string=bytes(scope.get("query_string", b"")).decode("latin-1"),
            headers=_headers(scope.get("headers", ())),
        )
        inner = dict(scope)
        extensions = scope.get("extensions")
        if extensions:
            inner["extensions"] = {
                name: value
                for name, value in extensions.items()
                if name not in _BODYLESS_EXTENSIONS
            }

        async def produce() -> CapturedResponse:
            return await _capture(self._app, inner, receive)

        response = await responder.serve(request, produce)
        await send_response(send, response)


def _headers(raw: Any) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in raw:
        key = bytes(name).decode("latin-1").lower()
        text = bytes(value).decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return headers


async def _capture(app: ASGIApp, scope: Scope, receive: Receive) -> CapturedResponse:
    """Runs ``app`` and returns the response it sends, buffered whole."""
    status: int | None = None
    headers: tuple[tuple[str, str], ...] = ()
    chunks: list[bytes] = []
    complete = False

    async def capture(message: Message) -> None:
        nonlocal status, headers, complete
        if message["type"] == "http.response.start":
            status = int(message["status"])
            headers = tuple(
                (bytes(name).decode("latin-1").lower(), bytes(value).decode("latin-1"))
                for name, value in message.get("headers", ())
            )
        elif message["type"] == "http.response.body":
            chunks.append(bytes(message.get("body", b"")))
            if not message.get("more_body", False):
                complete = True

    await app(scope, receive, capture)
    if status is None or not complete:
        raise RuntimeError(
            f"the application returned without completing a response to {scope['path']}"
        )
    return CapturedResponse(status, headers, b"".join(chunks))


async def send_response(send: Send, response: CapturedResponse) -> None:
    """Sends ``response`` as one ``http.response.start`` and one ``http.response.body`` message."""
    await send(
        {
            "type": "http.response.start",
            "status": response.status,
            "headers": [
                (name.encode("latin-1"), value.encode("latin-1"))
                for name, value in response.headers
            ],
        }
    )
    await send({"type": "http.response.body", "body": response.body, "more_body": False})
