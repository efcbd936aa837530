"""FastAPI integration: a lifespan that opens and closes the `Cache`, a dependency, response caching.

::

    from cachetier import Cache
    from cachetier.contrib.fastapi import CachedRoute, CacheDependency, cache_response, lifespan

    cache = Cache.from_settings()
    app = FastAPI(lifespan=lifespan(cache))
    app.router.route_class = CachedRoute  # before the routes; or APIRouter(route_class=CachedRoute)

    @app.get("/api/metrics")
    @cache_response(ttl=60)
    async def metrics(db: Session = Depends(get_db)) -> Metrics: ...

    @app.post("/api/tasks")
    async def create(task: NewTask, cache: CacheDependency) -> Task:
        ...
        await invalidate_responses(cache, "/api/tasks", prefix=True)

`cache_response` marks a route; `CachedRoute` does the caching around FastAPI's whole request
handler, so the stored body is exactly what FastAPI sent (``response_model`` filtering and
custom response classes included) and a hit resolves no dependency at all: no DB session is
opened, and request-scoped objects never enter a key. The HTTP rules (keys, which responses are
stored, ``ETag`` and 304, ``Cache-Control``, ``X-Cache``, ``Authorization``) are those of
`cachetier.contrib._http`, shared with `cachetier.contrib.asgi`. Starting the app with `lifespan`
refuses routes marked by `cache_response` that are not `CachedRoute`, which would otherwise
silently cache nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection, Coroutine
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Final, TypeVar

try:
    from fastapi import Depends, FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.routing import APIRoute
    from starlette.background import BackgroundTask
    from starlette.exceptions import HTTPException
    from starlette.responses import Response
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        'cachetier.contrib.fastapi needs FastAPI; install it with: pip install "cachetier[fastapi]"'
    ) from exc

from .._cache import Cache
from .._errors import ConfigurationError
from .._log import LOGGER
from .._settings import CacheSettings
from .._ttl import TTLLike
from ._http import (
    CapturedResponse,
    RequestInfo,
    ResponseCache,
    ResponseCachePolicy,
    invalidate_responses,
    response_key_prefix,
)
from .asgi import _capture

__all__ = (
    "CacheDependency",
    "CachedRoute",
    "ResponseCachePolicy",
    "cache_response",
    "get_cache",
    "invalidate_responses",
    "lifespan",
    "open_cache",
    "response_key_prefix",
)

F = TypeVar("F", bound=Callable[..., Any])

_STATE_NAME: Final = "cachetier_cache"
# The attribute `cache_response` sets on an endpoint; a constant, read only by `CachedRoute`.
_MARK: Final = "__cachetier_response_cache__"


@dataclass(frozen=True, slots=True)
class _RouteCaching:
    cache: Cache | None
    policy: ResponseCachePolicy


@asynccontextmanager
async def open_cache(
    app: FastAPI, cache: Cache | None = None, *, settings: CacheSettings | None = None
) -> AsyncIterator[Cache]:
    """Makes ``cache`` the app's cache for the block, then ``aclose()``s it; yields the cache.

    Without ``cache``, builds one with `Cache.from_settings` (``settings``, or the environment),
    which logs the start-up INFO line. Checks the backend once and logs whether it answers; a
    backend that does not is no reason to refuse to start, since the cache fails open. For use
    inside an application's own lifespan; `lifespan` is the ready-made one.

    Raises:
        ConfigurationError: a route is marked with `cache_response` but is not a `CachedRoute`,
            or a setting is malformed.
    """
    _check_routes(app)
    if cache is None:
        cache = Cache.from_settings(settings)
    report = await cache.health_check()
    if report.available or report.status == "disabled":
        LOGGER.info("cachetier: %s backend is %s at start-up", report.backend, report.status)
    else:
        LOGGER.warning(
            "cachetier: %s backend does not answer at start-up (%s); requests run uncached "
            "until it does",
            report.backend,
            report.error,
        )
    setattr(app.state, _STATE_NAME, cache)
    try:
        yield cache
    finally:
        delattr(app.state, _STATE_NAME)
        await cache.aclose()


def lifespan(
    cache: Cache | None = None, *, settings: CacheSettings | None = None
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Returns a lifespan for ``FastAPI(lifespan=...)`` that runs the app inside `open_cache`."""

    @asynccontextmanager
    async def run(app: FastAPI) -> AsyncIterator[None]:
        async with open_cache(app, cache, settings=settings):
            yield

    return run


def get_cache(request: Request) -> Cache:
    """Returns the app's cache, as opened by `lifespan` or `open_cache`; a FastAPI dependency.

    Raises:
        RuntimeError: the app was not started with `lifespan` or `open_cache`.
    """
    cache = getattr(request.app.state, _STATE_NAME, None)
    if not isinstance(cache, Cache):
        raise RuntimeError(
            "no cache is open for this app: create it with "
            "FastAPI(lifespan=cachetier.contrib.fastapi.lifespan(cache)), or enter "
            "open_cache(app, cache) in its own lifespan"
        )
    return cache


CacheDependency = Annotated[Cache, Depends(get_cache)]
"""A route parameter annotation that receives the app's `Cache`: ``cache: CacheDependency``."""


def cache_response(
    cache: Cache | None = None,
    *,
    ttl: TTLLike,
    vary: Collection[str] = (),
    statuses: Collection[int] = (200,),
    shared: bool = False,
    cache_control: str | None = None,
    key_prefix: str = "http",
    stale_if_error: TTLLike | None = None,
    credential_key: bytes | None = None,
) -> Callable[[F], F]:
    """Marks a GET route so that `CachedRoute` caches its responses; the function is unchanged.

    Put it below the route decorator. ``cache`` defaults to the app's (see `lifespan`); the
    other arguments are those of `ResponseCachePolicy`.

    Raises:
        ConfigurationError: an argument is out of range.
    """
    caching = _RouteCaching(
        cache,
        ResponseCachePolicy(
            ttl=ttl,
            vary=tuple(vary),
            statuses=frozenset(statuses),
            shared=shared,
            cache_control=cache_control,
            key_prefix=key_prefix,
            stale_if_error=stale_if_error,
            credential_key=credential_key,
        ),
    )

    def mark(endpoint: F) -> F:
        setattr(endpoint, _MARK, caching)
        return endpoint

    return mark


def _caching_of(endpoint: object) -> _RouteCaching | None:
    caching = getattr(endpoint, _MARK, None)
    return caching if isinstance(caching, _RouteCaching) else None


def _check_routes(app: FastAPI) -> None:
    for route in app.routes:
        if (
            isinstance(route, APIRoute)
            and not isinstance(route, CachedRoute)
            and _caching_of(route.endpoint) is not None
        ):
            raise ConfigurationError(
                f"route {route.path} is marked with cache_response but is a "
                f"{type(route).__name__}, so nothing would be cached; create it with "
                "APIRouter(route_class=CachedRoute) or set app.router.route_class = CachedRoute "
                "before adding routes"
            )


def _is_final(exc: Exception) -> bool:
    """Whether an exception is the route's answer (a 4xx), which a stale response must not hide."""
    if isinstance(exc, HTTPException):
        return exc.status_code < 500
    return isinstance(exc, RequestValidationError)


class CachedRoute(APIRoute):
    """An `APIRoute` that caches the responses of endpoints marked with `cache_response`.

    Unmarked endpoints, and methods other than GET and HEAD, run exactly as with `APIRoute`.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """Returns FastAPI's handler, wrapped in response caching when the endpoint is marked."""
        handler = super().get_route_handler()
        caching = _caching_of(self.endpoint)
        if caching is None:
            return handler
        shared_responder = (
            ResponseCache(caching.cache, caching.policy) if caching.cache is not None else None
        )

        async def cached_handler(request: Request) -> Response:
            if request.method not in ("GET", "HEAD"):
                return await handler(request)
            responder = shared_responder or ResponseCache(get_cache(request), caching.policy)
            background: BackgroundTask | None = None
            scope = dict(request.scope)
            # Responses are captured as bytes: hide the extension that lets a FileResponse
            # hand the server a path instead.
            scope["extensions"] = {
                name: value
                for name, value in (scope.get("extensions") or {}).items()
                if name != "http.response.pathsend"
            }

            async def produce() -> CapturedResponse:
                nonlocal background
                response = await handler(request)
                # Background tasks belong to this request's response, never to the stored one;
                # they run after the response is sent, as they would uncached.
                background, response.background = response.background, None
                return await _capture(response, scope, request.receive)

            captured = await responder.serve(_request_info(request), produce, is_final=_is_final)
            result = Response(status_code=captured.status)
            result.body = captured.body
            result.raw_headers = [
                (name.encode("latin-1"), value.encode("latin-1"))
                for name, value in captured.headers
            ]
            result.background = background
            return result

        return cached_handler


def _request_info(request: Request) -> RequestInfo:
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return RequestInfo(
        method=request.method,
        path=request.scope["path"],
        query_string=bytes(request.scope.get("query_string", b"")).decode("latin-1"),
        headers=headers,
    )
